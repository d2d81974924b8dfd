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
"""

from __future__ import annotations

import dataclasses
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
    # hooks express plain projection; norm preservation changes magnitudes, not which layer is best
    hook_settings = dataclasses.replace(settings, norm_preserving=False)
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
