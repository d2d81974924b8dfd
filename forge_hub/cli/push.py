"""``forge-hub push``: publish an abliterated model folder on the Hub (card, results, direction, GGUF).

    forge-hub push DIR --repo OWNER/NAME [--private] [--exist-ok] [--gguf TYPES] [--gguf-repo [OWNER/NAME]]
                   [--results FILE] [--license ID] [--base-model ID] [--message MSG] [--dry-run] [--token-env VAR]
                   [--evaluate-against BASE | --no-gguf-check]

A thin wrapper over :func:`forge_hub.pipeline.push`, which checks every input that can fail
(folder, repo names, GGUF types, token) before a long GGUF export and before the first request.
GGUF files are measured before they are sent (refusals, over-refusal, KL from the base model),
so a quantization that brought refusals back is seen, and warned about, before it is public.
"""

from __future__ import annotations

import argparse

from forge_hub.cli.options import add_gguf_check_options, add_publish_options, gguf_check_options, gguf_repo, token_from


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``push`` to the forge-hub command."""
    p = subparsers.add_parser(
        "push", help="publish an abliterated model folder on the Hub (card, results, direction, GGUF)",
        description="Create the Hub repo and upload the model folder written by `forge-hub apply` or `run` in one "
        "commit: the safetensors shards and index, config, tokenizer, chat template and generation config, the "
        "direction artifact, the evaluation results and a model card built from them. The token comes from "
        "HF_TOKEN or `hf auth login` (or --token-env) and is never printed.",
        epilog="The Hub address is HF_ENDPOINT. Re-running a push with --exist-ok sends only what the Hub lacks.")
    p.add_argument("folder", metavar="DIR", help="the abliterated model folder (--out of apply or run)")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub model repo (created if missing)")
    add_publish_options(p, after_run=False)
    p.add_argument("--gguf-file", action="append", default=[], metavar="FILE",
                   help="a GGUF file written before (NAME-TYPE.gguf, e.g. by `forge-hub gguf`); repeatable")
    p.add_argument("--results", metavar="FILE", help="results JSON of `forge-hub evaluate` for the card and the "
                   "model page (default: evaluation.json or results.json in DIR)")
    p.add_argument("--license", metavar="ID", help="the base model's Hub licence id (default: read from its card)")
    p.add_argument("--base-model", metavar="OWNER/NAME",
                   help="the base model's Hub id, when the direction was computed on a local folder or GGUF file")
    p.add_argument("--message", metavar="MSG", help="commit message (default: base, method, layer and refusals)")
    p.add_argument("--dry-run", action="store_true",
                   help="build the upload folder and the card and list them; send nothing (no token needed)")
    add_gguf_check_options(p, push=True)
    p.set_defaults(handler=_cmd_push)


def _cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forge_hub.cli.gguf import print_gguf_check
    from forge_hub.hub.card import GGUFVariant, artifact_metadata
    from forge_hub.hub.push import print_result, select_files
    from forge_hub.outputs.gguf.export import check_types
    from forge_hub.pipeline import push

    check = None
    if (args.gguf or args.gguf_file) and args.gguf_check:
        folder = Path(args.folder).expanduser()
        select_files(folder.resolve())  # what fails fast fails before the check's set-up: the folder, the GGUF
        check_types(args.gguf)  # types and files
        for given in args.gguf_file:
            GGUFVariant.from_path(given)
        meta = artifact_metadata(folder)
        base = args.evaluate_against or (meta.model if meta else None)
        check = gguf_check_options(args, base, None if args.evaluate_against else meta.revision if meta else None)
    result = push(args.folder, args.repo, token=token_from(args), private=args.private, exist_ok=args.exist_ok,
                     gguf_types=args.gguf, gguf_repo=gguf_repo(args, args.repo), gguf_files=args.gguf_file,
                     results=args.results, license=args.license, base_model=args.base_model, message=args.message,
                     dry_run=args.dry_run, gguf_check=check, on_gguf_check=print_gguf_check)
    print_result(result)
    return 0
