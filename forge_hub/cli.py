"""The ``forge-hub`` command line: thin wrappers over :mod:`forge_hub.pipeline`.

    forge-hub compute MODEL --out DIRECTIONS     measure refusal directions and pick a layer
    forge-hub apply MODEL --directions DIRECTIONS --out DIR
    forge-hub run MODEL --out DIR                 compute, then apply
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cli_datasets import add_datasets_parser
from .errors import ForgeHubError
from .plan import EMBEDDING_MODES, AblationSettings

EPILOG = "Models: a Hub id (owner/name), a local Hugging Face folder, or a .gguf file."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except ForgeHubError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # invalid settings reach here from the library's own checks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was left behind", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge-hub", description="Remove refusal behaviour from chat models by "
                                     "abliteration, measure it and publish it.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"forge-hub {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    compute = sub.add_parser("compute", help="compute refusal directions and choose a layer", epilog=EPILOG)
    _model_args(compute)
    _compute_args(compute)
    _settings_args(compute)
    compute.add_argument("--out", required=True, help="folder for refusal.safetensors + refusal.json")
    compute.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    compute.set_defaults(handler=_cmd_compute)

    apply = sub.add_parser("apply", help="write an abliterated copy of a model", epilog=EPILOG)
    apply.add_argument("model", help="the source model (never modified)")
    apply.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    apply.add_argument("--directions", required=True, help="folder written by `forge-hub compute`")
    apply.add_argument("--out", required=True, help="output folder (written atomically)")
    apply.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    apply.add_argument("--dtype", default="auto", help="dtype for --to-safetensors: auto, bf16, fp16, fp32")
    apply.add_argument("--to-safetensors", action="store_true",
                       help="write a GGUF source as a safetensors folder instead of an edited .gguf")
    apply.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code")
    apply.add_argument("--allow-other-model", action="store_true",
                       help="apply a direction computed on a different model of the same shape")
    _settings_args(apply)
    apply.set_defaults(handler=_cmd_apply)

    run = sub.add_parser("run", help="compute, then apply, in one go", epilog=EPILOG)
    _model_args(run)
    _compute_args(run)
    _settings_args(run)
    run.add_argument("--out", required=True, help="output folder for the abliterated model")
    run.add_argument("--to-safetensors", action="store_true",
                     help="write a GGUF source as a safetensors folder instead of an edited .gguf")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _search_args(run)
    from .cli_push import add_push_parser, add_run_push_args

    add_run_push_args(run)
    run.set_defaults(handler=_cmd_run)

    from .cli_evaluate import add_chat_parser, add_evaluate_parser

    add_evaluate_parser(sub)
    add_chat_parser(sub)
    add_datasets_parser(sub)
    add_push_parser(sub)
    from .cli_gguf import add_gguf_parser
    from .cli_space import add_space_parser

    add_gguf_parser(sub)
    add_space_parser(sub)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hub id, local folder or .gguf file")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--dtype", default="auto", help="auto (checkpoint dtype), bf16, fp16 or fp32 (default: auto)")
    p.add_argument("--device-map", help="accelerate device map, e.g. auto (spreads a large model over GPUs/CPU/disk)")
    p.add_argument("--load-in", choices=["4bit", "8bit"], help="bitsandbytes quantization for the compute step")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code (off by default)")
    p.add_argument("--chat-template", help="a Jinja chat template file, for models that ship none")


def _compute_args(p: argparse.ArgumentParser) -> None:
    from .prompt_dataset import DATASET_ENV, DEFAULT_DATASET, DEFAULT_SAMPLE, SPLIT_NAMES, default_dataset

    g = p.add_argument_group("prompts and directions")
    g.add_argument("--prompts-dataset", default=default_dataset(), metavar="ID_OR_DIR",
                   help=f"prompt dataset for the sides not given by --harmful/--harmless: a Hub id or a folder from "
                   f"`forge-hub datasets build` (default: {DEFAULT_DATASET}, or ${DATASET_ENV}; offline with no "
                   f"cached copy, the curated lists shipped with forge-hub)")
    g.add_argument("--split", default="train", choices=SPLIT_NAMES, help="dataset split to read (default: train)")
    g.add_argument("--sources", help="comma-separated dataset sources to keep, e.g. advbench,jailbreakbench "
                   "(default: all)")
    g.add_argument("--harmful", help="harmful prompts instead of the dataset's: file, folder, dataset "
                   "name[:config][:split] or builtin:harmful")
    g.add_argument("--harmless", help="harmless prompts instead of the dataset's (same forms, or builtin:harmless)")
    g.add_argument("--column", help="column holding the prompts in csv/json/parquet/dataset sources")
    g.add_argument("--n-prompts", type=int, help=f"sample at most this many prompts per side (default: all of a "
                   f"--harmful/--harmless source, {DEFAULT_SAMPLE} from the prompt dataset)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling and the held-out split")
    g.add_argument("--system-prompt", help="system prompt put before each instruction")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--method", default="projected", choices=["mean_diff", "projected", "svd"],
                   help="direction method (default: projected)")
    g.add_argument("--num-directions", type=int, default=1, help="directions kept by --method svd")
    g.add_argument("--positions", default="-1", help="prompt positions to read, from the end, e.g. -1,-2 (default -1)")
    g.add_argument("--winsorize", type=float, metavar="Q", help="clip activations at quantile Q (e.g. 0.995)")
    g.add_argument("--layer", type=float, help="use this layer (index, or fraction of depth if < 1) instead of measuring")
    g.add_argument("--held-out", type=float, default=0.25, help="fraction of prompts kept aside to score layers")
    g.add_argument("--max-kl", type=float, default=1.0, help="hard KL bound for a candidate layer (default 1.0)")
    g.add_argument("--kl-weight", type=float, default=1.0,
                   help="layer score = refusal probability + KL-WEIGHT * KL (default 1.0)")


def _search_args(p: argparse.ArgumentParser) -> None:
    from .search import DEFAULT_PICK_MAX_KL

    g = p.add_argument_group("parameter search (--optimize)")
    g.add_argument("--optimize", action="store_true",
                   help="search layer, method, strengths and per-layer kernels for the fewest refusals at the least KL")
    g.add_argument("--trials", type=int, default=40, help="finished trials the study should hold (default 40)")
    g.add_argument("--study", help="SQLite file of the study; an existing one is resumed "
                   "(default: forge-hub-<model>.study.db here)")
    g.add_argument("--pick", type=int, metavar="TRIAL", help="use this trial instead of the default pick")
    g.add_argument("--pick-max-kl", type=float, default=DEFAULT_PICK_MAX_KL,
                   help=f"default pick: the fewest refusals among trials with KL at most this "
                        f"(default {DEFAULT_PICK_MAX_KL:g})")
    g.add_argument("--eval-harmful", help="harmful prompts that score trials (default: the held-out prompts)")
    g.add_argument("--eval-harmless", help="harmless prompts that score trials (default: the held-out prompts)")
    g.add_argument("--search-tokens", type=int, default=24, help="answer length while searching (default 24)")
    g.add_argument("--refusal-markers", help="file of refusal phrases, one per line (default: forge-hub's)")


def _settings_args(p: argparse.ArgumentParser) -> None:
    """Ablation settings; only flags given on the command line override the artifact's."""
    g = p.add_argument_group("ablation settings")
    s = argparse.SUPPRESS
    g.add_argument("--direction-layer", type=float, default=s, help="direction's layer (fractional interpolates)")
    g.add_argument("--per-layer", action="store_true", default=s, help="each layer removes its own direction")
    g.add_argument("--layers", default=s, metavar="START:END", help="edit only layers START..END-1")
    g.add_argument("--skip-first", type=int, default=s, help="leave the first N layers unedited")
    g.add_argument("--skip-last", type=int, default=s, help="leave the last N layers unedited")
    g.add_argument("--strength", type=float, default=s, help="projection strength (1 removes the component)")
    g.add_argument("--attn-strength", type=float, default=s, help="extra factor for attention writers")
    g.add_argument("--mlp-strength", type=float, default=s, help="extra factor for MLP writers")
    g.add_argument("--kernel", choices=["constant", "linear", "gaussian"], default=s, help="per-layer weight shape")
    g.add_argument("--kernel-center", type=float, default=s)
    g.add_argument("--kernel-width", type=float, default=s)
    g.add_argument("--kernel-floor", type=float, default=s)
    g.add_argument("--norm-preserving", action="store_true", default=s, help="keep every residual vector's norm")
    g.add_argument("--biprojected", action="store_true", default=s,
                   help="orthogonalize the direction against each target layer's harmless mean")
    g.add_argument("--subspace", action="store_true", default=s, help="remove the SVD subspace (--method svd)")
    g.add_argument("--embeddings", choices=EMBEDDING_MODES, default=s,
                   help="auto: edit untied embeddings, keep tied ones; untie: copy the head, then edit")


