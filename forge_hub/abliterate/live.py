"""Abliteration of a model in memory: baked into its weights, or as forward hooks.

Hooks project each writer's *output* instead of its weights, which gives the same function for
plain projection (``(I - s Q^T Q)(W x + b)``) without touching a parameter: the way to try a
direction, or to score many, on one loaded model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from forge_hub.abliterate.ablation import project_out, project_out_activations
from forge_hub.abliterate.architecture import Architecture
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.plan import EditPlan, build_plan
from forge_hub.errors import SettingsError
from forge_hub.model.weights import ModelWeights
from forge_hub.schema import AblationSettings


def plan_for_model(model: torch.nn.Module, artifact: RefusalDirections, settings: AblationSettings,
                   weights: ModelWeights | None = None) -> EditPlan:
    weights = weights or ModelWeights(model)
    arch = Architecture.from_config(model.config)
    return build_plan(arch, weights.shapes(), artifact, settings, weights.read)


@torch.no_grad()
def apply_plan(model: torch.nn.Module, plan: EditPlan, weights: ModelWeights | None = None) -> int:
    """Edit the model's weights in place, wherever they live; returns the number of tensors edited."""
    weights = weights or ModelWeights(model)
    if plan.untie_embeddings is not None:
        if weights.offloaded:
            raise SettingsError("this model ties its output head to its embeddings, and untying them is not "
                                "possible while its weights are offloaded",
                                "keep the embeddings unedited ({embeddings} keep), or load it without --max-memory",
                                input="embeddings")
        _untie_output_head(model)
        weights = ModelWeights(model)
    for name, edit in plan.edits.items():
        weights.write(name, project_out(weights.read(name), edit.directions, residual_axis=edit.writer.residual_axis,
                                        strength=edit.strength, norm_preserving=plan.norm_preserving,
                                        row_normalized=plan.row_normalized))
    return len(plan.edits)


def apply_plan_remembering(model: torch.nn.Module, plan: EditPlan, weights: ModelWeights) -> None:
    """:func:`apply_plan`, after ``weights`` has remembered every tensor it edits, so that
    ``weights.restore()`` undoes it: how a search tries one edit after another on one model."""
    for name in plan.edits:
        weights.remember(name)
    apply_plan(model, plan, weights)


@contextmanager
def baked_in(model: torch.nn.Module, plan: EditPlan, weights: ModelWeights | None = None) -> Iterator[None]:
    """Within the block ``plan`` is baked into the weights (any edit, rescaling ones too); after
    it they are as they were."""
    weights = weights or ModelWeights(model)
    try:
        apply_plan_remembering(model, plan, weights)
        yield
    finally:
        weights.restore()


def _untie_output_head(model: torch.nn.Module) -> None:
    """Give the output head its own copy of the embedding matrix, so editing one leaves the other."""
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head is None or head.weight is not embed.weight:
        return
    head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text_config is not None:
        text_config.tie_word_embeddings = False
    # transformers re-ties on save/load from this mapping; an untied model must not carry it
    if getattr(model, "_tied_weights_keys", None):
        model._tied_weights_keys = None if isinstance(model._tied_weights_keys, list) else {}


@contextmanager
def ablation_hooks(model: torch.nn.Module, plan: EditPlan) -> Iterator[None]:
    """Within the block the model behaves as if ``plan`` were baked in (plain projection)."""
    if plan.rescales:
        raise ValueError("norm-preserving and row-normalized edits rescale weights and have no output-hook form; "
                         "bake them with apply_plan")
    per_module: dict[str, tuple[torch.Tensor, float]] = {}
    for name, edit in plan.edits.items():
        module_name = name.rsplit(".", 1)[0]
        known = per_module.get(module_name)
        if known is not None and not (torch.equal(known[0], edit.directions) and known[1] == edit.strength):
            raise ValueError(f"{module_name}: its tensors have different edits; hooks cannot express that")
        per_module[module_name] = (edit.directions, edit.strength)
    handles = []
    try:
        for module_name, (dirs, strength) in per_module.items():
            module = model.get_submodule(module_name)
            handles.append(module.register_forward_hook(_projecting_hook(dirs, strength)))
        yield
    finally:
        for h in handles:
            h.remove()


def _projecting_hook(dirs: torch.Tensor, strength: float):
    def hook(module: torch.nn.Module, args: object, output: object) -> object:
        if isinstance(output, tuple):
            return (project_out_activations(output[0], dirs, strength), *output[1:])
        return project_out_activations(output, dirs, strength)

    return hook


def abliterate_model(model: torch.nn.Module, artifact: RefusalDirections, settings: AblationSettings) -> EditPlan:
    """Build the plan for ``model`` and bake it into its weights."""
    plan = plan_for_model(model, artifact, settings)
    apply_plan(model, plan)
    return plan
