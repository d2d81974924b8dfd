"""A loaded model's weights, read and edited wherever accelerate placed them.

A model loaded with ``device_map`` and ``max_memory`` may keep some layers off the device: their
parameters are empty ("meta") and an accelerate hook fills them from a weights map before each
forward pass, from CPU memory or from disk (for a safetensors checkpoint, straight from its
files). Editing such a weight means changing what that map returns, never the files behind it:
an edited tensor goes into an overlay in front of the map (on disk, in a scratch folder, when the
original was on disk), and undoing the edit drops it from the overlay. Parameters that live on a
device are edited in place, their originals kept on the CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from forge_hub.errors import SettingsError


class EditedWeights(Mapping):
    """An accelerate weights map with some of its tensors replaced (``edits``, by the map's keys)."""

    def __init__(self, original: Mapping, scratch: Path | None) -> None:
        self.original, self.scratch = original, scratch
        self.edits: dict[str, torch.Tensor] = {}
        self.files: dict[str, Path] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.edits[key] if key in self.edits else self.original[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.original)

    def __len__(self) -> int:
        return len(self.original)

    def put(self, key: str, value: torch.Tensor, *, on_disk: bool) -> None:
        if not on_disk or self.scratch is None:
            self.edits[key] = value.detach().to("cpu", copy=True)
            return
        # a memory-mapped file: the page cache holds it, not the process (and the OS may drop it);
        # always a new file, never one that a tensor still in use maps
        self.drop(key)
        handle, name = tempfile.mkstemp(prefix=f"{key}-", suffix=".bin", dir=self.scratch)
        path = Path(name)
        data = value.detach().cpu().contiguous()
        with os.fdopen(handle, "wb") as f:
            f.write(data.reshape(-1).view(torch.uint8).numpy().data)  # as bytes: numpy has no bfloat16
        mapped = torch.from_file(str(path), shared=False, size=data.numel(), dtype=data.dtype)
        self.edits[key], self.files[key] = mapped.view(data.shape), path

    def drop(self, key: str) -> None:
        self.edits.pop(key, None)
        path = self.files.pop(key, None)
        if path is not None:
            path.unlink(missing_ok=True)  # a mapping still in use keeps its pages


class ModelWeights:
    """Read, write and restore a model's parameters by name, offloaded or not."""

    def __init__(self, model: torch.nn.Module, scratch_dir: str | Path | None = None) -> None:
        self.model = model
        self.params = dict(model.named_parameters())
        self._scratch_parent = scratch_dir or getattr(model, "forge_hub_scratch", None)
        self._overlays: dict[str, tuple[EditedWeights, str]] = {}  # param name -> (overlay, key)
        self._originals: dict[str, torch.Tensor] = {}  # on-device params, kept on the CPU

    @property
    def offloaded(self) -> bool:
        return any(self._weights_map(name) is not None for name in self.params)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    def read(self, name: str) -> torch.Tensor:
        """The tensor's values: the parameter itself, or what its offload map holds."""
        found = self._weights_map(name)
        if found is None:
            return self.params[name].detach()
        weights_map, key = found
        return weights_map[key]

    def remember(self, name: str) -> None:
        """Keep what :meth:`restore` needs to undo the coming edits of ``name``."""
        if name in self._originals or self._weights_map(name) is not None:
            return  # an offloaded weight's original stays in its map, under the overlay
        self._originals[name] = self.params[name].detach().to("cpu", copy=True)

    @torch.no_grad()
    def write(self, name: str, value: torch.Tensor) -> None:
        found = self._weights_map(name)
        if found is None:
            self.params[name].copy_(value)
            return
        weights_map, key = found
        overlay = self._overlay(name, weights_map)
        overlay.put(key, value, on_disk=not _in_memory(weights_map, key))

    @torch.no_grad()
    def restore(self) -> None:
        """Undo every edit made since the names were remembered."""
        for name, original in self._originals.items():
            self.params[name].copy_(original)
        for overlay, key in self._overlays.values():
            overlay.drop(key)

    def _weights_map(self, name: str) -> tuple[Mapping, str] | None:
        """``(map, key)`` when accelerate fills ``name`` from a map before each forward pass."""
        if self.params[name].device.type != "meta":
            return None
        module_name, _, key = name.rpartition(".")
        hook = _offload_hook(self.model.get_submodule(module_name))
        if hook is None:
            raise SettingsError(f"{name} has no values loaded and no offload map to read them from",
                                "load the model without a device map, or with --device-map auto")
        return hook.weights_map, key

    def _overlay(self, name: str, weights_map: Mapping) -> EditedWeights:
        known = self._overlays.get(name)
        if known is not None:
            return known[0]
        module_name, _, key = name.rpartition(".")
        hook = _offload_hook(self.model.get_submodule(module_name))
        if not isinstance(weights_map, EditedWeights):
            weights_map = EditedWeights(weights_map, self._scratch_folder())
            hook.weights_map = weights_map
        self._overlays[name] = (weights_map, key)
        return weights_map

    def _scratch_folder(self) -> Path:
        """One folder per model, removed with it: the overlays live in the model's hooks, and
        outlive this object."""
        folder = getattr(self.model, "forge_hub_edits", None)
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="forge-hub-edits-", dir=self._scratch_parent))
            weakref.finalize(self.model, shutil.rmtree, folder, True)
            self.model.forge_hub_edits = folder
        return folder


def _offload_hook(module: torch.nn.Module):
    """The accelerate hook that loads ``module``'s weights from a map (inside a chain, too)."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        if getattr(candidate, "offload", False) and getattr(candidate, "weights_map", None) is not None:
            return candidate
    return None


def _in_memory(weights_map: Mapping, key: str) -> bool:
    """Whether accelerate keeps this tensor in CPU memory (rather than reading it from disk)."""
    if isinstance(weights_map, EditedWeights):
        weights_map = weights_map.original
    prefix = getattr(weights_map, "prefix", "")
    loader = getattr(weights_map, "dataset", weights_map)
    state_dict = getattr(loader, "state_dict", None)
    return isinstance(state_dict, Mapping) and f"{prefix}{key}" in state_dict
