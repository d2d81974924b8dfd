"""A local stand-in for the Hugging Face Hub's upload API, so pushes are tested without a network.

It answers the routes ``huggingface_hub`` calls to check a token, create a repo, read a repo's
info and file tree, validate a card and commit files (inline or through the LFS batch API), and
records what it received: every request (method, path, headers, body), repo creations, every
commit with its message and the bytes of each file, and the state of each repo afterwards.
Run clients with ``HF_HUB_DISABLE_XET=1``: the Xet route (a CAS protocol) cannot be faked here,
the LFS route can.

    with FakeHub() as hub:
        HfApi(endpoint=hub.url, token="hf_test").upload_folder(...)      # in-process
        subprocess.run([...], env={..., "HF_ENDPOINT": hub.url})         # or in a child process
        assert hub.commits[0].files["README.md"] == b"..."

What the real Hub does, and so this server too:

- ``POST /api/repos/create`` answers 409 ``{"error": ..., "url": ...}`` for an existing repo
  (``create_repo(exist_ok=True)`` relies on that ``url``);
- ``GET /api/models/{id}[/revision/{rev}]`` answers 404 with ``X-Error-Code: RepoNotFound`` for
  an unknown repo, else the info with ``sha`` and ``cardData`` (the YAML of its README.md);
- ``preupload`` says ``lfs`` for files matching the Hub's default ``.gitattributes`` patterns
  (``*.safetensors``, ``*.gguf``, ``*.parquet``, ...), binary samples and files of 10 MB and more,
  and gives each path's current ``oid`` so unchanged files are left out of the next commit;
- the LFS batch gives an upload address on this server for objects it lacks and no action for
  those it holds; the ``PUT`` must carry bytes with the announced sha256 and size;
- a commit's ``lfsFile`` lines must name objects the server holds;
- a token it does not accept gets 401 ``Invalid credentials in Authorization header``.

Switches: ``FakeHub(token=...)`` accepts that token only (default: any); ``orgs=`` lists the
user's organisations in ``whoami``; ``hub.fail[route] = (status, message)`` makes a route
("whoami", "create", "preupload", "lfs-batch", "commit", "validate-yaml") answer with an error;
``hub.drop["put"] = n`` drops the connection half way through the body of the next ``n`` LFS
uploads, ``hub.drop["commit"] = n`` after reading the next ``n`` commit bodies (nothing applied).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

USER = "forge-tester"
INVALID_TOKEN = "Invalid credentials in Authorization header"
# The Hub's default .gitattributes puts these in LFS; files of 10 MB and more go there whatever their name.
LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
                "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
                "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite", "*.tgz",
                "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*")
LFS_MIN_SIZE = 10 * 1024 * 1024

API_REPO = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
                      r"(?:/(?P<action>preupload|commit|revision|tree)/(?P<revision>[^/?]+))?/?$")
LFS_BATCH = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
LFS_UPLOAD = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")


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
    files: dict[str, bytes] = field(default_factory=dict)  # path in repo -> bytes (inline or from LFS)
    lfs: list[str] = field(default_factory=list)  # paths committed as lfsFile lines
    paths: list[str] = field(default_factory=list)  # every path the commit named, in order (duplicates kept)
    deleted: list[str] = field(default_factory=list)
    oid: str = ""


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)  # paths stored in LFS
    sha: str = "0" * 40

    def oid(self, path: str) -> str:
        """What the Hub reports for a path: sha256 for LFS files, the git blob sha1 for the others."""
        data = self.files[path]
        if path in self.lfs:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def card_data(self) -> dict | None:
        readme = self.files.get("README.md", b"").decode()
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", readme, re.DOTALL)
        return yaml.safe_load(match.group(1)) if match else None


class FakeHub:
    """The server and what it received; use as a context manager (starts and stops it)."""

    def __init__(self, token: str | None = None, orgs: tuple[str, ...] | list[str] = ()) -> None:
        self.token = token
        self.orgs = list(orgs)
        self.requests: list[Request] = []
        self.created: list[dict] = []  # bodies of POST /api/repos/create that made a repo
        self.commits: list[Commit] = []
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes, complete uploads only
        self.puts: list[tuple[str, int, bool]] = []  # (oid, bytes received, completed) per LFS PUT
        self.validated: list[str] = []  # card contents sent to /api/validate-yaml
        self.fail: dict[str, tuple[int, str]] = {}
        self.drop: dict[str, int] = {}
        self._lock = threading.Lock()
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

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, repo_type: str = "model") -> Repo:
        """A repo that exists before the test pushes anything (a base model, an earlier push)."""
        repo = Repo(repo_type, repo_id, files=dict(files or {}))
        repo.lfs = {p for p in repo.files if _is_lfs(p, repo.files[p][:512], len(repo.files[p]))}
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # --- routes ---------------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, object, dict]:
        """(status, JSON payload, extra headers) for one request."""
        route = path.split("?")[0]
        auth = headers.get("authorization", "")
        if auth and not self._accepts(auth.removeprefix("Bearer ")):
            return 401, {"error": INVALID_TOKEN}, {"X-Error-Message": INVALID_TOKEN}
        if method == "GET" and route == "/api/whoami-v2":
            if not auth:
                return 401, {"error": "Invalid username or password."}, {}
            return self._maybe_fail("whoami") or (200, {
                "type": "user", "name": USER, "orgs": [{"name": o, "type": "org"} for o in self.orgs],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}}}, {})
        if method == "POST" and route == "/api/validate-yaml":
            return self._maybe_fail("validate-yaml") or self._validate_yaml(json.loads(body))
        if method == "POST" and route == "/api/repos/create":
            return self._maybe_fail("create") or self._create(json.loads(body))
        if match := LFS_BATCH.match(route):
            repo_type = (match["type"] or "models").removesuffix("s")
            return self._maybe_fail("lfs-batch") or self._lfs_batch(repo_type, match["repo"], json.loads(body))
        if method == "PUT" and (match := LFS_UPLOAD.match(route)):
            size = re.search(r"[?&]size=(\d+)", path)
            return self._lfs_put(match["oid"], body, int(size.group(1)) if size else None)
        match = API_REPO.match(route)
        if not match:
            return 404, {"error": f"{method} {route} is not served by the fake Hub"}, {}
        repo = self.repos.get((match["type"].removesuffix("s"), match["repo"]))
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound",
                                                            "X-Error-Message": "Repository not found"}
        action = match["action"]
        if method == "GET" and action in (None, "revision"):
            return 200, self._info(repo), {}
        if method == "GET" and action == "tree":
            return 200, [self._tree_entry(repo, p) for p in sorted(repo.files)], {}
        if method == "POST" and action == "preupload":
            return self._maybe_fail("preupload") or self._preupload(repo, json.loads(body))
        if method == "POST" and action == "commit":
            return self._maybe_fail("commit") or self._commit(repo, match["revision"], body)
        return 404, {"error": f"{method} {route} is not served by the fake Hub"}, {}

    def _accepts(self, token: str) -> bool:
        return bool(token) and (self.token is None or token == self.token)

    def _maybe_fail(self, route: str) -> tuple[int, object, dict] | None:
        if route in self.fail:
            status, message = self.fail[route]
            return status, {"error": message}, {"X-Error-Message": message}
        return None

    def _validate_yaml(self, payload: dict) -> tuple[int, object, dict]:
        """The Hub checks the card's YAML; here: it parses, is a mapping, and its model-index reads."""
        content = payload["content"]
        self.validated.append(content)
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(data, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, {}
            if "model-index" in data:
                from huggingface_hub.repocard_data import model_index_to_eval_results

                model_index_to_eval_results(data["model-index"])
            if "base_model_relation" in data and "base_model" not in data:
                raise ValueError('"base_model_relation" needs "base_model"')
        except Exception as exc:  # noqa: BLE001 - the Hub answers any bad YAML with 400 and a list of errors
            return 400, {"errors": [{"message": str(exc)}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _create(self, payload: dict) -> tuple[int, object, dict]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
        url = f"{self.url}/{prefix}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return 409, {"error": f"You already created this {repo_type} repo", "url": url}, {
                    "X-Error-Message": f"You already created this {repo_type} repo"}
            self.created.append(payload)
            private = payload.get("private") is True or payload.get("visibility") == "private"
            self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _info(self, repo: Repo) -> dict:
        info = {"id": repo.repo_id, "sha": repo.sha, "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        if (card := repo.card_data()) is not None:
            info["cardData"] = card
        return info

    def _tree_entry(self, repo: Repo, path: str) -> dict:
        entry = {"type": "file", "path": path, "size": len(repo.files[path]), "oid": repo.oid(path)}
        if path in repo.lfs:
            entry["lfs"] = {"oid": repo.oid(path), "size": len(repo.files[path]), "pointerSize": 134}
        return entry

    def _preupload(self, repo: Repo, payload: dict) -> tuple[int, object, dict]:
        files = []
        for f in payload["files"]:
            lfs = _is_lfs(f["path"], base64.b64decode(f["sample"]), f["size"])
            oid = repo.oid(f["path"]) if f["path"] in repo.files else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {"files": files, "commitOid": repo.sha}, {}

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> tuple[int, object, dict]:
        if (repo_type, repo_id) not in self.repos:
            return 404, {"message": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        objects = []
        for obj in payload["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            held = self.lfs_objects.get(obj["oid"])
            if held is None or len(held) != obj["size"]:
                item["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}?size={obj['size']}",
                                              "header": {}}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _lfs_put(self, oid: str, body: bytes, size: int | None) -> tuple[int, object, dict]:
        if hashlib.sha256(body).hexdigest() != oid or (size is not None and len(body) != size):
            with self._lock:
                self.puts.append((oid, len(body), False))
            return 400, {"error": f"the body is not the announced object {oid} of {size} bytes"}, {}
        with self._lock:
            self.lfs_objects[oid] = body
            self.puts.append((oid, len(body), True))
        return 200, {}, {}

    def _commit(self, repo: Repo, revision: str, body: bytes) -> tuple[int, object, dict]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        commit = Commit(repo.repo_type, repo.repo_id, revision, header["summary"], header.get("description", ""))
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                commit.files[value["path"]] = base64.b64decode(value["content"])
                commit.paths.append(value["path"])
            elif item["key"] == "lfsFile":
                data = self.lfs_objects.get(value["oid"])
                if data is None or len(data) != value.get("size", len(data)):
                    return 422, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"}, {}
                commit.files[value["path"]] = data
                commit.lfs.append(value["path"])
                commit.paths.append(value["path"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                commit.deleted.append(value["path"])
            elif item["key"] != "header":
                return 400, {"error": f"the fake Hub does not take {item['key']} lines"}, {}
        commit.oid = hashlib.sha1(body).hexdigest()
        with self._lock:
            for path in commit.deleted:
                repo.files.pop(path, None)
                repo.lfs.discard(path)
            for path, data in commit.files.items():
                repo.files[path] = data
                (repo.lfs.add if path in commit.lfs else repo.lfs.discard)(path)
            repo.sha = commit.oid
            self.commits.append(commit)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {"commitUrl": f"{self.url}/{prefix}{commit.repo_id}/commit/{commit.oid}",
                     "commitOid": commit.oid, "pullRequestUrl": None}, {}

    def _take_drop(self, name: str) -> bool:
        with self._lock:
            if self.drop.get(name, 0) > 0:
                self.drop[name] -= 1
                return True
        return False


def _is_lfs(path: str, sample: bytes, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size >= LFS_MIN_SIZE or b"\0" in sample or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the Hub: a dropped connection is then a real surprise

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, method: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            route = self.path.split("?")[0]
            if method == "PUT" and LFS_UPLOAD.match(route) and hub._take_drop("put"):
                return self._drop_mid_body(route)
            body = self._read_body()
            hub.requests.append(Request(method, self.path, headers, body))
            if method == "POST" and route.endswith("/commit/main") and hub._take_drop("commit"):
                return self._drop()
            status, payload, extra = hub.answer(method, self.path, headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _drop_mid_body(self, route: str) -> None:
            """Read half of the upload, then cut the connection: what a network failure looks like."""
            length = int(self.headers.get("Content-Length") or 0)
            part = self.rfile.read(length // 2)
            hub.requests.append(Request("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}, part))
            with hub._lock:
                hub.puts.append((route.rsplit("/", 1)[-1], len(part), False))
            self._drop()

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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


def point_client_at(server: FakeHub, monkeypatch, tmp_path) -> None:
    """huggingface_hub in this process talks to ``server`` over LFS, online, with no token of its own
    (no HF_TOKEN, no cached login): each test passes the token it means."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_XET", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", server.url)
