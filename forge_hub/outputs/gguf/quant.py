"""GGUF tensor types: which names forge-hub accepts, and turning float32 arrays into one of them.

Two families of types:

- the ones the ``gguf`` package quantizes in numpy (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
  Q5_1): forge-hub writes them itself, tensor by tensor;
- llama.cpp's k-quant file types (Q4_K_M, Q5_K_M, Q6_K, ...): these choose a type *per tensor*
  with llama.cpp's own rules and quantizers, so forge-hub writes F16 and hands it to llama.cpp
  (see :mod:`forge_hub.outputs.gguf.llama_cpp`).

Block types need rows that are a whole number of blocks (32 values for the legacy types). A
row that is not falls back to F16, as llama.cpp's converter does, and the caller is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from forge_hub.errors import GGUFTypeError

NUMPY_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
LLAMA_CPP_TYPES = ("Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")
FALLBACK_TYPE = "F16"
# Tensor types that llama.cpp's quantizer writes and the numpy one only reads, each with the file type
# that gives it to every tensor under llama-quantize --pure (its "base" type).
K_QUANT_FILE_TYPES = {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K"}
K_QUANT_TYPES = tuple(K_QUANT_FILE_TYPES)
# Types the numpy quantizer can write back after an edit, smallest first (bits per weight).
_REQUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "F32")


def parse_types(types: str | Iterable[str]) -> list[str]:
    """``"f16, q8_0"`` or ``["F16", "Q8_0"]`` -> ``["F16", "Q8_0"]`` (upper case, deduplicated, checked).

    Raises before any work starts, so a typo in the last type never wastes a long conversion.
    """
    names = types.split(",") if isinstance(types, str) else list(types)
    result: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if name not in NUMPY_TYPES and name not in LLAMA_CPP_TYPES:
            raise GGUFTypeError(f"unknown GGUF type {raw.strip()!r}",
                                f"use any of {', '.join(NUMPY_TYPES)} (written by forge-hub) or "
                                f"{', '.join(LLAMA_CPP_TYPES)} (through llama.cpp's quantizer)")
        if name not in result:
            result.append(name)
    if not result:
        raise GGUFTypeError("no GGUF type given",
                            f"give {{types}} as e.g. F16,Q8_0 (valid: {', '.join(NUMPY_TYPES + LLAMA_CPP_TYPES)})",
                            input="types")
    return result


def ggml_type(name: str):
    """The ``gguf.GGMLQuantizationType`` for a tensor type name such as ``"Q8_0"``."""
    import gguf

    return gguf.GGMLQuantizationType[name]


def file_type(name: str):
    """``general.file_type`` for a whole-file type name (``"Q4_K_M"`` -> ``MOSTLY_Q4_K_M``)."""
    import gguf

    return gguf.LlamaFileType.ALL_F32 if name == "F32" else gguf.LlamaFileType[f"MOSTLY_{name}"]


def block_size(name: str) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[ggml_type(name)][0]


def tensor_nbytes(shape: Sequence[int], name: str) -> int:
    """Bytes of a tensor of numpy ``shape`` (rows last) stored as type ``name``."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[ggml_type(name)]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows * (shape[-1] // block) * size


def fits_blocks(shape: Sequence[int], name: str) -> bool:
    """Whether rows of this shape are a whole number of ``name`` blocks."""
    return shape[-1] % block_size(name) == 0


def quantize(array: np.ndarray, name: str) -> np.ndarray:
    """float32 ``array`` -> the bytes (or float array) GGUF stores for type ``name``."""
    import gguf

    return gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), ggml_type(name))


def dequantize(data: np.ndarray, qtype) -> np.ndarray:
    """Stored tensor data of ``qtype`` -> a float32 array in numpy (rows last) order."""
    import gguf

    return np.array(gguf.quants.dequantize(data, qtype), dtype=np.float32, copy=True)


def can_requantize(qtype) -> bool:
    """Whether the numpy quantizer writes this stored type (k-quants and i-quants it only reads)."""
    return qtype.name in _REQUANTIZABLE


def requantize_type(qtype, shape: Sequence[int], *, k_quants: bool = False) -> str:
    """The type an edited tensor is written back in: its own where numpy can write it (or, with
    ``k_quants``, where it is a k-quant llama.cpp's quantizer writes: :data:`K_QUANT_TYPES`), else
    the smallest writable type with more bits per weight (a legacy type loses more per bit than a
    k-quant, so equal bits would cost precision), else F16 when the rows do not fit its blocks."""
    import gguf

    if can_requantize(qtype) and fits_blocks(shape, qtype.name):
        return qtype.name
    if k_quants and qtype.name in K_QUANT_TYPES and fits_blocks(shape, qtype.name):
        return qtype.name
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    bits = 8 * size / block
    for name in _REQUANTIZABLE:
        b, s = gguf.GGML_QUANT_SIZES[ggml_type(name)]
        if 8 * s / b > bits and fits_blocks(shape, name):
            return name
    return FALLBACK_TYPE
