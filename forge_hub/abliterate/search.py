"""Automatic parameter search: fewest refusals at the least damage (``forge-hub run --optimize``).

Optuna's multi-objective TPE sampler minimises (refusals, KL) over the direction's layer
(fractional: neighbouring layers' directions interpolate), the direction method, and for the
attention and MLP writers separately a linear per-layer weight kernel (peak weight, centre,
width, floor). The first trials are a ladder of strengths along a band of upper layers
(:data:`BAND_LADDER`) and two strong edits on broad kernels (:data:`BROAD_LADDER`), after the
default edit at the layer scan's pick where there is one (:func:`needs_layer_scan`), so the search
can only improve on them.

Trials are cheap: one model stays loaded, each trial's edit is written into its weights in place
and undone from a saved copy of the residual writers before the next; KL costs one forward pass
on the harmless prompts, and refusal counting stops early once a trial is already dominated
(more refusals than a finished trial with no larger KL), the prompts that earlier trials refused
most being answered first (:meth:`TrialEvaluator.answering_order`). Refusals are counted by the markers, or
with ``judge`` by a text-classification model (:mod:`forge_hub.evaluation.judge`). The study lives in an Optuna storage
(:mod:`forge_hub.abliterate.study`): an interrupted run resumes where it stopped, and several
processes or machines can add trials to one study until it holds ``trials`` finished ones.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import optuna
import torch
from tqdm.auto import tqdm

from forge_hub.abliterate.architecture import ATTN, MLP
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.live import apply_plan_remembering, plan_for_model
from forge_hub.abliterate.refine import RefineOptions
from forge_hub.abliterate.study import StudyLocation, is_surplus, join_study, trial_counts
from forge_hub.errors import SettingsError
from forge_hub.evaluation.generation import first_token_logprobs, generate, kl_divergence
from forge_hub.evaluation.judge import refusal_judge
from forge_hub.evaluation.refusal_count import count_refusals
from forge_hub.evaluation.refusals import REFUSAL_MARKERS
from forge_hub.model.chat import token_counts
from forge_hub.model.weights import ModelWeights
from forge_hub.schema import AblationSettings

OBJECTIVES = ("refusals", "kl")
SEARCH_METHODS = ("projected", "mean_diff")
MAGNITUDES = ("rows", "columns", "none")  # row-normalized, exact norm preservation, plain projection
DEFAULT_PICK_MAX_KL = 0.12
# The start-up trials after the default one remove each layer's own direction from a band of upper
# layers, each component with its own kernel: attention peaking at 0.9 of the depth, the MLP at 0.75
# (centre as a fraction of the last layer, half-width as a fraction of the layer count, floor as a
# fraction of the peak). The attention band is where Heretic's best trial on the refusing fixture
# edited, in forge-hub's terms; the MLP's centre moved down from there (0.83) after scoring on both
# refusing models: at 0.75 it removed as much or more at the same KL. A ladder of peak weights along
# the band lays out a front from strong to light edits within the first trials, which the sampler then
# refines. Attention writers cost little KL for the refusals they remove and MLP writers much (on the
# second refusing model, attention 1.17 -> 1.3 beside the same MLP: 5 -> 3 refusals in 100 for 0.002
# of KL), so the ladder starts at the attention's highest weight, lowers the MLP's faster than the
# attention's and ends with attention alone, the first of those two centred a little lower (0.85).
# README, "Start-up trials", has what each rung scored and what was tried instead.
ATTN_BAND = (0.9, 0.18, 0.77)
MLP_BAND = (0.75, 0.24, 0.28)


class Rung(NamedTuple):
    """One start-up trial on the band: the peak weights, the attention's centre where it is not the
    band's, and how weight magnitudes are kept (a :data:`MAGNITUDES` choice)."""

    attn: float
    mlp: float
    attn_center: float = ATTN_BAND[0]
    magnitudes: str = "rows"


# The fifth rung, attention alone at 0.95 centred at 0.85, is a plain projection: at that light end it
# scored 35 refusals in 100 at KL 0.0124 on the second refusing model where row normalization scored
# 35 at 0.0133 (fixture: 44 at 0.011 against 43 at 0.010); on the first rung the plain projection
# lost (fixture 1 at 0.093 against 0.086), so the others keep row normalization.
BAND_LADDER = (Rung(1.5, 0.8), Rung(1.17, 0.55), Rung(1.17, 0.2), Rung(1.17, 0.1), Rung(0.95, 0.0, 0.85, "none"),
               Rung(0.78, 0.0))


