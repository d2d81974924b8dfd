"""``forge-hub compute``, ``apply`` and ``run``: measure the refusal direction, write the edited model,
or both in one go (optionally with the parameter search and a push to the Hub)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from forge_hub.abliterate.selection import meets_target
from forge_hub.cli.config import CONFIG_FILE, config_file_text
from forge_hub.cli.options import (
    MODEL_HELP,
    add_capability_options,
    add_compute_options,
    add_generation_options,
    add_gguf_output_option,
    add_model_options,
    add_output_options,
    add_prompt_options,
    add_publish_options,
    add_settings_options,
    capability_settings,
    compute_options,
    flag_name,
    gguf_repo,
    load_model_from,
    prompt_choice,
    settings_from,
    token_from,
    xstest_from,
)
from forge_hub.errors import HubError, SettingsError, spell
from forge_hub.evaluation.compare import FINAL_MAX_NEW_TOKENS

EPILOG = "Models: a Hub id (owner/name), a local Hugging Face folder, or a .gguf file."


def _add_direction_options(p: argparse.ArgumentParser) -> None:
    """What compute and run share: the model, the prompts, how the directions are measured and applied."""
    add_model_options(p, quantization=True)
    add_prompt_options(p, split="train", purpose="for the directions")
    add_generation_options(p)
    add_compute_options(p)
    add_settings_options(p)


def add_abliterate_parsers(sub: argparse._SubParsersAction) -> None:
    compute = sub.add_parser("compute", help="compute refusal directions and choose a layer", epilog=EPILOG)
    _add_direction_options(compute)
    add_output_options(compute, "folder for refusal.safetensors + refusal.json")
    compute.set_defaults(handler=_cmd_compute)

    apply = sub.add_parser("apply", help="write an abliterated copy of a model", epilog=EPILOG)
    apply.add_argument("model", help=f"the source model (never modified): {MODEL_HELP}")
    apply.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    apply.add_argument("--directions", required=True, help="folder written by `forge-hub compute`")
    add_output_options(apply, "output folder")
    apply.add_argument("--dtype", default="auto", help="dtype for --to-safetensors: auto, bf16, fp16, fp32")
    add_gguf_output_option(apply)
    apply.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code")
    apply.add_argument("--allow-other-model", action="store_true",
                       help="apply a direction computed on a different model of the same shape")
    add_settings_options(apply)
    apply.set_defaults(handler=_cmd_apply)

    run = sub.add_parser("run", help="compute, then apply, in one go", epilog=EPILOG)
    _add_direction_options(run)
    add_output_options(run, "output folder for the abliterated model (not with --worker)", required=False)
    add_gguf_output_option(run)
    _add_search_options(run)
    g = run.add_argument_group("the run's check")
    g.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="skip the before/after check on held-out prompts at the end")
    g.add_argument("--check-tokens", type=int, default=FINAL_MAX_NEW_TOKENS,
                   help=f"answer length of that check (default {FINAL_MAX_NEW_TOKENS})")
    add_capability_options(run, run=True)
    run.add_argument("--push-to", metavar="OWNER/NAME", help="then push the output folder to this Hub model repo")
    add_publish_options(run, after_run=True)
    run.set_defaults(handler=_cmd_run)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    from forge_hub.abliterate.search import DEFAULT_PICK_MAX_KL, SEARCH_SPACES, SearchOptions

    g = p.add_argument_group("parameter search (--optimize)")
    g.add_argument("--optimize", action="store_true",
                   help="search layer, method, strengths and per-layer kernels for the fewest refusals at the least KL")
    g.add_argument("--trials", type=int, default=40, help="finished trials the study should hold (default 40)")
    g.add_argument("--study", help="where the trials live: a SQLite file, a *.journal file or a database URL "
                   "(postgresql://..., mysql://...); an existing study is resumed, and several processes or "
                   "machines may add trials to one (default: forge-hub-<model>.study.db here)")
    g.add_argument("--study-name", default="forge-hub", help="the study's name inside that storage "
                   "(default forge-hub)")
    g.add_argument("--worker", action="store_true",
                   help="only add trials to --study until it holds --trials finished ones; writes no model "
                        "(run the same command without --worker to pick and apply)")
    g.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between a trial's signs of life; a trial silent for twice this (its process "
                        "died) is re-run (default 60)")
    g.add_argument("--pick", type=int, metavar="TRIAL", help="use this trial instead of the default pick")
    g.add_argument("--pick-max-kl", type=float, default=DEFAULT_PICK_MAX_KL,
                   help=f"default pick: the fewest refusals among trials with KL at most this "
                        f"(default {DEFAULT_PICK_MAX_KL:g})")
    g.add_argument("--eval-harmful", help="harmful prompts that score trials (default: the held-out prompts)")
    g.add_argument("--eval-harmless", help="harmless prompts that score trials (default: the held-out prompts); "
                                           "with both --eval options, no prompt is held out of the directions")
    g.add_argument("--search-tokens", type=int, default=24, help="answer length while searching (default 24)")
    g.add_argument("--search-space", choices=SEARCH_SPACES, default="focused",
                   help="focused (default): leaves out what loses on the refusing fixtures (mean-difference "
                        "directions, exact column-norm preservation, biprojection, directions "
                        "from the bottom two fifths, layer ranges other than all or the default run's); wide: "
                        "searches them too")
    g.add_argument("--refine-steps", type=int, default=SearchOptions.refine_steps, metavar="N",
                   help="gradient steps that refine each layer's refusal direction for the band's strongest start-up "
                        "edit before the search: fewer refusals for the same KL (default "
                        f"{SearchOptions.refine_steps}; 0 searches the plain mean differences)")
    g.add_argument("--search-without", type=_ablations, metavar="CHOICE[,CHOICE]",
                   help="switch choices of the search off, to measure what they buy: per-layer-directions "
                        "(one global direction only), start-up-ladder (no queued band trials)")
    g.add_argument("--refusal-markers", help="file of refusal phrases, one per line (default: forge-hub's)")
    g.add_argument("--judge", metavar="MODEL",
                   help="a text-classification model (folder or Hub id) that counts the refusals of each search trial "
                   "instead of the markers, and gives a second opinion in the run's check; e.g. "
                   "protectai/distilroberta-base-rejection-v1 (82M parameters)")
    g.add_argument("--judge-label", help="the judge's label meaning refusal (default: the one naming a refusal "
                   "or rejection)")


def _ablations(text: str) -> str:
    """``--search-without``'s value, checked before any work (a comma list, as a config file's list is passed)."""
    from forge_hub.abliterate.search import ABLATIONS

    unknown = [choice for choice in text.split(",") if choice not in ABLATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"cannot switch off {', '.join(unknown)}; use {', '.join(ABLATIONS)}")
    return text


def _load_prompts(args: argparse.Namespace):
    """Both prompt lists, after a cheap check of the model path (a typo fails before any download)."""
    from forge_hub.model.loading import resolve_source
    from forge_hub.prompts.choice import load_prompt_lists

    resolve_source(args.model, args.revision)
    lists = load_prompt_lists(prompt_choice(args))
    print(f"prompts: {lists.summary()}", file=sys.stderr)
    return lists


def _compute_artifact(args: argparse.Namespace):
    """(artifact, model, tokenizer, prompts): the run's check reuses the loaded model."""
    from forge_hub.pipeline import compute

    prompts = _load_prompts(args)  # before the model: a bad list fails fast
    model, tokenizer, src = load_model_from(args)
    return compute(model, tokenizer, src, prompts, options=compute_options(args)), model, tokenizer, prompts


