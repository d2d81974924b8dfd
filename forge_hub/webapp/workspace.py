"""One private folder per front-end session, removed when the session ends.

A hosted app serves many visitors at once; each one's directions, abliterated model, results and
GGUF files live in their own folder under one root, named by a hash of the session id (a
client-chosen string, so it never becomes a path by itself). The Space removes a folder when
its browser tab closes; :meth:`SessionFolders.sweep` removes the ones whose sessions vanished
without saying so (API clients, crashes).

    folders = SessionFolders()                  # $FORGE_HUB_SPACE_WORKDIR or a temp dir
    ws = folders.open(request.session_hash)
    artifact.save(ws.directions)
    ...
    folders.remove(request.session_hash)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_ENV = "FORGE_HUB_SPACE_WORKDIR"
DISK_CAP_ENV = "FORGE_HUB_SPACE_SESSION_GB"  # disk one session may fill (models, results)
DEFAULT_DISK_CAP_BYTES = 40 * 10**9
DEFAULT_MAX_AGE_SECONDS = 6 * 3600
SWEEP_INTERVAL_SECONDS = 600
SESSION_FILE = "session.json"


@dataclass(frozen=True)
class Workspace:
    """The fixed layout of one session's folder."""

    path: Path

    @property
    def directions(self) -> Path:
        return self.path / "directions"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def search(self) -> Path:
        """The optional parameter search: its study file, directions cache and front plot."""
        return self.path / "search"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def gguf(self) -> Path:
        return self.path / "gguf"

    def save_state(self, **values: Any) -> None:
        """Remember what later steps need (the source model, its local copy); never secrets."""
        state = self.state() | values
        (self.path / SESSION_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    def state(self) -> dict[str, Any]:
        file = self.path / SESSION_FILE
        return json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())

    def check_room(self, more_bytes: int, cap: int | None = None) -> None:
        """Refuse a step that would make this session hold more than its share of the disk."""
        from forge_hub.errors import OutputError
        from forge_hub.units import human_size

        cap = cap if cap is not None else disk_cap()
        used = self.used_bytes()
        if used + more_bytes > cap:
            raise OutputError(f"this step would need {human_size(more_bytes)} more disk, and the session already "
                              f"holds {human_size(used)} of its {human_size(cap)}",
                              "pick a smaller model, or run forge-hub on your own machine")

    def reset(self) -> None:
        """Forget every result: a new compute starts a new chain of steps."""
        for item in self.path.iterdir():
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()


def disk_cap() -> int:
    """Bytes one session may hold: $FORGE_HUB_SPACE_SESSION_GB, else 40 GB."""
    value = os.environ.get(DISK_CAP_ENV)
    return int(float(value) * 1e9) if value else DEFAULT_DISK_CAP_BYTES


class SessionFolders:
    """Session id -> :class:`Workspace`, created on first use under one root folder."""

    def __init__(self, root: str | Path | None = None, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS) -> None:
        root = root or os.environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "forge-hub-space"
        self.root = Path(root)
        self.max_age_seconds = max_age_seconds

    def path_for(self, session_id: str) -> Path:
        if not session_id:
            raise ValueError("a session id is needed to give the session its folder")
        return self.root / hashlib.sha256(session_id.encode()).hexdigest()[:32]

    def open(self, session_id: str) -> Workspace:
        """The session's workspace, created (and stale ones swept) on first use."""
        path = self.path_for(session_id)
        if not path.is_dir():
            self.sweep()
            path.mkdir(parents=True, mode=0o700)
        os.utime(path)  # marks the session as alive for sweep()
        return Workspace(path)

    def remove(self, session_id: str) -> bool:
        path = self.path_for(session_id)
        existed = path.exists()
        shutil.rmtree(path, ignore_errors=True)
        return existed

    def start_sweeper(self, interval: float = SWEEP_INTERVAL_SECONDS) -> threading.Thread:
        """Sweep every ``interval`` seconds in a daemon thread, so sessions that vanished without
        saying so (API clients, crashes) do not fill the disk while nobody opens a new one."""
        def loop() -> None:
            while True:
                time.sleep(interval)
                self.sweep()

        thread = threading.Thread(target=loop, name="forge-hub-sweeper", daemon=True)
        thread.start()
        return thread

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove folders not used for ``max_age_seconds``; returns what was removed."""
        if not self.root.is_dir():
            return []
        now = time.time() if now is None else now
        removed = []
        for path in self.root.iterdir():
            if path.is_dir() and now - path.stat().st_mtime > self.max_age_seconds:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed
