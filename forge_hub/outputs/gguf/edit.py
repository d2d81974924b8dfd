"""Abliterate a ``.gguf`` model in place of a copy, and keep it a GGUF.

Only the tensors that write into the residual stream are touched: per block the attention
output (``blk.N.attn_output``) and the MLP down projection (``blk.N.ffn_down``, every expert of
``ffn_down_exps``, the shared expert's ``ffn_down_shexp``), and ``token_embd`` when it is untied
and the settings edit embeddings. Each is dequantized, edited by the same plan and the same
projection code as a safetensors checkpoint (:mod:`forge_hub.abliterate.plan`,
:mod:`forge_hub.abliterate.ablation`), and quantized back to its own type, with the rounding
error along the removed directions fed back so that rounding does not put the removed component
back (:func:`requantize`). Every other tensor and every metadata key and value are copied byte
for byte, so tokenizer, chat template and architecture come across unchanged.

The ``gguf`` package writes F32, F16, BF16, Q8_0, Q5_x and Q4_x but only *reads* k-quants and
i-quants. Edited k-quant tensors (Q2_K to Q6_K, as in a Q4_K_M file) keep their type when
llama.cpp's quantizer is installed (llama-cpp-python, or ``llama-quantize`` on ``PATH`` or in
``$LLAMA_CPP_DIR``): each is quantized back one tensor at a time by llama.cpp
(:class:`forge_hub.outputs.gguf.llama_cpp.TensorQuantizer`), with the same error feedback, so a
Q4_K_M file stays Q4_K_M tensor for tensor. Without it, or for a type neither writes (i-quants),
an edited tensor is written back in the smallest type numpy writes with more bits per weight
(Q4_K -> Q4_1, Q5_K -> Q5_1, Q6_K -> Q8_0); the change is printed, with what to install to
avoid it, and recorded in ``abliteration.json`` (``type_changes``, empty when every type is kept).

A GGUF stores a Hugging Face ``[out, in]`` weight with the same row-major data and its shape
listed the other way round, so a dequantized tensor *is* the Hugging Face matrix, and the plan
is built from Hugging Face names mapped with :func:`gguf.get_tensor_name_map`. Gemma files store
norms as ``1 + weight``; the offset is removed before the plan reads a post-writer norm's gain.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from forge_hub.abliterate.ablation import project_out
from forge_hub.abliterate.architecture import Architecture
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.plan import EditPlan, build_plan
from forge_hub.errors import ModelLoadError, UnsupportedArchitectureError
from forge_hub.outputs.checkpoint import ApplyReport, document_output
from forge_hub.outputs.gguf.llama_cpp import Quantizer, TensorQuantizer, find_quantizer, llama_cpp_dir
from forge_hub.outputs.gguf.quant import (
    K_QUANT_TYPES,
    dequantize,
    ggml_type,
    quantize,
    requantize_type,
    tensor_nbytes,
)
from forge_hub.outputs.staging import check_output, staged_output
from forge_hub.schema import AblationSettings

# Hugging Face names (per layer) of the residual writers and the norms after them.
_LAYER_TENSORS = ("self_attn.o_proj", "mlp.down_proj", "mlp.experts.down_proj", "mlp.shared_expert.down_proj",
                  "post_attention_layernorm", "post_feedforward_layernorm")
_FUSED = "mlp.experts.down_proj"  # transformers names fused expert tensors without ".weight"
# Architectures whose GGUF norms hold 1 + the Hugging Face weight (llama.cpp's converter adds it).
_NORM_SHIFT = {"gemma": 1.0, "gemma2": 1.0, "gemma3": 1.0}
FEEDBACK_ROUNDS = 8
# Share of the measured error fed back per round for llama.cpp's k-quants (1 for the numpy types).
K_QUANT_FEEDBACK_GAIN = 0.5


@dataclass
class GGUFApplyReport(ApplyReport):
    """:class:`ApplyReport` plus the edited tensors whose stored type had to change."""

    type_changes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (from, to)


@dataclass
class GGUFLayout:
    """A GGUF file seen through Hugging Face names, which the plan understands."""

    arch_name: str
    arch: Architecture
    to_hf: dict[str, str]  # GGUF tensor name -> Hugging Face name (writers and norms only)
    shapes: dict[str, tuple[int, ...]]  # Hugging Face name -> Hugging Face (numpy) shape
    norm_shift: float


def read_layout(reader) -> GGUFLayout:
    """Architecture, sizes and the writer tensors of an open ``gguf.GGUFReader``."""
    import gguf

    arch_name = _field(reader, "general.architecture")
    if arch_name is None:
        raise ModelLoadError("the GGUF file has no general.architecture",
                             "check that the file is a complete GGUF model")
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    hidden = _field(reader, f"{arch_name}.embedding_length")
    blocks = _field(reader, f"{arch_name}.block_count")
    if arch_enum is None or hidden is None or blocks is None:
        raise UnsupportedArchitectureError(f"GGUF architecture {arch_name!r} is unknown to the installed gguf package",
                                           "upgrade it: pip install -U gguf")
    tensors = {t.name: t for t in reader.tensors}
    names = gguf.get_tensor_name_map(arch_enum, int(blocks))
    candidates = ["model.embed_tokens"]
    candidates += [f"model.layers.{i}.{part}" for i in range(int(blocks)) for part in _LAYER_TENSORS]
    to_hf: dict[str, str] = {}
    for hf in candidates:
        base = names.get_name(hf)
        if base is None:
            continue
        for suffix in (".weight", ".bias"):
            if base + suffix in tensors:
                to_hf[base + suffix] = hf if hf.endswith(_FUSED) and suffix == ".weight" else hf + suffix
    shapes = {to_hf[name]: _numpy_shape(tensors[name]) for name in to_hf}
    tied = "output.weight" not in tensors
    arch = Architecture(model_type=arch_name, hidden_size=int(hidden), num_layers=int(blocks), tied_embeddings=tied)
    return GGUFLayout(arch_name, arch, to_hf, shapes, _NORM_SHIFT.get(arch_name, 0.0))


def plan_for_gguf(reader, layout: GGUFLayout, artifact: RefusalDirections, settings: AblationSettings) -> EditPlan:
    """The same :class:`EditPlan` :func:`forge_hub.checkpoint.plan_for_checkpoint` builds, keyed by
    Hugging Face names."""
    tensors = {t.name: t for t in reader.tensors}
    from_hf = {hf: name for name, hf in layout.to_hf.items()}

    def read_tensor(hf_name: str) -> torch.Tensor:
        t = tensors[from_hf[hf_name]]
        return torch.from_numpy(dequantize(t.data, t.tensor_type) - layout.norm_shift)

    return build_plan(layout.arch, layout.shapes, artifact, settings, read_tensor)


def apply_to_gguf(source: str | Path, output: str | Path, artifact: RefusalDirections, settings: AblationSettings,
                  *, overwrite: bool = False, progress: bool = True,
                  extra_files: Mapping[str, str] | None = None, llama_cpp: str | Path | None = None,
                  keep_k_quants: bool = True) -> GGUFApplyReport:
    """Write ``<output>/<source file name>`` abliterated, with the direction artifact and
    ``abliteration.json`` beside it. The source is only read.

    ``llama_cpp``: a llama.cpp checkout whose ``llama-quantize`` writes edited k-quant tensors
    back (default ``$LLAMA_CPP_DIR``, then ``PATH``, then llama-cpp-python);
    ``keep_k_quants=False`` uses the numpy fallback types even where llama.cpp is installed.

    Example::

        apply_to_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-abliterated", artifact, AblationSettings())
    """
    import gguf

    source = Path(source).expanduser().resolve()
    try:
        reader = gguf.GGUFReader(source)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"could not read GGUF file {source}: {exc}",
                             "check that the file is a complete GGUF model") from exc
    if reader.byte_order != "I":
        raise ModelLoadError(f"{source.name} is a big-endian GGUF", "convert it with gguf-convert-endian first")
    check_output(output, overwrite=overwrite, kind="model", sources=[source], needed_bytes=source.stat().st_size)
    layout = read_layout(reader)
    plan = plan_for_gguf(reader, layout, artifact, settings)
    edits = {name: plan.edits[hf] for name, hf in layout.to_hf.items() if hf in plan.edits}
    source_types = {t.name: t.tensor_type.name for t in reader.tensors if t.name in edits}
    k_quant_edits = sorted(name for name, kind in source_types.items() if kind in K_QUANT_TYPES)
    quantizer = find_quantizer(llama_cpp_dir(llama_cpp)) if k_quant_edits and keep_k_quants else None
    stored = {t.name: requantize_type(t.tensor_type, _numpy_shape(t), k_quants=quantizer is not None)
              for t in reader.tensors if t.name in edits}
    changes = {name: (source_types[name], stored[name]) for name in stored if stored[name] != source_types[name]}
    _say_types(changes, stored, quantizer, keep_k_quants)
    untie = "token_embd.weight" if plan.untie_embeddings is not None else None
    with staged_output(output, overwrite, needed_bytes=source.stat().st_size, kind="model", sources=[source]) as tmp:
        written = _write_edited(reader, tmp / source.name, layout, edits, stored, plan, untie, progress, quantizer)
        document_output(tmp, artifact, settings, str(source), sorted(edits), extra_files=extra_files,
                        untied_output_head=untie is not None,
                        type_changes={name: {"from": a, "to": b} for name, (a, b) in sorted(changes.items())})
    return GGUFApplyReport(Path(output).expanduser().resolve(), len(edits), plan.layers(), 1, written,
                           type_changes=changes)


def _say_types(changes: dict[str, tuple[str, str]], stored: dict[str, str], quantizer: Quantizer | None,
               keep_k_quants: bool) -> None:
    """Say on stderr which edited tensors llama.cpp quantizes back, and which change type (and why)."""
    k_quants = [kind for kind in stored.values() if kind in K_QUANT_TYPES]
    if k_quants:
        print(f"note: {len(k_quants)} edited tensor(s) are quantized back to {', '.join(sorted(set(k_quants)))} "
              f"by llama.cpp's quantizer: {quantizer.describe()}", file=sys.stderr)
    if not changes:
        return
    kinds = sorted({f"{a} -> {b}" for a, b in changes.values()})
    message = (f"note: the gguf package cannot write {', '.join(sorted({a for a, _ in changes.values()}))}; "
               f"{len(changes)} edited tensor(s) are stored as {'; '.join(kinds)}")
    if keep_k_quants and quantizer is None and any(a in K_QUANT_TYPES for a, _ in changes.values()):
        message += ("; to keep the k-quant types (a Q4_K_M file stays Q4_K_M), install llama.cpp's quantizer: "
                    "pip install llama-cpp-python (or put llama-quantize on PATH, or set $LLAMA_CPP_DIR)")
    print(message, file=sys.stderr)


def _write_edited(reader, target: Path, layout: GGUFLayout, edits: dict, stored: dict[str, str], plan: EditPlan,
                  untie: str | None, progress: bool, quantizer: Quantizer | None = None) -> int:
    """Copy ``reader`` to ``target`` with the ``edits`` applied: metadata, then tensor table, then
    tensor data one tensor at a time (k-quants through ``quantizer``, in a folder beside ``target``)."""
    if not any(kind in K_QUANT_TYPES for kind in stored.values()):
        return _write_file(reader, target, layout, edits, stored, plan, untie, progress, None)
    workdir = Path(tempfile.mkdtemp(prefix=".llama-cpp-quantize-", dir=target.parent))
    try:
        k_quantize = tensor_quantizer(reader, layout, quantizer, workdir)
        return _write_file(reader, target, layout, edits, stored, plan, untie, progress, k_quantize)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tensor_quantizer(reader, layout: GGUFLayout, quantizer: Quantizer, workdir: Path) -> TensorQuantizer:
    """llama.cpp's quantizer for single tensors of ``reader``'s model, its one-tensor files in
    ``workdir``. They carry the source's metadata but the tokenizer (llama.cpp reads the
    architecture's keys before it quantizes, never the vocabulary: 262k tokens in Gemma 3) and
    ``general.alignment`` (those files use the default alignment their writer lays them out in)."""
    metadata = _metadata(reader, skip=("tokenizer.", "general.alignment"))
    return TensorQuantizer(quantizer, layout.arch_name, metadata, workdir)


def _write_file(reader, target: Path, layout: GGUFLayout, edits: dict, stored: dict[str, str], plan: EditPlan,
                untie: str | None, progress: bool, k_quantize: TensorQuantizer | None) -> int:
    import gguf

    writer = gguf.GGUFWriter(target, layout.arch_name, endianess=reader.endianess)
    alignment = _field(reader, "general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment)
    for key, value, kind, sub_type in _metadata(reader):
        writer.add_key_value(key, value, kind, sub_type=sub_type)
    order = list(reader.tensors)
    for t in order:
        if t.name in edits:
            shape = _numpy_shape(t)
            writer.add_tensor_info(t.name, shape, np.dtype(np.float32), tensor_nbytes(shape, stored[t.name]),
                                   raw_dtype=gguf.GGMLQuantizationType[stored[t.name]])
        else:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    embedding = next((t for t in order if t.name == untie), None)
    if embedding is not None:  # untie: the output head keeps the original embedding
        writer.add_tensor_info("output.weight", embedding.data.shape, embedding.data.dtype, embedding.data.nbytes,
                               raw_dtype=embedding.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = sum(t.n_bytes for t in order)
    with tqdm(total=total, desc="apply", unit="B", unit_scale=True, disable=not progress) as bar:
        for t in order:
            edit = edits.get(t.name)
            if edit is None:
                writer.write_tensor_data(t.data)
            else:
                weight = torch.from_numpy(dequantize(t.data, t.tensor_type))
                edited = project_out(weight, edit.directions, residual_axis=edit.writer.residual_axis,
                                     strength=edit.strength, norm_preserving=plan.norm_preserving,
                                     row_normalized=plan.row_normalized)
                by_llama_cpp = partial(k_quantize, name=t.name) if stored[t.name] in K_QUANT_TYPES else None
                writer.write_tensor_data(requantize(edited, edit.directions, edit.writer.residual_axis,
                                                    stored[t.name], quantizer=by_llama_cpp))
            bar.update(t.n_bytes)
        if embedding is not None:
            writer.write_tensor_data(embedding.data)
    writer.close()
    return target.stat().st_size


def requantize(edited: torch.Tensor, directions: torch.Tensor, residual_axis: int, type_name: str,
               *, rounds: int = FEEDBACK_ROUNDS, gain: float | None = None,
               quantizer: Callable[[np.ndarray, str], np.ndarray] | None = None) -> np.ndarray:
    """Quantize an edited tensor so that its stored component along ``directions`` is the edit's.

    An edit is often smaller than a 4-bit quantization step, so plain round-to-nearest puts most
    of it back: on SmolLM2's Q4_1 writers about 60% of the removed component reappears. The
    rounding error *along the directions* is therefore fed back into the input for a few rounds
    (error feedback, the way sigma-delta converters hide rounding error): each round quantizes
    ``edited - Q^T a``, measures how far the stored tensor's coefficients along ``Q`` are from
    the edit's, and adds that to ``a``. The rest of the rounding is untouched, so the stored
    tensor is as close to the exact edit as plain rounding, and the removed component stays
    removed (on SmolLM2, 25x smaller than the original instead of 1.7x). Float types round
    finely enough to need none of this.

    ``quantizer(array, type_name)`` returns the stored data (default: the ``gguf`` package's numpy
    quantizer); k-quants pass llama.cpp's (:class:`TensorQuantizer`). Either way the stored data is
    read back with the ``gguf`` package's dequantizer. ``gain`` is the share of the error added to
    ``a`` per round: 1 for the numpy types, :data:`K_QUANT_FEEDBACK_GAIN` for k-quants. A k-quant
    searches each sub-block's scale and minimum for the input it is given, so a correction also
    moves the rest of the block and a full one overshoots: on Gemma 3 270M's Q4_K writers of
    layers 10-17, plain rounding leaves 16-28% of the removed component, gain 1 about 9%, gain 0.5
    about 6%.
    """
    quantize_fn = quantizer or quantize
    if gain is None:
        gain = K_QUANT_FEEDBACK_GAIN if type_name in K_QUANT_TYPES else 1.0
    if type_name in ("F32", "F16", "BF16"):
        return quantize(edited.numpy(), type_name)
    q = directions.to(torch.float32)
    moved = edited.movedim(residual_axis, -1)  # residual vectors along the last axis
    target = moved @ q.T
    offset = torch.zeros_like(target)
    best, best_error = None, float("inf")
    for _ in range(rounds):
        data = quantize_fn((moved - offset @ q).movedim(-1, residual_axis).contiguous().numpy(), type_name)
        stored = torch.from_numpy(dequantize(data, ggml_type(type_name))).movedim(residual_axis, -1)
        error = stored @ q.T - target
        size = float(error.abs().mean())
        if size >= 0.9 * best_error:
            break  # rounding noise reached: more rounds only reshuffle it
        best, best_error = data, size
        offset += gain * error
    return best


def _metadata(reader, skip: tuple[str, ...] = ()) -> list[tuple]:
    """``(key, value as stored, type, array item type)`` of every metadata key, in file order, but
    the header counts and the architecture (GGUFWriter writes those itself) and keys under ``skip``."""
    import gguf

    items = []
    for f in reader.fields.values():
        if f.name.startswith(("GGUF.", *skip)) or f.name == gguf.Keys.General.ARCHITECTURE:
            continue
        kind = f.types[0]
        items.append((f.name, _raw_value(f), kind, f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None))
    return items


def _numpy_shape(tensor) -> tuple[int, ...]:
    """GGUF lists dimensions fastest first; numpy (and Hugging Face) list them the other way."""
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))


def _field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def _raw_value(f):
    """A metadata value as stored: strings as their bytes (a token need not be valid UTF-8),
    numbers and booleans as numbers, so writing it back gives the same bytes."""
    import gguf

    kind = f.types[0]
    if kind == gguf.GGUFValueType.STRING:
        return f.parts[f.data[0]].tobytes()
    if kind == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.STRING:
        return [f.parts[i].tobytes() for i in f.data]
    if kind == gguf.GGUFValueType.ARRAY:
        if len(f.types) > 2:
            raise ModelLoadError(f"metadata key {f.name} is a nested array, which forge-hub cannot copy yet",
                                 "open an issue with the model's name")
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]
