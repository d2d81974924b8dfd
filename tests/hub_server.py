"""A local stand-in for the Hugging Face Hub's upload API, so pushes are tested without a network.

It answers the routes ``huggingface_hub`` calls to create a repo and commit files to it, and
records what it received: repo creations, every request (method, path, headers) and every commit
with its message and the bytes of each file. Files are always asked for inline ("regular" upload
mode), so no LFS or Xet storage is involved; run clients with ``HF_HUB_DISABLE_XET=1``.

    with FakeHub() as hub:
        HfApi(endpoint=hub.url, token="hf_test").upload_folder(...)      # in-process
        subprocess.run([...], env={..., "HF_ENDPOINT": hub.url})         # or in a child process
        assert hub.commits[0].files["README.md"] == b"..."

``hub.fail[route] = (status, message)`` makes a route answer with an error ("create",
"preupload", "commit", "validate-yaml", "whoami"). Routes for model repos answer the same way,
so the server can grow into model pushes (LFS batches, tags) when those are tested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO_ROUTE = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/"
                        r"(?P<revision>[^/?]+)")
USER = "forge-tester"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Commit:
    repo_type: str  # "model", "dataset" or "space"
    repo_id: str
    revision: str
    message: str
    description: str
    files: dict[str, bytes] = field(default_factory=dict)  # path in repo -> bytes received inline
    deleted: list[str] = field(default_factory=list)
    oid: str = ""


class FakeHub:
    """The server and what it received; use as a context manager (starts and stops it)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.created: list[dict] = []  # bodies of POST /api/repos/create
        self.commits: list[Commit] = []
        self.fail: dict[str, tuple[int, str]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def tokens_seen(self) -> set[str]:
        """Bearer tokens clients sent (to check which token was used, never to print it)."""
        return {r.headers["authorization"].removeprefix("Bearer ") for r in self.requests
                if "authorization" in r.headers}

    # --- routes ---------------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        route = path.split("?")[0]
        if method == "GET" and route == "/api/whoami-v2":
            return self._maybe_fail("whoami") or (200, {"type": "user", "name": USER, "orgs": [],
                                                       "auth": {"type": "access_token",
                                                                "accessToken": {"role": "write"}}})
        if method == "POST" and route == "/api/validate-yaml":
            return self._maybe_fail("validate-yaml") or (200, {"errors": [], "warnings": []})
        if method == "POST" and route == "/api/repos/create":
            return self._maybe_fail("create") or self._create(json.loads(body))
        match = REPO_ROUTE.match(route)
        if method == "POST" and match:
            if match["action"] == "preupload":
                return self._maybe_fail("preupload") or self._preupload(json.loads(body))
            return self._maybe_fail("commit") or self._commit(match, body)
        return 404, {"error": f"{method} {route} is not served by the fake Hub"}

    def _maybe_fail(self, route: str) -> tuple[int, object] | None:
        if route in self.fail:
            status, message = self.fail[route]
            return status, {"error": message}
        return None

    def _create(self, payload: dict) -> tuple[int, object]:
        self.created.append(payload)
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(payload.get("type") or "model", "")
        return 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id}

    def _preupload(self, payload: dict) -> tuple[int, object]:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                 for f in payload["files"]]
        return 200, {"files": files, "commitOid": "0" * 40}

    def _commit(self, match: re.Match, body: bytes) -> tuple[int, object]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        repo_type = match["type"].removesuffix("s")
        commit = Commit(repo_type, match["repo"], match["revision"], header["summary"], header.get("description", ""))
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                commit.files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                commit.deleted.append(value["path"])
            elif item["key"] != "header":
                return 400, {"error": f"the fake Hub only takes inline files, got {item['key']}"}
        commit.oid = hashlib.sha1(body).hexdigest()
        self.commits.append(commit)
        prefix = "" if repo_type == "model" else f"{match['type']}/"
        return 200, {"commitUrl": f"{self.url}/{prefix}{commit.repo_id}/commit/{commit.oid}",
                     "commitOid": commit.oid, "pullRequestUrl": None}


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            body = self._read_body()
            hub.requests.append(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, payload = hub.answer(method, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("X-Error-Message", payload.get("error", "") if isinstance(payload, dict) else "")
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    return Handler
