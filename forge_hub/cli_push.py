"""``forge-hub push`` and ``forge-hub run --push-to``: publish an abliterated model on the Hub.

    forge-hub push DIR --repo OWNER/NAME [--private] [--exist-ok] [--gguf TYPES] [--gguf-repo [OWNER/NAME]]
                   [--results FILE] [--license ID] [--base-model ID] [--message MSG] [--dry-run] [--token-env VAR]

Thin wrappers over :func:`forge_hub.hub.push_model`; registered by :func:`forge_hub.cli.build_parser`.
Every check that can fail (folder, repo names, GGUF types, token) runs before a long GGUF export
or a whole ``run``, and before the first request to the Hub.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import HubError, MissingDependencyError

AUTO = "<OWNER/NAME>-GGUF"


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
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--exist-ok", action="store_true",
                   help="upload into an existing repo (same-named files replaced, stale weight shards removed)")
    p.add_argument("--gguf", metavar="TYPES", help="also write GGUF files of these types (F16,Q8_0,Q4_K_M, ...), "
                   "named NAME-TYPE.gguf, and upload them")
    p.add_argument("--gguf-repo", nargs="?", const=AUTO, metavar="OWNER/NAME",
                   help=f"put the GGUF files in a separate repo with its own card (alone: {AUTO}; put DIR first)")
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
    p.add_argument("--token-env", metavar="VAR", help="read the token from this environment variable instead "
                   "of HF_TOKEN / the cached login (never pass a token on the command line)")
    p.set_defaults(handler=_cmd_push)


def add_run_push_args(p: argparse.ArgumentParser) -> None:
    """``--push-to`` and friends for ``forge-hub run``: publish the output folder when it is written."""
    g = p.add_argument_group("publishing (see `forge-hub push --help`)")
    g.add_argument("--push-to", metavar="OWNER/NAME", help="then push the output folder to this Hub model repo")
    g.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push-to)")
    g.add_argument("--exist-ok", action="store_true", help="push into an existing repo (with --push-to)")
    g.add_argument("--gguf", metavar="TYPES", help="also write GGUF files of these types, e.g. F16,Q8_0,Q4_K_M, "
                   "and push them (with --push-to)")
    g.add_argument("--gguf-repo", nargs="?", const=AUTO, metavar="OWNER/NAME",
                   help=f"put the GGUF files in a separate repo (alone: {AUTO})")


def check_run_push(args: argparse.Namespace) -> None:
    """Before a run's long compute: repo names, GGUF types, token, and an output that can be pushed."""
    if not args.push_to:
        if args.gguf or args.gguf_repo or args.private or args.exist_ok:
            raise HubError("--gguf, --gguf-repo, --private and --exist-ok only apply with --push-to",
                           "add --push-to OWNER/NAME, or write GGUF files later with `forge-hub gguf`")
        return
    from .hub import check_push_target

    if str(args.model).endswith(".gguf") and not args.to_safetensors:
        raise HubError("a GGUF source is edited as GGUF, which `push` does not publish",
                       "add --to-safetensors to write (and push) a safetensors model folder")
    _gguf_types(args.gguf)
    check_push_target(args.push_to, gguf_repo=_gguf_repo(args.gguf_repo, args.push_to))


def push_after_run(args: argparse.Namespace) -> int:
    """``run --push-to``: push the folder the run just wrote."""
    if not args.push_to:
        return 0
    return _push(Path(args.out), args.push_to, private=args.private, exist_ok=args.exist_ok, gguf=args.gguf,
                 gguf_repo=args.gguf_repo)


def _cmd_push(args: argparse.Namespace) -> int:
    return _push(Path(args.folder), args.repo, private=args.private, exist_ok=args.exist_ok, gguf=args.gguf,
                 gguf_repo=args.gguf_repo, gguf_files=args.gguf_file, results=args.results, license=args.license,
                 base_model=args.base_model, message=args.message, dry_run=args.dry_run,
                 token=_token_from(args.token_env))


def _push(folder: Path, repo_id: str, *, private: bool = False, exist_ok: bool = False, gguf: str | None = None,
          gguf_repo: str | None = None, gguf_files: Sequence[str] = (), results: str | None = None,
          license: str | None = None, base_model: str | None = None, message: str | None = None,
          dry_run: bool = False, token: str | None = None) -> int:
    from .hub import check_push_inputs, print_result, push_model

    types = _gguf_types(gguf)
    gguf_repo = _gguf_repo(gguf_repo, repo_id)
    token = check_push_inputs(folder, repo_id, gguf_repo=gguf_repo, token=token, dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="forge-hub-gguf-") as tmp:
        files = [Path(f) for f in gguf_files]
        if types:
            files += _export(folder, Path(tmp), types, repo_id.split("/")[-1])
        result = push_model(folder, repo_id, token=token, private=private, exist_ok=exist_ok, gguf_files=files,
                            gguf_repo=gguf_repo, results=Path(results) if results else None, license=license,
                            commit_message=message, dry_run=dry_run, base_model=base_model)
    print_result(result)
    return 0


def _gguf_types(text: str | None) -> list[str]:
    """Checked before any work: an unknown type, or a k-quant without llama.cpp's quantizer, fails
    before the export, the run and the upload."""
    if not text:
        return []
    try:
        from .gguf_llama_cpp import llama_cpp_dir, require_quantizer
        from .gguf_quant import LLAMA_CPP_TYPES, parse_types
    except ImportError as exc:
        raise MissingDependencyError("GGUF export is not available in this installation",
                                     "install forge-hub with GGUF support (`pip install 'forge-hub[gguf]'`)") from exc
    types = parse_types(text)
    k_quants = [t for t in types if t in LLAMA_CPP_TYPES]
    if k_quants:
        require_quantizer(llama_cpp_dir(None), k_quants)
    return types


def _gguf_repo(value: str | None, repo_id: str) -> str | None:
    return f"{repo_id}-GGUF" if value == AUTO else value


def _export(folder: Path, out: Path, types: list[str], name: str) -> list[Path]:
    """GGUF files named the gguf-my-repo way (NAME-TYPE.gguf), into a folder removed after the push."""
    try:
        from .gguf_export import export_gguf
    except ImportError as exc:
        raise MissingDependencyError("GGUF export is not available in this installation",
                                     "install forge-hub with GGUF support (`pip install 'forge-hub[gguf]'`)") from exc
    return export_gguf(folder, out, types, name=name)


def _token_from(variable: str | None) -> str | None:
    """``--token-env VAR``: the token from that variable (None: HF_TOKEN, then the cached login)."""
    if variable is None:
        return None
    token = os.environ.get(variable, "").strip()
    if not token:
        raise HubError(f"--token-env {variable}: that environment variable is not set or empty",
                       f"export {variable}=<a write token> first, or leave out --token-env to use HF_TOKEN / "
                       "`hf auth login`")
    return token