# Refined directions (forge_hub.abliterate.refine) remove less per unit of weight than the mean
# differences, for far less KL: on the refusing fixture, refined for the first rung, that rung refused
# 8/100 unseen harmful prompts at KL 0.095 and this stronger one 3/100 at 0.121, where the plain
# directions' first rung refused 9/100 at 0.130 (README, "Refined directions"). So with refined
# directions the ladder starts with this rung, on them, and the peaks may reach REFINED_MAX_PEAK.
# Directions refined for the strongest rung do worse at every lighter edit than the mean differences
# (the Heretic comparison's fixture front with every trial on refined directions missed three of
# Heretic's points that the plain search covered: docs/search-notes.md, "Refined directions"), so
# the rest of the ladder keeps the plain ones and each trial of the sampler chooses (DIRECTION_KINDS).
# Refined directions are refined under a biprojected edit and every trial on them edits biprojected
# (:func:`edit_for`): that kept each rung's refusals at about 0.002 less KL on the fixture's unseen
# prompts (this rung: 2/100 at 0.1183 against 0.1202; docs/search-notes.md), where on the plain
# directions biprojection costs KL (:func:`search_space`).
REFINED_RUNG = Rung(1.8, 1.0)
MAX_PEAK, REFINED_MAX_PEAK = 1.5, 2.0
DIRECTION_KINDS = ("plain", "refined")  # a search of refined directions also searches the mean differences


class Kernel(NamedTuple):
    """A start-up kernel in fractions, so one ladder fits every depth: the centre of the last layer's
    index, the half-width of the layer count, the floor of the peak (the weights it gives:
    :func:`forge_hub.abliterate.ablation.layer_kernel`)."""

    peak: float
    center: float
    width: float
    floor: float


# After the band's ladder, two strong rungs on broad kernels (attention, MLP), each layer removing its
# own direction. On the second refusing model the band's refusals level off at 3-5/100: what is left
# (an insult, a sexist argument, smuggling) is written by layers below the band. Heretic's run again
# on that model reached 2/100 at KL 0.259 with attention at 1.47 peaking at 0.78 of the depth and
# falling to 0.59 of that at half the depth away, the MLP at 1.12 near the top; that shape with each
# layer's own direction scored 3 at 0.182 in forge-hub. These two rungs, at attention 1.5 and MLP 1.3,
# scored 2 at 0.199 and 1 at 0.300 there, where the every-layer rungs they replace (one constant weight,
# 0.9 and 0.8) scored 2 at 0.310 and 3 at 0.268 (100 tokens, Heretic's markers,
# benchmarks/heretic_comparison.py's prompts). On the refusing fixture both kinds lie behind the band's
# 1 at 0.086 (broad: 3 at 0.208, 4 at 0.266; every layer: more than one refusal at KL 0.28 and 0.32).
# They come after the band, so a study's first trials, and the light end they lay out, are unchanged.
BROAD_LADDER = ((Kernel(1.5, 0.78, 0.5, 0.6), Kernel(1.3, 0.98, 0.5, 0.6)),
                (Kernel(1.5, 0.78, 0.6, 0.7), Kernel(1.3, 0.98, 0.6, 0.7)))
PROCESS = f"{socket.gethostname()}:{os.getpid()}"  # which worker scored a trial


@dataclass
class SearchOptions:
    trials: int = 40
    storage: str | Path = Path("forge-hub-study.db")  # SQLite file, *.journal file or database URL
    study_name: str = "forge-hub"
    heartbeat: int = 60  # seconds between a trial's signs of life; silent for two, it is re-run
    max_new_tokens: int = 24
    batch_size: int = 32
    seed: int = 0
    space: str = "focused"  # one of SEARCH_SPACES (see search_space)
    without: tuple[str, ...] = ()  # choices switched off, for an ablation (ABLATIONS)
    pick_max_kl: float = DEFAULT_PICK_MAX_KL  # default pick: fewest refusals among trials with KL at most this
    system_prompt: str | None = None
    markers: tuple[str, ...] = REFUSAL_MARKERS
    judge: str | None = None  # a text-classification model that counts refusals instead of the markers
    judge_label: str | None = None  # its refusal label (default: the one naming a refusal)
    # gradient steps that refine each layer's direction for the start-up ladder's first rung before
    # the first trial (forge_hub.abliterate.refine); 0 searches the plain mean differences
    refine_steps: int = RefineOptions.steps


