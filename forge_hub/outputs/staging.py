"""Outputs appear whole or not at all, and nothing else is ever lost.

Everything forge-hub writes goes to a hidden temporary folder beside the destination
(``.NAME.partial-*``) and is renamed into place only once complete, so an interrupted run, a full
disk or a crash leaves no half-written model that looks finished. One rule decides what an output
may be (:func:`check_output`), for every command that writes:

- never empty, never the current directory, never a folder holding it;
- never a source, a folder holding a source, or a folder inside a source folder;
- an existing folder only with ``overwrite``, and then only one that a forge-hub run wrote, of the
  same kind (each finished output carries a small ``.forge-hub-output.json`` marker);
- its parent a writable folder.

The final rename never replaces a folder that appeared meanwhile (Linux's no-replace rename),
so of two runs writing the same output the second gets a clear error instead of deleting the
first's work. A partial folder carries a marker naming the process that writes it; the next run
for the same output removes those whose process is gone, and says so.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from forge_hub.errors import OutputError

OUTPUT_MARKER = ".forge-hub-output.json"
PARTIAL_MARKER = ".forge-hub-partial.json"
KINDS = ("model", "directions", "dataset", "space")
# How outputs written before the marker existed are recognised, per kind: files they always hold.
_LEGACY_SIGNATURES = {
    "model": ("refusal.json", "abliteration.json"),
    "directions": ("refusal.json", "refusal.safetensors"),
    "dataset": ("README.md", "data"),
    "space": ("app.py", "forge_hub"),
}


def check_output(destination: str | Path, *, overwrite: bool = False, kind: str = "model",
                 sources: Iterable[str | Path] = (), needed_bytes: int = 0) -> Path:
    """Every check of an output folder that can be made before the work starts; returns its path.

    ``sources`` are local paths the work reads (a model folder or file): the output may not be,
    hold, or sit inside any of them. Raises :class:`OutputError` naming the problem and the fix.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    text = str(destination).strip()
    if not text:
        raise OutputError("no output folder given", "name a new folder as {out}", input="out")
    dest = Path(text).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if dest == cwd or dest in cwd.parents:
        raise OutputError(f"the output folder {dest} is the current directory or holds it",
                          "name a new folder as {out}, e.g. ./my-model-abliterated", input="out")
    for source in sources:
        source = Path(source).expanduser().resolve()
        if dest == source or dest in source.parents:
            raise OutputError(f"the output folder {dest} is the source {source} or holds it",
                              "choose another {out}; the source is never modified", input="out")
        if source.is_dir() and source in dest.parents:
            raise OutputError(f"the output folder {dest} is inside the source folder {source}",
                              "choose an {out} outside the source; the source is never modified", input="out")
    _check_parent(dest)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise OutputError(f"{dest} exists and is not a folder", "choose another {out}", input="out")
        if not overwrite:
            raise OutputError(f"output folder {dest} already exists", "choose another {out}, or allow {overwrite}",
                              input="out")
        if any(dest.iterdir()) and written_kind(dest) != kind:
            what = f"a forge-hub {written_kind(dest)} output" if written_kind(dest) else "not a forge-hub output"
            raise OutputError(f"{dest} is {what}, so {{overwrite}} will not replace it with a {kind} output",
                              "choose another {out}; overwriting only replaces a previous output of the same kind",
                              input="out")
    free = shutil.disk_usage(_existing_ancestor(dest)).free
    if needed_bytes and free < needed_bytes:
        raise OutputError(f"not enough disk space for {dest}: {needed_bytes / 1e9:.2f} GB needed, "
                          f"{free / 1e9:.2f} GB free", "free some space or write {out} to a larger disk", input="out")
    return dest


def written_kind(folder: Path) -> str | None:
    """The kind of forge-hub output ``folder`` is (its marker, or the files older outputs always
    hold), or None when forge-hub did not write it."""
    marker = folder / OUTPUT_MARKER
    try:
        kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        if kind in KINDS:
            return kind
    except (OSError, ValueError, AttributeError):
        pass
    for kind, names in _LEGACY_SIGNATURES.items():
        if all((folder / name).exists() for name in names) and (kind != "directions" or not
                                                                (folder / "abliteration.json").exists()):
            return kind
    return None


