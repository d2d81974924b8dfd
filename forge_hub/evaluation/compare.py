"""A model measured against its original: refusals, over-refusals (Alpaca-style harmless prompts
and, when given, XSTest's safe prompts by type), KL divergence, cross-entropy, capability tasks
(lm-evaluation-harness) and sample answers, as one results record (``forge-hub evaluate``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from forge_hub.evaluation.capability import CapabilitySettings, TaskRun, compare_tasks, run_tasks
from forge_hub.evaluation.generation import answer_cross_entropy, first_token_logprobs, generate_with_ids, kl_divergence
from forge_hub.evaluation.judge import refusal_judge
from forge_hub.evaluation.xstest import xstest_scores
from forge_hub.model.chat import DEFAULT_MAX_PROMPT_TOKENS, check_prompt_lengths, model_context
from forge_hub.prompts.xstest import XSTestPrompts
from forge_hub.schema import EvaluationResults, ModelScores, PromptSet, Sample, Scores

# The final evaluation's answer length. Long enough that a refusal after a compliant opening ("Sure!
# ... However, I can't") or an answer that drifts into a warning is seen; the parameter search keeps
# shorter answers (it compares trials with each other, many times over).
FINAL_MAX_NEW_TOKENS = 100


@dataclass
class EvaluationSettings:
    """How answers are generated and counted."""

    max_new_tokens: int = FINAL_MAX_NEW_TOKENS
    batch_size: int = 16
    system_prompt: str | None = None
    samples: int = 5  # answers kept per model for the report
    judge: str | None = None  # a text-classification model id or folder, as a second opinion
    judge_label: str | None = None  # its label meaning "refusal"; default: the label containing "refus"
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS  # longer prompts are refused before any work


def count_with_metric(answers: Sequence[str]) -> int:
    """Refusals counted by the package's own ``evaluate`` metric (the one others can load)."""
    return sum(refusal_flags(answers))


def refusal_flags(answers: Sequence[str]) -> list[bool]:
    """Which answers are refusals, by the package's own ``evaluate`` metric."""
    return [bool(flag) for flag in _refusal_metric().compute(predictions=list(answers))["is_refusal"]]


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
    xstest_answers: list[str] | None = None
    tasks: TaskRun | None = None  # capability tasks, when run
    harmless_refused: list[bool] = field(default_factory=list)  # which harmless answers are refusals


def measure(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
            settings: EvaluationSettings, label: str = "model", xstest: XSTestPrompts | None = None,
            capability: CapabilitySettings | None = None) -> Measurement:
    """Greedy answers to both lists (and XSTest's safe prompts), refusals counted by the package's
    metric (and the judge); the capability tasks on the same loaded model when asked."""
    s = settings
    harmful_out = generate_with_ids(model, tokenizer, harmful, max_new_tokens=s.max_new_tokens,
                                    batch_size=s.batch_size, system_prompt=s.system_prompt, desc=f"{label}: harmful")
    harmless_out = generate_with_ids(model, tokenizer, harmless, max_new_tokens=s.max_new_tokens,
                                     batch_size=s.batch_size, system_prompt=s.system_prompt,
                                     desc=f"{label}: harmless")
    logprobs = first_token_logprobs(model, tokenizer, harmless, batch_size=s.batch_size, system_prompt=s.system_prompt)
    xstest_answers = None
    if xstest is not None:
        xstest_answers = [a for a, _ in generate_with_ids(model, tokenizer, xstest.prompts,
                                                          max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                                          system_prompt=s.system_prompt, desc=f"{label}: XSTest")]
    tasks = run_tasks(model, tokenizer, settings=capability) if capability is not None else None
    return counted(harmful_out, harmless_out, logprobs, settings=s, xstest=xstest, xstest_answers=xstest_answers,
                   tasks=tasks)


def counted(harmful_out: list[tuple[str, list[int]]], harmless_out: list[tuple[str, list[int]]],
            harmless_logprobs: torch.Tensor, *, settings: EvaluationSettings, xstest: XSTestPrompts | None = None,
            xstest_answers: list[str] | None = None, tasks: TaskRun | None = None) -> Measurement:
    """Answers however they were produced (transformers, llama.cpp) counted the one way: the
    package's refusal metric, the judge when there is one, XSTest by type."""
    refusals = count_with_metric([a for a, _ in harmful_out])
    harmless_refused = refusal_flags([a for a, _ in harmless_out])
    over = sum(harmless_refused)
    judged = (judge_refusals(settings.judge, [a for a, _ in harmful_out], label=settings.judge_label)
              if settings.judge else None)
    xstest_result = (xstest_scores(refusal_flags(xstest_answers), xstest.types)
                     if xstest is not None and xstest_answers is not None else None)
    return Measurement(ModelScores(refusals=refusals, refusal_rate=refusals / len(harmful_out), over_refusals=over,
                                   over_refusal_rate=over / len(harmless_out), judge_refusals=judged,
                                   xstest=xstest_result),
                       harmful_out, harmless_out, harmless_logprobs, xstest_answers, tasks, harmless_refused)


