"""Outputs appear whole or not at all.

Everything forge-hub writes goes to a hidden temporary folder beside the destination and is
renamed into place only once complete, so an interrupted run, a full disk or a crash leaves
no half-written model that looks finished.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from forge_hub.errors import OutputError


@contextmanager
def staged_output(destination: str | Path, overwrite: bool = False, needed_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``destination``, on error it is removed."""
    dest = Path(destination).expanduser().resolve()
    if dest.exists() and not overwrite:
        raise OutputError(f"output folder {dest} already exists", "choose another {out}, or allow {overwrite}",
                          input="out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if needed_bytes and free < needed_bytes:
        raise OutputError(f"not enough disk space in {dest.parent}: {needed_bytes / 1e9:.2f} GB needed, "
                          f"{free / 1e9:.2f} GB free", "free some space or write {out} to a larger disk", input="out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield tmp
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing {dest}", "free some space or write {out} to a larger disk",
                              input="out") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _usual_permissions(tmp)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)


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


def write_file(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: a hidden temporary file beside it, renamed over it
    once complete (a crash or a full disk never leaves half a results file that looks finished)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
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
