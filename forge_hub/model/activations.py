"""Residual-stream activations of harmful and harmless prompts, per layer.

One forward pass per batch with ``output_hidden_states``; the last prompt token (and optional
extra positions) is read at every layer. Memory stays bounded: running sums are kept, and
per-prompt vectors only when a method needs them (SVD directions, winsorization).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from forge_hub.errors import PromptError, SettingsError
from forge_hub.model.chat import batches, encode, input_device


@dataclass
class ResidualStats:
    """Mean residual vector per layer (index ``l`` = stream entering layer ``l``, last = final)."""

    mean: torch.Tensor  # [L+1, H] float32
    count: int
    per_prompt: torch.Tensor | None = None  # [N, L+1, H] float32 when kept


@torch.inference_mode()
def collect_residuals(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], *, batch_size: int = 16,
                      system_prompt: str | None = None, positions: Sequence[int] = (-1,),
                      keep_per_prompt: bool = False, winsorize_quantile: float | None = None,
                      desc: str = "activations") -> ResidualStats:
    """Average residual vectors at ``positions`` (negative, from the end of the prompt).

    ``winsorize_quantile`` (e.g. 0.995) clips each layer's values at that quantile of their
    magnitudes before averaging, so a few "massive activation" coordinates cannot dominate.
    """
    if not prompts:
        raise PromptError("no prompts to collect activations from", "give at least one prompt per side")
    device = input_device(model)
    total: torch.Tensor | None = None
    kept: list[torch.Tensor] = []
    need_vectors = keep_per_prompt or winsorize_quantile is not None
    with tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False) as bar:
        for chunk in batches(prompts, batch_size):
            batch = encode(tokenizer, chunk, system_prompt=system_prompt, device=device)
            out = model(**batch, output_hidden_states=True, use_cache=False)
            # [B, L+1, H], averaged over the chosen positions
            vectors = torch.stack([
                torch.stack([h[:, p].float().cpu() for p in positions]).mean(0) for h in out.hidden_states
            ], dim=1)
            if need_vectors:
                kept.append(vectors)
            else:
                s = vectors.double().sum(0)
                total = s if total is None else total + s
            bar.update(len(chunk))
    if not need_vectors:
        return ResidualStats((total / len(prompts)).float(), len(prompts))
    per_prompt = torch.cat(kept)
    if winsorize_quantile is not None:
        per_prompt = winsorize(per_prompt, winsorize_quantile)
    return ResidualStats(per_prompt.double().mean(0).float(), len(prompts), per_prompt if keep_per_prompt else None)


def winsorize(vectors: torch.Tensor, quantile: float) -> torch.Tensor:
    """Clip ``[N, L, H]`` values per layer at the ``quantile`` of their absolute values."""
    if not 0.5 < quantile <= 1.0:
        raise SettingsError(f"winsorize quantile must be in (0.5, 1], got {quantile}",
                            "give {winsorize_quantile} as e.g. 0.995", input="winsorize_quantile")
    flat = vectors.abs().transpose(0, 1).reshape(vectors.shape[1], -1)
    # torch.quantile is limited to 16M elements; a strided sample is plenty for a threshold
    step = max(1, flat.shape[1] // 1_000_000)
    limits = torch.quantile(flat[:, ::step].float(), quantile, dim=1)  # [L]
    return vectors.clamp(-limits[None, :, None], limits[None, :, None])
