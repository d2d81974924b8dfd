"""A Hugging Face checkpoint folder -> GGUF files, one per type, named the gguf-my-repo way.

    export_gguf(Path("my-model-abliterated"), Path("gguf"), ["F16", "Q8_0", "Q4_K_M"])
    # -> gguf/my-model-abliterated-F16.gguf, ...-Q8_0.gguf, ...-Q4_K_M.gguf

forge-hub converts the Llama, Mistral, Qwen2, Qwen3 and Gemma 3 families itself, following what
llama.cpp's ``convert_hf_to_gguf.py`` writes for them (it is the reference every GGUF reader is
tested against):

- tensor names from :func:`gguf.get_tensor_name_map`; 1-D tensors and norms stay F32;
- Llama-family Q/K projections are permuted: Hugging Face rotates the two *halves* of each head,
  llama.cpp's ``llama`` graph rotates *adjacent pairs*, so rows are reordered to match;
- Gemma norms are stored as ``1 + weight``: Hugging Face's Gemma RMSNorm multiplies by
  ``1 + weight``, llama.cpp's by the stored value;
- architecture keys (block count, sizes, heads, RoPE base and scaling, norm epsilon, sliding
  window) and the tokenizer (:mod:`forge_hub.outputs.gguf.vocab`).

Any other architecture goes through llama.cpp's converter when a checkout is given
(``llama_cpp=`` / ``--llama-cpp`` / ``$LLAMA_CPP_DIR``). k-quants are made from an F16 file by
llama.cpp's quantizer (:mod:`forge_hub.outputs.gguf.llama_cpp`). Every file is written to a hidden
temporary folder in ``out_dir`` and renamed into place when all are complete; on any error
nothing is left behind. The model folder is only read.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from forge_hub.errors import ModelLoadError, OutputError, UnsupportedArchitectureError
from forge_hub.model.files import checkpoint_shapes, read_config, weight_shards
from forge_hub.outputs.gguf.llama_cpp import (
    CONVERT_OUTTYPES,
    CONVERT_SCRIPT,
    Quantizer,
    convert_command,
    convert_script,
    llama_cpp_dir,
    require_quantizer,
    run_tool,
)
from forge_hub.outputs.gguf.quant import (
    FALLBACK_TYPE,
    LLAMA_CPP_TYPES,
    file_type,
    fits_blocks,
    parse_types,
    quantize,
    tensor_nbytes,
)
from forge_hub.outputs.gguf.vocab import GGUFVocab, read_vocab, write_vocab


@dataclass(frozen=True)
class Family:
    """How one model family is written (see the module docstring for why)."""

    label: str
    arch: str  # gguf.MODEL_ARCH member name
    rope_permute: bool = False  # reorder Q/K rows for llama.cpp's pairwise RoPE
    norm_shift: float = 0.0  # added to every norm weight
    llama_keys: bool = False  # the llama arch also stores vocab_size and rope.dimension_count
    sliding_window: bool = False
    no_space_prefix: bool = False


_LLAMA = Family("Llama", "LLAMA", rope_permute=True, llama_keys=True)
_GEMMA3 = Family("Gemma 3", "GEMMA3", norm_shift=1.0, sliding_window=True, no_space_prefix=True)
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": Family("Mistral", "LLAMA", rope_permute=True, llama_keys=True),  # llama.cpp runs Mistral as llama
    "qwen2": Family("Qwen2", "QWEN2"),
    "qwen3": Family("Qwen3", "QWEN3"),
    "gemma3_text": _GEMMA3,
    "gemma3": _GEMMA3,
}
SUPPORTED = "Llama, Mistral, Qwen2, Qwen3, Gemma 3"
# Tensors of other towers in multimodal checkpoints (Gemma 3 4B+): GGUF keeps the language model.
_OTHER_TOWERS = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head."))


@dataclass
class _Tensor:
    gguf_name: str
    shape: tuple[int, ...]  # numpy order, rows last (a Hugging Face [out, in] weight is [out, in] here too)
    load: Callable[[], torch.Tensor]  # float32, already transformed for GGUF
    keep_f32: bool  # norms, biases and other 1-D tensors


@dataclass
class _Conversion:
    """Everything one file needs except its type: read once, written once per type."""

    family: Family
    config: object  # the text config
    vocab: GGUFVocab
    tensors: list[_Tensor]
    notes: list[str] = field(default_factory=list)


def check_types(types: str | Sequence[str] | None, llama_cpp: Path | None = None) -> list[str]:
    """The GGUF types, checked before any work: an unknown type, or a k-quant without llama.cpp's
    quantizer, fails before an export, a whole run or an upload starts."""
    if not types:
        return []
    parsed = parse_types(types)
    k_quants = [t for t in parsed if t in LLAMA_CPP_TYPES]
    if k_quants:
        require_quantizer(llama_cpp_dir(llama_cpp), k_quants)
    return parsed


def export_gguf(model_dir: Path, out_dir: Path, types: Sequence[str], *, name: str | None = None,
                llama_cpp: Path | None = None, progress: bool = True, overwrite: bool = False) -> list[Path]:
    """Write ``<out_dir>/<name>-<TYPE>.gguf`` for every type; returns the paths, in ``types`` order.

    ``types``: F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0 (written here) or Q6_K, Q5_K_M, Q4_K_M,
    ... (llama.cpp's quantizer, from F16). ``name`` defaults to the model folder's name.
    ``llama_cpp``: a llama.cpp checkout (default ``$LLAMA_CPP_DIR``), for its quantizer and for
    architectures forge-hub does not convert itself. Bad type names, a missing quantizer, an
    unsupported architecture or tokenizer raise before anything is written.

    Example::

        export_gguf(Path("smollm2-abliterated"), Path("gguf"), ["F16", "Q8_0"])
    """
    model_dir = Path(model_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    type_names = parse_types(types)
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} is not a Hugging Face model folder (no config.json)",
                             "point at the folder that holds config.json, the *.safetensors weights and the tokenizer")
    name = name or model_dir.name
    if not name.strip() or any(c in name for c in "/\\\0") or name.startswith("."):
        raise OutputError(f"{name!r} cannot name a GGUF file: it must be a plain file name",
                          "give {name} without folders or a leading dot, e.g. my-model", input="name")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file, not a folder", "choose another {out}", input="out")
    targets = {t: out_dir / f"{name}-{t}.gguf" for t in type_names}
    existing = [p.name for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{out_dir} already holds {', '.join(existing)}",
                          "choose another {out} or {name}, or allow {overwrite}", input="out")
    route = _choose_route(model_dir, type_names, llama_cpp_dir(llama_cpp))
    with _staged_files(out_dir, name) as staging:
        _write_all(route, model_dir, staging, name, type_names, progress)
        for path in targets.values():
            os.replace(staging / path.name, path)
    return [targets[t] for t in type_names]


@dataclass
class _Route:
    """How the files get made: forge-hub's own conversion, or llama.cpp's converter (``conversion``
    None); and llama.cpp's quantizer for the types that need it."""

    conversion: _Conversion | None
    llama_dir: Path | None
    quantizer: Quantizer | None
    from_f16: list[str]  # types made from the F16 file by the quantizer


def _choose_route(model_dir: Path, type_names: list[str], llama_dir: Path | None) -> _Route:
    """Everything that can fail before writing: the quantizer, the architecture, the tokenizer."""
    k_types = [t for t in type_names if t in LLAMA_CPP_TYPES]
    quantizer = require_quantizer(llama_dir, k_types) if k_types else None
    try:
        conversion = prepare_conversion(model_dir)
    except UnsupportedArchitectureError:
        if llama_dir is None:
            raise
        convert_script(llama_dir)  # a wrong folder fails now, not after the first file
        from_f16 = [t for t in type_names if t not in CONVERT_OUTTYPES]
        if from_f16 and quantizer is None:
            quantizer = require_quantizer(llama_dir, from_f16)
        return _Route(None, llama_dir, quantizer, from_f16)
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    return _Route(conversion, llama_dir, quantizer, k_types)


def _write_all(route: _Route, model_dir: Path, staging: Path, name: str, type_names: list[str],
               progress: bool) -> None:
    f16 = staging / f"{name}-F16.gguf"
    direct = [t for t in type_names if t not in route.from_f16]
    if route.from_f16 and "F16" not in direct:
        direct.append("F16")  # the quantizer's input, removed with the staging folder
    for t in direct:
        path = staging / f"{name}-{t}.gguf"
        if route.conversion is not None:
            _write_file(route.conversion, path, t, name, progress)
        else:
            print(f"converting {model_dir.name} ({t}) with llama.cpp's {CONVERT_SCRIPT}", file=sys.stderr)
            run_tool(convert_command(route.llama_dir, model_dir, path, t), f"llama.cpp's converter ({t})")
    for t in route.from_f16:
        print(f"quantizing {t} with {route.quantizer.describe()}", file=sys.stderr)
        route.quantizer.run(f16, staging / f"{name}-{t}.gguf", t)


@contextmanager
def _staged_files(out_dir: Path, name: str) -> Iterator[Path]:
    """A hidden folder in ``out_dir`` for the files being written; removed, with ``out_dir`` if this
    call created it, whatever happens."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.gguf-partial-", dir=out_dir))
    try:
        yield staging
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing GGUF files to {out_dir}",
                              "free some space or write {out} to a larger disk", input="out") from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def prepare_conversion(model_dir: Path) -> _Conversion:
    """Read config, tokenizer and tensor list; raise for anything this converter cannot write."""
    from transformers import AutoConfig

    raw = read_config(model_dir)
    model_type = str(raw.get("model_type", "unknown"))
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedArchitectureError(
            f"forge-hub does not convert {model_type!r} models to GGUF itself (it converts {SUPPORTED})",
            "give a llama.cpp checkout as {llama_cpp} (or set $LLAMA_CPP_DIR), and forge-hub runs its "
            "convert_hf_to_gguf.py for this architecture")
    try:
        config = AutoConfig.from_pretrained(model_dir).get_text_config()
    except (ValueError, OSError, KeyError) as exc:
        raise ModelLoadError(f"could not read {model_dir}/config.json: {exc}", "upgrade transformers") from exc
    vocab = read_vocab(model_dir, int(config.vocab_size), family.no_space_prefix)
    conversion = _Conversion(family, config, vocab, [])
    conversion.tensors = list(_tensors(model_dir, conversion))
    _rope_keys(config)  # unsupported RoPE scaling fails here, before any file
    return conversion


def _tensors(model_dir: Path, conversion: _Conversion) -> Iterator[_Tensor]:
    """Every tensor in GGUF naming, with a loader that applies the family's transforms."""
    import gguf

    family, config = conversion.family, conversion.config
    shards = weight_shards(model_dir)
    shapes, where = checkpoint_shapes(shards)
    tied = bool(getattr(config, "tie_word_embeddings", True))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[family.arch], int(config.num_hidden_layers))
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    skipped = []
    for source_name in sorted(shapes, key=_natural):
        hf_name = _strip_prefix(source_name)
        not_converted = hf_name.startswith(_OTHER_TOWERS) or hf_name.endswith("rotary_emb.inv_freq")
        if not_converted or (tied and hf_name == "lm_head.weight"):
            skipped.append(source_name)
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UnsupportedArchitectureError(
                f"tensor {source_name!r} has no GGUF name in the {family.label} layout",
                "this checkpoint differs from the family's usual layout; use llama.cpp's converter ({llama_cpp})")
        shape = tuple(shapes[source_name])
        permute_heads = None
        if family.rope_permute and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            permute_heads = heads
        elif family.rope_permute and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            permute_heads = kv_heads
        shift = family.norm_shift if hf_name.endswith("norm.weight") else 0.0
        # as llama.cpp: 1-D tensors, norms and biases stay F32 (its kernels expect them so)
        keep_f32 = len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight")
        yield _Tensor(gguf_name, shape, _loader(where[source_name], source_name, permute_heads, shift), keep_f32)
    extra = _rope_freqs(config)
    if extra is not None:
        yield _Tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", tuple(extra.shape),
                      lambda: extra, keep_f32=True)
    if skipped:
        conversion.notes.append(f"not converted (not part of the language model, or tied): {', '.join(skipped[:5])}"
                                + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))


