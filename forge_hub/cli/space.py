"""``forge-hub space``: build the Gradio Space folder, and optionally push it as a Space repo.

    forge-hub space --out space-build [--push-to OWNER/NAME] [--hardware zero-a10g] [--private] [--exist-ok]

A thin wrapper over :mod:`forge_hub.space_bundle`; registered by :func:`forge_hub.cli.build_parser`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_space_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``space`` to the forge-hub command."""
    p = subparsers.add_parser(
        "space", help="build the Gradio Space (app, card, requirements, forge-hub's source) and push it",
        description="Write the folder a Hugging Face Space runs: space/app.py and its README.md, a requirements.txt "
        "with forge-hub's dependencies, and forge-hub's source beside the app (it is not installed from PyPI). "
        "Run from a clone of forge-hub. With --push-to, create or update that Space repo in one commit.")
    p.add_argument("--out", required=True, help="folder to write the Space into (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--push-to", metavar="OWNER/NAME", help="Space repo to create (or update with --exist-ok)")
    p.add_argument("--hardware", help="hardware for a new Space, e.g. zero-a10g for ZeroGPU (needs PRO), "
                   "cpu-basic (default: the Hub's default)")
    p.add_argument("--private", action="store_true", help="make a new Space private")
    p.add_argument("--exist-ok", action="store_true", help="update the Space if it exists")
    p.add_argument("--token-env", metavar="VAR", help="read the Hub token from this environment variable instead "
                   "of HF_TOKEN / the cached login (never pass a token on the command line)")
    p.set_defaults(handler=_cmd_space)


def _cmd_space(args: argparse.Namespace) -> int:
    from forge_hub.units import human_size
    from forge_hub.webapp.bundle import build_space, check_hardware, push_space

    check_hardware(args.hardware)
    if args.push_to:  # a bad id or a missing login fails before anything is written
        from forge_hub.cli.options import token_from
        from forge_hub.hub.common import check_repo_id, require_token

        check_repo_id(args.push_to, input="push_to")
        token = require_token(token_from(args))
    bundle = build_space(Path(args.out), overwrite=args.overwrite)
    size = sum((bundle.folder / f).stat().st_size for f in bundle.files)
    print(f"wrote the Space (Gradio {bundle.sdk_version}) to {bundle.folder}: {len(bundle.files)} files, "
          f"{human_size(size)}")
    if args.push_to:
        commit = push_space(bundle, args.push_to, token=token, private=args.private, exist_ok=args.exist_ok,
                            hardware=args.hardware)
        print(f"pushed: {commit}")
    return 0