@dataclass(frozen=True)
class SearchSpace:
    """What a study searches beyond the kernels (whose ranges are the same in every space)."""

    methods: tuple[str, ...]
    magnitudes: tuple[str, ...]
    biprojection: tuple[bool, ...]
    direction_layers: tuple[float, float]  # range of the global direction's (fractional) layer
    direction_scopes: tuple[str, ...]  # "global" (one direction) and/or "per_layer" (each layer its own)
    skip_first: tuple[int, ...]  # bottom layers left unedited
    layer_ends: tuple[int, ...] | None  # exclusive end of the edited layers; None: any from a third of the depth
    max_peak: float = MAX_PEAK  # the highest weight of a component's kernel
    directions: tuple[str, ...] = ("plain",)  # DIRECTION_KINDS: the refined ones where the study's are refined


SEARCH_SPACES = ("focused", "wide")
# What an ablation can switch off (README, "Parameter search"): each layer's own direction (every trial
# then removes one global direction, the start-up ladder's at the default run's layer), or the start-up
# ladder (the sampler starts from the default edit alone).
ABLATIONS = ("per-layer-directions", "start-up-ladder")


def search_space(options: SearchOptions, artifact: RefusalDirections) -> SearchSpace:
    """The study's space. "focused" (the default) leaves out what loses on both refusing fixtures
    (README, "Parameter search"): the plain mean difference leaves most refusals; exact column-norm
    preservation and biprojection cost more KL than row-normalized edits at equal refusals, and so
    does plain projection except at the light end (it stays in for the ladder's light rung,
    :data:`BAND_LADDER`); a direction from the bottom two fifths or an edit that stops far below the
    top removes little. With 40 trials, each trial spent there is one fewer near the front. Its layer
    range is the whole model or the default run's measured one. "wide" searches all of it. Either space also
    takes in the default run's own choices, so that its edit is exactly the first trial."""
    if options.space not in SEARCH_SPACES:
        raise SettingsError(f"unknown search space {options.space!r}", f"use one of {', '.join(SEARCH_SPACES)}",
                            input="search_space")
    unknown = sorted(set(options.without) - set(ABLATIONS))
    if unknown:
        raise SettingsError(f"cannot switch off {', '.join(unknown)}", f"use one of {', '.join(ABLATIONS)}",
                            input="search_without")
    n, default = artifact.num_layers, default_trial_params(artifact)
    last = n - 1
    method = default["method"] if default["method"] in SEARCH_METHODS else "projected"
    layer = float(default.get("direction_layer", last))
    top = max(0.9 * last, layer)  # the default's own direction layer always lies within the range
    refined = artifact.metadata.refined is not None
    max_peak = REFINED_MAX_PEAK if refined else MAX_PEAK
    kinds = DIRECTION_KINDS if refined else ("plain",)
    scopes = _with(("global",), default["direction_scope"]) if "per-layer-directions" in options.without \
        else ("global", "per_layer")
    if options.space == "wide":
        return SearchSpace(methods=_with(SEARCH_METHODS, method), magnitudes=_with(MAGNITUDES, default["magnitudes"]),
                           biprojection=(False, True), direction_layers=(min(0.2 * last, layer), top),
                           direction_scopes=scopes,
                           skip_first=_with((0, round(0.2 * n)), default["skip_first"]), layer_ends=None,
                           max_peak=max_peak, directions=kinds)
    return SearchSpace(methods=_with(("projected",), method), magnitudes=_with(("rows", "none"), default["magnitudes"]),
                       biprojection=_with((False,), default["biprojected"]),
                       direction_layers=(min(0.4 * last, layer), top), direction_scopes=scopes,
                       skip_first=_with((0,), default["skip_first"]), layer_ends=_with((n,), default["layer_end"]),
                       max_peak=max_peak, directions=kinds)


def _with(choices: tuple, value: object) -> tuple:
    return choices if value in choices else (*choices, value)