def _loader(shard: Path, name: str, permute_heads: int | None, shift: float) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        with safe_open(shard, "pt") as f:
            tensor = f.get_tensor(name).to(torch.float32)
        if permute_heads is not None:
            tensor = rope_pairs(tensor, permute_heads)
        if shift:
            tensor = tensor + shift
        return tensor

    return load


def rope_pairs(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from Hugging Face's halves layout to llama.cpp's pairs layout.

    Within a head of ``d`` rows, HF's RoPE rotates row ``i`` with row ``i + d/2``; llama.cpp's
    ``llama`` graph rotates rows ``2i`` and ``2i + 1``. Row ``i`` of the first half moves to
    ``2i``, row ``i`` of the second half to ``2i + 1``. Works for weights and biases alike.
    """
    half = weight.shape[0] // heads // 2
    halves = weight.reshape(heads, 2, half, *weight.shape[1:])
    return halves.transpose(1, 2).reshape(weight.shape).contiguous()


def _write_file(conversion: _Conversion, path: Path, type_name: str, name: str, progress: bool) -> None:
    """One GGUF file: header and tensor table first, then each tensor loaded, converted and written
    in turn, so memory holds one tensor at a time."""
    import gguf

    family, config = conversion.family, conversion.config
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[family.arch]])
    _write_metadata(writer, family, config, name, type_name)
    write_vocab(writer, conversion.vocab)
    plan = []
    fallbacks = []
    for t in conversion.tensors:
        stored = "F32" if t.keep_f32 else type_name
        if not fits_blocks(t.shape, stored):
            fallbacks.append(t.gguf_name)
            stored = FALLBACK_TYPE
        writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), tensor_nbytes(t.shape, stored),
                               raw_dtype=gguf.GGMLQuantizationType[stored])
        plan.append((t, stored))
    if fallbacks:
        print(f"note: {len(fallbacks)} tensor(s) have rows that are not whole {type_name} blocks and are stored as "
              f"{FALLBACK_TYPE}: {', '.join(fallbacks[:4])}" + (" ..." if len(fallbacks) > 4 else ""), file=sys.stderr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = sum(tensor_nbytes(t.shape, stored) for t, stored in plan)
    with tqdm(total=total, desc=type_name, unit="B", unit_scale=True, disable=not progress) as bar:
        for t, stored in plan:
            data = quantize(t.load().numpy(), stored)
            writer.write_tensor_data(data)
            bar.update(data.nbytes)
    writer.close()


def _write_metadata(writer, family: Family, config, name: str, type_name: str) -> None:
    """Architecture keys, as llama.cpp's converter writes them for these families."""
    import gguf

    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    full, sliding = _rope_keys(config)
    writer.add_rope_freq_base(float(full.get("rope_theta", 10000.0)))
    if sliding is not None and "rope_theta" in sliding:
        writer.add_rope_freq_base_swa(float(sliding["rope_theta"]))
    rope_type = full.get("rope_type", full.get("type", "default"))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(full["factor"]))
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(full["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(full.get("original_max_position_embeddings",
                                                          config.max_position_embeddings)))
    if family.llama_keys:
        writer.add_vocab_size(int(config.vocab_size))
        writer.add_rope_dimension_count(head_dim)
    if family.sliding_window and getattr(config, "sliding_window", None):
        writer.add_sliding_window(int(config.sliding_window))
    if family.sliding_window and getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_file_type(file_type(type_name))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


