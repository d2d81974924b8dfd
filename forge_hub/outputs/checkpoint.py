"""Streaming abliteration of a safetensors checkpoint, one tensor at a time.

Each shard is rewritten in place of its copy: the header is reused verbatim (editing keeps
every dtype and shape), untouched tensors are copied as raw bytes, and only the residual
writers are read, edited and written. Peak memory is about two copies of the largest edited
tensor, far below a shard, and the bytes that need no edit move at copy speed. Everything
else in the folder (index, config, tokenizer, chat template, generation config) comes across.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from forge_hub.abliterate.ablation import project_out
from forge_hub.abliterate.architecture import Architecture
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.plan import EditPlan, build_plan
from forge_hub.errors import ModelLoadError
from forge_hub.model.files import (
    INDEX_FILE,
    PICKLE_SUFFIXES,
    checkpoint_shapes,
    open_safetensors,
    read_config,
    read_header,
    weight_shards,
)
from forge_hub.outputs.staging import check_output, staged_output
from forge_hub.schema import ARTIFACT_FILES, SETTINGS_FILE, AblationSettings, AbliterationRecord

NOT_COPIED_SUFFIXES = PICKLE_SUFFIXES + (".gguf", ".h5", ".msgpack", ".onnx")
HEAD_SHARD = "model-output-head.safetensors"
_COPY_CHUNK = 64 << 20


@dataclass
class ApplyReport:
    output: Path
    edited_tensors: int
    edited_layers: list[int]
    shards: int
    bytes_written: int
    skipped_files: list[str] = field(default_factory=list)


def checkpoint_architecture(folder: Path) -> Architecture:
    """Sizes from the folder's config, through transformers where it knows the model type
    (its attribute maps turn e.g. GPT-2's ``n_embd`` into ``hidden_size``)."""
    raw = read_config(folder)
    try:
        from transformers import AutoConfig

        return Architecture.from_config(AutoConfig.from_pretrained(folder))
    except (ValueError, KeyError, OSError):
        pass
    try:
        return Architecture.from_config_dict(raw)
    except KeyError as exc:
        raise ModelLoadError(f"{folder}/config.json has no {exc.args[0]!r}, and transformers does not know "
                             f"model type {raw.get('model_type')!r}", "upgrade transformers") from exc


def plan_for_checkpoint(folder: Path, artifact: RefusalDirections, settings: AblationSettings) -> EditPlan:
    arch = checkpoint_architecture(folder)
    shapes, where = checkpoint_shapes(weight_shards(folder))

    def read_tensor(name: str) -> torch.Tensor:
        with open_safetensors(where[name]) as f:
            return f.get_tensor(name)

    return build_plan(arch, shapes, artifact, settings, read_tensor)


def apply_to_checkpoint(source: str | Path, output: str | Path, artifact: RefusalDirections,
                        settings: AblationSettings, *, overwrite: bool = False, progress: bool = True,
                        extra_files: Mapping[str, str] | None = None) -> ApplyReport:
    """Write an abliterated copy of the checkpoint folder ``source`` to ``output``.

    The source is only read. The output appears when complete (see :mod:`forge_hub.staging`)
    and carries the direction artifact and ``abliteration.json`` so it documents itself.
    """
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ModelLoadError(f"model folder {source} does not exist", "check the path")
    needed = sum(p.stat().st_size for p in source.iterdir() if p.is_file())
    check_output(output, overwrite=overwrite, kind="model", sources=[source], needed_bytes=needed)
    shards = weight_shards(source)
    plan = plan_for_checkpoint(source, artifact, settings)
    skipped: list[str] = []
    written = 0
    with staged_output(output, overwrite, needed_bytes=needed, kind="model", sources=[source]) as tmp:
        for item in sorted(source.iterdir()):
            if item.is_file() and item not in shards and item.name not in ARTIFACT_FILES:
                if item.suffix in NOT_COPIED_SUFFIXES:
                    skipped.append(item.name)
                else:
                    shutil.copy2(item, tmp / item.name)
        total = sum(p.stat().st_size for p in shards)
        with tqdm(total=total, desc="apply", unit="B", unit_scale=True, disable=not progress) as bar:
            for shard in shards:
                written += rewrite_shard(shard, tmp / shard.name, plan, advance=bar.update)
        if plan.untie_embeddings is not None:
            _write_output_head(tmp, plan.untie_embeddings, shards)
        document_output(tmp, artifact, settings, str(source), sorted(plan.edits), extra_files=extra_files)
    return ApplyReport(Path(output).expanduser().resolve(), len(plan), plan.layers(), len(shards), written, skipped)


def document_output(folder: Path, artifact: RefusalDirections, settings: AblationSettings, source: str,
                    edited_tensors: list[str], *, extra_files: Mapping[str, str] | None = None,
                    **details: object) -> None:
    """Put the direction artifact (with the settings used) and ``abliteration.json`` beside the edited
    weights, so every output says what was done to which source. ``details`` are the record's
    optional fields (what a GGUF edit adds); ``extra_files`` (name -> text) go in too (the
    command's own settings file)."""
    artifact.with_metadata(apply_settings=settings).save(folder)
    record = AbliterationRecord(source=source, settings=settings, edited_tensors=edited_tensors, **details)
    (folder / SETTINGS_FILE).write_text(record.to_json(), encoding="utf-8")
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")


def rewrite_shard(src: Path, dst: Path, plan: EditPlan, *, advance=lambda n: None) -> int:
    """Copy ``src`` to ``dst`` with the tensors named in ``plan`` edited; returns bytes written."""
    data_start, header = read_header(src)
    entries = sorted(((info["data_offsets"], name) for name, info in header.items() if name != "__metadata__"))
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout, open_safetensors(src) as reader:
        _copy_range(fin, fout, 0, data_start)
        position = data_start
        for (begin, end), name in entries:
            begin, end = begin + data_start, end + data_start
            _copy_range(fin, fout, position, begin - position)  # any padding between tensors
            edit = plan.edits.get(name)
            if edit is None:
                _copy_range(fin, fout, begin, end - begin)
            else:
                tensor = reader.get_tensor(name)
                edited = project_out(tensor, edit.directions, residual_axis=edit.writer.residual_axis,
                                     strength=edit.strength, norm_preserving=plan.norm_preserving,
                                     row_normalized=plan.row_normalized)
                raw = edited.contiguous().view(-1).view(torch.uint8).numpy()
                if raw.nbytes != end - begin:
                    raise RuntimeError(f"{name}: edited size {raw.nbytes} differs from {end - begin}")
                fout.write(memoryview(raw))
                del tensor, edited, raw
            advance(end - position)
            position = end
        _copy_range(fin, fout, position, size - position)
        advance(size - position)
    return size


def _copy_range(fin, fout, offset: int, length: int) -> None:
    """Copy bytes between files in the kernel where it can (no trip through Python buffers)."""
    if length <= 0:
        return
    fout.flush()
    try:
        while length > 0:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), min(length, 1 << 30), offset)
            if n == 0:
                raise OSError("copy_file_range made no progress")
            offset += n
            length -= n
        return
    except (AttributeError, OSError) as exc:
        if getattr(exc, "errno", None) == 28:  # ENOSPC: let staging turn it into a clear error
            raise
    fin.seek(offset)
    while length > 0:
        chunk = fin.read(min(length, _COPY_CHUNK))
        if not chunk:
            raise OSError(f"unexpected end of {fin.name}")
        fout.write(chunk)
        length -= len(chunk)