class TrialEvaluator:
    """Scores settings on one loaded model, editing its weights in place and restoring them."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str],
                 options: SearchOptions) -> None:
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.harmful, self.harmless = list(harmful), list(harmless)
        self.weights = ModelWeights(model)
        self.judge = refusal_judge(options.judge, options.judge_label) if options.judge else None
        # how often this process's trials refused each harmful prompt; the most refused are answered first
        self.times_refused = [0] * len(self.harmful)
        self.lengths = token_counts(tokenizer, self.harmful, system_prompt=options.system_prompt)
        self.reference = first_token_logprobs(model, tokenizer, self.harmless, batch_size=options.batch_size,
                                              system_prompt=options.system_prompt)

    def restore(self) -> None:
        self.weights.restore()

    def edit(self, artifact: RefusalDirections, settings: AblationSettings) -> None:
        self.restore()
        apply_plan_remembering(self.model, plan_for_model(self.model, artifact, settings, self.weights), self.weights)

    def __call__(self, artifact: RefusalDirections, settings: AblationSettings,
                 bound_for_kl: Callable[[float], float | None] = lambda kl: None) -> tuple[float, float, bool]:
        """(refusals, kl, complete). Counting stops once refusals exceed ``bound_for_kl(kl)``;
        the refusals of a stopped trial are then extrapolated to the whole prompt set."""
        o = self.options
        self.edit(artifact, settings)
        kl = kl_divergence(self.reference, first_token_logprobs(self.model, self.tokenizer, self.harmless,
                                                                batch_size=o.batch_size, system_prompt=o.system_prompt))
        if self.judge is not None:
            return self._judged(kl, bound_for_kl(kl))
        order = self.answering_order()
        counted = count_refusals(self.model, self.tokenizer, [self.harmful[i] for i in order],
                                 max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
                                 system_prompt=o.system_prompt, markers=o.markers, bound=bound_for_kl(kl))
        for position in counted.refused:
            self.times_refused[order[position]] += 1
        if counted.complete:
            return float(counted.refusals), kl, True
        # stopped early: the trial is beaten already; its count so far, scaled to all prompts, ranks it
        return counted.refusals * len(self.harmful) / max(counted.decided, 1), kl, False

    def answering_order(self) -> list[int]:
        """Harmful prompts in the order they are answered: those that earlier trials refused most
        often first, equally refused ones by length. A beaten trial is beaten by its refusals, and
        batches are answered one after the other: with the prompts likely to be refused in the first
        batch, counting finds a beaten trial there instead of in a later batch, after whole answers to
        the first. Shorter prompts together pad less. The order changes no finished trial's count."""
        return sorted(range(len(self.harmful)), key=lambda i: (-self.times_refused[i], self.lengths[i]))

    def _judged(self, kl: float, refusal_bound: float | None) -> tuple[float, float, bool]:
        """Refusals as the judge counts them: whole answers, a batch at a time, stopping once beaten."""
        o = self.options
        order = self.answering_order()
        refusals, seen = 0, 0
        for start in range(0, len(order), o.batch_size):
            chunk = order[start:start + o.batch_size]
            answers = generate(self.model, self.tokenizer, [self.harmful[i] for i in chunk],
                               max_new_tokens=o.max_new_tokens, batch_size=o.batch_size, system_prompt=o.system_prompt)
            flags = self.judge.flags(answers)
            for i, refused in zip(chunk, flags):
                self.times_refused[i] += refused
            refusals += sum(flags)
            seen += len(chunk)
            if refusal_bound is not None and refusals > refusal_bound and seen < len(self.harmful):
                return refusals * len(self.harmful) / seen, kl, False
        return float(refusals), kl, True


