"""A GGUF file run by llama.cpp (llama-cpp-python), as the people who download it will run it.

A quantized file can behave differently from the weights it was made from (4-bit rounding can
restore part of a removed direction), so the GGUF check measures each file through llama.cpp's
own kernels rather than through a dequantized copy. Prompts are given as token ids from the
model's Hugging Face tokenizer and chat template, the same ids the transformers measurements
use, so answers and first-token distributions compare one to one.

    runner = LlamaRunner(Path("model-Q4_K_M.gguf"), context=512, threads=1)
    ids = runner.greedy(prompt_ids, max_new_tokens=100, stop={eos})
    logprobs = runner.next_token_logprobs(prompt_ids)      # [vocab], float32

Needs ``pip install llama-cpp-python`` (``forge-hub[llama-cpp]``); :func:`llama_cpp_available`
says whether it is there.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from forge_hub.errors import MissingDependencyError, ModelLoadError

INSTALL_HINT = "pip install llama-cpp-python (or 'forge-hub[llama-cpp]'), or measure through transformers"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaRunner:
    """One GGUF file loaded in llama.cpp on the CPU (``threads`` threads), greedy and repeatable."""

    def __init__(self, path: Path, *, context: int, threads: int | None = None) -> None:
        if not llama_cpp_available():
            raise MissingDependencyError("running a GGUF file through llama.cpp needs llama-cpp-python", INSTALL_HINT)
        import llama_cpp

        try:
            # logits_all keeps every evaluated position's logits in ``scores``: the public way to read
            # the distribution of the first answer token after a prompt.
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=context, n_batch=min(context, 512),
                                       n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp cannot load {path.name}: {exc}",
                                 "check the file (its architecture must be one llama.cpp knows)") from exc

    @property
    def vocab_size(self) -> int:
        return int(self.llm.n_vocab())

    @property
    def eos_token_id(self) -> int:
        return int(self.llm.token_eos())

    def greedy(self, prompt: Sequence[int], *, max_new_tokens: int, stop: set[int]) -> list[int]:
        """The greedy answer's token ids, up to and including the first stop token."""
        out: list[int] = []
        if max_new_tokens <= 0:
            return out
        for token in self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                       reset=True):
            out.append(int(token))
            if token in stop or len(out) >= max_new_tokens:
                break
        return out

    def next_token_logprobs(self, prompt: Sequence[int]) -> torch.Tensor:
        """``[vocab]`` log-probabilities of the token after ``prompt``, float32."""
        self.llm.reset()
        self.llm.eval(list(prompt))
        logits = np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)
        return F.log_softmax(torch.from_numpy(logits), dim=-1)

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
