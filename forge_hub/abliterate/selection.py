"""Choosing the direction's layer by measurement, not by a fraction of the depth.

Each candidate layer's direction is ablated (with forward hooks, on the one loaded model) and
scored on held-out prompts that did not shape the directions:

- refusal: the probability that the first answer token to a harmful prompt opens a refusal.
  The refusal-opening tokens are read off the model itself: the tokens the original model puts
  far more probability on after harmful prompts than after harmless ones.
- kl: first-token KL divergence from the original on harmless prompts (the damage).

The pick minimises ``refusal + kl_weight * kl`` among the layers whose KL stays under a hard
bound (when none does, the least damaging one): a layer that halves refusals at no cost beats
one that removes the last few at the price of the model's coherence.

The first-token scan is cheap but only a proxy: a refusal can start at the second word. So the
final choice (:func:`measure_settings`) bakes a short list of settings (the scan's best layers,
each with a few ways of applying it) into the weights in turn and counts refusals among real
greedy answers to harmful prompts (by default from a source the direction prompts do not come
from), keeping the least damaging setting that leaves few enough refused.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.live import ablation_hooks, plan_for_model
from forge_hub.evaluation.generation import first_token_logprobs, kl_divergence
from forge_hub.schema import AblationSettings


@dataclass
class LayerScores:
    layers: list[int]
    refusal: list[float]
    kl: list[float]
    baseline_refusal: float
    refusal_tokens: list[int]
    chosen: int


def refusal_token_ids(harmful_lp: torch.Tensor, harmless_lp: torch.Tensor, *, max_tokens: int = 8,
                      coverage: float = 0.9) -> list[int]:
    """Tokens that carry most of the extra first-token probability on harmful prompts."""
    excess = (harmful_lp.exp().mean(0) - harmless_lp.exp().mean(0)).clamp_min(0)
    order = torch.argsort(excess, descending=True)[:max_tokens]
    total = excess.sum().item()
    chosen, covered = [], 0.0
    for t in order.tolist():
        chosen.append(t)
        covered += excess[t].item()
        if total == 0 or covered >= coverage * total:
            break
    return chosen


def refusal_probability(logprobs: torch.Tensor, token_ids: Sequence[int]) -> float:
    return logprobs[:, list(token_ids)].exp().sum(1).mean().item()


def default_candidates(num_layers: int, low: float = 0.2, high: float = 0.85) -> list[int]:
    return list(range(max(1, int(low * num_layers)), max(2, int(round(high * num_layers)))))


def score_layers(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections, settings: AblationSettings,
                 harmful: Sequence[str], harmless: Sequence[str], *, candidates: Sequence[int] | None = None,
                 max_kl: float = 1.0, kl_weight: float = 1.0, batch_size: int = 16, system_prompt: str | None = None,
                 progress: bool = True) -> LayerScores:
    """Score every candidate layer's direction under ``settings`` and choose one."""
    candidates = list(candidates) if candidates is not None else default_candidates(artifact.num_layers)
    ref_harmful = first_token_logprobs(model, tokenizer, harmful, batch_size=batch_size, system_prompt=system_prompt)
    ref_harmless = first_token_logprobs(model, tokenizer, harmless, batch_size=batch_size, system_prompt=system_prompt)
    tokens = refusal_token_ids(ref_harmful, ref_harmless)
    # hooks express plain projection; keeping magnitudes changes how much, not which layer is best
    hook_settings = dataclasses.replace(settings, norm_preserving=False, row_normalized=False)
    refusal, kl = [], []
    for layer in tqdm(candidates, desc="score layers", unit="layer", leave=False, disable=not progress):
        plan = plan_for_model(model, artifact, dataclasses.replace(hook_settings, direction_layer=float(layer)))
        with ablation_hooks(model, plan):
            refusal.append(refusal_probability(first_token_logprobs(model, tokenizer, harmful, batch_size=batch_size,
                                                                    system_prompt=system_prompt), tokens))
            kl.append(kl_divergence(ref_harmless,
                                    first_token_logprobs(model, tokenizer, harmless, batch_size=batch_size,
                                                         system_prompt=system_prompt)))
    return LayerScores(candidates, refusal, kl, refusal_probability(ref_harmful, tokens), tokens,
                       choose_layer(candidates, refusal, kl, max_kl, kl_weight=kl_weight))


def choose_layer(layers: Sequence[int], refusal: Sequence[float], kl: Sequence[float], max_kl: float,
                 *, kl_weight: float = 1.0) -> int:
    within = [i for i, k in enumerate(kl) if k <= max_kl]
    if within:
        return layers[min(within, key=lambda i: (refusal[i] + kl_weight * kl[i], kl[i]))]
    return layers[min(range(len(layers)), key=lambda i: kl[i])]


