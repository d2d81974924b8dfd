"""Measuring an abliteration: generated answers, refusals, KL divergence, cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .chat import batches, encode, input_device
from .refusals import REFUSAL_MARKERS, is_refusal


@torch.inference_mode()
def generate(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], max_new_tokens: int = 40,
             batch_size: int = 16, system_prompt: str | None = None, desc: str = "generate") -> list[str]:
    """Greedy answers, batched; decoding skips special tokens."""
    return [text for text, _ in generate_with_ids(model, tokenizer, prompts, max_new_tokens, batch_size,
                                                  system_prompt, desc)]


@torch.inference_mode()
def generate_with_ids(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], max_new_tokens: int = 40,
                      batch_size: int = 16, system_prompt: str | None = None,
                      desc: str = "generate") -> list[tuple[str, list[int]]]:
    """Greedy answers with their token ids (up to and including the end-of-turn token)."""
    device = input_device(model)
    stop = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
    answers: list[tuple[str, list[int]]] = []
    for chunk in tqdm(list(batches(prompts, batch_size)), desc=desc, unit="batch", leave=False):
        batch = encode(tokenizer, chunk, system_prompt, device)
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
                         answers: Sequence[Sequence[int]], batch_size: int = 16,
                         system_prompt: str | None = None) -> float:
    """Mean per-token cross-entropy of given answer tokens (e.g. the original's own greedy answers)
    under ``model``: how much the edit moved the model away from what it used to say."""
    device = input_device(model)
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_answers = prompts[start:start + batch_size], answers[start:start + batch_size]
        batch = encode(tokenizer, chunk, system_prompt)
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
def first_token_logprobs(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], batch_size: int = 16,
                         system_prompt: str | None = None) -> torch.Tensor:
    """``[N, vocab]`` log-probabilities of the first answer token, float32 on the CPU."""
    device = input_device(model)
    rows = []
    for chunk in batches(prompts, batch_size):
        batch = encode(tokenizer, chunk, system_prompt, device)
        logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        rows.append(F.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(rows)


def kl_divergence(reference: torch.Tensor, edited: torch.Tensor) -> float:
    """``batchmean`` KL(reference || edited) from two ``[N, vocab]`` log-probability tables."""
    return F.kl_div(edited, reference, log_target=True, reduction="batchmean").item()


def count_refusals(answers: Sequence[str], markers: Sequence[str] = REFUSAL_MARKERS) -> int:
    return sum(is_refusal(a, markers) for a in answers)


RESULTS_SCHEMA = "forge-hub/evaluation/v1"


@dataclass
class EvaluationSettings:
    max_new_tokens: int = 40
    batch_size: int = 16
    system_prompt: str | None = None
    samples: int = 5  # answers kept per model for the report
    judge: str | None = None  # a text-classification model id or folder, as a second opinion
    judge_label: str | None = None  # its label meaning "refusal"; default: the label containing "refus"


def count_with_metric(answers: Sequence[str]) -> int:
    """Refusals counted by the package's own ``evaluate`` metric (the one others can load)."""
    from .metrics.refusal_rate.refusal_rate import RefusalRate

    return int(RefusalRate(keep_in_memory=True).compute(predictions=list(answers))["refusals"])


def evaluate_models(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str],
                    reference: torch.nn.Module | None = None, settings: EvaluationSettings | None = None,
                    model_name: str = "model", reference_name: str | None = None,
                    prompt_sources: dict[str, str] | None = None) -> dict:
    """Everything `forge-hub evaluate` reports, as a JSON-ready dict (schema ``forge-hub/evaluation/v1``)."""
    import datetime

    import transformers

    from . import __version__
    from .prompts import prompts_hash

    s = settings or EvaluationSettings()
    sources = prompt_sources or {}
    models = {"model": model} | ({"reference": reference} if reference is not None else {})
    results: dict[str, dict] = {}
    answers: dict[str, dict[str, list]] = {}
    for label, m in models.items():
        harmful_out = generate_with_ids(m, tokenizer, harmful, s.max_new_tokens, s.batch_size, s.system_prompt,
                                        f"{label}: harmful")
        harmless_out = generate_with_ids(m, tokenizer, harmless, s.max_new_tokens, s.batch_size, s.system_prompt,
                                         f"{label}: harmless")
        answers[label] = {"harmful": harmful_out, "harmless": harmless_out}
        refusals = count_with_metric([a for a, _ in harmful_out])
        over = count_with_metric([a for a, _ in harmless_out])
        results[label] = {"refusals": refusals, "refusal_rate": refusals / len(harmful),
                          "over_refusals": over, "over_refusal_rate": over / len(harmless)}
        if s.judge:
            results[label]["judge_refusals"] = judge_refusals(s.judge, [a for a, _ in harmful_out], s.judge_label)
    if reference is not None:
        ref_lp = first_token_logprobs(reference, tokenizer, harmless, s.batch_size, s.system_prompt)
        results["kl_divergence"] = kl_divergence(ref_lp, first_token_logprobs(model, tokenizer, harmless, s.batch_size,
                                                                               s.system_prompt))
        reference_answers = [ids for _, ids in answers["reference"]["harmless"]]
        results["cross_entropy"] = {
            label: answer_cross_entropy(m, tokenizer, harmless, reference_answers, s.batch_size, s.system_prompt)
            for label, m in models.items()
        }
    samples = []
    for i, prompt in enumerate(list(harmful)[: s.samples]):
        row = {"prompt": prompt, "model": answers["model"]["harmful"][i][0]}
        if reference is not None:
            row["reference"] = answers["reference"]["harmful"][i][0]
        samples.append(row)
    return {
        "schema": RESULTS_SCHEMA,
        "model": model_name,
        "reference": reference_name,
        "prompts": {
            "harmful": {"source": sources.get("harmful"), "count": len(harmful), "hash": prompts_hash(list(harmful))},
            "harmless": {"source": sources.get("harmless"), "count": len(harmless),
                         "hash": prompts_hash(list(harmless))},
        },
        "settings": {**asdict(s), "markers": "forge-hub REFUSAL_MARKERS", "decoding": "greedy"},
        "results": results,
        "samples": samples,
        "versions": {"forge_hub": __version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def judge_refusals(judge: str, answers: Sequence[str], label: str | None = None) -> int:
    """Refusals according to a text-classification model (local folder or Hub id)."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=judge)
    names = list(classify.model.config.id2label.values())
    wanted = label or next((n for n in names if "refus" in n.lower()), None)
    if wanted is None:
        raise ValueError(f"judge {judge} has labels {names}; name the refusal label with --judge-label")
    return sum(p["label"] == wanted for p in classify(list(answers), truncation=True))
