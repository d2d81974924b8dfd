"""`forge-hub chat`: talk to a model in the terminal, through its own tokenizer and chat template.

Answers stream token by token (transformers' ``TextStreamer``). ``/reset`` forgets the
conversation, ``/exit`` or end of input (Ctrl-D) leaves.
"""

from __future__ import annotations

import sys
from typing import TextIO

import torch

from .chat import input_device


def chat_loop(model: torch.nn.Module, tokenizer: object, system_prompt: str | None = None,
              max_new_tokens: int = 512, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    from transformers import TextStreamer

    if not getattr(tokenizer, "chat_template", None):
        from .errors import ModelLoadError

        raise ModelLoadError("the tokenizer has no chat template", "give one with --chat-template FILE")
    history: list[dict[str, str]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    interactive = stdin.isatty()
    print("forge-hub chat: /reset clears the conversation, /exit or Ctrl-D leaves", file=stdout, flush=True)
    turns = 0
    while True:
        if interactive:
            print("\nyou> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history = history[:1] if system_prompt else []
            print("(conversation cleared)", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": text})
        batch = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)
        batch = {k: v.to(input_device(model)) for k, v in batch.items()}
        print("model> ", end="", file=stdout, flush=True)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                                 pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        history.append({"role": "assistant", "content": answer})
        turns += 1
    return turns