def suggest_settings(trial: optuna.Trial, num_layers: int, space: SearchSpace) -> tuple[str, AblationSettings]:
    """The search space, which holds Heretic 1.4's as a special case (global or per-layer direction,
    row-normalized edits of the attention and MLP writers, per-component linear kernels), plus
    what forge-hub adds: leaving the bottom or the top layers unedited, component weights down to
    zero, and in the wide space the direction method, exact norm preservation or none, and
    biprojection (:func:`search_space`). A kernel has its ``peak`` at ``center`` and falls
    linearly to ``peak * floor`` at distance ``width``, zero beyond (width ``num_layers`` and
    floor 1 is constant over every layer)."""
    last = num_layers - 1
    method = trial.suggest_categorical("method", list(space.methods))
    per_layer = trial.suggest_categorical("direction_scope", list(space.direction_scopes)) == "per_layer"
    layer = None if per_layer else trial.suggest_float("direction_layer", *space.direction_layers)
    magnitudes = trial.suggest_categorical("magnitudes", list(space.magnitudes))
    biprojected = trial.suggest_categorical("biprojected", list(space.biprojection))
    skip_first = trial.suggest_categorical("skip_first", list(space.skip_first))
    layer_end = trial.suggest_int("layer_end", num_layers // 3, num_layers) if space.layer_ends is None \
        else trial.suggest_categorical("layer_end", list(space.layer_ends))
    strengths, kernels = {}, {}
    for component in (ATTN, MLP):
        strengths[component] = trial.suggest_float(f"{component}_peak", 0.0, space.max_peak)
        kernels[component] = {
            "kernel": "linear",
            "center": trial.suggest_float(f"{component}_center", 0.4 * last, float(last)),
            "width": trial.suggest_float(f"{component}_width", 1.0, float(num_layers)),
            "floor": trial.suggest_float(f"{component}_floor", 0.0, 1.0),
        }
    settings = AblationSettings(direction_layer=layer, per_layer=per_layer, attn_strength=strengths[ATTN],
                                mlp_strength=strengths[MLP], component_kernels=kernels,
                                row_normalized=magnitudes == "rows", norm_preserving=magnitudes == "columns",
                                biprojected=biprojected, skip_first=skip_first,
                                layer_end=None if layer_end == num_layers else layer_end)
    return method, settings


def suggest_directions(trial: optuna.Trial, space: SearchSpace) -> str:
    """Which directions the trial edits with (a :data:`DIRECTION_KINDS` choice); only asked where the
    space holds both, so a search of plain directions draws what it drew before refinement."""
    return trial.suggest_categorical("directions", list(space.directions)) if len(space.directions) > 1 \
        else space.directions[0]


def directions_for(artifact: RefusalDirections, method: str, kind: str) -> RefusalDirections:
    """The directions a trial of ``method`` edits with: the study's refined ones (refined for its own
    method), or ``method``'s mean differences."""
    return artifact.with_method(method) if kind == "refined" else artifact.plain().with_method(method)


def trial_directions(artifact: RefusalDirections, trial: optuna.trial.FrozenTrial) -> RefusalDirections:
    """The directions ``trial`` of a study of ``artifact`` edited with. A trial without the choice
    (a study from before it existed) edited with the study's own."""
    method = str(trial.params["method"])
    return directions_for(artifact, method, str(trial.params.get("directions", "refined")))


def default_trial_params(artifact: RefusalDirections) -> dict[str, object]:
    """The settings the default run applies (``apply_settings`` of the artifact), as search
    parameters, so the search starts from the default and can only improve on it."""
    n = artifact.num_layers
    applied = artifact.metadata.apply_settings
    params: dict[str, object] = {
        "method": artifact.metadata.method,
        "direction_scope": "per_layer" if applied.per_layer else "global",
        "magnitudes": "rows" if applied.row_normalized else "columns" if applied.norm_preserving else "none",
        "biprojected": applied.biprojected, "skip_first": applied.skip_first,
        "layer_end": n if applied.layer_end is None else applied.layer_end}
    if not applied.per_layer:
        params["direction_layer"] = applied.direction_layer if applied.direction_layer is not None \
            else artifact.selected_layer
    for component in (ATTN, MLP):
        own = applied.component_kernels.get(component, {})
        strength = applied.strength * (applied.attn_strength if component == ATTN else applied.mlp_strength)
        if own.get("kernel", applied.kernel) == "linear":
            params.update({f"{component}_peak": strength,
                           f"{component}_center": own.get("center", applied.kernel_center),
                           f"{component}_width": own.get("width", applied.kernel_width),
                           f"{component}_floor": own.get("floor", applied.kernel_floor)})
        else:  # constant: every layer at full weight
            params.update({f"{component}_peak": strength, f"{component}_center": float(n - 1),
                           f"{component}_width": float(n), f"{component}_floor": 1.0})
    return params


def refinement_settings(options: SearchOptions, artifact: RefusalDirections) -> AblationSettings:
    """The edit the directions are refined for: the start-up ladder's first rung, the band's
    strongest, biprojected (README, "Refined directions")."""
    n = artifact.num_layers
    trial = optuna.trial.FixedTrial(band_trial_params(n, BAND_LADDER[0]))
    return edit_for(suggest_settings(trial, n, search_space(options, artifact))[1], "refined")


def edit_for(settings: AblationSettings, kind: str) -> AblationSettings:
    """The edit a trial on ``kind`` (:data:`DIRECTION_KINDS`) directions makes: on the refined ones
    always biprojected, the edit they were refined under (:func:`refinement_settings`), whatever the
    trial's ``biprojected`` parameter says (a choice of the plain directions' edit, see
    :data:`REFINED_RUNG`). A trial's own settings record (``trial_choice``) holds the edit it made."""
    return settings.replace(biprojected=True) if kind == "refined" else settings


def band_trial_params(num_layers: int, rung: Rung, direction_layer: float | None = None) -> dict[str, object]:
    """A start-up trial on the upper band (:data:`ATTN_BAND`, :data:`MLP_BAND`) at ``rung``'s weights;
    within every space. Each layer removes its own direction, or with ``direction_layer`` that
    layer's, globally."""
    kernels = (Kernel(rung.attn, rung.attn_center, *ATTN_BAND[1:]), Kernel(rung.mlp, *MLP_BAND))
    return kernel_trial_params(num_layers, kernels, direction_layer, rung.magnitudes)


def kernel_trial_params(num_layers: int, kernels: tuple[Kernel, Kernel], direction_layer: float | None = None,
                        magnitudes: str = "rows") -> dict[str, object]:
    """A start-up trial with ``kernels`` (attention, MLP), their fractions turned into layers, weight
    magnitudes kept as ``magnitudes`` says; each layer removes its own direction, or with
    ``direction_layer`` that layer's, globally."""
    last = num_layers - 1
    return _start_up_trial(num_layers, direction_layer, magnitudes, {
        component: (k.peak, k.center * last, max(1.0, k.width * num_layers), k.floor)
        for component, k in zip((ATTN, MLP), kernels)})


def _start_up_trial(num_layers: int, direction_layer: float | None, magnitudes: str,
                    kernels: dict[str, tuple[float, float, float, float]]) -> dict[str, object]:
    """Search parameters of a projection over every layer, with a (peak, centre, width, floor) kernel
    per component; within every space."""
    scope = {"direction_scope": "per_layer"} if direction_layer is None \
        else {"direction_scope": "global", "direction_layer": direction_layer}
    params: dict[str, object] = {"method": "projected", **scope, "magnitudes": magnitudes,
                                 "biprojected": False, "skip_first": 0, "layer_end": num_layers}
    for component, (peak, centre, width, floor) in kernels.items():
        params.update({f"{component}_peak": peak, f"{component}_center": centre,
                       f"{component}_width": width, f"{component}_floor": floor})
    return params


def ladder_trial_params(num_layers: int, direction_layer: float | None = None,
                        refined: bool = False) -> list[dict[str, object]]:
    """The start-up ladder: :data:`BAND_LADDER` along the upper band, then :data:`BROAD_LADDER`; with
    refined directions, :data:`REFINED_RUNG` on them first and the rest on the plain ones."""
    plain = [*(band_trial_params(num_layers, rung, direction_layer) for rung in BAND_LADDER),
             *(kernel_trial_params(num_layers, kernels, direction_layer) for kernels in BROAD_LADDER)]
    if not refined:
        return plain
    return [{**band_trial_params(num_layers, REFINED_RUNG, direction_layer), "directions": "refined"},
            *({**params, "directions": "plain"} for params in plain)]


def needs_layer_scan(options: SearchOptions) -> bool:
    """Whether the study starts from the default edit, one global direction at the layer scan's pick
    (which the scan then has to measure): only where an ablation leaves out the start-up ladder or each
    layer's own direction (the ladder then takes the scan's layer). Otherwise the ladder's rungs
    dominated that edit in every measured run (the Heretic comparison at 986b2f1: fixture 33 refusals at
    KL 0.043 against the ladder's 10 at 0.038; second model 13 at 0.095 against 10 at 0.057), and the
    scan cost about 3 minutes of that comparison's 35, and 14-28 minutes of a default ``--optimize``
    run on the fixture."""
    return bool({"per-layer-directions", "start-up-ladder"} & set(options.without))


def start_trials(options: SearchOptions, artifact: RefusalDirections) -> list[dict[str, object]]:
    """The trials a new study queues: the default edit, where the artifact's layer was measured or
    given (not merely named: :func:`needs_layer_scan`), then the start-up ladder, as much of it as
    ``options.trials`` leaves room for (queued trials would outlive the study)."""
    params = default_trial_params(artifact)
    space = search_space(options, artifact)  # also rejects an unknown space before the study is made
    if params["method"] not in space.methods:  # a method the search cannot vary (e.g. svd)
        params["method"] = space.methods[0]
    if len(space.directions) > 1:  # the default edit is the default run's: plain directions
        params["directions"] = "plain"
    if "start-up-ladder" in options.without:
        return [params]
    # without per-layer directions the default is global (search_space), and the ladder takes its layer
    layer = None if "per_layer" in space.direction_scopes else float(params["direction_layer"])
    ladder = ladder_trial_params(artifact.num_layers, layer, refined=artifact.metadata.refined is not None)
    default = [] if artifact.metadata.selection.how == "separation" else [params]
    return [*default, *ladder][:max(1, options.trials)]


def search_setup(model_name: str, harmful: Sequence[str], harmless: Sequence[str],
                 options: SearchOptions) -> dict[str, object]:
    """What makes two processes' trials comparable (stored in the study, checked on joining)."""
    return {"model": Path(model_name).name, "harmful prompts": list(harmful), "harmless prompts": list(harmless),
            "search tokens": options.max_new_tokens, "refusal markers": list(options.markers),
            "search space": options.space, "system prompt": options.system_prompt,
            **({"switched off": sorted(options.without)} if options.without else {}),
            **({"refusal judge": [options.judge, options.judge_label]} if options.judge else {})}


def open_search(options: SearchOptions, model_name: str, harmful: Sequence[str], harmless: Sequence[str],
                directions: Callable[[], RefusalDirections]) -> tuple[optuna.Study, RefusalDirections]:
    """Create or join the study; ``directions`` is called only when this process creates it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return join_study(StudyLocation.parse(options.storage), options.study_name, heartbeat=options.heartbeat,
                      setup=search_setup(model_name, harmful, harmless, options), directions=directions,
                      start_trials=lambda artifact: start_trials(options, artifact), seed=options.seed,
                      sampler=lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                                      n_startup_trials=10))


def run_search(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections, harmful: Sequence[str],
               harmless: Sequence[str], options: SearchOptions, *, study: optuna.Study | None = None,
               progress: bool = True, poll_seconds: float = 2.0) -> optuna.Study:
    """Add trials until the study holds ``options.trials`` finished ones, then return it.

    Other processes may be adding trials to the same study: this one starts a trial only while
    the finished and running ones leave room, and otherwise waits for theirs (re-running any
    whose process died). ``study`` is the one :func:`open_search` returned, with ``artifact`` its
    directions; without it the study is opened here with ``artifact`` as the directions."""
    if study is None:
        study, artifact = open_search(options, artifact.metadata.model or "", harmful, harmless, lambda: artifact)
    space = search_space(options, artifact)
    variants = {(m, kind): directions_for(artifact, m, kind) for m in space.methods for kind in space.directions}
    evaluator: TrialEvaluator | None = None

    scoring: list[int] = []  # the number of the trial this process is scoring

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        scoring[:] = [trial.number]
        if is_surplus(study, trial, options.trials):
            trial.set_user_attr("surplus", True)  # pruned, not failed: nothing went wrong
            raise optuna.TrialPruned
        method, settings = suggest_settings(trial, artifact.num_layers, space)
        kind = suggest_directions(trial, space)
        settings = edit_for(settings, kind)
        trial.set_user_attr("process", PROCESS)  # who scores it; set once every parameter is chosen
        started = time.monotonic()
        refusals, kl, complete = evaluator(variants[method, kind], settings, lambda kl: _refusal_bound(study, kl))
        trial.set_user_attr("settings", settings.to_dict())
        trial.set_user_attr("complete", complete)
        trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
        bar.set_postfix(refusals=f"{refusals:.0f}", kl=f"{kl:.3f}")
        return refusals, kl

    counts = trial_counts(study)
    bar = tqdm(total=options.trials, initial=min(counts.complete, options.trials), desc="search", unit="trial",
               disable=not progress)
    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial is failed and queued again
            counts = trial_counts(study)
            bar.n = min(counts.complete, options.trials)
            bar.refresh()
            if counts.complete >= options.trials:
                break
            if counts.waiting or counts.complete + counts.running < options.trials:
                if evaluator is None:  # the reference pass, only once there is a trial to score
                    evaluator = TrialEvaluator(model, tokenizer, harmful, harmless, options)
                try:
                    study.optimize(objective, n_trials=1, gc_after_trial=False)
                except ValueError as error:  # Optuna's "Cannot tell a COMPLETE trial": see _finished_elsewhere
                    # (a ValueError of the scoring itself also ends as a finished, failed trial: it is not swallowed)
                    if not (str(error).startswith("Cannot tell a") and _finished_elsewhere(study, scoring)):
                        raise
            else:
                bar.set_postfix_str(f"waiting for {counts.running} trial(s) running elsewhere")
                time.sleep(poll_seconds)
    finally:
        if evaluator is not None:
            evaluator.restore()
        bar.close()
    return study


def _finished_elsewhere(study: optuna.Study, scoring: list[int]) -> bool:
    """Whether the trial this process just scored was finished first by another process. Optuna's
    SQLite storage cannot lock its queue of waiting trials, so two workers starting together can
    both take the same queued trial; the first result told stands and the second is dropped (seen
    in the fresh-clone test run, two workers on one SQLite study: "Cannot tell a COMPLETE trial")."""
    mine = [t for t in study.get_trials(deepcopy=False) if scoring and t.number == scoring[0]]
    return bool(mine) and mine[0].state.is_finished()


def _refusal_bound(study: optuna.Study, kl: float) -> float | None:
    """A trial with more refusals than a finished one of no larger KL is dominated: stop counting."""
    better = [t.values[0] for t in finished_trials(study) if t.values[1] <= kl and t.user_attrs.get("complete")]
    return min(better) if better else None


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated finished trials, fewest refusals first."""
    return sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))


