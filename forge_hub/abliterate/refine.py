"""Refining the refusal directions by gradient descent, for the edit they will be used in.

The difference of the harmful and harmless means is a good first guess at the refusal direction,
but it also holds whatever else tells those prompts apart, so removing it changes ordinary
answers too (the KL a search trades against refusals). Refinement starts from each edited
layer's mean-difference direction and moves it so that the edit, exactly as it will be applied
(the same writers, strengths and magnitude handling, baked into the weights), makes the model
follow compliant answers to harmful prompts while its first-token distribution on harmless prompts
stays close to the original's: an ablation loss plus a retain loss, after the refusal direction
optimisation of Wollschläger et al. 2025, "The Geometry of Refusal in Large Language Models".
The compliant answers are the model's own under a stronger edit of the unrefined directions.

On the refusing fixture, refined at the search's first start-up rung and measured on 100 unseen
harmful and 100 unseen harmless prompts, the same edits cost far less KL for the refusals they
remove (README, "Refined directions").
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from forge_hub.abliterate.ablation import orthogonal_to, through_norm_gain
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.live import baked_in, plan_for_model
from forge_hub.abliterate.plan import EditPlan, TensorEdit
from forge_hub.errors import SettingsError
from forge_hub.evaluation.generation import first_token_logprobs, generate
from forge_hub.evaluation.refusal_count import REFUSAL_MARKERS, refuses_already
from forge_hub.model.chat import encode, input_device, render
from forge_hub.model.weights import ModelWeights
from forge_hub.schema import AblationSettings, RefineRecord

_EPS = 1e-12


@dataclass(frozen=True)
class RefineOptions:
    steps: int = 60
    learning_rate: float = 0.002  # Adam, on unit directions: a step moves each coordinate about this much
    kl_weight: float = 0.1  # the retain loss's weight beside the answers' cross-entropy
    batch_size: int = 16  # harmful and harmless prompts per step, each
    answer_tokens: int = 16  # of each compliant answer, the tokens the loss follows
    target_scale: float = 1.35  # the edit that writes the compliant answers: the settings' strengths times this
    seed: int = 0
    system_prompt: str | None = None
    markers: tuple[str, ...] = REFUSAL_MARKERS

    @property
    def prompts_read(self) -> int:
        """The most harmful prompts the steps can read: only those get a compliant answer."""
        return self.steps * self.batch_size

    @property
    def generated_tokens(self) -> int:
        """Each compliant answer's length: a few past the loss's tokens, so a late refusal shows."""
        return self.answer_tokens + 8


def edited_weight(weight: torch.Tensor, direction: torch.Tensor, strength: float, *, row_normalized: bool,
                  norm_preserving: bool) -> torch.Tensor:
    """:func:`forge_hub.abliterate.ablation.project_out` of an ``nn.Linear`` weight ``[out, in]``
    along one direction, written so gradients reach ``direction`` (float32)."""
    q = direction / direction.norm().clamp_min(_EPS)
    w = weight.float()
    if row_normalized:
        norms = w.norm(dim=1, keepdim=True)
        unit = w / norms.clamp_min(_EPS)
        edited = unit - strength * torch.outer(q, q @ unit)
        return edited * (norms / edited.norm(dim=1, keepdim=True).clamp_min(_EPS))
    edited = w - strength * torch.outer(q, q @ w)
    if norm_preserving:
        edited = edited * (w.norm(dim=0, keepdim=True) / edited.norm(dim=0, keepdim=True).clamp_min(_EPS))
    return edited


def compliant_answers(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections,
                      settings: AblationSettings, harmful: Sequence[str], options: RefineOptions) -> dict[str, str]:
    """The model's answers to ``harmful`` under a stronger edit than ``settings``, without those
    still refused: the targets refinement teaches the refined edit to follow."""
    weights = ModelWeights(model)
    stronger = settings.replace(attn_strength=settings.attn_strength * options.target_scale,
                                mlp_strength=settings.mlp_strength * options.target_scale)
    with baked_in(model, plan_for_model(model, artifact, stronger, weights), weights):
        answers = generate(model, tokenizer, list(harmful), max_new_tokens=options.generated_tokens,
                           batch_size=32, system_prompt=options.system_prompt, desc="compliant answers")
    return {p: a for p, a in zip(harmful, answers) if a.strip() and not refuses_already(a, options.markers)}


def refine_directions(model: torch.nn.Module, tokenizer: object, artifact: RefusalDirections,
                      settings: AblationSettings, harmful: Sequence[str], harmless: Sequence[str],
                      options: RefineOptions = RefineOptions(), *, progress: bool = True) -> RefusalDirections:
    """The artifact with each edited layer's direction refined for ``settings`` (each layer's own
    directions, one per layer; see the module's docstring). The model is left as it was."""
    if options.steps < 1:
        raise SettingsError(f"refinement needs at least one step, not {options.steps}",
                            "give {refine_steps} 1 or more, or leave refinement out", input="refine_steps")
    if not settings.per_layer or settings.subspace:
        raise SettingsError("refinement moves each layer's own direction, one per layer",
                            "refine with per-layer settings and without {subspace}", input="refine_steps")
    # answers only for as many prompts as the steps can read: writing them is a generation per prompt
    read = options.prompts_read
    harmful = random.Random(options.seed).sample(list(harmful), read) if len(harmful) > read else list(harmful)
    targets = compliant_answers(model, tokenizer, artifact, settings, harmful, options)
    if not targets:
        raise SettingsError(f"none of the {len(harmful)} harmful prompts was answered under the stronger edit that "
                            "writes refinement's targets, so there is nothing to refine towards",
                            "give other harmful prompts, or search the plain directions ({refine_steps} 0)",
                            input="refine_steps")
    weights = ModelWeights(model)
    plan = plan_for_model(model, artifact, settings, weights)
    refinable = {name: e for name, e in plan.edits.items() if _refinable(e, weights)}
    if not refinable:
        raise SettingsError("the settings edit no attention or MLP weight that refinement can move",
                            "search the plain directions ({refine_steps} 0)", input="refine_steps")
    layers = sorted({e.writer.layer + 1 for e in refinable.values()})
    directions = {t: torch.nn.Parameter(artifact.directions[t].float().clone()) for t in layers}
    gains = {name: weights.read(e.writer.post_norm).float().cpu() + e.writer.norm_offset
             for name, e in refinable.items() if e.writer.post_norm is not None}
    device = input_device(model)
    originals = {name: weights.read(name).detach() for name in refinable}
    harmless = list(harmless)
    with torch.no_grad():
        reference = first_token_logprobs(model, tokenizer, harmless, batch_size=32,
                                         system_prompt=options.system_prompt).to(device)
    optimizer = torch.optim.Adam(directions.values(), lr=options.learning_rate)
    rng = random.Random(options.seed)
    prompts = list(targets)
    # the edits refinement does not move (embeddings, fused experts) stay applied while it trains
    fixed = EditPlan({n: e for n, e in plan.edits.items() if n not in refinable}, plan.untie_embeddings,
                     plan.norm_preserving, plan.row_normalized)
    losses: list[tuple[float, float]] = []
    trainable = [p for p in model.parameters() if p.requires_grad]  # gradients only for the directions
    for p in trainable:
        p.requires_grad_(False)
    try:
        with baked_in(model, fixed, weights):
            bar = tqdm(range(options.steps), desc="refine directions", unit="step", leave=False, disable=not progress)
            for _ in bar:
                chosen = rng.sample(prompts, min(options.batch_size, len(prompts)))
                rows = rng.sample(range(len(harmless)), min(options.batch_size, len(harmless)))
                edited = {name: _edited_writer(originals[name], directions[e.writer.layer + 1], e, plan, artifact,
                                               settings, gains.get(name)) for name, e in refinable.items()}
                answer_loss = _answer_loss(model, edited, tokenizer, chosen, targets, options, device)
                edited_lp = _edited_first_token_logprobs(model, edited, tokenizer, [harmless[i] for i in rows],
                                                         options.system_prompt, device)
                ref = reference[rows]
                retain_loss = (ref.exp() * (ref - edited_lp)).sum(-1).mean()
                loss = answer_loss + options.kl_weight * retain_loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for d in directions.values():
                        d /= d.norm().clamp_min(_EPS)
                losses.append((answer_loss.item(), retain_loss.item()))
                bar.set_postfix(answers=f"{losses[-1][0]:.3f}", kl=f"{losses[-1][1]:.4f}")
    finally:
        for p in trainable:
            p.requires_grad_(True)
    refined = artifact.directions.clone()
    start = artifact.directions[layers].float()
    for t in layers:
        refined[t] = directions[t].detach().to(refined.dtype)
    turned = [float(torch.dot(directions[t].detach(), start[i] / start[i].norm().clamp_min(_EPS)))
              for i, t in enumerate(layers)]
    record = RefineRecord(layers=layers, steps=options.steps, learning_rate=options.learning_rate,
                          kl_weight=options.kl_weight, batch_size=options.batch_size,
                          answer_tokens=options.answer_tokens, target_scale=options.target_scale,
                          targets=len(targets), settings=settings,
                          mean_cosine_to_start=round(sum(turned) / len(turned), 4),
                          first_losses=[round(v, 4) for v in losses[0]], last_losses=[round(v, 4) for v in losses[-1]])
    return dataclasses.replace(artifact, directions=refined, metadata=artifact.metadata.replace(refined=record))