def _write_output_head(tmp: Path, embed_name: str, shards: list[Path]) -> None:
    """Untie: save the *original* embedding as the output head in a shard of its own, and say so.

    An unsharded checkpoint becomes a two-shard one (transformers reads ``model.safetensors``
    before any index, so the single file is renamed into the sharded naming).
    """
    shapes, where = checkpoint_shapes(shards)
    with open_safetensors(where[embed_name]) as f:
        head = f.get_tensor(embed_name)
    head_name = "lm_head.weight"
    index_path = tmp / INDEX_FILE
    if index_path.exists():
        index = json.loads(index_path.read_text())
        head_shard = HEAD_SHARD
    else:
        body = "model-00001-of-00002.safetensors"
        (tmp / shards[0].name).rename(tmp / body)
        index = {"metadata": {}, "weight_map": {name: body for name in shapes}}
        head_shard = "model-00002-of-00002.safetensors"
    save_file({head_name: head.contiguous()}, tmp / head_shard, metadata={"format": "pt"})
    index["weight_map"][head_name] = head_shard
    files = set(index["weight_map"].values())
    index.setdefault("metadata", {})["total_size"] = sum((tmp / n).stat().st_size for n in files)
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    config = json.loads((tmp / "config.json").read_text())
    config["tie_word_embeddings"] = False
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["tie_word_embeddings"] = False
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
