"""Prompts through the model's own chat template: batched with left padding for measurements,
and one conversation answered token by token for chat.

Every measurement (activations, layer scores, refusals, KL) must see a prompt exactly as the
chat model sees it in use, so they all encode through :func:`encode`; both chat front ends (the
terminal and the Space) answer through :func:`chat_stream`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from forge_hub.errors import ModelLoadError, PromptError


def require_chat_template(tokenizer: object) -> None:
    """A chat model is measured and talked to through its chat template; without one, say so."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            "the tokenizer has no chat template, so prompts cannot be formatted as the chat model expects",
            "use an instruction-tuned (chat) model, or give a Jinja template file as {chat_template}",
            input="chat_template",
        )


def render(tokenizer: object, prompt: str, system_prompt: str | None = None) -> str:
    """The text the model is given for one user turn, ending with the assistant's header."""
    require_chat_template(tokenizer)
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(tokenizer: object, prompts: Sequence[str], *, system_prompt: str | None = None,
           device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Left-padded batch, so position -1 is every prompt's last token."""
    texts = [render(tokenizer, p, system_prompt) for p in prompts]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in batch.items()} if device is not None else dict(batch)


DEFAULT_MAX_PROMPT_TOKENS = 2048


def check_prompt_lengths(tokenizer: object, prompts: Sequence[str], *, max_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
                         system_prompt: str | None = None, context: int | None = None) -> None:
    """Refuse, before any work, a prompt longer than ``max_tokens`` (or the model's ``context``)
    through the chat template: one such line can fill the machine's memory in a batched pass."""
    limit = min(max_tokens, context) if context else max_tokens
    for prompt, length in zip(prompts, token_counts(tokenizer, prompts, system_prompt=system_prompt)):
        if length > limit:
            start = " ".join(prompt.split()[:8])
            raise PromptError(f"a prompt is {length} tokens long through the chat template, more than the "
                              f"limit of {limit}: {start!r}...",
                              "shorten or remove that prompt, or raise {max_prompt_tokens}", input="max_prompt_tokens")


def token_counts(tokenizer: object, prompts: Sequence[str], *, system_prompt: str | None = None) -> list[int]:
    """Each prompt's length in tokens through the chat template."""
    texts = [render(tokenizer, p, system_prompt) for p in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def model_context(model: torch.nn.Module) -> int | None:
    """The longest input the model was built for, when its config says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the embedding's device (accelerate may spread the rest), or where
    accelerate runs an offloaded embedding."""
    embed = model.get_input_embeddings()
    if embed.weight.device.type == "meta":
        device = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
        return torch.device("cpu" if device is None else device)
    return embed.weight.device


def chat_answer(model: torch.nn.Module, tokenizer: object, messages: list[dict[str, str]],
                *, max_new_tokens: int = 128) -> str:
    """The model's greedy answer to a conversation, through its own chat template."""
    final = deque(chat_stream(model, tokenizer, messages, max_new_tokens=max_new_tokens), maxlen=1)
    return final[0] if final else ""


def chat_stream(model: torch.nn.Module, tokenizer: object, messages: list[dict[str, str]],
                *, max_new_tokens: int = 128) -> Iterator[str]:
    """The greedy answer as it grows, token by token; the last item is the whole answer, decoded
    from all generated tokens at once (piecewise decoding can differ in spaces around pieces)."""
    from transformers import TextIteratorStreamer

    require_chat_template(tokenizer)
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
    batch = {k: v.to(input_device(model)) for k, v in batch.items()}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    outcome: dict[str, Any] = {}

    def generate() -> None:
        try:
            with torch.inference_mode():
                outcome["ids"] = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                                temperature=None, top_p=None, top_k=None,
                                                pad_token_id=tokenizer.pad_token_id, streamer=streamer)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = exc
            streamer.end()  # unblock the reader, which would otherwise wait forever

    worker = threading.Thread(target=generate, name="forge-hub-chat", daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text.strip()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    yield tokenizer.decode(outcome["ids"][0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
