"""The use cases end to end, as the CLI, the Space and scripts call them.

    prompts -> compute (directions, layer choice) [-> optimize (parameter search)] -> apply -> evaluate -> publish

Each function takes already-decided inputs (a loaded model, prompt lists, typed options) and
returns a typed result; none of them prints, parses flags or knows about a web page.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from forge_hub import __version__
from forge_hub.abliterate.architecture import Architecture
from forge_hub.abliterate.directions import RefusalDirections, compute_directions
from forge_hub.abliterate.live import abliterate_model
from forge_hub.abliterate.refine import RefineOptions, refine_directions
from forge_hub.abliterate.search import (
    SearchOptions,
    finished_trials,
    needs_layer_scan,
    open_search,
    pick_trial,
    refinement_settings,
    run_search,
    trial_choice,
    trial_directions,
)
from forge_hub.abliterate.selection import (
    LayerScores,
    MeasuredSetting,
    Variation,
    default_candidates,
    measure_settings,
    score_layers,
)
from forge_hub.abliterate.study import StudyLocation
from forge_hub.errors import SettingsError
from forge_hub.evaluation.capability import CapabilitySettings
from forge_hub.evaluation.compare import (
    FINAL_MAX_NEW_TOKENS,
    EvaluationSettings,
    evaluate_models,
    measure,
    results_record,
)
from forge_hub.evaluation.gguf_check import GGUFCheckOptions
from forge_hub.hub.push import PushResult
from forge_hub.model.activations import collect_residuals
from forge_hub.model.chat import DEFAULT_MAX_PROMPT_TOKENS, check_prompt_lengths, model_context
from forge_hub.model.loading import ModelSource, download_checkpoint, load_model, local_paths, resolve_source
from forge_hub.model.weights import ModelWeights
from forge_hub.outputs.checkpoint import ApplyReport, apply_to_checkpoint, document_output
from forge_hub.outputs.staging import check_output, staged_output
from forge_hub.prompts.choice import PromptLists
from forge_hub.prompts.sources import load_prompts, prompts_hash, split_held_out
from forge_hub.prompts.xstest import BUILTIN_XSTEST_UNSAFE, XSTestPrompts
from forge_hub.provenance import source_commit
from forge_hub.schema import (
    ARTIFACT_FILES,
    AblationSettings,
    DirectionMetadata,
    EvaluationResults,
    GGUFCheck,
    LayerSelection,
    PromptProvenance,
    PromptSet,
    SearchRecord,
)

log = logging.getLogger("forge_hub")


# Ways of applying each shortlisted layer's direction that the default run measures: the layers up
# to a fifth of the depth above the direction's (the top ones write along it on ordinary prompts
# too, so editing them only adds damage), the same without the bottom fifth, and every layer (the
# classic edit, which removes the most refusals at the most damage). README, "How the default run
# chooses", has what each buys on both refusing models.
DEFAULT_VARIATIONS = (Variation(reach=0.2), Variation(skip_first=0.2, reach=0.2), Variation())


@dataclass
class ComputeOptions:
    """How to measure the directions and choose the layer."""

    method: str = "projected"  # mean_diff | projected | svd
    num_directions: int = 1  # svd only
    positions: tuple[int, ...] = (-1,)
    batch_size: int = 16
    system_prompt: str | None = None
    winsorize_quantile: float | None = None
    held_out_fraction: float = 0.25  # prompts kept aside to score layers
    # False: no layer scan; without a given layer, the one where the two sides sit furthest apart
    # (within the search's range of global directions) is named, unmeasured (a search that edits with
    # each layer's own direction needs no layer: :func:`forge_hub.abliterate.search.needs_layer_scan`)
    scan_layers: bool = True
    layer: float | None = None  # fix the layer (index, or a fraction of depth when < 1); None measures it
    candidates: tuple[int, ...] | None = None
    max_kl: float = 1.0  # hard bound on a candidate layer's KL
    kl_weight: float = 1.0  # layer score: refusal probability + kl_weight * KL
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS  # longer prompts are refused before any work
    seed: int = 0
    # how the chosen direction is applied: row-normalized (magnitude-preserving) edits measurably
    # lower the damage at the same refusals (README, "What each choice buys")
    settings: AblationSettings = field(default_factory=lambda: AblationSettings(row_normalized=True))
    # The final choice: the first-token scan's `shortlist` best layers, each applied in every way of
    # `variations`, are baked into the weights in turn and their refusals counted among greedy
    # answers of `choice_tokens` tokens to `choice_harmful` (below); the least damaging one
    # that leaves at most `refusal_target` of them refused wins (else the fewest refusals within
    # max_kl). choice_tokens 0 keeps the scan's own pick (faster, less reliable).
    choice_tokens: int = 24
    shortlist: int = 3
    refusal_target: float = 0.05
    # The harmful prompts the final choice counts refusals on: XSTest's unsafe prompts, a source the
    # direction prompts never come from, so a setting wins by removing refusals in general, not only
    # those of prompts like the ones its direction was measured on (a model safety-tuned on AdvBench
    # refuses held-out AdvBench prompts far more stubbornly than others). None: the held-out part of
    # the harmful prompts.
    choice_harmful: str | None = BUILTIN_XSTEST_UNSAFE
    variations: tuple[Variation, ...] = DEFAULT_VARIATIONS


def _prompt_set(prompts: Sequence[str], source: str | None = None) -> PromptSet:
    return PromptSet(count=len(prompts), hash=prompts_hash(list(prompts)), source=source)


def compute(model: torch.nn.Module, tokenizer: object, source: ModelSource, prompts: PromptLists, *,
            options: ComputeOptions | None = None, progress: bool = True,
            scan_prompts: tuple[Sequence[str], Sequence[str]] | None = None) -> RefusalDirections:
    """Residual statistics -> per-layer directions -> measured layer choice -> artifact.

    The artifact's metadata records the model, the method, which prompts were read (sources,
    counts, hashes) and the chosen layer with the settings ``apply`` will use. ``scan_prompts``
    (harmful, harmless) score the layers instead of a held-out part of ``prompts``, which then
    all go into the directions: a search that brings its own evaluation prompts has no reason to
    hold any back (on the second refusing model, directions from all 128 prompts instead of 96
    took its strongest start-up trial from 7 to 5 refusals in 100 at the same KL).

    Example::

        model, tokenizer, source = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        artifact = compute(model, tokenizer, source, load_prompt_lists(PromptChoice()))
        artifact.save("directions")
    """
    options = options or ComputeOptions()
    arch = Architecture.from_config(model.config)
    fixed_layer = resolve_layer(options.layer, arch.num_layers)
    options.settings.check(arch.num_layers)
    check_prompt_lengths(tokenizer, [*prompts.harmful, *prompts.harmless], max_tokens=options.max_prompt_tokens,
                         system_prompt=options.system_prompt, context=model_context(model))
    measure = options.layer is None
    (harm_dir, harm_held), (safe_dir, safe_held) = _split_for_directions(prompts, options, scan_prompts)
    if measure and options.scan_layers and scan_prompts is not None:
        harm_held, safe_held = list(scan_prompts[0]), list(scan_prompts[1])
    # read before any work, so a bad --choice-harmful fails now, not after the layer scan
    choice_harmful = harm_held if options.choice_harmful is None or not measure or options.choice_tokens <= 0 \
        else load_prompts(options.choice_harmful)
    keep = options.method == "svd"
    kwargs = dict(batch_size=options.batch_size, system_prompt=options.system_prompt, positions=options.positions,
                  winsorize_quantile=options.winsorize_quantile)
    harm_stats = collect_residuals(model, tokenizer, harm_dir, keep_per_prompt=keep, desc="harmful", **kwargs)
    safe_stats = collect_residuals(model, tokenizer, safe_dir, desc="harmless", **kwargs)
    directions, subspaces = compute_directions(harm_stats, safe_stats, method=options.method,
                                               num_directions=options.num_directions)
    metadata = DirectionMetadata(
        model=source.id, revision=source.revision, source_kind=source.kind, model_type=arch.model_type,
        hidden_size=arch.hidden_size, num_layers=arch.num_layers, method=options.method,
        num_directions=options.num_directions if subspaces is not None else 1, positions=list(options.positions),
        system_prompt=options.system_prompt, winsorize_quantile=options.winsorize_quantile,
        prompts=PromptProvenance(harmful=_prompt_set(harm_dir, prompts.harmful_source),
                                 harmless=_prompt_set(safe_dir, prompts.harmless_source),
                                 held_out_harmful=_prompt_set(harm_held), held_out_harmless=_prompt_set(safe_held)),
        forge_hub_version=__version__, forge_hub_commit=source_commit())
    artifact = RefusalDirections(harm_stats.mean, safe_stats.mean, directions, subspaces, metadata=metadata)
    artifact.scores["separation"] = artifact.separation()
    if measure and not options.scan_layers:
        layer = _furthest_apart(artifact)
        settings = options.settings.replace(direction_layer=layer)
        artifact.metadata.selection = LayerSelection(how="separation")
    elif measure:
        scores = score_layers(model, tokenizer, artifact, options.settings, harm_held, safe_held,
                              candidates=options.candidates or default_candidates(arch.num_layers),
                              max_kl=options.max_kl, kl_weight=options.kl_weight, batch_size=options.batch_size,
                              system_prompt=options.system_prompt, progress=progress)
        _store_scores(artifact, scores)
        layer = float(scores.chosen)
        settings = options.settings.replace(direction_layer=layer)
        if options.choice_tokens > 0:
            # KL on every harmless prompt, the direction's too: 128 held-out ones ranked two close settings of
            # the second refusing model opposite to 100 unseen prompts; 512 ranked them as those do
            choice_harmless = list(prompts.harmless)
            chosen, measured = measure_settings(
                model, tokenizer, artifact, _shortlist(scores, options, arch.num_layers), choice_harmful,
                choice_harmless,
                max_new_tokens=options.choice_tokens, refusal_target=options.refusal_target, max_kl=options.max_kl,
                batch_size=options.batch_size, system_prompt=options.system_prompt, progress=progress)
            _store_choice(artifact, chosen, measured, options, choice_harmful, choice_harmless)
            settings = chosen.settings
            layer = float(settings.direction_layer)
    else:
        layer = fixed_layer
        settings = options.settings.replace(direction_layer=layer)
        artifact.metadata.selection = LayerSelection(how="given")
    artifact.metadata.selected_layer = layer
    artifact.metadata.apply_settings = settings
    return artifact


def _furthest_apart(artifact: RefusalDirections) -> float:
    """The layer whose residual means sit furthest apart, among 0.4-0.9 of the depth (the search's
    range of global directions, which this layer then leaves as it is)."""
    last = artifact.num_layers - 1
    low = math.ceil(0.4 * last)
    high = max(low, math.floor(0.9 * last))  # a two-layer model has one layer in range
    separation = artifact.scores["separation"]
    return float(max(range(low, high + 1), key=lambda i: float(separation[i])))


def _shortlist(scores: LayerScores, options: ComputeOptions, num_layers: int) -> list[MeasuredSetting]:
    """The scan's best layers (lowest refusal probability + KL, within the KL bound), best first so
    that weaker ones stop counting early, each applied in every way of ``options.variations``."""
    rank = sorted(range(len(scores.layers)), key=lambda i: (scores.kl[i] > options.max_kl,
                                                            scores.refusal[i] + options.kl_weight * scores.kl[i]))
    return [MeasuredSetting(*variation.settings(options.settings, scores.layers[i], num_layers))
            for i in rank[:max(1, options.shortlist)] for variation in options.variations]


def _store_choice(artifact: RefusalDirections, chosen: MeasuredSetting, measured: list[MeasuredSetting],
                  options: ComputeOptions, harmful: Sequence[str], harmless: Sequence[str]) -> None:
    artifact.metadata.selection = artifact.metadata.selection.replace(
        measured=[c.record() for c in measured], chosen=chosen.label, held_out_harmful=len(harmful),
        choice_harmful=_prompt_set(harmful, options.choice_harmful or "held out"),
        choice_harmless=_prompt_set(harmless, "all harmless prompts"),
        answer_tokens=options.choice_tokens, refusal_target=options.refusal_target,
        refusal_rate_left=round(chosen.refusals / max(len(harmful), 1), 4))



@dataclass
class SearchOutcome:
    """What ``optimize`` found: the artifact carrying the picked settings, the study and the pick."""

    artifact: RefusalDirections
    study: object  # optuna.Study
    chosen: object  # optuna.trial.FrozenTrial

    @property
    def record(self) -> SearchRecord:
        return self.artifact.metadata.search  # type: ignore[return-value]


def optimize(model: torch.nn.Module, tokenizer: object, source: ModelSource, prompts: PromptLists, *,
             options: ComputeOptions, search: SearchOptions, eval_harmful: list[str] | None = None,
             eval_harmless: list[str] | None = None, pick: int | None = None, worker: bool = False,
             progress: bool = True) -> SearchOutcome | None:
    """Create or join the study, add trials until it holds ``search.trials`` finished ones, and
    return the artifact carrying the picked trial's method and settings, with the study.

    Trials are scored on ``eval_harmful`` / ``eval_harmless`` when both are given (the directions
    then take every prompt of ``prompts``, a layer scan a few of the evaluation ones), else on
    the prompts held out from the directions. The layers are scanned only where the study starts
    from the default edit at the scan's pick (:func:`forge_hub.abliterate.search.needs_layer_scan`;
    ``options.choice_tokens`` is not used: the measured choice is left to the search). The
    directions are computed by the process that creates the study and stored in it, so every
    process (a resumed run, a ``worker``) searches the same ones. A ``worker`` only adds trials:
    it returns None once the study is full, picking nothing.
    """
    if eval_harmful is not None or eval_harmless is not None:
        check_prompt_lengths(tokenizer, [*(eval_harmful or []), *(eval_harmless or [])],
                             max_tokens=options.max_prompt_tokens, system_prompt=options.system_prompt,
                             context=model_context(model))
    fraction = options.held_out_fraction or 0.25
    scan_prompts = None
    if eval_harmful is None or eval_harmless is None:
        eval_harmful = eval_harmful or split_held_out(prompts.harmful, fraction, options.seed)[1]
        eval_harmless = eval_harmless or split_held_out(prompts.harmless, fraction, options.seed)[1]
    else:  # trials are scored on prompts of their own: the directions take every prompt, the scan a few eval ones
        scan_size = max(1, round(fraction * len(prompts.harmful)))
        scan_prompts = (eval_harmful[:scan_size], eval_harmless[:scan_size])

    def directions() -> RefusalDirections:  # only when this process creates the study
        # the layer scan's pick, not the default run's measured choice: the search measures settings
        # itself, on its own prompts, and its start-up trials already hold stronger ones (on the
        # fixture the measured choice cost 8 of a 53-minute run for one trial's worth of information)
        # and no layer scan unless the search starts from the default edit at its pick
        artifact = compute(model, tokenizer, source, prompts, progress=progress, scan_prompts=scan_prompts,
                           options=replace(options, choice_tokens=0, scan_layers=needs_layer_scan(search)))
        # refinement moves each layer's own direction: nothing to refine for one global direction or a subspace
        if search.refine_steps <= 0 or artifact.metadata.method == "svd" or "per-layer-directions" in search.without:
            return artifact
        if ModelWeights(model).offloaded:  # gradients need every weight in memory
            log.warning("refined directions need the whole model in memory; with weights offloaded the search "
                        "uses the plain mean differences")
            return artifact
        harmful, harmless = _direction_prompts(prompts, options, scan_prompts)
        refine = RefineOptions(steps=search.refine_steps, seed=search.seed, system_prompt=options.system_prompt,
                               markers=search.markers)
        return refine_directions(model, tokenizer, artifact, refinement_settings(search, artifact), harmful, harmless,
                                 refine, progress=progress)

    study, artifact = open_search(search, source.id, eval_harmful, eval_harmless, directions)
    artifact.check_fits(Architecture.from_config(model.config))
    study = run_search(model, tokenizer, artifact, eval_harmful, eval_harmless, search, study=study, progress=progress)
    if worker:
        return None
    chosen, rule = pick_trial(study, len(eval_harmful), max_kl=search.pick_max_kl, number=pick)
    _, settings = trial_choice(chosen)
    result = trial_directions(artifact, chosen)  # a pick on the plain directions carries no refinement record
    result.metadata = result.metadata.replace(
        prompts=artifact.metadata.prompts.with_sources(prompts.harmful_source, prompts.harmless_source),
        apply_settings=settings,
        search=SearchRecord(study=StudyLocation.parse(search.storage).describe(), study_name=search.study_name,
                            trial=chosen.number, refusals=chosen.values[0], kl=chosen.values[1],
                            eval_prompts={"harmful": _prompt_set(eval_harmful), "harmless": _prompt_set(eval_harmless)},
                            max_new_tokens=search.max_new_tokens, trials=len(finished_trials(study)), pick=rule,
                            judge=search.judge))
    return SearchOutcome(result, study, chosen)


def _split_for_directions(prompts: PromptLists, options: ComputeOptions,
                          scan_prompts: tuple[Sequence[str], Sequence[str]] | None
                          ) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """((harmful for the directions, held out), (harmless ..., held out)): a part is held back to
    score the layers, unless the layer is given or ``scan_prompts`` score them."""
    fraction = options.held_out_fraction if options.layer is None and scan_prompts is None else 0.0
    return split_held_out(prompts.harmful, fraction, options.seed), split_held_out(prompts.harmless, fraction,
                                                                                      options.seed)


def _direction_prompts(prompts: PromptLists, options: ComputeOptions,
                       scan_prompts: tuple[Sequence[str], Sequence[str]] | None) -> tuple[list[str], list[str]]:
    """The prompts :func:`compute` takes the directions from (refinement trains on the same)."""
    (harmful, _), (harmless, _) = _split_for_directions(prompts, options, scan_prompts)
    return harmful, harmless


def resolve_layer(layer: float | None, num_layers: int) -> float | None:
    """A given layer as an index: a fraction of the depth when below 1; checked against the model."""
    if layer is None:
        return None
    if not math.isfinite(layer) or layer < 0:
        raise SettingsError(f"layer {layer} is not a layer index", "give {layer} as an index or a fraction of depth",
                            input="layer")
    index = layer * num_layers if 0 < layer < 1 else float(layer)
    if index > num_layers:
        raise SettingsError(f"layer {layer:g} is past the model's last layer ({num_layers} layers)",
                            f"give {{layer}} between 0 and {num_layers}, or leave it out to measure it", input="layer")
    return index


def _store_scores(artifact: RefusalDirections, scores: LayerScores) -> None:
    n = artifact.num_layers + 1
    refusal = torch.full((n,), float("nan"))
    kl = torch.full((n,), float("nan"))
    refusal[scores.layers] = torch.tensor(scores.refusal)
    kl[scores.layers] = torch.tensor(scores.kl)
    artifact.scores["refusal_probability"] = refusal
    artifact.scores["kl"] = kl
    artifact.metadata.selection = LayerSelection(how="measured", baseline_refusal_probability=scores.baseline_refusal,
                                                 refusal_token_ids=scores.refusal_tokens, candidates=scores.layers)


GGUF_OUTPUTS = ("gguf", "safetensors")


def apply(source: str, artifact: RefusalDirections, out: str | Path, *, settings: AblationSettings | None = None,
          revision: str | None = None, overwrite: bool = False, dtype: str = "auto", trust_remote_code: bool = False,
          progress: bool = True, gguf_output: str = "gguf",
          extra_files: Mapping[str, str] | None = None) -> ApplyReport:
    """Write an abliterated copy of ``source`` (folder, Hub id or GGUF file) to ``out``; ``extra_files``
    (name -> text) are written into it too.

    Checkpoint folders and Hub ids are streamed shard by shard. A GGUF file stays GGUF
    (``out/<same name>.gguf``, only the residual writers requantized, see
    :mod:`forge_hub.outputs.gguf.edit`); ``gguf_output="safetensors"`` instead dequantizes it through
    transformers (``dtype``), edits it in memory and saves safetensors.
    """
    settings = settings or artifact.metadata.apply_settings
    if gguf_output not in GGUF_OUTPUTS:
        raise SettingsError(f"unknown GGUF output {gguf_output!r}", f"use one of {', '.join(GGUF_OUTPUTS)}",
                            input="gguf_output")
    src = resolve_source(source, revision)
    check_output(out, overwrite=overwrite, kind="model", sources=local_paths(src))  # before any download
    if src.kind == "gguf":
        if gguf_output == "safetensors":
            return _apply_in_memory(src, artifact, out, settings, overwrite, dtype, trust_remote_code, extra_files)
        from forge_hub.outputs.gguf.edit import apply_to_gguf

        return apply_to_gguf(src.id, out, artifact, settings, overwrite=overwrite, progress=progress,
                             extra_files=extra_files)
    folder = Path(src.id) if src.kind == "folder" else download_checkpoint(src)
    return apply_to_checkpoint(folder, out, artifact, settings, overwrite=overwrite, progress=progress,
                               extra_files=extra_files)


def _apply_in_memory(src: ModelSource, artifact: RefusalDirections, out: str | Path, settings: AblationSettings,
                     overwrite: bool, dtype: str, trust_remote_code: bool,
                     extra_files: Mapping[str, str] | None) -> ApplyReport:
    model, tokenizer, _ = load_model(src, dtype=dtype, trust_remote_code=trust_remote_code)
    artifact.check_fits(Architecture.from_config(model.config))
    plan = abliterate_model(model, artifact, settings)
    with staged_output(out, overwrite, kind="model", sources=[src.id]) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        document_output(tmp, artifact, settings, src.id, sorted(plan.edits), extra_files=extra_files)
        shards = len(list(tmp.glob("*.safetensors"))) - 1
        written = sum(p.stat().st_size for p in tmp.iterdir() if p.name not in ARTIFACT_FILES)
    return ApplyReport(Path(out).expanduser().resolve(), len(plan), plan.layers(), shards, written)


def evaluate(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
             reference: torch.nn.Module | None = None, settings: EvaluationSettings | None = None,
             model_name: str = "model", reference_name: str | None = None,
             prompt_sources: dict[str, str] | None = None, xstest: XSTestPrompts | None = None,
             capability: CapabilitySettings | None = None) -> EvaluationResults:
    """A model against its original on harmful and harmless prompts (use prompts the directions
    were not computed from): refusals, over-refusals, first-token KL, answer cross-entropy; with
    ``xstest``, over-refusal on XSTest's safe prompts by type; with ``capability``, lm-eval tasks
    on both loaded models and their change.

    Example::

        results = evaluate(edited, tokenizer, harmful, harmless, reference=original,
                           capability=CapabilitySettings(tasks=("hellaswag",), limit=200))
        Path("evaluation.json").write_text(results.to_json())
    """
    return evaluate_models(model, tokenizer, harmful, harmless, reference=reference, settings=settings,
                           model_name=model_name, reference_name=reference_name, prompt_sources=prompt_sources,
                           xstest=xstest, capability=capability)


def write_results(results: EvaluationResults, out: str | Path) -> tuple[Path, Path]:
    """``out`` (the results JSON) and the Markdown report beside it (``.md``), each written whole."""
    from forge_hub.evaluation.report import results_markdown
    from forge_hub.outputs.staging import write_file

    out = Path(out).expanduser()
    markdown = out.with_suffix(".md")
    write_file(out, results.to_json())
    write_file(markdown, results_markdown(results))
    return out, markdown


def check_publish(repo_id: str, *, gguf_types: str | Sequence[str] | None = None, gguf_repo: str | None = None,
                  token: str | None = None, dry_run: bool = False) -> tuple[list[str], str | None]:
    """Everything a publication checks before long work (a run, a GGUF export): the repo ids, the
    GGUF types and their quantizer, the token. Returns (GGUF types, token)."""
    from forge_hub.hub.push import check_push_target
    from forge_hub.outputs.gguf.export import check_types

    types = check_types(gguf_types)
    return types, check_push_target(repo_id, gguf_repo=gguf_repo, token=token, dry_run=dry_run)


def push(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
            exist_ok: bool = False, gguf_types: str | Sequence[str] | None = None, gguf_repo: str | None = None,
            gguf_files: Sequence[str | Path] = (), results: str | Path | None = None, license: str | None = None,
            base_model: str | None = None, message: str | None = None, dry_run: bool = False,
            progress: bool = True, gguf_check: GGUFCheckOptions | None = None,
            on_gguf_check: Callable[[GGUFCheck], None] | None = None) -> PushResult:
    """Push an abliterated folder with its card, results and direction; with ``gguf_types``, GGUF
    files of those types are written first (to a temporary folder) and pushed too (to ``gguf_repo``
    when given). Every input is checked before the export and before the first request.

    With ``gguf_check``, every GGUF file is measured (refusals, over-refusal, KL from the base;
    :mod:`forge_hub.evaluation.gguf_check`) after it is written and before anything is sent;
    ``on_gguf_check`` sees the result first (the CLI prints it, warnings included), and the card
    and ``gguf-evaluation.json`` carry it.

    Example::

        push("smollm2-abliterated", "me/smollm2-abliterated", gguf_types="Q8_0", dry_run=True)
    """
    import tempfile

    from forge_hub.evaluation.gguf_check import check_gguf_files
    from forge_hub.hub.card import GGUFVariant
    from forge_hub.hub.push import check_push_inputs, push_model
    from forge_hub.outputs.gguf.export import check_types, export_gguf

    folder = Path(folder).expanduser()
    types = check_types(gguf_types)
    token = check_push_inputs(folder, repo_id, gguf_repo=gguf_repo, token=token, dry_run=dry_run)
    for given in gguf_files:  # a misnamed file fails now, not after an export and a check
        GGUFVariant.from_path(given)
    if gguf_check is not None:
        gguf_check.check()
    with tempfile.TemporaryDirectory(prefix="forge-hub-gguf-") as tmp:
        files = [Path(f) for f in gguf_files]
        if types:
            files += export_gguf(folder, Path(tmp), types, name=repo_id.split("/")[-1], progress=progress)
        checked = None
        if gguf_check is not None and files:
            checked = check_gguf_files(files, options=gguf_check, unquantized=folder)
            if on_gguf_check is not None:
                on_gguf_check(checked)
        return push_model(folder, repo_id, token=token, private=private, exist_ok=exist_ok, gguf_files=files,
                          gguf_repo=gguf_repo, results=Path(results) if results else None, license=license,
                          commit_message=message, dry_run=dry_run, base_model=base_model, progress=progress,
                          gguf_check=checked)


def check_gguf(files: Sequence[str | Path], *, options: GGUFCheckOptions, unquantized: str | Path | None = None,
               out: str | Path | None = None) -> GGUFCheck:
    """GGUF files measured as they will be run, beside the base and the unquantized model
    (``forge-hub gguf --evaluate-against``); written to ``out`` (``gguf-evaluation.json``) when given.

    Example::

        options = GGUFCheckOptions(reference="HuggingFaceTB/SmolLM2-135M-Instruct", harmful=h, harmless=s)
        check = check_gguf(["gguf/model-Q4_K_M.gguf"], options=options, unquantized="smollm2-abliterated")
    """
    from forge_hub.evaluation.gguf_check import check_gguf_files
    from forge_hub.outputs.staging import write_file

    result = check_gguf_files(files, options=options, unquantized=unquantized)
    if out is not None:
        write_file(Path(out).expanduser(), result.to_json())
    return result


@dataclass
class RunCheck:
    """A run's result measured at the end, on prompts held out from its directions: the original's and
    the edited model's refusals, over-refusals and first-token KL, and what they mean."""

    results: EvaluationResults
    seconds: float
    verdict: str  # "removed", "partly", "barely" or "damaging"
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "removed"