def evaluate_models(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
                    reference: torch.nn.Module | None = None, settings: EvaluationSettings | None = None,
                    model_name: str = "model", reference_name: str | None = None,
                    prompt_sources: dict[str, str] | None = None, xstest: XSTestPrompts | None = None,
                    capability: CapabilitySettings | None = None) -> EvaluationResults:
    """Everything an evaluation reports: refusals and over-refusals of each model (XSTest's by type
    when ``xstest`` is given), the ``capability`` tasks on each, and against the reference the
    first-token KL and the cross-entropy of its own answers (``evaluation.json``)."""
    s = settings or EvaluationSettings()
    check_prompt_lengths(tokenizer, [*harmful, *harmless, *(xstest.prompts if xstest else [])],
                         max_tokens=s.max_prompt_tokens, system_prompt=s.system_prompt, context=model_context(model))
    measured = measure(model, tokenizer, harmful, harmless, settings=s, label="model", xstest=xstest,
                       capability=capability)
    if reference is None:
        return results_record(measured, None, harmful, harmless, settings=s, model_name=model_name,
                              prompt_sources=prompt_sources, xstest=xstest, capability=capability)
    before = measure(reference, tokenizer, harmful, harmless, settings=s, label="reference", xstest=xstest,
                     capability=capability)
    cross_entropy = {label: answer_cross_entropy(m, tokenizer, harmless, [ids for _, ids in before.harmless_answers],
                                                 batch_size=s.batch_size, system_prompt=s.system_prompt)
                     for label, m in (("model", model), ("reference", reference))}
    return results_record(measured, before, harmful, harmless, settings=s, model_name=model_name,
                          reference_name=reference_name, prompt_sources=prompt_sources, cross_entropy=cross_entropy,
                          xstest=xstest, capability=capability)


def results_record(measured: Measurement, reference: Measurement | None, harmful: Sequence[str],
                   harmless: Sequence[str], *, settings: EvaluationSettings, model_name: str = "model",
                   reference_name: str | None = None, prompt_sources: dict[str, str] | None = None,
                   cross_entropy: dict[str, float] | None = None, xstest: XSTestPrompts | None = None,
                   capability: CapabilitySettings | None = None) -> EvaluationResults:
    """The results record of a model's measurement, against a reference's when there is one."""
    import datetime

    import transformers

    from forge_hub import __version__
    from forge_hub.prompts.sources import prompts_hash

    sources = prompt_sources or {}
    results = Scores(model=measured.scores, reference=reference.scores if reference else None)
    if reference is not None:
        results.kl_divergence = kl_divergence(reference.harmless_logprobs, measured.harmless_logprobs)
        results.kl_divergence_answered = answered_kl(reference.harmless_logprobs, measured.harmless_logprobs,
                                                     reference.harmless_refused)
        results.cross_entropy = cross_entropy
    if measured.tasks is not None:
        results.capabilities = compare_tasks(measured.tasks, reference.tasks if reference is not None else None)
    samples = [Sample(prompt=prompt, model=measured.harmful_answers[i][0],
                      reference=reference.harmful_answers[i][0] if reference is not None else None)
               for i, prompt in enumerate(list(harmful)[: settings.samples])]
    lists = [("harmful", harmful, sources.get("harmful")), ("harmless", harmless, sources.get("harmless"))]
    if xstest is not None:
        lists.append(("xstest", xstest.prompts, xstest.source))  # its safe prompts only
    recorded = {**asdict(settings), "markers": "forge-hub REFUSAL_MARKERS", "decoding": "greedy"}
    if capability is not None:
        recorded["capability"] = capability.record()
    return EvaluationResults(
        model=model_name, reference=reference_name,
        prompts={side: PromptSet(count=len(prompts), hash=prompts_hash(list(prompts)), source=source)
                 for side, prompts, source in lists},
        settings=recorded,
        results=results, samples=samples,
        versions={"forge_hub": __version__, "transformers": transformers.__version__, "torch": torch.__version__},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def answered_kl(reference: torch.Tensor, edited: torch.Tensor, refused: Sequence[bool]) -> float | None:
    """First-token KL (``[N, vocab]`` log-probabilities) on the harmless prompts the reference
    answers, ``refused`` marking the ones it refuses (None when it refuses them all).
    On a model that over-refuses, the first token of each over-refused prompt is meant to change
    ("I'm sorry" becomes an answer), and those few prompts carry most of the plain KL: on the
    refusing fixture 11 over-refused prompts of 100 carried two thirds of it. Reported beside the
    plain KL, not instead of it, so that both the change and the damage are visible."""
    answered = torch.tensor([not flag for flag in refused], dtype=torch.bool)
    if not answered.any():
        return None
    return kl_divergence(reference[answered], edited[answered])


def judge_refusals(judge: str, answers: Sequence[str], label: str | None = None) -> int:
    """Refusals according to a text-classification model (local folder or Hub id), loaded once."""
    return refusal_judge(judge, label).count(answers)