def pick_trial(study: optuna.Study, total: int, *, max_kl: float = DEFAULT_PICK_MAX_KL,
               number: int | None = None) -> tuple[optuna.trial.FrozenTrial, str]:
    """Trial ``number`` when given; else the fewest refusals among trials with KL <= ``max_kl``,
    the lower KL breaking ties. A bound rather than a weighted sum because users ask "how many
    refusals are left at acceptable damage": a weighted sum trades a refusal for a fixed amount of
    KL and, on the fixture, picks a trial that refuses three times as often to save 0.04 of KL.
    When no trial is within the bound, the lowest ``refusals / total + KL`` (one refusal in a
    hundred weighs as much as 0.01 of KL). Returns the trial and the rule that chose it."""
    trials = finished_trials(study)
    if not trials:
        raise SettingsError("the study has no finished trials", "run some trials first ({trials} > 0)", input="trials")
    if number is not None:
        chosen = [t for t in trials if t.number == number]
        if not chosen:
            raise SettingsError(f"trial {number} is not a finished trial of this study",
                                f"pick one of {', '.join(str(t.number) for t in trials)} with {{pick}}", input="pick")
        return chosen[0], "given"
    within = [t for t in trials if t.values[1] <= max_kl]
    if within:
        return min(within, key=lambda t: (t.values[0], t.values[1])), f"fewest refusals with KL <= {max_kl:g}"
    return (min(trials, key=lambda t: (t.values[0] / total + t.values[1], t.values[1])),
            f"no trial with KL <= {max_kl:g}: lowest refusal rate + KL")