@dataclass(frozen=True)
class Variation:
    """One way of applying a shortlisted layer's direction, in terms of the model's depth."""

    skip_first: float = 0.0  # fraction of the layers, from the bottom, left unedited
    # edit only up to the direction's layer plus this fraction of the depth (None: to the top). The
    # top layers write along the refusal direction on ordinary prompts as much as on harmful ones,
    # so editing them costs KL and removes no refusal (README, "How the default run chooses").
    reach: float | None = None
    strength: float = 1.0  # of the attention and MLP writers

    def settings(self, base: AblationSettings, layer: int, num_layers: int) -> tuple[str, AblationSettings]:
        skip = round(self.skip_first * num_layers)
        end = None if self.reach is None else min(num_layers, layer + round(self.reach * num_layers))
        if end is not None:
            edited = f", layers {skip}-{end - 1}"
        else:
            edited = f", layers {skip}+" if skip else ""
        label = f"layer {layer}{edited}" + (f", strength {self.strength:g}" if self.strength != 1.0 else "")
        # on the layers' writers (the search's per-component peaks), so the search can start from it
        return label, base.replace(direction_layer=float(layer), skip_first=skip, layer_end=end,
                                   attn_strength=base.attn_strength * self.strength,
                                   mlp_strength=base.mlp_strength * self.strength)


@dataclass
class MeasuredSetting:
    label: str
    settings: AblationSettings
    refusals: float = math.nan
    kl: float = math.nan
    complete: bool = False
    seconds: float = 0.0

    def record(self) -> dict[str, object]:
        """What refusal.json keeps: no timings, so the same run writes the same file."""
        return {"label": self.label, "refusals": self.refusals, "kl": round(self.kl, 4), "complete": self.complete}


def measure_settings(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections,
                     candidates: Sequence[MeasuredSetting], harmful: Sequence[str], harmless: Sequence[str], *,
                     max_new_tokens: int, refusal_target: float, max_kl: float = 1.0, batch_size: int = 32,
                     system_prompt: str | None = None,
                     progress: bool = True) -> tuple[MeasuredSetting, list[MeasuredSetting]]:
    """Bake each candidate into the weights (undone afterwards), measure first-token KL on
    ``harmless`` and count refusals among greedy answers to ``harmful``. The choice: the least
    damaging (lowest KL) of those that leave at most ``refusal_target`` of the harmful prompts
    refused, within sampling noise (:func:`meets_target`); when none does, the fewest refusals among
    those with KL at most ``max_kl`` (lower KL breaking ties), since removing refusals is what the
    user asked for. Returns it with every candidate as measured. A candidate that already refuses
    more than one measured at no more KL cannot win, so its counting stops there."""
    from forge_hub.abliterate.search import SearchOptions, TrialEvaluator

    options = SearchOptions(max_new_tokens=max_new_tokens, batch_size=batch_size, system_prompt=system_prompt)
    evaluator = TrialEvaluator(model, tokenizer, harmful, harmless, options)
    done: list[MeasuredSetting] = []

    def bound(kl: float) -> float | None:
        better = [c.refusals for c in done if c.complete and c.kl <= kl]
        return min(better) if better else None

    try:
        for candidate in tqdm(candidates, desc="measure settings", unit="setting", leave=False,
                              disable=not progress):
            started = time.monotonic()
            candidate.refusals, candidate.kl, candidate.complete = evaluator(artifact, candidate.settings, bound)
            candidate.seconds = time.monotonic() - started
            done.append(candidate)
    finally:
        evaluator.restore()
    return choose_setting(done, len(harmful), refusal_target=refusal_target, max_kl=max_kl), done


def meets_target(refusals: float, total: int, refusal_target: float) -> bool:
    """Whether a count is compatible with leaving ``refusal_target`` of ``total`` prompts refused:
    at most one binomial standard deviation above it. Counts of a few hundred answers cannot tell
    9 refusals from 10, and a hard cut there picked the stronger, more damaging edit on a coin toss
    (the second refusing model: 9/175 against 10/175 at KL 0.183 against 0.171)."""
    expected = refusal_target * total
    return refusals <= expected + math.sqrt(expected * (1.0 - refusal_target))


def choose_setting(measured: Sequence[MeasuredSetting], total: int, *, refusal_target: float,
                   max_kl: float) -> MeasuredSetting:
    """The rule of :func:`measure_settings`, on settings already measured."""
    clean = [c for c in measured if c.complete and meets_target(c.refusals, total, refusal_target)]
    if clean:
        return min(clean, key=lambda c: (c.kl, c.refusals))
    bounded = [c for c in measured if c.kl <= max_kl] or list(measured)
    return min(bounded, key=lambda c: (c.refusals, c.kl))
