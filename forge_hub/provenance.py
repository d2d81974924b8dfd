"""Which forge-hub made a file: its version, the source commit when it runs from a git checkout,
and that source tree as a wheel, so a model card can say how to install exactly this code."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from forge_hub import __version__


def source_root() -> Path | None:
    """The checkout forge-hub runs from (the folder holding pyproject.toml), None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "forge-hub"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


@functools.cache
def source_commit() -> str | None:
    """The git commit of the checkout, with ``-dirty`` when its tracked files have changes; None
    outside a git checkout."""
    root = source_root()
    if root is None or not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def version_label() -> str:
    """``0.1.0`` or ``0.1.0 (commit abc1234)``: what a card or a log says made a file."""
    commit = source_commit()
    return f"{__version__} (commit {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})" if commit \
        else __version__


@functools.cache
def source_wheel() -> Path | None:
    """This source tree built as a wheel (once per process, in a temporary folder), so a pushed model
    can carry the exact code that made it; None for an installed wheel or when the build fails."""
    root = source_root()
    if root is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="forge-hub-wheel-"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir",
                        str(out), str(root)], check=True, capture_output=True, timeout=600,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})  # fixed zip times: same code, same bytes
    except (OSError, subprocess.SubprocessError):
        return None
    wheels = sorted(out.glob("forge_hub-*.whl"))
    return wheels[0] if wheels else None