# What a run's check calls a success: refusals down to at most this share of the original's, at a
# first-token KL at most this (beyond it answers start to change visibly).
REMOVED_SHARE, PARTLY_SHARE, DAMAGING_KL = 0.25, 0.6, 0.5


def check_run(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections, prompts: PromptLists, *,
              options: ComputeOptions, max_new_tokens: int = FINAL_MAX_NEW_TOKENS, max_prompts: int = 100,
              xstest: XSTestPrompts | None = None, capability: CapabilitySettings | None = None,
              judge: str | None = None, judge_label: str | None = None,
              scored_on: tuple[Sequence[str], Sequence[str]] | None = None) -> RunCheck:
    """Answer held-out prompts with the loaded original, then with the same model edited in memory as
    the artifact's settings say, and judge the result. The model is left edited.

    The prompts are those held out from the directions (the compute step never used them to build
    the direction); at most ``max_prompts`` per side. ``xstest`` adds over-refusal on XSTest's safe
    prompts, ``capability`` lm-eval tasks, both measured on the same model before and after the edit;
    ``judge`` (a text-classification model) counts the harmful answers' refusals as a second opinion.
    ``scored_on`` (harmful, harmless) are a search's own evaluation prompts: its directions took every
    prompt of ``prompts``, none of which is held out any more, so the check answers these instead.
    """
    start = time.time()
    harmful, harmless, sources = check_prompts(prompts, options=options, max_prompts=max_prompts, scored_on=scored_on)
    settings = EvaluationSettings(max_new_tokens=max_new_tokens, batch_size=options.batch_size,
                                  system_prompt=options.system_prompt, max_prompt_tokens=options.max_prompt_tokens,
                                  judge=judge, judge_label=judge_label)
    if xstest is not None:
        check_prompt_lengths(tokenizer, xstest.prompts, max_tokens=options.max_prompt_tokens,
                             system_prompt=options.system_prompt, context=model_context(model))
    before = measure(model, tokenizer, harmful, harmless, settings=settings, label="original", xstest=xstest,
                     capability=capability)
    abliterate_model(model, artifact, artifact.metadata.apply_settings)
    after = measure(model, tokenizer, harmful, harmless, settings=settings, label="abliterated", xstest=xstest,
                    capability=capability)
    results = results_record(after, before, harmful, harmless, settings=settings,
                             model_name="abliterated (the edit, in memory)", reference_name="original",
                             prompt_sources=sources, xstest=xstest, capability=capability)
    verdict, advice = judge_run(results)
    return RunCheck(results, round(time.time() - start, 1), verdict, advice)


