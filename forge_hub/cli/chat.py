"""`forge-hub chat`: talk to a model in the terminal, through its own tokenizer and chat template.

Answers stream token by token through the same :func:`~forge_hub.model.chat.chat_stream` the Space
uses. ``/reset`` forgets the conversation, ``/exit`` or end of input (Ctrl-D) leaves.
"""

from __future__ import annotations

import sys
from typing import TextIO

import torch

from forge_hub.model.chat import chat_stream, require_chat_template


def chat_loop(model: torch.nn.Module, tokenizer: object, *, system_prompt: str | None = None,
              max_new_tokens: int = 512, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Read turns from ``stdin`` until it ends or says /exit; returns the number of answered turns."""
    require_chat_template(tokenizer)
    history: list[dict[str, str]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
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
        print("model> ", end="", file=stdout, flush=True)
        shown = answer = ""
        for answer in chat_stream(model, tokenizer, history, max_new_tokens=max_new_tokens):
            if answer.startswith(shown):  # the last item is decoded whole: print only what is new
                print(answer[len(shown):], end="", file=stdout, flush=True)
                shown = answer
        print(file=stdout, flush=True)
        history.append({"role": "assistant", "content": answer})
        turns += 1
    return turns
