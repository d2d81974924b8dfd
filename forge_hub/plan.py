"""Which tensor gets which direction, at which strength: the settings of one abliteration.

A plan is computed once from the direction artifact, the architecture and the settings, then
handed to whatever edits tensors: the in-memory model, the streaming checkpoint writer, the
forward hooks. That is what makes the three agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from .ablation import as_direction_rows, layer_kernel, orthogonal_to, through_norm_gain
from .architecture import ATTN, EMBED, MLP, Architecture, Writer
from .directions import RefusalDirections

EMBEDDING_MODES = ("auto", "keep", "edit", "untie")


@dataclass
class AblationSettings:
    """How to apply a direction. Defaults are the measured-good recipe (see README)."""

    direction_layer: float | None = None  # None: the layer the artifact selected; fractional interpolates
    per_layer: bool = False  # each writer removes the direction measured where it writes
    layer_start: int | None = None  # first edited layer (inclusive)
    layer_end: int | None = None  # last edited layer (exclusive)
    skip_first: int = 0
    skip_last: int = 0
    strength: float = 1.0
    attn_strength: float = 1.0
    mlp_strength: float = 1.0
    kernel: str = "constant"  # constant | linear | gaussian, over layers
    kernel_center: float | None = None
    kernel_width: float | None = None
    kernel_floor: float = 0.0
    norm_preserving: bool = False
    biprojected: bool = False  # orthogonalize the direction against each target layer's harmless mean
    subspace: bool = False  # remove the artifact's SVD subspace instead of one direction
    embeddings: str = "auto"  # auto (edit when untied), keep, edit, untie (copy lm_head, then edit)
    # per-component kernel overrides, e.g. {"attn": {"kernel": "linear", "center": 18, "width": 6, "floor": 0.2}}
    component_kernels: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationSettings:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ablation settings: {', '.join(sorted(unknown))}")
        return cls(**{k: (dict(v) if k == "component_kernels" else v) for k, v in data.items()})

    def edited_layers(self, num_layers: int) -> range:
        start = self.layer_start if self.layer_start is not None else 0
        end = self.layer_end if self.layer_end is not None else num_layers
        start, end = max(start, self.skip_first), min(end, num_layers - self.skip_last)
        return range(max(start, 0), max(min(end, num_layers), 0))

    def layer_weights(self, num_layers: int, component: str | None = None) -> list[float]:
        """Per-layer weights for ``component``: its own kernel when one is set, else the shared one."""
        own = self.component_kernels.get(component or "", {})
        unknown = set(own) - {"kernel", "center", "width", "floor"}
        if unknown:
            raise ValueError(f"unknown kernel keys for {component}: {', '.join(sorted(unknown))}")
        return layer_kernel(num_layers, own.get("kernel", self.kernel), own.get("center", self.kernel_center),
                            own.get("width", self.kernel_width), own.get("floor", self.kernel_floor))

    def embedding_mode(self, tied: bool) -> str:
        if self.embeddings not in EMBEDDING_MODES:
            raise ValueError(f"unknown embeddings mode {self.embeddings!r}: use one of {', '.join(EMBEDDING_MODES)}")
        if self.embeddings == "auto":
            return "keep" if tied else "edit"
        if self.embeddings == "edit" and tied:
            # editing a tied matrix also rewrites the output head; untie instead of silently doing that
            return "untie"
        return self.embeddings


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
    writers = arch.writers(shapes)
    layers = set(settings.edited_layers(arch.num_layers))
    weights = {c: settings.layer_weights(arch.num_layers, c) for c in (ATTN, MLP)}
    component_strength = {ATTN: settings.attn_strength, MLP: settings.mlp_strength, EMBED: 1.0}
    mode = settings.embedding_mode(arch.tied_embeddings)
    plan = EditPlan(norm_preserving=settings.norm_preserving)
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


def _directions_for(artifact: RefusalDirections, settings: AblationSettings, target: int) -> torch.Tensor:
    """``[k, H]`` rows: one direction, or the SVD subspace, at the chosen or the writer's layer."""
    if settings.subspace:
        if artifact.subspaces is None:
            raise ValueError("subspace ablation needs an artifact computed with --method svd")
        index = target if settings.per_layer else round(settings.direction_layer or artifact.selected_layer)
        return artifact.subspaces[index].float()
    if settings.per_layer:
        return artifact.directions[target].float()[None, :]
    return artifact.direction(settings.direction_layer)[None, :]