def check_prompts(prompts: PromptLists, *, options: ComputeOptions, max_prompts: int = 100,
                  scored_on: tuple[Sequence[str], Sequence[str]] | None = None,
                  ) -> tuple[list[str], list[str], dict[str, str]]:
    """What a run's check, and the check of the GGUF files it publishes, answer (at most ``max_prompts``
    per side), with where each side came from: the prompts kept aside from its directions, or
    ``scored_on``, a search's own evaluation prompts, when its directions took every prompt."""
    if scored_on is not None:
        return (list(scored_on[0])[:max_prompts], list(scored_on[1])[:max_prompts],
                {side: "the search's evaluation prompts" for side in ("harmful", "harmless")})
    fraction = options.held_out_fraction or 0.25
    return (split_held_out(prompts.harmful, fraction, options.seed)[1][:max_prompts],
            split_held_out(prompts.harmless, fraction, options.seed)[1][:max_prompts],
            {side: f"held out from {prompts.source(side)}" for side in ("harmful", "harmless")})


def judge_run(results: EvaluationResults) -> tuple[str, list[str]]:
    """In plain words: did the refusals go, and at what cost; and what to try when they did not."""
    r = results.results
    before, after, kl = r.reference.refusals, r.model.refusals, r.kl_divergence or 0.0
    advice = []
    if kl > DAMAGING_KL:
        verdict = "damaging"
        advice.append(f"the edit moved the model far from the original (first-token KL {kl:.2f}): answers will "
                      "differ visibly; try {optimize}, which weighs refusals against KL, or a later {layer}")
    elif before == 0:
        verdict = "none"
        advice.append("the original refused none of these prompts, so there was nothing to remove here; check "
                      "with prompts it does refuse (an evaluation with your own {harmful})")
    elif after <= REMOVED_SHARE * before:
        verdict = "removed"
    else:
        verdict = "partly" if after <= PARTLY_SHARE * before else "barely"
        advice.append("try {optimize} (a search over layers and per-layer strengths), more or other prompts "
                      "({harmful}, {harmless}, {n_prompts}), or a {layer} later in the model")
    return verdict, advice
