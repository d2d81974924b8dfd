"""The projection math, on tensors only: no files, no models.

For a unit refusal direction ``r`` (or an orthonormal set ``Q``, one direction per row), a
matrix that writes ``W x`` into the residual stream is replaced by ``(I - s Q^T Q) W``: its
output loses the component along ``Q`` (completely at strength ``s = 1``). The same function
edits a safetensors shard, a GGUF tensor or a live parameter, so the three agree bit for bit.

Tensors are viewed as a set of *residual vectors*: the slices that live in residual-stream
coordinates (the columns of an ``nn.Linear`` weight, the rows of an embedding matrix, a bias).
Norm-preserving mode rescales each residual vector back to its original length after the
projection, which keeps the scale the following norms and layers were trained on.

Row-normalized mode (magnitude-preserving ablation, the "full" row normalization of Heretic and
grimjim) works in the other orientation: each *row* of an ``nn.Linear`` writer (one residual
coordinate) is scaled to unit length, the projection is made there, and every row gets its old
length back. Coordinates with large weights are then not edited more than small ones, which
measurably lowers the damage (KL) at the same refusal removal.
"""

from __future__ import annotations

import math

import torch

from forge_hub.errors import SettingsError

COMPUTE_DTYPE = torch.float32
CHUNK_BYTES = 1 << 20  # float32 scratch per block: small enough to stay in cache
_EPS = 1e-12


def as_direction_rows(directions: torch.Tensor) -> torch.Tensor:
    """``[H]`` or ``[k, H]`` -> ``[k, H]`` orthonormal rows (float32), so projections are exact."""
    q = directions.to(COMPUTE_DTYPE)
    if q.ndim == 1:
        q = q[None, :]
    if q.shape[0] == 1:
        return q / q.norm().clamp_min(_EPS)
    basis, _ = torch.linalg.qr(q.T)  # columns span the same space, orthonormal
    return basis.T.contiguous()


