"""Refusal directions from residual statistics, and the artifact that carries them.

The artifact is two files in one folder: ``refusal.safetensors`` (tensors: per-layer means of
both sides, the unit directions, optional SVD subspaces, per-layer scores) and ``refusal.json``
(metadata: model id and revision, sizes, method, chosen layer, prompt counts and hashes,
forge-hub version, apply settings). No pickles: both load safely from anyone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from forge_hub.abliterate.ablation import orthogonal_to
from forge_hub.abliterate.architecture import Architecture
from forge_hub.errors import DirectionMismatchError, SettingsError
from forge_hub.model.activations import ResidualStats
from forge_hub.schema import DIRECTION_METADATA_FILE, DIRECTION_TENSORS_FILE, DirectionMetadata

TENSORS_FILE = DIRECTION_TENSORS_FILE
METADATA_FILE = DIRECTION_METADATA_FILE
METHODS = ("mean_diff", "projected", "svd")


@dataclass
class RefusalDirections:
    """Per-layer refusal directions. Index ``l`` is the residual stream entering layer ``l``;
    the last index (``num_layers``) is the model's final hidden state."""

    harmful_mean: torch.Tensor  # [L+1, H]
    harmless_mean: torch.Tensor  # [L+1, H]
    directions: torch.Tensor  # [L+1, H], unit rows
    subspaces: torch.Tensor | None = None  # [L+1, k, H] orthonormal rows (svd method)
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [L+1]
    metadata: DirectionMetadata = field(default_factory=DirectionMetadata)

    @property
    def num_layers(self) -> int:
        return self.directions.shape[0] - 1

    @property
    def hidden_size(self) -> int:
        return self.directions.shape[1]

    @property
    def selected_layer(self) -> float:
        if self.metadata.selected_layer is None:
            raise DirectionMismatchError("the direction artifact names no selected layer",
                                         "give the layer to use ({direction_layer})", input="direction_layer")
        return float(self.metadata.selected_layer)

    def with_metadata(self, **changes: Any) -> RefusalDirections:
        """The same tensors with some metadata fields changed (the original is left as it was)."""
        return dataclasses.replace(self, metadata=self.metadata.replace(**changes))

    def direction(self, layer: float | None = None) -> torch.Tensor:
        """The unit direction at ``layer``; a fractional layer interpolates its two neighbours."""
        layer = self.selected_layer if layer is None else float(layer)
        if not 0 <= layer <= self.num_layers:
            raise DirectionMismatchError(f"layer {layer} is outside 0..{self.num_layers}")
        lo = int(math.floor(layer))
        hi = min(lo + 1, self.num_layers)
        t = layer - lo
        d = (1 - t) * self.directions[lo] + t * self.directions[hi]
        return d / d.norm().clamp_min(1e-12)

    def with_method(self, method: str) -> RefusalDirections:
        """The same statistics with another means-based method's directions (for the search); refined
        directions stay only under their own method."""
        return self if method == self.metadata.method else self._from_means(method)

    def plain(self) -> RefusalDirections:
        """The mean differences these statistics give under the artifact's own method: refined
        directions undone (a search tries both; see :mod:`forge_hub.abliterate.search`)."""
        return self if self.metadata.refined is None else self._from_means(self.metadata.method)

    def _from_means(self, method: str) -> RefusalDirections:
        """``method``'s directions recomputed from the two means: one per layer, not refined."""
        metadata = self.metadata.replace(method=method, num_directions=1, refined=None)
        return RefusalDirections(self.harmful_mean, self.harmless_mean,
                                 directions_from_means(self.harmful_mean, self.harmless_mean, method), None,
                                 dict(self.scores), metadata)

    def separation(self) -> torch.Tensor:
        """How far apart the two sides sit per layer, relative to their size (the plot's curve)."""
        gap = (self.harmful_mean - self.harmless_mean).norm(dim=1)
        scale = 0.5 * (self.harmful_mean.norm(dim=1) + self.harmless_mean.norm(dim=1))
        return gap / scale.clamp_min(1e-12)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "harmful_mean": self.harmful_mean.float().contiguous(),
            "harmless_mean": self.harmless_mean.float().contiguous(),
            "directions": self.directions.float().contiguous(),
        }
        if self.subspaces is not None:
            tensors["subspaces"] = self.subspaces.float().contiguous()
        for name, values in self.scores.items():
            tensors[f"scores.{name}"] = values.float().contiguous()
        # one metadata key: safetensors stores them in a hash map, so two would come out in any order
        save_file(tensors, folder / TENSORS_FILE, metadata={"format": "pt"})
        (folder / METADATA_FILE).write_text(self.metadata.to_json(), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> RefusalDirections:
        """Load from the artifact folder (or its ``refusal.safetensors``); safetensors + JSON only."""
        path = Path(path)
        folder = path.parent if path.suffix == ".safetensors" else path
        tensors_file, metadata_file = folder / TENSORS_FILE, folder / METADATA_FILE
        if not tensors_file.exists():
            raise DirectionMismatchError(f"no direction artifact at {folder} (missing {TENSORS_FILE})",
                                         "compute the directions first, or point {directions} at the folder "
                                         "that holds them", input="directions")
        tensors = load_file(tensors_file)
        metadata = DirectionMetadata.from_json(metadata_file.read_text(encoding="utf-8")) if metadata_file.exists() \
            else DirectionMetadata()
        scores = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("scores.")}
        return cls(tensors["harmful_mean"], tensors["harmless_mean"], tensors["directions"],
                   tensors.get("subspaces"), scores, metadata)

    def check_fits(self, arch: Architecture, model_id: str | None = None, strict_model: bool = False) -> None:
        """Raise a clear error when this artifact cannot be applied to ``arch``."""
        if self.hidden_size != arch.hidden_size:
            raise DirectionMismatchError(
                f"direction hidden size {self.hidden_size} does not match the model's {arch.hidden_size} "
                f"(direction computed on {self.metadata.model or 'an unknown model'!r})",
                "compute the direction on this model", input="directions",
            )
        if self.num_layers != arch.num_layers:
            raise DirectionMismatchError(
                f"direction has {self.num_layers} layers, the model has {arch.num_layers} "
                f"(direction computed on {self.metadata.model or 'an unknown model'!r})",
                "compute the direction on this model", input="directions",
            )
        source = self.metadata.model
        if strict_model and model_id and source and source != model_id:
            raise DirectionMismatchError(f"direction was computed on {source!r}, not {model_id!r}",
                                         "compute the direction on this model, or allow it with {allow_other_model}",
                                         input="directions")