def _optimize(args: argparse.Namespace):
    """`run --optimize`: directions, then the search; prints the Pareto front and saves its plot."""
    from forge_hub.abliterate.search import SearchOptions, finished_trials, front_table, plot_front
    from forge_hub.abliterate.study import StudyLocation
    from forge_hub.pipeline import optimize
    from forge_hub.prompts.sources import load_prompts

    prompts = _load_prompts(args)
    eval_harmful, eval_harmless = _eval_prompts(args)
    markers = tuple(load_prompts(args.refusal_markers)) if args.refusal_markers else None
    model, tokenizer, src = load_model_from(args)
    location = StudyLocation.parse(args.study or f"forge-hub-{_model_name(src)}.study.db")
    search = SearchOptions(trials=args.trials, storage=location.target, study_name=args.study_name,
                           heartbeat=args.heartbeat, max_new_tokens=args.search_tokens, batch_size=args.batch_size,
                           seed=args.seed, pick_max_kl=args.pick_max_kl, system_prompt=args.system_prompt,
                           judge=args.judge, judge_label=args.judge_label, space=args.search_space,
                           refine_steps=args.refine_steps,
                           without=tuple(args.search_without.split(",")) if args.search_without else ())
    if markers:
        search.markers = tuple(m.lower() for m in markers)
    outcome = optimize(model, tokenizer, src, prompts, options=compute_options(args), search=search,
                       eval_harmful=eval_harmful, eval_harmless=eval_harmless, pick=args.pick, worker=args.worker)
    if outcome is None:
        print(f"\nstudy {location.describe()} holds {args.trials} finished trials; run the same command without "
              "--worker (and with --out) to pick and apply")
        return None
    record, chosen = outcome.record, outcome.chosen
    total = record.eval_prompts["harmful"].count
    print("\nPareto front (refusals on the harmful evaluation prompts, first-token KL on the harmless ones):")
    print(front_table(outcome.study, chosen, total))
    seconds = [t.user_attrs["seconds"] for t in finished_trials(outcome.study) if "seconds" in t.user_attrs]
    if seconds:
        print(f"{len(seconds)} trials, {sum(seconds) / len(seconds):.1f} s per trial on average "
              f"({min(seconds):.1f}-{max(seconds):.1f} s)")
    beside = location.path or Path(f"forge-hub-{args.study_name}.db")
    plot = plot_front(outcome.study, beside.with_suffix(".pareto.png"), chosen)
    print(f"\npicked trial {chosen.number} ({record.pick}): {chosen.values[0]:.0f}/{total} refusals, "
          f"KL {chosen.values[1]:.3f}; plot: {plot}")
    print(f"study: {location.describe()} (run again with --trials N to continue, or --pick TRIAL to choose another "
          "trial)")
    return outcome.artifact, model, tokenizer, prompts