@contextmanager
def staged_output(destination: str | Path, overwrite: bool = False, needed_bytes: int = 0, *, kind: str = "model",
                  sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``destination``, on any error or interruption
    it is removed. The checks of :func:`check_output` run again here, right before the writing."""
    sources = list(sources)
    dest = check_output(destination, overwrite=overwrite, kind=kind, sources=sources, needed_bytes=needed_bytes)
    clean_stale(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {dest.parent}: {exc.strerror}", "choose a writable {out}",
                          input="out") from exc
    try:
        _write_json(tmp / PARTIAL_MARKER, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                          "command": " ".join(sys.argv), "destination": str(dest)})
        yield tmp
        (tmp / PARTIAL_MARKER).unlink()
        _write_json(tmp / OUTPUT_MARKER, {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                         "forge_hub_version": _version()})
        _usual_permissions(tmp)
        _move_into_place(tmp, dest, overwrite=overwrite, kind=kind)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing {dest}", "free some space or write {out} to a larger disk",
                              input="out") from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"cannot write {dest}: {exc.strerror}", "choose a writable {out}", input="out") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale(dest: Path) -> list[Path]:
    """Remove what interrupted runs for ``dest`` left beside it: partial folders whose process is gone
    (a live one belongs to a run still writing, and is left alone), and the previous output an
    interrupted overwrite had moved aside (put back if ``dest`` is missing). Says what it did."""
    handled = []
    if not dest.parent.is_dir():
        return handled
    for partial in sorted(dest.parent.glob(f".{dest.name}.partial-*")):
        owner = _read_json(partial / PARTIAL_MARKER)
        if owner and owner.get("host") == socket.gethostname() and _alive(owner.get("pid")):
            print(f"note: {partial} belongs to a forge-hub run still going (process {owner['pid']}); left alone",
                  file=sys.stderr)
            continue
        if owner is None and time.time() - partial.stat().st_mtime < 24 * 3600:
            print(f"note: {partial} is a partial output of unknown origin; remove it when no run is writing "
                  f"{dest.name}", file=sys.stderr)
            continue
        shutil.rmtree(partial, ignore_errors=True)
        handled.append(partial)
        print(f"note: removed {partial}, left by an interrupted run ({(owner or {}).get('command', 'unknown')})",
              file=sys.stderr)
    for old in sorted(dest.parent.glob(f".{dest.name}.old-*")):
        if not dest.exists():
            old.rename(dest)
            print(f"note: put back {dest}, which an interrupted overwrite had moved aside", file=sys.stderr)
        else:
            shutil.rmtree(old, ignore_errors=True)
            print(f"note: removed {old}, an output an interrupted overwrite had already replaced", file=sys.stderr)
        handled.append(old)
    return handled


def _move_into_place(tmp: Path, dest: Path, *, overwrite: bool, kind: str) -> None:
    """Rename ``tmp`` to ``dest`` without ever replacing a folder that appeared meanwhile; with
    ``overwrite``, the previous output of the same kind is moved aside first and removed after."""
    old = None
    if dest.exists() and overwrite:
        if any(dest.iterdir()) and written_kind(dest) != kind:  # it changed since the check
            raise OutputError(f"{dest} changed while this run was writing and is no longer a {kind} output",
                              "choose another {out}", input="out")
        old = dest.with_name(f".{dest.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        dest.rename(old)
    try:
        rename_no_replace(tmp, dest)
    except FileExistsError as exc:  # another run put its output there first: keep it, say so
        raise OutputError(f"{dest} appeared while this run was writing (another run wrote it first)",
                          "choose another {out}, or allow {overwrite} and run again", input="out") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError when ``dst`` exists, atomically where the
    system has a no-replace rename (Linux's renameat2), else with a check right before the rename."""
    libc = _libc()
    if libc is not None:
        if libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS):  # the file system or kernel lacks it: fall back
            raise OSError(err, os.strerror(err), str(dst))
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)  # a non-empty folder at dst makes this fail too
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(exc.errno, exc.strerror, str(dst)) from exc
        raise


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "renameat2") else None
    except OSError:
        return None


def _check_parent(dest: Path) -> None:
    """The folder that will hold ``dest`` must be a folder, and writable (or creatable)."""
    ancestor = _existing_ancestor(dest.parent)
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {dest}: {ancestor} is a file, not a folder", "choose another {out}",
                          input="out")
    try:  # a real probe: permission bits say nothing for root, or on a read-only file system
        handle, probe = tempfile.mkstemp(prefix=".forge-hub-probe-", dir=ancestor)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write in {ancestor}: {exc.strerror}", "choose a writable {out}",
                          input="out") from exc


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _version() -> str:
    from forge_hub import __version__

    return __version__


def _usual_permissions(folder: Path) -> None:
    """mkdtemp makes the folder private, and some writers (safetensors) make their files private
    too: the finished output gets the modes any other new file of this user would have."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777 & ~umask)
        elif path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            path.chmod(0o666 & ~umask)


def check_output_file(path: str | Path, *, sources: Iterable[str | Path] = ()) -> Path:
    """The checks for a single output file (a results JSON): a path, not a folder, not a source,
    in a writable folder."""
    text = str(path).strip()
    if not text:
        raise OutputError("no output file given", "name a file as {out}", input="out")
    target = Path(text).expanduser().resolve()
    if target.is_dir():
        raise OutputError(f"{target} is a folder", "name a file as {out}, e.g. results.json", input="out")
    for source in sources:
        source = Path(source).expanduser().resolve()
        if target == source or source in target.parents and source.is_dir():
            raise OutputError(f"{target} is, or is inside, the source {source}",
                              "write {out} elsewhere; the source is never modified", input="out")
    _check_parent(target)
    return target


def write_file(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: a hidden temporary file beside it, renamed over it
    once complete (a crash or a full disk never leaves half a results file that looks finished)."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}", "choose a writable {out}", input="out") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