_ROPE_TYPES = ("default", "linear", "yarn", "llama3")


def _rope_keys(config) -> tuple[dict, dict | None]:
    """(full-attention RoPE parameters, sliding-window ones or None), from transformers 5's
    ``rope_parameters`` or the older ``rope_theta`` / ``rope_scaling``."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        if getattr(config, "rope_theta", None) is not None:
            params.setdefault("rope_theta", config.rope_theta)
    full = params.get("full_attention", params)
    sliding = params.get("sliding_attention")
    if sliding is None and getattr(config, "rope_local_base_freq", None) is not None:
        sliding = {"rope_theta": config.rope_local_base_freq}
    rope_type = full.get("rope_type", full.get("type", "default")) or "default"
    if rope_type not in _ROPE_TYPES:
        raise UnsupportedArchitectureError(
            f"RoPE scaling {rope_type!r} is not one forge-hub writes to GGUF ({', '.join(_ROPE_TYPES)})",
            "use llama.cpp's converter ({llama_cpp})")
    return full, sliding


def _rope_freqs(config) -> torch.Tensor | None:
    """Llama 3.1's RoPE: per-frequency divisors, which llama.cpp reads from a ``rope_freqs`` tensor.

    Wavelengths shorter than ``context / high_freq_factor`` keep their frequency, longer than
    ``context / low_freq_factor`` are divided by ``factor``, and those between blend the two.
    """
    full, _ = _rope_keys(config)
    if full.get("rope_type", full.get("type")) != "llama3":
        return None
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    dim = int(getattr(config, "head_dim", None) or hidden // heads)
    base = float(full.get("rope_theta", 10000.0))
    factor = float(full.get("factor", 8.0))
    low, high = float(full.get("low_freq_factor", 1.0)), float(full.get("high_freq_factor", 4.0))
    context = float(full.get("original_max_position_embeddings", 8192))
    divisors = []
    for i in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (i / dim)
        if wavelength < context / high:
            divisors.append(1.0)
        elif wavelength > context / low:
            divisors.append(factor)
        else:
            blend = (context / wavelength - low) / (high - low)
            divisors.append(1.0 / ((1 - blend) / factor + blend))
    return torch.tensor(divisors, dtype=torch.float32)


def _strip_prefix(name: str) -> str:
    for prefix, replacement in _PREFIXES:
        if name.startswith(prefix):
            return replacement + name[len(prefix):]
    return name


def _natural(name: str) -> tuple:
    """Sort key that puts layer 2 before layer 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
