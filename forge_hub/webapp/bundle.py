"""The Gradio Space as a folder the Hub can build, and its upload as a Space repo.

A Space installs ``requirements.txt`` before the rest of its files are copied in, so it cannot
``pip install`` a package from its own repo, and forge-hub is not on PyPI. The bundle therefore
carries forge-hub's source next to ``app.py`` (the app's folder is first on ``sys.path``) and a
``requirements.txt`` with forge-hub's own dependencies, written from the installed package's
metadata, so it never drifts from ``pyproject.toml``::

    bundle = build_space(Path("space-build"))                    # from a clone of forge-hub
    push_space(bundle, "me/forge-hub", hardware="zero-a10g")     # ZeroGPU needs a PRO account

``space/requirements.txt`` in the repository is the same text (a test keeps them equal), so the
folder ``space/`` plus the two packages is exactly what the Hub receives.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from forge_hub import __version__
from forge_hub.errors import HubError, OutputError
from forge_hub.outputs.staging import OUTPUT_MARKER, staged_output

PACKAGES = ("forge_hub", "datasets_builders")  # copied whole: the app imports both
SPACE_FILES = ("app.py", "README.md")
SKIPPED = ("__pycache__", "*.pyc", "*.pyo")
SPACE_EXTRA = "space"
DISTRIBUTION = "forge-hub"
# An update replaces the packages whole: a module deleted from forge-hub must not linger in the Space.
REPLACED_ON_UPDATE = [f"{name}/**" for name in PACKAGES]


@dataclass(frozen=True)
class SpaceBundle:
    folder: Path
    files: list[str]  # paths relative to the folder, sorted
    sdk_version: str


def source_root() -> Path:
    """The clone forge-hub runs from: the folder holding ``space/`` and the packages."""
    return Path(__file__).resolve().parents[2]


def space_metadata(readme: Path) -> dict:
    """The YAML block of the Space's README.md (what the Hub reads: sdk, sdk_version, hf_oauth ...)."""
    from huggingface_hub import metadata_load

    data = metadata_load(readme)
    if data is None:
        raise OutputError(f"{readme} has no YAML header", "start the Space's README.md with its --- block")
    return data


def requirements_text(sdk_version: str) -> str:
    """forge-hub's runtime and Space dependencies, with Gradio pinned to the Space's sdk_version.

    Spaces install ``gradio==sdk_version`` themselves; naming the same pin with the ``[oauth]``
    extra adds what the login button needs (without it the app fails at launch).
    """
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError as exc:
        raise OutputError("forge-hub is not installed, so its dependencies cannot be read",
                          "install it from the clone first: pip install -e '.[space]'") from exc
    lines = []
    for requirement in requires:
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        if marker and marker.replace("'", '"') != f'extra == "{SPACE_EXTRA}"':
            continue  # other extras (dev, gguf, ...) and platform-only lines stay out
        if re.match(r"gradio\b", spec):
            spec = f"gradio[oauth]=={sdk_version}"
        lines.append(spec)
    header = ("# Written by `forge-hub space` from forge-hub's package metadata; do not edit by hand.\n"
              "# forge-hub itself travels next to app.py (the Space cannot install it from PyPI).\n")
    return header + "\n".join(lines) + "\n"


def build_space(out: Path, *, root: Path | None = None, overwrite: bool = False) -> SpaceBundle:
    """Write the deployable Space folder ``out``: app, card, requirements and forge-hub's source."""
    root = Path(root or source_root())
    space = root / "space"
    missing = [p for p in (*(space / f for f in SPACE_FILES), *(root / p for p in PACKAGES)) if not p.exists()]
    if missing:
        raise OutputError(f"cannot build the Space: {', '.join(map(str, missing))} not found",
                          "run `forge-hub space` from a clone of forge-hub (git clone, then pip install -e '.[space]')")
    sdk_version = str(space_metadata(space / "README.md").get("sdk_version") or "")
    if not sdk_version:
        raise OutputError(f"{space / 'README.md'} names no sdk_version", "add `sdk_version: <gradio version>`")
    with staged_output(out, overwrite=overwrite, kind="space",
                       sources=[space, *(root / package for package in PACKAGES)]) as tmp:
        for name in SPACE_FILES:
            shutil.copy2(space / name, tmp / name)
        for package in PACKAGES:
            shutil.copytree(root / package, tmp / package, ignore=shutil.ignore_patterns(*SKIPPED))
        (tmp / "requirements.txt").write_text(requirements_text(sdk_version), encoding="utf-8")
    folder = Path(out).expanduser().resolve()
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != OUTPUT_MARKER)
    return SpaceBundle(folder, files, sdk_version)


def push_space(bundle: SpaceBundle, repo_id: str, *, token: str | None = None, private: bool = False,
               exist_ok: bool = False, hardware: str | None = None) -> str:
    """Create the Space repo (Gradio SDK; ``hardware`` such as ``zero-a10g`` for ZeroGPU) or update
    it, and commit the bundle in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    from forge_hub.hub.common import check_repo_id, create_repo, hub_errors, require_token

    check_repo_id(repo_id, input="push_to")
    check_hardware(hardware)
    token = require_token(token)
    api = HfApi(token=token)
    with hub_errors(repo_id, card_fix="check the YAML block of space/README.md (sdk, sdk_version, hf_oauth_scopes)"):
        create_repo(api, repo_id, exist_ok=exist_ok, exists_fix="use {exist_ok} to update the Space",
                    repo_type="space", space_sdk="gradio", space_hardware=hardware, private=private or None)
        info = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=bundle.folder,
                                 ignore_patterns=[OUTPUT_MARKER],
                                 commit_message=f"forge-hub {__version__}{_commit_suffix()}",
                                 delete_patterns=REPLACED_ON_UPDATE)
    return info.commit_url


def check_hardware(hardware: str | None) -> None:
    """A Space hardware name the Hub knows (huggingface_hub's list), or None for the Hub's default."""
    from huggingface_hub import SpaceHardware

    known = [h.value for h in SpaceHardware]
    if hardware is not None and hardware not in known:
        raise HubError(f"unknown Space hardware {hardware!r}", f"use one of: {', '.join(known)}")


def _commit_suffix() -> str:
    """`` (git abc1234)`` when running from a git clone, so a Space says which code it runs."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source_root(), capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" (git {sha})" if sha else ""