def directions_from_means(harmful_mean: torch.Tensor, harmless_mean: torch.Tensor, method: str) -> torch.Tensor:
    """Unit ``mean_diff`` or ``projected`` directions per layer; both need only the two means."""
    diff = (harmful_mean - harmless_mean).float()
    if method == "projected":
        return torch.stack([orthogonal_to(diff[i], harmless_mean[i]) for i in range(diff.shape[0])])
    if method == "mean_diff":
        return diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
    raise ValueError(f"{method!r} directions cannot be derived from the means alone")


def compute_directions(harmful: ResidualStats, harmless: ResidualStats, *, method: str = "projected",
                       num_directions: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unit direction per layer (and SVD subspaces for ``svd``).

    - ``mean_diff``: harmful mean minus harmless mean (Arditi et al.).
    - ``projected``: that difference with its component along the harmless mean removed
      (grimjim's projected abliteration), so the edit leaves the "ordinary prompt" part alone.
    - ``svd``: the top ``num_directions`` right singular vectors of the per-prompt differences
      (each harmful activation minus the harmless mean), sign-aligned with the mean difference.
    """
    if method not in METHODS:
        raise SettingsError(f"unknown direction method {method!r}", f"use one of {', '.join(METHODS)}", input="method")
    dirs = directions_from_means(harmful.mean, harmless.mean, "mean_diff" if method == "svd" else method)
    diff = (harmful.mean - harmless.mean).float()
    if method != "svd":
        return dirs, None
    if harmful.per_prompt is None:
        raise ValueError("the svd method needs per-prompt activations (collect with keep_per_prompt=True)")
    subspaces = []
    for layer in range(diff.shape[0]):
        centred = harmful.per_prompt[:, layer].float() - harmless.mean[layer].float()
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        top = vh[:num_directions]
        signs = torch.sign(top @ diff[layer]).clamp_min(0) * 2 - 1  # point along harmful - harmless
        subspaces.append(top * signs[:, None])
    subspaces_t = torch.stack(subspaces)
    return subspaces_t[:, 0].contiguous(), subspaces_t
