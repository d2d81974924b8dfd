"""``forge-hub datasets``: build the refusal prompt dataset and publish it on the Hub.

    forge-hub datasets build --out DIR [--sources a,b] [--url SOURCE=URL]... [--push-to ORG/NAME [--private]]
    forge-hub datasets push DIR --to ORG/NAME [--private]

Thin wrappers over :mod:`forge_hub.prompt_dataset`; registered by :func:`forge_hub.cli.build_parser`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forge_hub.errors import PromptError

SOURCES_HELP = ("curated, advbench, harmbench, jailbreakbench, maliciousinstruct, tdc2023, arditi, sumandora "
                "(a family picks both of its sides; NAME-harmful / NAME-harmless pick one), and xstest (an "
                "evaluation set of its own: safe prompts that look unsafe, and unsafe contrasts)")


def add_datasets_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``datasets build`` and ``datasets push`` to the forge-hub command."""
    datasets = subparsers.add_parser("datasets", help="build and publish the refusal prompt dataset",
                                     description="The harmful and harmless prompt lists as a Hugging Face dataset "
                                     "(parquet per config and split, plus a card) that compute/run use by default "
                                     "and any project can load with datasets.load_dataset.")
    sub = datasets.add_subparsers(title="datasets commands", metavar="COMMAND")
    datasets.set_defaults(handler=lambda args: datasets.print_help() or 2)

    build = sub.add_parser("build", help="fetch every source and write the dataset to a folder",
                           description="Fetch the sources, normalise, deduplicate and split them, and write the "
                           "dataset in the Hub repo layout (data/CONFIG/SPLIT-*.parquet and README.md).")
    build.add_argument("--out", required=True, help="output folder (written atomically)")
    build.add_argument("--sources", help=f"comma-separated sources to include (default: all): {SOURCES_HELP}")
    build.add_argument("--url", action="append", default=[], metavar="SOURCE=URL",
                       help="fetch SOURCE (a config name such as advbench or arditi-harmless) from this URL or local "
                       "file instead of its public URL; repeat the flag for sources made of several files")
    build.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    build.add_argument("--push-to", metavar="ORG/NAME", help="then publish the folder to this Hub dataset repo "
                       "(token from HF_TOKEN or `hf auth login`)")
    build.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push-to)")
    build.set_defaults(handler=_cmd_build)

    push = sub.add_parser("push", help="publish a folder written by `datasets build` to the Hub, in one commit")
    push.add_argument("folder", help="the built dataset folder")
    push.add_argument("--to", required=True, metavar="ORG/NAME", help="Hub dataset repo (created if missing)")
    push.add_argument("--private", action="store_true", help="create the Hub repo as private")
    push.set_defaults(handler=_cmd_push)


def parse_names(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None or blank -> None (meaning all)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


def parse_urls(pairs: list[str]) -> dict[str, list[str]]:
    """``["advbench=/a.csv", "tdc2023=/d.json", "tdc2023=/t.json"]`` -> one list of URLs per source."""
    urls: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise PromptError(f"--url {pair!r} is not SOURCE=URL", "write it as e.g. --url advbench=./advbench.csv")
        urls.setdefault(name.strip(), []).append(url.strip())
    return urls


def _cmd_build(args: argparse.Namespace) -> int:
    from forge_hub.hub.datasets import build_dataset, check_push

    if args.push_to:
        check_push(args.push_to)  # a bad id or a missing token fails now, not after the build
    counts = build_dataset(args.out, sources=parse_names(args.sources), urls=parse_urls(args.url),
                           overwrite=args.overwrite, repo_id=args.push_to)
    print(f"\n{'config':26s} {'train':>8s} {'validation':>11s} {'test':>8s}")
    for config, splits in counts.items():
        print(f"{config:26s} {splits.get('train', 0):8d} {splits.get('validation', 0):11d} {splits.get('test', 0):8d}")
    out = Path(args.out).resolve()
    print(f"\nwrote {out}")
    if args.push_to:
        harmful = sum(counts["harmful"].values())
        harmless = sum(counts["harmless"].values())
        message = f"Refusal prompts: {harmful} harmful, {harmless} harmless, {len(counts)} configs"
        _push(out, args.push_to, args.private, f"{message} (forge-hub datasets build)")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    _push(Path(args.folder), args.to, args.private, None)
    return 0


def _push(folder: Path, repo_id: str, private: bool, message: str | None) -> None:
    from forge_hub.hub.datasets import push_dataset

    url = push_dataset(folder, repo_id, private=private, commit_message=message)
    print(f"pushed {folder} to {repo_id}: {url}")