def _refinable(edit: TensorEdit, weights: ModelWeights) -> bool:
    """An ``nn.Linear`` writer of a decoder layer, edited along one direction."""
    return (edit.writer.layer is not None and edit.writer.residual_axis == 0 and edit.directions.shape[0] == 1
            and len(weights.shapes()[edit.writer.name]) == 2)


def _edited_writer(original: torch.Tensor, direction: torch.Tensor, edit: TensorEdit, plan: EditPlan,
                   artifact: RefusalDirections, settings: AblationSettings, gain: torch.Tensor | None) -> torch.Tensor:
    """One writer's weight under the edit, from its layer's (trainable) direction, made into the
    writer's own as :func:`forge_hub.abliterate.plan.build_plan` makes it."""
    d = direction / direction.norm().clamp_min(_EPS)
    if settings.biprojected:
        d = orthogonal_to(d, artifact.harmless_mean[edit.writer.layer + 1])
    if gain is not None:
        d = through_norm_gain(d, gain.to(d.device))[0]
    return edited_weight(original, d.to(original.device), edit.strength, row_normalized=plan.row_normalized,
                         norm_preserving=plan.norm_preserving).to(original.dtype)


def _edited_first_token_logprobs(model: torch.nn.Module, edited: dict[str, torch.Tensor], tokenizer: object,
                                 prompts: Sequence[str], system_prompt: str | None,
                                 device: torch.device) -> torch.Tensor:
    """Log-probabilities of the first answer token with ``edited`` weights, gradients kept."""
    batch = encode(tokenizer, prompts, system_prompt=system_prompt, device=device)
    logits = torch.func.functional_call(model, edited, args=(), kwargs={**batch, "use_cache": False,
                                                                        "logits_to_keep": 1}).logits
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def _answer_loss(model: torch.nn.Module, edited: dict[str, torch.Tensor], tokenizer: object, prompts: Sequence[str],
                 targets: dict[str, str], options: RefineOptions, device: torch.device) -> torch.Tensor:
    """Cross-entropy of the compliant answers' first tokens after each prompt, left-padded."""
    rows, starts = [], []
    for prompt in prompts:
        head = tokenizer(render(tokenizer, prompt, options.system_prompt), add_special_tokens=False)["input_ids"]
        answer = tokenizer(targets[prompt], add_special_tokens=False)["input_ids"][:options.answer_tokens]
        rows.append(head + answer)
        starts.append(len(head))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts)):
        offset = width - len(row)
        ids[i, offset:] = torch.tensor(row)
        mask[i, offset:] = 1
        labels[i, offset + start:] = torch.tensor(row[start:])
    # logits only where they predict an answer token: the prompts' positions would triple the output layer's work
    keep = max(len(row) - start for row, start in zip(rows, starts)) + 1
    logits = torch.func.functional_call(model, edited, args=(), kwargs={
        "input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": False,
        "logits_to_keep": keep}).logits.float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             labels[:, width - keep + 1:].reshape(-1).to(device), ignore_index=-100)
