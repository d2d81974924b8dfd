"""A checkpoint folder as files on disk: its safetensors shards, their headers, its config.

Read without loading any weights, and without trusting the files: a truncated shard, a foreign
file or a broken config is a :class:`~forge_hub.errors.ModelLoadError` that names it.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

from safetensors import safe_open

from forge_hub.errors import ModelLoadError
from forge_hub.schema import ARTIFACT_FILES

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def weight_shards(folder: Path) -> list[Path]:
    """The checkpoint's safetensors shards (from the index when there is one)."""
    index = folder / INDEX_FILE
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise ModelLoadError(f"{folder}: index names missing shard(s) {', '.join(missing)}",
                                 "download the whole checkpoint again")
        return [folder / n for n in names]
    shards = sorted(p for p in folder.glob("*.safetensors") if p.name not in ARTIFACT_FILES)
    if not shards:
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = ("this checkpoint is in pickle format, which forge-hub does not load (unsafe); convert it to "
                "safetensors first" if pickles else "point at a Hugging Face model folder with *.safetensors files")
        raise ModelLoadError(f"no safetensors weights in {folder}", hint)
    return shards


MAX_HEADER_BYTES = 100 << 20  # the safetensors format's own bound on its JSON header


def read_header(path: Path) -> tuple[int, dict]:
    """(data start offset, header) of a safetensors file: 8-byte length, then JSON. A truncated or
    foreign file is a :class:`ModelLoadError` naming it, never a huge read or a traceback."""
    def broken(problem: str) -> ModelLoadError:
        return ModelLoadError(f"{path} is not a valid safetensors file: {problem}",
                              "download or write that file again (it may be truncated or not safetensors at all)")

    size = path.stat().st_size
    with path.open("rb") as f:
        start = f.read(8)
        if len(start) < 8:
            raise broken("it is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise broken(f"its header claims {length} bytes, the file has {size}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError) as exc:
            raise broken(f"its header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise broken("its header is not a table of tensors")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = (info.get("data_offsets") or (0, -1)) if isinstance(info, dict) else (0, -1)
        if not isinstance(info, dict) or "shape" not in info or not 0 <= begin <= end or 8 + length + end > size:
            raise broken(f"the entry of tensor {name!r} is damaged or points past the end of the file")
    return 8 + length, header


@contextlib.contextmanager
def open_safetensors(path: Path) -> Iterator:
    """``safe_open`` with the file's problems as a :class:`ModelLoadError` that names it."""
    from safetensors import SafetensorError

    try:
        with safe_open(path, "pt") as reader:
            yield reader
    except SafetensorError as exc:
        raise ModelLoadError(f"{path} is not a valid safetensors file: {exc}",
                             "download or write that file again (it may be truncated)") from exc


def checkpoint_shapes(shards: list[Path]) -> tuple[dict[str, tuple[int, ...]], dict[str, Path]]:
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for shard in shards:
        _, header = read_header(shard)
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(info["shape"])
                where[name] = shard
    return shapes, where


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise ModelLoadError(f"{folder} has no config.json, so it is not a Hugging Face model folder",
                             "point at the folder that holds config.json and the *.safetensors files")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})", "restore the model's config.json") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a JSON object", "restore the model's config.json")
    return config