def _settings_from(args: argparse.Namespace, base: AblationSettings) -> AblationSettings:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(AblationSettings) if hasattr(args, f.name)}
    if hasattr(args, "layers"):
        start, _, end = args.layers.partition(":")
        given["layer_start"] = int(start) if start else None
        given["layer_end"] = int(end) if end else None
    return dataclasses.replace(base, **given)


def _load_prompt_lists(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """--harmful/--harmless where given; the other sides from the prompt dataset, sampled."""
    from .cli_datasets import parse_names
    from .modeling import resolve_source
    from .prompt_dataset import DEFAULT_SAMPLE, load_side
    from .prompts import load_prompts

    resolve_source(args.model, args.revision)  # a mistyped model path fails before any prompt download
    lists, origins = [], []
    for side, given in (("harmful", args.harmful), ("harmless", args.harmless)):
        if given:
            lists.append(load_prompts(given, args.column, args.n_prompts, args.seed))
            origins.append(given)
        else:
            n = args.n_prompts if args.n_prompts is not None else DEFAULT_SAMPLE
            lists.append(load_side(side, args.prompts_dataset, args.split, n, args.seed, parse_names(args.sources)))
            origins.append(f"{args.prompts_dataset} {side}/{args.split}")
    print(f"prompts: {len(lists[0])} harmful ({origins[0]}), {len(lists[1])} harmless ({origins[1]})", file=sys.stderr)
    return lists[0], lists[1]


def _compute_artifact(args: argparse.Namespace):
    from .modeling import load_model
    from .pipeline import compute

    harmful, harmless = _load_prompt_lists(args)  # before the model: a bad list fails fast
    model, tokenizer, src = load_model(args.model, args.revision, args.dtype, args.device_map, args.load_in,
                                       args.trust_remote_code, args.chat_template)
    return _with_prompt_sources(compute(model, tokenizer, src, harmful, harmless, _compute_options(args)), args)


def _compute_options(args: argparse.Namespace):
    from .pipeline import ComputeOptions

    return ComputeOptions(
        method=args.method, num_directions=args.num_directions,
        positions=tuple(int(x) for x in args.positions.split(",")), batch_size=args.batch_size,
        system_prompt=args.system_prompt, winsorize_quantile=args.winsorize, held_out_fraction=args.held_out,
        layer=args.layer, max_kl=args.max_kl, kl_weight=args.kl_weight, seed=args.seed,
        settings=_settings_from(args, AblationSettings()),
    )


def _with_prompt_sources(artifact, args: argparse.Namespace):
    """Record where each side's prompts came from (the model card names the datasets)."""
    for side, given in (("harmful", args.harmful), ("harmless", args.harmless)):
        source = given or f"{args.prompts_dataset} {side}/{args.split}"
        artifact.metadata.setdefault("prompts", {}).setdefault(side, {})["source"] = source
    return artifact


def _optimize(args: argparse.Namespace):
    """`run --optimize`: directions, then the search; prints the Pareto front and saves its plot."""
    from .modeling import load_model
    from .pipeline import optimize
    from .prompts import load_prompts
    from .search import SearchOptions, front_table, plot_front

    harmful, harmless = _load_prompt_lists(args)
    eval_harmful = load_prompts(args.eval_harmful, args.column) if args.eval_harmful else None
    eval_harmless = load_prompts(args.eval_harmless, args.column) if args.eval_harmless else None
    markers = tuple(load_prompts(args.refusal_markers)) if args.refusal_markers else None
    model, tokenizer, src = load_model(args.model, args.revision, args.dtype, args.device_map, args.load_in,
                                       args.trust_remote_code, args.chat_template)
    name = Path(src.id).stem if src.kind != "hub" else src.id.replace("/", "--")
    storage = Path(args.study or f"forge-hub-{name}.study.db")
    search = SearchOptions(trials=args.trials, storage=storage, max_new_tokens=args.search_tokens,
                           batch_size=args.batch_size, seed=args.seed, pick_max_kl=args.pick_max_kl,
                           system_prompt=args.system_prompt)
    if markers:
        search.markers = tuple(m.lower() for m in markers)
    artifact, study, chosen = optimize(model, tokenizer, src, harmful, harmless, _compute_options(args), search,
                                       eval_harmful, eval_harmless, args.pick)
    _with_prompt_sources(artifact, args)
    total = artifact.metadata["search"]["eval_prompts"]["harmful"]["count"]
    print("\nPareto front (refusals on the harmful evaluation prompts, first-token KL on the harmless ones):")
    print(front_table(study, chosen, total))
    plot = plot_front(study, storage.with_suffix(".pareto.png"), chosen)
    print(f"\npicked trial {chosen.number} ({artifact.metadata['search']['pick']}): "
          f"{chosen.values[0]:.0f}/{total} refusals, KL {chosen.values[1]:.3f}; plot: {plot}")
    print(f"study: {storage} (run again with --trials N to continue, or --pick TRIAL to choose another trial)")
    return artifact


def _cmd_compute(args: argparse.Namespace) -> int:
    from .staging import staged_output

    start = time.time()
    artifact = _compute_artifact(args)
    with staged_output(args.out, args.overwrite) as tmp:
        artifact.save(tmp)
    _print_compute_summary(artifact)
    print(f"\nwrote {Path(args.out).resolve()} in {time.time() - start:.0f}s")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from .directions import RefusalDirections
    from .pipeline import apply

    start = time.time()
    artifact = RefusalDirections.load(args.directions)
    settings = _settings_from(args, AblationSettings.from_dict(artifact.metadata.get("apply_settings", {})))
    from .modeling import resolve_source

    computed_on, target = artifact.metadata.get("model"), resolve_source(args.model, args.revision).id
    if computed_on and computed_on != target and not args.allow_other_model:
        # same sizes (checked before any write), but maybe another model: say so, don't guess
        print(f"warning: the direction was computed on {computed_on}, not {target}; sizes match, so it is "
              "applied (pass --allow-other-model to silence this)", file=sys.stderr)
    report = apply(args.model, artifact, args.out, settings, args.revision, args.overwrite, args.dtype,
                   args.trust_remote_code, gguf_output="safetensors" if args.to_safetensors else "gguf")
    _print_apply_summary(report, settings, time.time() - start)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .cli_push import check_run_push, push_after_run
    from .pipeline import apply

    check_run_push(args)  # a bad repo name or a missing token fails now, not after the run
    start = time.time()
    artifact = _optimize(args) if args.optimize else _compute_artifact(args)
    if not args.optimize:
        _print_compute_summary(artifact)
    settings = AblationSettings.from_dict(artifact.metadata["apply_settings"])
    report = apply(args.model, artifact, args.out, settings, args.revision, args.overwrite, args.dtype,
                   args.trust_remote_code, gguf_output="safetensors" if args.to_safetensors else "gguf")
    _print_apply_summary(report, settings, time.time() - start)
    return push_after_run(args)


def _print_compute_summary(artifact) -> None:
    meta = artifact.metadata
    print(f"\nmodel            {meta['model']}")
    print(f"method           {meta['method']}   layers {meta['num_layers']}   hidden {meta['hidden_size']}")
    print(f"prompts          {meta['prompts']['harmful']['count']} harmful / {meta['prompts']['harmless']['count']} "
          f"harmless for directions, {meta['prompts']['held_out_harmful']['count']} / "
          f"{meta['prompts']['held_out_harmless']['count']} held out")
    if "refusal_probability" in artifact.scores:
        print(f"baseline refusal probability {meta['selection']['baseline_refusal_probability']:.3f}")
        print("layer  refusal-prob      kl  separation")
        for layer in meta["selection"]["candidates"]:
            mark = "  <- chosen" if layer == meta["selected_layer"] else ""
            print(f"{layer:5d}  {artifact.scores['refusal_probability'][layer]:12.3f}  "
                  f"{artifact.scores['kl'][layer]:6.3f}  {artifact.scores['separation'][layer]:10.3f}{mark}")
    print(f"selected layer   {meta['selected_layer']:g} ({meta['selection']['how']})")


def _print_apply_summary(report, settings: AblationSettings, seconds: float) -> None:
    layers = report.edited_layers
    span = f"{layers[0]}..{layers[-1]}" if layers else "none"
    print(f"\nedited {report.edited_tensors} tensors in layers {span} across {report.shards} shard(s)")
    print(f"settings: {json.dumps({k: v for k, v in settings.to_dict().items() if v is not None})}")
    if report.skipped_files:
        print(f"not copied (unsafe or not needed): {', '.join(report.skipped_files)}")
    print(f"wrote {report.output} in {seconds:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