def _eval_prompts(args: argparse.Namespace) -> tuple[list[str] | None, list[str] | None]:
    """The search's own evaluation prompts (--eval-harmful, --eval-harmless), each None when not given."""
    from forge_hub.prompts.sources import load_prompts

    return tuple(load_prompts(path, column=args.column) if path else None  # type: ignore[return-value]
                 for path in (args.eval_harmful, args.eval_harmless))


def _scored_on(args: argparse.Namespace) -> tuple[list[str], list[str]] | None:
    """A search's evaluation prompts when it had both of its own: its directions then used every
    prompt (pipeline.optimize), so the run's checks answer these rather than a held-out part."""
    harmful, harmless = _eval_prompts(args) if args.optimize else (None, None)
    return (harmful, harmless) if harmful is not None and harmless is not None else None


def _model_name(src) -> str:
    return Path(src.id).stem if src.kind != "hub" else src.id.replace("/", "--")


def _check_out(args: argparse.Namespace, kind: str) -> None:
    """Before any work: the output is free, writable and away from the source; a given layer is in
    the model (read from a local folder's config, without loading the weights)."""
    from forge_hub.model.loading import local_paths, resolve_source
    from forge_hub.outputs.checkpoint import checkpoint_architecture
    from forge_hub.outputs.staging import check_output
    from forge_hub.pipeline import resolve_layer

    source = resolve_source(args.model, args.revision)
    check_output(args.out, overwrite=args.overwrite, kind=kind, sources=local_paths(source))
    if args.layer is not None and source.kind == "folder":
        resolve_layer(args.layer, checkpoint_architecture(Path(source.id)).num_layers)


