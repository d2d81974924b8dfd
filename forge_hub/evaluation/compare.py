"""A model measured against its original: refusals, over-refusals, KL divergence, cross-entropy,
sample answers, as one results record (``forge-hub evaluate``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from forge_hub.errors import SettingsError
from forge_hub.evaluation.generation import answer_cross_entropy, first_token_logprobs, generate_with_ids, kl_divergence
from forge_hub.model.chat import DEFAULT_MAX_PROMPT_TOKENS, check_prompt_lengths, model_context
from forge_hub.schema import EvaluationResults, ModelScores, PromptSet, Sample, Scores


@dataclass
class EvaluationSettings:
    """How answers are generated and counted."""

    max_new_tokens: int = 40
    batch_size: int = 16
    system_prompt: str | None = None
    samples: int = 5  # answers kept per model for the report
    judge: str | None = None  # a text-classification model id or folder, as a second opinion
    judge_label: str | None = None  # its label meaning "refusal"; default: the label containing "refus"
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS  # longer prompts are refused before any work


def count_with_metric(answers: Sequence[str]) -> int:
    """Refusals counted by the package's own ``evaluate`` metric (the one others can load)."""
    return int(_refusal_metric().compute(predictions=list(answers))["refusals"])


@functools.cache
def _refusal_metric():
    """One instance per process: building an ``evaluate`` metric takes seconds."""
    from forge_hub.evaluation.metrics.refusal_rate.refusal_rate import RefusalRate

    return RefusalRate(keep_in_memory=True)


@dataclass
class Measurement:
    """One model's answers to the harmful and harmless prompts, counted, with what a comparison with
    another model needs (its first-token log-probabilities on the harmless prompts)."""

    scores: ModelScores
    harmful_answers: list[tuple[str, list[int]]]
    harmless_answers: list[tuple[str, list[int]]]
    harmless_logprobs: torch.Tensor


def measure(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
            settings: EvaluationSettings, label: str = "model") -> Measurement:
    """Greedy answers to both lists, refusals counted by the package's metric (and the judge)."""
    s = settings
    harmful_out = generate_with_ids(model, tokenizer, harmful, max_new_tokens=s.max_new_tokens,
                                    batch_size=s.batch_size, system_prompt=s.system_prompt, desc=f"{label}: harmful")
    harmless_out = generate_with_ids(model, tokenizer, harmless, max_new_tokens=s.max_new_tokens,
                                     batch_size=s.batch_size, system_prompt=s.system_prompt,
                                     desc=f"{label}: harmless")
    refusals = count_with_metric([a for a, _ in harmful_out])
    over = count_with_metric([a for a, _ in harmless_out])
    judged = judge_refusals(s.judge, [a for a, _ in harmful_out], label=s.judge_label) if s.judge else None
    logprobs = first_token_logprobs(model, tokenizer, harmless, batch_size=s.batch_size, system_prompt=s.system_prompt)
    return Measurement(ModelScores(refusals=refusals, refusal_rate=refusals / len(harmful), over_refusals=over,
                                   over_refusal_rate=over / len(harmless), judge_refusals=judged),
                       harmful_out, harmless_out, logprobs)


def evaluate_models(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
                    reference: torch.nn.Module | None = None, settings: EvaluationSettings | None = None,
                    model_name: str = "model", reference_name: str | None = None,
                    prompt_sources: dict[str, str] | None = None) -> EvaluationResults:
    """Everything an evaluation reports: refusals and over-refusals of each model, and against the
    reference the first-token KL and the cross-entropy of its own answers (``evaluation.json``)."""
    s = settings or EvaluationSettings()
    check_prompt_lengths(tokenizer, [*harmful, *harmless], max_tokens=s.max_prompt_tokens,
                         system_prompt=s.system_prompt, context=model_context(model))
    measured = measure(model, tokenizer, harmful, harmless, settings=s, label="model")
    if reference is None:
        return results_record(measured, None, harmful, harmless, settings=s, model_name=model_name,
                              prompt_sources=prompt_sources)
    before = measure(reference, tokenizer, harmful, harmless, settings=s, label="reference")
    cross_entropy = {label: answer_cross_entropy(m, tokenizer, harmless, [ids for _, ids in before.harmless_answers],
                                                 batch_size=s.batch_size, system_prompt=s.system_prompt)
                     for label, m in (("model", model), ("reference", reference))}
    return results_record(measured, before, harmful, harmless, settings=s, model_name=model_name,
                          reference_name=reference_name, prompt_sources=prompt_sources, cross_entropy=cross_entropy)


def results_record(measured: Measurement, reference: Measurement | None, harmful: Sequence[str],
                   harmless: Sequence[str], *, settings: EvaluationSettings, model_name: str = "model",
                   reference_name: str | None = None, prompt_sources: dict[str, str] | None = None,
                   cross_entropy: dict[str, float] | None = None) -> EvaluationResults:
    """The results record of a model's measurement, against a reference's when there is one."""
    import datetime

    import transformers

    from forge_hub import __version__
    from forge_hub.prompts.sources import prompts_hash

    sources = prompt_sources or {}
    results = Scores(model=measured.scores, reference=reference.scores if reference else None)
    if reference is not None:
        results.kl_divergence = kl_divergence(reference.harmless_logprobs, measured.harmless_logprobs)
        results.cross_entropy = cross_entropy
    samples = [Sample(prompt=prompt, model=measured.harmful_answers[i][0],
                      reference=reference.harmful_answers[i][0] if reference is not None else None)
               for i, prompt in enumerate(list(harmful)[: settings.samples])]
    return EvaluationResults(
        model=model_name, reference=reference_name,
        prompts={side: PromptSet(count=len(prompts), hash=prompts_hash(list(prompts)), source=sources.get(side))
                 for side, prompts in (("harmful", harmful), ("harmless", harmless))},
        settings={**asdict(settings), "markers": "forge-hub REFUSAL_MARKERS", "decoding": "greedy"},
        results=results, samples=samples,
        versions={"forge_hub": __version__, "transformers": transformers.__version__, "torch": torch.__version__},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def judge_refusals(judge: str, answers: Sequence[str], label: str | None = None) -> int:
    """Refusals according to a text-classification model (local folder or Hub id)."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=judge)
    names = list(classify.model.config.id2label.values())
    wanted = label or next((n for n in names if "refus" in n.lower()), None)
    if wanted is None:
        raise SettingsError(f"judge {judge} has labels {names}, none of them a refusal label",
                            "name the judge's refusal label with {judge_label}", input="judge_label")
    return sum(p["label"] == wanted for p in classify(list(answers), truncation=True))
