"""What a model says and how sure it is: greedy answers in batches, the first answer token's
log-probabilities, KL divergence between two such tables, and the cross-entropy of given answers.

Every measurement forge-hub makes (layer choice, search trials, evaluation) is built from these,
and every one of them sees prompts through the model's own chat template (:mod:`forge_hub.model.chat`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from forge_hub.model.chat import batches, encode, input_device, token_counts


@torch.inference_mode()
def generate(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], *, max_new_tokens: int = 40,
             batch_size: int = 16, system_prompt: str | None = None, desc: str = "generate") -> list[str]:
    """Greedy answers, batched; decoding skips special tokens."""
    return [text for text, _ in generate_with_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                  batch_size=batch_size, system_prompt=system_prompt, desc=desc)]


@torch.inference_mode()
def generate_with_ids(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], *, max_new_tokens: int = 40,
                      batch_size: int = 16, system_prompt: str | None = None,
                      desc: str = "generate") -> list[tuple[str, list[int]]]:
    """Greedy answers with their token ids (up to and including the end-of-turn token)."""
    device = input_device(model)
    stop = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
    answers: list[tuple[str, list[int]]] = []
    for chunk in tqdm(list(batches(prompts, batch_size)), desc=desc, unit="batch", leave=False):
        batch = encode(tokenizer, chunk, system_prompt=system_prompt, device=device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            ids = []
            for token in row:
                ids.append(token)
                if token in stop:
                    break
            answers.append((tokenizer.decode(ids, skip_special_tokens=True), ids))
    return answers


@torch.inference_mode()
def answer_cross_entropy(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str],
                         answers: Sequence[Sequence[int]], *, batch_size: int = 16,
                         system_prompt: str | None = None) -> float:
    """Mean per-token cross-entropy of given answer tokens (e.g. the original's own greedy answers)
    under ``model``: how much the edit moved the model away from what it used to say."""
    device = input_device(model)
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_answers = prompts[start:start + batch_size], answers[start:start + batch_size]
        batch = encode(tokenizer, chunk, system_prompt=system_prompt)
        width = max(len(a) for a in chunk_answers)
        pad = tokenizer.pad_token_id
        ids = torch.full((len(chunk), batch["input_ids"].shape[1] + width), pad)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        prompt_len = batch["input_ids"].shape[1]
        ids[:, :prompt_len], mask[:, :prompt_len] = batch["input_ids"], batch["attention_mask"]
        for i, answer in enumerate(chunk_answers):
            ids[i, prompt_len:prompt_len + len(answer)] = torch.tensor(answer)
            mask[i, prompt_len:prompt_len + len(answer)] = 1
            labels[i, prompt_len:prompt_len + len(answer)] = torch.tensor(answer)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].to(device), reduction="sum",
                                 ignore_index=-100)
        total += losses.item()
        count += int((labels[:, 1:] != -100).sum())
    return total / max(count, 1)


@torch.inference_mode()
def first_token_logprobs(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], *, batch_size: int = 16,
                         system_prompt: str | None = None) -> torch.Tensor:
    """``[N, vocab]`` log-probabilities of the first answer token, float32 on the CPU, row i for
    ``prompts[i]``. A batch holds prompts of similar length: its padding costs what real tokens
    cost, and a search pays this pass once per trial (the comparison's 100 harmless prompts in
    batches of 50 take 4,400 tokens in file order, 3,800 sorted by length)."""
    device = input_device(model)
    lengths = token_counts(tokenizer, prompts, system_prompt=system_prompt)
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    rows = []
    for chunk in batches([prompts[i] for i in order], batch_size):
        batch = encode(tokenizer, chunk, system_prompt=system_prompt, device=device)
        logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        rows.append(F.log_softmax(logits.float(), dim=-1).cpu())
    table = torch.cat(rows)
    in_order = torch.empty_like(table)
    in_order[torch.tensor(order)] = table
    return in_order


def kl_divergence(reference: torch.Tensor, edited: torch.Tensor) -> float:
    """``batchmean`` KL(reference || edited) from two ``[N, vocab]`` log-probability tables."""
    return F.kl_div(edited, reference, log_target=True, reduction="batchmean").item()