def _cmd_compute(args: argparse.Namespace) -> int:
    from forge_hub.model.loading import local_paths, resolve_source
    from forge_hub.outputs.staging import staged_output

    _check_out(args, "directions")
    start = time.time()
    artifact = _compute_artifact(args)[0]
    with staged_output(args.out, args.overwrite, kind="directions",
                       sources=local_paths(resolve_source(args.model, args.revision))) as tmp:
        artifact.save(tmp)
        (tmp / CONFIG_FILE).write_text(config_file_text("compute", args), encoding="utf-8")
    _print_compute_summary(artifact, args.max_kl)
    print(f"\nwrote {Path(args.out).resolve()} in {time.time() - start:.0f}s")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from forge_hub.abliterate.directions import RefusalDirections
    from forge_hub.model.loading import resolve_source
    from forge_hub.pipeline import apply

    start = time.time()
    artifact = RefusalDirections.load(args.directions)
    settings = settings_from(args, artifact.metadata.apply_settings)
    computed_on, target = artifact.metadata.model, resolve_source(args.model, args.revision).id
    report = apply(args.model, artifact, args.out, settings=settings, revision=args.revision,
                   overwrite=args.overwrite, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                   gguf_output="safetensors" if args.to_safetensors else "gguf",
                   extra_files={CONFIG_FILE: config_file_text("apply", args)})
    _print_apply_summary(report, settings, time.time() - start)
    if computed_on and computed_on != target and not args.allow_other_model:
        # the sizes matched (apply checks them before writing), but it may be another model: say so
        print(f"warning: the direction was computed on {computed_on}, not {target}; it was applied because the "
              "sizes match (pass --allow-other-model to silence this)", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from forge_hub.pipeline import apply, check_run, push

    if args.worker:
        return _run_worker(args)
    if not args.out:
        raise SettingsError("run needs an output folder", "add {out} DIR", input="out")
    _check_out(args, "model")
    token = _check_run_push(args)  # a bad repo name or a missing token fails now, not after the run
    if not args.evaluate and (args.tasks or args.xstest):
        raise SettingsError("--evaluate-tasks and --xstest are part of the run's check, which --no-evaluate skips",
                            "leave out --no-evaluate, or those flags")
    capability, xstest = ((capability_settings(args), xstest_from(args)) if args.evaluate
                          else (None, None))
    if args.judge and (args.optimize or args.evaluate):  # a judge that cannot load fails now, not after compute
        from forge_hub.evaluation.judge import refusal_judge

        refusal_judge(args.judge, args.judge_label)
    start = time.time()
    artifact, model, tokenizer, prompts = _optimize(args) if args.optimize else _compute_artifact(args)
    if not args.optimize:
        _print_compute_summary(artifact, args.max_kl)
    settings = artifact.metadata.apply_settings
    report = apply(args.model, artifact, args.out, settings=settings, revision=args.revision,
                   overwrite=args.overwrite, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                   gguf_output="safetensors" if args.to_safetensors else "gguf",
                   extra_files={CONFIG_FILE: config_file_text("run", args)})
    _print_apply_summary(report, settings, None)
    scored_on = _scored_on(args)  # what the checks answer when a search had prompts of its own
    if args.evaluate:
        check = check_run(model, tokenizer, artifact, prompts, options=compute_options(args),
                          max_new_tokens=args.check_tokens, xstest=xstest, capability=capability,
                          judge=args.judge, judge_label=args.judge_label, scored_on=scored_on)
        searched = args.optimize and (scored_on is not None or not args.eval_harmful)
        _print_check(check, searched=searched, gguf=report.output / Path(args.model).name
                     if str(args.model).endswith(".gguf") and not args.to_safetensors else None)
    print(f"\nwrote {report.output} in {time.time() - start:.0f}s")
    if args.push_to:
        from forge_hub.cli.gguf import print_gguf_check
        from forge_hub.hub.push import print_result

        # the GGUF files answer XSTest only when --xstest names it, as with push --gguf (250 more answers a file)
        check = _gguf_check(args, prompts, xstest if args.xstest else None, scored_on) \
            if args.gguf and args.gguf_check else None
        del model, tokenizer  # the GGUF check loads models of its own, one at a time
        print_result(push(args.out, args.push_to, token=token, private=args.private, exist_ok=args.exist_ok,
                          gguf_types=args.gguf, gguf_repo=gguf_repo(args, args.push_to), gguf_check=check,
                          on_gguf_check=print_gguf_check))
    return 0


def _run_worker(args: argparse.Namespace) -> int:
    """`run --optimize --worker`: add trials to a shared study; nothing else is written."""
    if not args.optimize:
        raise SettingsError("--worker adds trials to a search", "add {optimize} and a shared {study}",
                            input="worker")
    if args.out or args.push_to or args.pick is not None:
        raise SettingsError("a worker writes no model, so --out, --push-to and --pick do not apply",
                            "leave them to the command without {worker} that picks and applies", input="worker")
    _optimize(args)
    return 0


def _gguf_check(args: argparse.Namespace, prompts, xstest, scored_on):
    """The run's GGUF files measured on the prompts the run's own check answers (pipeline.check_prompts),
    against the run's source model."""
    from forge_hub.evaluation.compare import EvaluationSettings
    from forge_hub.evaluation.gguf_check import GGUFCheckOptions
    from forge_hub.pipeline import check_prompts

    harmful, harmless, sources = check_prompts(prompts, options=compute_options(args), scored_on=scored_on)
    settings = EvaluationSettings(max_new_tokens=args.check_tokens, batch_size=args.batch_size,
                                  system_prompt=args.system_prompt, max_prompt_tokens=args.max_prompt_tokens)
    return GGUFCheckOptions(reference=args.model, reference_revision=args.revision, harmful=harmful,
                            harmless=harmless, xstest=xstest, settings=settings, dtype=args.dtype,
                            prompt_sources=sources).check()


def _print_check(check, *, searched: bool, gguf: Path | None) -> None:
    """The answer first: refusals before and after on held-out prompts, over-refusal, KL, and a verdict."""
    r = check.results
    n, m, tokens = r.harmful_count, r.harmless_count, r.settings["max_new_tokens"]
    where = "the prompts the search was scored on" if searched else "prompts held out from the directions"
    print(f"\nResult on {n} harmful and {m} harmless {where} ({tokens} new tokens, greedy), {check.seconds:.0f}s:")
    xstest = r.results.model.xstest is not None  # its safe prompts, beside the harmless ones
    print(f"  {'':12s} {'harmful refused':>16s} {'harmless refused':>17s}"
          + (f" {'XSTest safe refused':>20s}" if xstest else "") + f" {'first-token KL':>15s}")
    for name, scores, kl in (("original", r.results.reference, "-"),
                             ("abliterated", r.results.model, f"{r.results.kl_divergence:.3f}")):
        x = scores.xstest
        print(f"  {name:12s} {f'{scores.refusals}/{n}':>16s} {f'{scores.over_refusals}/{m}':>17s}"
              + (f" {f'{x.refusals}/{x.total}' if x else '-':>20s}" if xstest else "") + f" {kl:>15s}")
    if r.results.kl_divergence_answered is not None and r.results.reference.over_refusals:
        print(f"  first-token KL on the {m - r.results.reference.over_refusals} harmless prompts the original answers "
              f"(its over-refusals, which the edit is meant to change, left out): "
              f"{r.results.kl_divergence_answered:.3f}")
    before, after = r.results.reference.refusals, r.results.model.refusals
    words = {"removed": f"Refusals removed: {before} -> {after} of {n}.",
             "partly": f"Refusals only partly removed: {before} -> {after} of {n}.",
             "barely": f"Refusals barely moved: {before} -> {after} of {n}.",
             "damaging": f"Refusals {before} -> {after} of {n}, but at a high cost to the model.",
             "none": f"Nothing to remove on these prompts: the original refused {before} of {n}."}
    print(f"\n{words[check.verdict]}" + "".join(f"\n  {spell(line, flag_name)}" for line in check.advice))
    if gguf is not None:
        print(f"  (measured on the exact edit; {gguf.name} stores it requantized to its own types)")
    from forge_hub.evaluation.report import capability_markdown, xstest_markdown

    if r.results.model.xstest is not None:
        print("\n" + "\n".join(xstest_markdown(r)))
    if r.results.capabilities:
        print("\n" + "\n".join(capability_markdown(r)))


def _check_run_push(args: argparse.Namespace) -> str | None:
    """Before a run's long compute: repo names, GGUF types, token, and an output that can be pushed."""
    from forge_hub.pipeline import check_publish

    if not args.push_to:
        if args.gguf or args.gguf_repo or args.private or args.exist_ok:
            raise HubError("--gguf, --gguf-repo, --private and --exist-ok only apply with --push-to",
                           "add --push-to OWNER/NAME, or write GGUF files later with `forge-hub gguf`")
        return None
    if str(args.model).endswith(".gguf") and not args.to_safetensors:
        raise HubError("a GGUF source is edited as GGUF, which `push` does not publish",
                       "add --to-safetensors to write (and push) a safetensors model folder")
    _, token = check_publish(args.push_to, gguf_types=args.gguf, gguf_repo=gguf_repo(args, args.push_to),
                             token=token_from(args))
    return token


def _print_compute_summary(artifact, max_kl: float) -> None:
    meta = artifact.metadata
    prompts = meta.prompts
    held_harmful = prompts.held_out_harmful.count if prompts.held_out_harmful else 0
    held_harmless = prompts.held_out_harmless.count if prompts.held_out_harmless else 0
    print(f"\nmodel            {meta.model}")
    print(f"method           {meta.method}   layers {meta.num_layers}   hidden {meta.hidden_size}")
    print(f"prompts          {prompts.harmful.count} harmful / {prompts.harmless.count} harmless for directions, "
          f"{held_harmful} / {held_harmless} held out")
    if "refusal_probability" in artifact.scores:
        print(f"baseline refusal probability {meta.selection.baseline_refusal_probability:.3f}")
        print("layer  refusal-prob      kl  separation")
        for layer in meta.selection.candidates:
            mark = "  <- chosen" if layer == meta.selected_layer else ""
            print(f"{layer:5d}  {artifact.scores['refusal_probability'][layer]:12.3f}  "
                  f"{artifact.scores['kl'][layer]:6.3f}  {artifact.scores['separation'][layer]:10.3f}{mark}")
    selection = meta.selection
    if selection.measured:
        which = selection.choice_harmful.source if selection.choice_harmful else "held-out"
        harmless = f"{selection.choice_harmless.count} harmless prompts" if selection.choice_harmless \
            else "the held-out harmless prompts"
        print(f"\nmeasured on {selection.held_out_harmful} harmful prompts ({which}; {selection.answer_tokens}-token "
              f"greedy answers) and {harmless} (first-token KL):")
        print("setting                                   refusals      kl")
        for row in selection.measured:
            mark = "  <- chosen" if row["label"] == selection.chosen else ""
            count = f"{row['refusals']:.0f}" if row["complete"] else "stopped"
            print(f"{row['label'][:40]:40s}  {count:>9s}  {row['kl']:6.3f}{mark}")
        if not all(row["complete"] for row in selection.measured):
            print("(stopped: its answers were counted only until it refused more than a setting measured before it "
                  "with no more KL, so it could not win)")
    print(f"selected layer   {meta.selected_layer:g} ({selection.how})")
    chosen = next((row for row in selection.measured if row["label"] == selection.chosen), None)
    if chosen is not None and not meets_target(chosen["refusals"], selection.held_out_harmful,
                                               selection.refusal_target):
        print(f"\nwarning: no measured setting brought the refusals of the choice's harmful prompts down to "
              f"{selection.refusal_target:.0%}; the chosen one still refuses {selection.refusal_rate_left:.0%} of "
              "them. Try --optimize (a search over layers, per-layer weights and edit variants), more or other prompts "
              "(--harmful, --harmless, --n-prompts), a larger --shortlist, or a higher --refusal-target",
              file=sys.stderr)
    scores = artifact.scores.get("kl")
    kls = [float(scores[layer]) for layer in meta.selection.candidates] if scores is not None else []
    if kls and min(kls) > max_kl:
        print(f"\nwarning: no candidate layer kept the first-token KL within --max-kl {max_kl:g} (the least was "
              f"{min(kls):.2f}), so the least damaging one was taken: this edit changes the model a lot. Try "
              "--optimize, other or more prompts, or --chat-template if the model has no proper one "
              "(a base model is not a chat model)", file=sys.stderr)


def _print_apply_summary(report, settings, seconds: float | None) -> None:
    layers = report.edited_layers
    span = f"{layers[0]}..{layers[-1]}" if layers else "none"
    print(f"\nedited {report.edited_tensors} tensors in layers {span} across {report.shards} shard(s)")
    print(f"settings: {json.dumps({k: v for k, v in settings.to_dict().items() if v is not None})}")
    if report.skipped_files:
        print(f"not copied (unsafe or not needed): {', '.join(report.skipped_files)}")
    if seconds is not None:
        print(f"wrote {report.output} in {seconds:.0f}s")
