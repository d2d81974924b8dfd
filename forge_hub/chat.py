"""Prompts through the model's own chat template, batched with left padding.

Every measurement (activations, layer scores, refusals, KL) must see a prompt exactly as the
chat model sees it in use, so they all encode through this one function.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .errors import ModelLoadError


def render(tokenizer: object, prompt: str, system_prompt: str | None = None) -> str:
    """The text the model is given for one user turn, ending with the assistant's header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            "the tokenizer has no chat template, so prompts cannot be formatted as the chat model expects",
            "use an instruction-tuned (chat) model, or give a template with --chat-template FILE",
        )
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(tokenizer: object, prompts: Sequence[str], system_prompt: str | None = None,
           device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Left-padded batch, so position -1 is every prompt's last token."""
    texts = [render(tokenizer, p, system_prompt) for p in prompts]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in batch.items()} if device is not None else dict(batch)


def batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the embedding's device (accelerate may spread the rest)."""
    return model.get_input_embeddings().weight.device
