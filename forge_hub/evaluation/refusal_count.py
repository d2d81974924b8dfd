"""Counting refusals while generating only what decides them (the search's inner loop).

A greedy answer is a refusal as soon as a refusal marker appears in it (markers only ever add to
an answer) or when it ends empty. So each prompt can leave the batch the moment it is decided:
it ended, or it already refuses. Only answers that are still open keep generating, which is
most of the time spent in a trial. The count is exactly what full greedy answers of
``max_new_tokens`` followed by :func:`~forge_hub.evaluation.refusals.is_refusal` give.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from forge_hub.evaluation.refusals import REFUSAL_MARKERS, in_open_reasoning, is_refusal, normalize_answer
from forge_hub.model.chat import encode, input_device


def refuses_already(text: str, markers: Sequence[str] = REFUSAL_MARKERS) -> bool:
    """True when a partial answer is a refusal whatever follows. An open reasoning block is not
    decided (its markers belong to the reasoning, which the final judgement skips)."""
    if in_open_reasoning(text):
        return False
    answer = normalize_answer(text)
    return bool(answer) and any(m in answer for m in markers)


@dataclass
class RefusalCount:
    refusals: int  # refusals certain so far (all of them when ``complete``)
    decided: int  # prompts decided
    total: int  # prompts given
    tokens: int  # tokens generated, summed over prompts
    refused: list[int] = field(default_factory=list)  # indices into the prompts of the refusals found

    @property
    def complete(self) -> bool:
        return self.decided == self.total


@torch.inference_mode()
def count_refusals(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], *, max_new_tokens: int,
                   batch_size: int = 64, system_prompt: str | None = None,
                   markers: Sequence[str] = REFUSAL_MARKERS, bound: float | None = None) -> RefusalCount:
    """Refusals among greedy answers of ``max_new_tokens`` tokens, each answer generated only
    until it is decided. With ``bound``, counting stops as soon as more than ``bound`` refusals are
    certain (the result is then not ``complete``): the caller already knows the trial is beaten."""
    device = input_device(model)
    stop = torch.tensor(sorted({tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}), device=device)
    # transformers 5 names the forward's cache argument ``cache``; earlier versions ``past_key_values``
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    result = RefusalCount(0, 0, len(prompts), 0)
    for offset in range(0, len(prompts), batch_size):
        chunk = prompts[offset:offset + batch_size]
        batch = encode(tokenizer, chunk, system_prompt=system_prompt, device=device)
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        cache, logits = _cache_of(out), out.logits[:, -1]
        rows = list(range(len(chunk)))  # which prompts of the chunk are still being answered
        answers: list[list[int]] = [[] for _ in chunk]
        next_position = positions[:, -1:] + 1
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            ended = torch.isin(token, stop).tolist()
            result.tokens += len(rows)
            keep = []
            for i, (row, t) in enumerate(zip(rows, token.tolist())):
                if not ended[i]:
                    answers[row].append(t)
                text = tokenizer.decode(answers[row], skip_special_tokens=True)
                last = ended[i] or step == max_new_tokens - 1
                refused = is_refusal(text, markers) if last else refuses_already(text, markers)
                result.refusals += refused
                if refused:
                    result.refused.append(offset + row)
                if refused or last:
                    result.decided += 1
                else:
                    keep.append(i)
            if bound is not None and result.refusals > bound:
                return result
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                rows = [rows[i] for i in keep]
                token, mask, next_position = token[index], mask[index], next_position[index]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_position, use_cache=True,
                        **{cache_arg: cache})
            cache, logits, next_position = _cache_of(out), out.logits[:, -1], next_position + 1
    return result


def _cache_of(output: object) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