def trial_choice(trial: optuna.trial.FrozenTrial) -> tuple[str, AblationSettings]:
    return str(trial.params["method"]), AblationSettings.from_dict(trial.user_attrs["settings"])


def front_table(study: optuna.Study, picked: optuna.trial.FrozenTrial | None = None, total: int | None = None) -> str:
    """The Pareto front as a Markdown table."""
    rows = ["| trial | refusals | KL | directions | layer | magnitudes | attn peak | mlp peak |",
            "|---|---|---|---|---|---|---|---|"]
    for t in pareto_front(study):
        mark = " (picked)" if picked is not None and t.number == picked.number else ""
        refusals = f"{t.values[0]:.0f}" + (f"/{total}" if total else "")
        _, settings = trial_choice(t)
        layer = "own" if settings.per_layer else f"{settings.direction_layer:.2f}"
        magnitudes = "rows" if settings.row_normalized else "columns" if settings.norm_preserving else "none"
        directions = t.params["method"] + (" (refined)" if t.params.get("directions") == "refined" else "")
        rows.append(f"| {t.number}{mark} | {refusals} | {t.values[1]:.3f} | {directions} | {layer} | "
                    f"{magnitudes} | {settings.attn_strength:.2f} | {settings.mlp_strength:.2f} |")
    return "\n".join(rows)


def plot_front(study: optuna.Study, path: Path, picked: optuna.trial.FrozenTrial | None = None) -> Path:
    """Every trial's (refusals, KL) with the Pareto front and the pick marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_pareto_front

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        ax = plot_pareto_front(study, target_names=list(OBJECTIVES))
    if picked is not None:
        ax.scatter([picked.values[0]], [picked.values[1]], s=160, facecolors="none", edgecolors="red", linewidths=2,
                   label=f"picked: trial {picked.number}")
        ax.legend()
    ax.set_title("forge-hub search: refusals vs first-token KL")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    return path