@torch.no_grad()  # weights are data here, also when handed a Parameter
def project_out(weight: torch.Tensor, directions: torch.Tensor, *, residual_axis: int = 0, strength: float = 1.0,
                norm_preserving: bool = False, row_normalized: bool = False, out: torch.Tensor | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Remove ``strength`` times the component along ``directions`` from every residual vector.

    ``weight`` is 1-D (a bias), 2-D (``residual_axis`` 0 for ``nn.Linear`` weights ``[out, in]``,
    1 for embeddings ``[vocab, hidden]``) or 3-D fused experts ``[experts, ...]``, edited one
    expert at a time so a fused tensor gives the same bits as the per-expert tensors it holds.
    The work runs over contiguous blocks of rows in float32 scratch of about ``chunk_bytes``, so a
    large embedding never needs a float32 copy, and every caller (live model, shard stream, GGUF)
    rounds identically. Writes into ``out`` when given (same shape and dtype), else a new tensor;
    the input is never modified.

    ``row_normalized`` applies to ``nn.Linear`` weights (``residual_axis`` 0); biases and
    embeddings get the plain (or norm-preserving) projection in that mode.
    """
    if norm_preserving and row_normalized:
        raise SettingsError("norm preservation and row normalization are two ways to keep magnitudes; pick one",
                            "leave out {norm_preserving} or {row_normalized}", input="norm_preserving")
    q = as_direction_rows(directions).to(weight.device)
    if out is None:
        out = torch.empty_like(weight, memory_format=torch.contiguous_format)
    weight = weight.contiguous()
    if weight.ndim == 3:
        for e in range(weight.shape[0]):
            project_out(weight[e], q, residual_axis=residual_axis - 1, strength=strength,
                        norm_preserving=norm_preserving, row_normalized=row_normalized, out=out[e],
                        chunk_bytes=chunk_bytes)
        return out
    if weight.ndim == 1:
        _project_rows(weight[None, :], out[None, :], q, strength, norm_preserving, chunk_bytes)
    elif weight.ndim == 2 and residual_axis == 1:
        _project_rows(weight, out, q, strength, norm_preserving, chunk_bytes)
    elif weight.ndim == 2 and residual_axis == 0 and row_normalized:
        _project_normalized_rows(weight, out, q, strength, chunk_bytes)
    elif weight.ndim == 2 and residual_axis == 0:
        _project_columns(weight, out, q, strength, norm_preserving, chunk_bytes)
    else:
        raise ValueError(f"cannot orthogonalize a {weight.ndim}-D tensor along axis {residual_axis}")
    return out


def _rows_per_block(row_len: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // (4 * row_len))


def _norm_scale(squared: torch.Tensor, coeffs_squared: torch.Tensor, strength: float) -> torch.Tensor:
    """Factor that gives each edited vector its old norm back.

    For orthonormal ``Q``: ``|v - s Q^T Q v|^2 = |v|^2 - (2s - s^2) |Q v|^2``, so the new norms
    follow from sums already at hand, without a second pass over the edited vectors.
    """
    edited = (squared - (2 * strength - strength**2) * coeffs_squared).clamp_min(0.0)
    scale = (squared / edited.clamp_min(_EPS)).sqrt()
    return torch.where(edited > _EPS * squared.clamp_min(_EPS), scale, torch.ones_like(scale))


def _project_rows(src: torch.Tensor, dst: torch.Tensor, q: torch.Tensor, strength: float, norm_preserving: bool,
                  chunk_bytes: int) -> None:
    """Rows are residual vectors (embeddings, biases): one pass, block by block."""
    step = _rows_per_block(src.shape[1], chunk_bytes)
    scratch = torch.empty((min(step, src.shape[0]), src.shape[1]), dtype=COMPUTE_DTYPE, device=src.device)
    for start in range(0, src.shape[0], step):
        block = scratch[: min(step, src.shape[0] - start)]
        block.copy_(src[start:start + block.shape[0]])
        coeffs = block @ q.T  # [rows, k]
        if norm_preserving:
            scale = _norm_scale(block.pow(2).sum(1), coeffs.pow(2).sum(1), strength)
        block.addmm_(coeffs, q, alpha=-strength)
        if norm_preserving:
            block.mul_(scale[:, None])
        dst[start:start + block.shape[0]].copy_(block)


def _project_columns(src: torch.Tensor, dst: torch.Tensor, q: torch.Tensor, strength: float, norm_preserving: bool,
                     chunk_bytes: int) -> None:
    """Columns are residual vectors (``nn.Linear`` weights): gather ``Q W`` over row blocks, then
    subtract ``s Q^T (Q W)`` block by block; every block is contiguous memory."""
    rows, cols = src.shape
    step = _rows_per_block(cols, chunk_bytes)
    scratch = torch.empty((min(step, rows), cols), dtype=COMPUTE_DTYPE, device=src.device)
    coeffs = torch.zeros((q.shape[0], cols), dtype=COMPUTE_DTYPE, device=src.device)
    squared = torch.zeros(cols, dtype=COMPUTE_DTYPE, device=src.device) if norm_preserving else None
    for start in range(0, rows, step):
        block = scratch[: min(step, rows - start)]
        block.copy_(src[start:start + block.shape[0]])
        coeffs.addmm_(q[:, start:start + block.shape[0]], block)
        if squared is not None:
            squared.add_(block.pow(2).sum(0))
    scale = _norm_scale(squared, coeffs.pow(2).sum(0), strength) if squared is not None else None
    for start in range(0, rows, step):
        block = scratch[: min(step, rows - start)]
        block.copy_(src[start:start + block.shape[0]])
        block.addmm_(q[:, start:start + block.shape[0]].T, coeffs, alpha=-strength)
        if scale is not None:
            block.mul_(scale[None, :])
        dst[start:start + block.shape[0]].copy_(block)


def _project_normalized_rows(src: torch.Tensor, dst: torch.Tensor, q: torch.Tensor, strength: float,
                             chunk_bytes: int) -> None:
    """``W [H, I]`` -> ``D renorm(N - s Q^T Q N)`` with ``D`` the row norms of ``W``, ``N = D^-1 W``.

    Every row ends with exactly its original norm. The edit removes the direction in the
    row-normalized space, so the output keeps a small component along it wherever row norms
    differ; the search measures what that costs in refusals. Two passes over blocks of rows: the
    first gathers the norms and ``Q N``, the second edits and rescales.
    """
    rows, cols = src.shape
    step = _rows_per_block(cols, chunk_bytes)
    scratch = torch.empty((min(step, rows), cols), dtype=COMPUTE_DTYPE, device=src.device)
    coeffs = torch.zeros((q.shape[0], cols), dtype=COMPUTE_DTYPE, device=src.device)
    norms = torch.empty(rows, dtype=COMPUTE_DTYPE, device=src.device)
    for start in range(0, rows, step):
        block = scratch[: min(step, rows - start)]
        block.copy_(src[start:start + block.shape[0]])
        row_norms = norms[start:start + block.shape[0]]
        torch.linalg.vector_norm(block, dim=1, out=row_norms)
        block.div_(row_norms.clamp_min(_EPS)[:, None])
        coeffs.addmm_(q[:, start:start + block.shape[0]], block)
    for start in range(0, rows, step):
        block = scratch[: min(step, rows - start)]
        block.copy_(src[start:start + block.shape[0]])
        row_norms = norms[start:start + block.shape[0]]
        block.div_(row_norms.clamp_min(_EPS)[:, None])
        block.addmm_(q[:, start:start + block.shape[0]].T, coeffs, alpha=-strength)
        block.mul_((row_norms / torch.linalg.vector_norm(block, dim=1).clamp_min(_EPS))[:, None])
        dst[start:start + block.shape[0]].copy_(block)


def project_out_activations(x: torch.Tensor, directions: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``x - s Q^T Q x`` on the last axis: what :func:`project_out` does to a writer's output."""
    q = as_direction_rows(directions).to(device=x.device)
    xf = x.to(COMPUTE_DTYPE)
    return (xf - strength * ((xf @ q.T) @ q)).to(x.dtype)


def through_norm_gain(directions: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """The direction to remove *before* a norm with per-coordinate ``gain`` so none passes it.

    The norm outputs ``gain * o / rms(o)``; its component along ``r`` is ``(gain * r) . o / rms(o)``,
    which is zero exactly when ``o`` is orthogonal to ``gain * r``.
    """
    rows = as_direction_rows(directions)
    return as_direction_rows(rows * gain.to(COMPUTE_DTYPE)[None, :])


def orthogonal_to(direction: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``direction`` minus its component along ``other``, renormalised (projected abliteration).

    Removing only what is orthogonal to the harmless mean leaves the part of the refusal
    direction that every prompt shares untouched, which is what keeps ordinary answers intact.
    """
    d = direction.to(COMPUTE_DTYPE)
    o = other.to(COMPUTE_DTYPE)
    o = o / o.norm().clamp_min(_EPS)
    d = d - (d @ o) * o
    return d / d.norm().clamp_min(_EPS)


def layer_kernel(num_layers: int, *, shape: str = "constant", center: float | None = None, width: float | None = None,
                 floor: float = 0.0) -> list[float]:
    """Per-layer weights in [floor, 1]: how strongly each layer's writers are edited.

    ``constant`` edits every layer fully; ``linear`` falls from 1 at ``center`` to ``floor`` at
    distance ``width`` (and 0 beyond); ``gaussian`` uses ``width`` as its standard deviation.
    """
    if shape == "constant":
        return [1.0] * num_layers
    if center is None or width is None or width <= 0:
        raise SettingsError(f"the {shape!r} kernel needs a center and a positive width",
                            "give {kernel_center} and {kernel_width} (> 0)", input="kernel")
    weights = []
    for layer in range(num_layers):
        d = abs(layer - center)
        if shape == "linear":
            weights.append(0.0 if d > width else 1.0 - (1.0 - floor) * d / width)
        elif shape == "gaussian":
            weights.append(floor + (1.0 - floor) * math.exp(-0.5 * (d / width) ** 2))
        else:
            raise SettingsError(f"unknown kernel {shape!r}", "use constant, linear or gaussian", input="kernel")
    return weights
