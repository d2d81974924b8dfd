"""Which tensor gets which direction, at which strength: the settings of one abliteration.

A plan is computed once from the direction artifact, the architecture and the settings, then
handed to whatever edits tensors: the in-memory model, the streaming checkpoint writer, the
forward hooks. That is what makes the three agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from forge_hub.abliterate.ablation import as_direction_rows, layer_kernel, orthogonal_to, through_norm_gain
from forge_hub.abliterate.architecture import ATTN, EMBED, MLP, Architecture, Writer
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.errors import SettingsError
from forge_hub.schema import KERNEL_KEYS, AblationSettings


@dataclass
class TensorEdit:
    writer: Writer
    directions: torch.Tensor  # [k, H] orthonormal rows, float32
    strength: float


@dataclass
class EditPlan:
    edits: dict[str, TensorEdit] = field(default_factory=dict)
    untie_embeddings: str | None = None  # embedding tensor name to copy into the output head first
    norm_preserving: bool = False
    row_normalized: bool = False

    @property
    def rescales(self) -> bool:
        """True when the edit rescales weights, so no output hook can stand in for it."""
        return self.norm_preserving or self.row_normalized

    def __contains__(self, name: str) -> bool:
        return name in self.edits

    def __len__(self) -> int:
        return len(self.edits)

    def layers(self) -> list[int]:
        return sorted({e.writer.layer for e in self.edits.values() if e.writer.layer is not None})


def build_plan(arch: Architecture, shapes: Mapping[str, Sequence[int]], artifact: RefusalDirections,
               settings: AblationSettings, read_tensor: Callable[[str], torch.Tensor]) -> EditPlan:
    """Decide every edit. ``read_tensor`` fetches small tensors (post-writer norm gains) by name."""
    artifact.check_fits(arch)
    settings.check(arch.num_layers)
    writers = arch.writers(shapes)
    layers = set(settings.edited_layers(arch.num_layers))
    weights = {c: layer_weights(settings, arch.num_layers, c) for c in (ATTN, MLP)}
    component_strength = {ATTN: settings.attn_strength, MLP: settings.mlp_strength, EMBED: 1.0}
    mode = settings.embedding_mode(arch.tied_embeddings)
    plan = EditPlan(norm_preserving=settings.norm_preserving, row_normalized=settings.row_normalized)
    for w in writers:
        if w.component == EMBED:
            if mode == "keep":
                continue
            strength = settings.strength
            if mode == "untie":
                plan.untie_embeddings = w.name
        else:
            if w.layer not in layers:
                continue
            strength = settings.strength * weights[w.component][w.layer] * component_strength[w.component]
        if strength == 0.0:
            continue
        target = 0 if w.layer is None else min(w.layer + 1, artifact.num_layers)  # the stream it writes into
        dirs = _directions_for(artifact, settings, target)
        if settings.biprojected:
            dirs = torch.stack([orthogonal_to(d, artifact.harmless_mean[target]) for d in dirs])
        if w.post_norm is not None:
            gain = read_tensor(w.post_norm).float().cpu() + w.norm_offset
            dirs = through_norm_gain(dirs, gain)
        plan.edits[w.name] = TensorEdit(w, as_direction_rows(dirs), float(strength))
    return plan


def layer_weights(settings: AblationSettings, num_layers: int, component: str | None = None) -> list[float]:
    """Per-layer weights for ``component``: its own kernel when one is set, else the shared one."""
    own = settings.component_kernels.get(component or "", {})
    unknown = set(own) - set(KERNEL_KEYS)
    if unknown:
        raise SettingsError(f"unknown kernel keys for {component}: {', '.join(sorted(unknown))}",
                            f"use only {', '.join(KERNEL_KEYS)}", input="component_kernels")
    return layer_kernel(num_layers, shape=own.get("kernel", settings.kernel),
                        center=own.get("center", settings.kernel_center),
                        width=own.get("width", settings.kernel_width), floor=own.get("floor", settings.kernel_floor))


def _directions_for(artifact: RefusalDirections, settings: AblationSettings, target: int) -> torch.Tensor:
    """``[k, H]`` rows: one direction, or the SVD subspace, at the chosen or the writer's layer."""
    if settings.subspace:
        if artifact.subspaces is None:
            raise SettingsError("subspace ablation needs directions computed with the svd method",
                                "compute them with {method} svd, or leave out {subspace}", input="subspace")
        index = target if settings.per_layer else round(settings.direction_layer or artifact.selected_layer)
        return artifact.subspaces[index].float()
    if settings.per_layer:
        return artifact.directions[target].float()[None, :]
    return artifact.direction(settings.direction_layer)[None, :]
