"""A model measured against its original: refusals, over-refusals, KL divergence, cross-entropy,
sample answers, as one results record (``forge-hub evaluate``)."""

from __future__ import annotations

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
    from forge_hub.evaluation.metrics.refusal_rate.refusal_rate import RefusalRate

    return int(RefusalRate(keep_in_memory=True).compute(predictions=list(answers))["refusals"])


def evaluate_models(model: torch.nn.Module, tokenizer: object, harmful: Sequence[str], harmless: Sequence[str], *,
                    reference: torch.nn.Module | None = None, settings: EvaluationSettings | None = None,
                    model_name: str = "model", reference_name: str | None = None,
                    prompt_sources: dict[str, str] | None = None) -> EvaluationResults:
    """Everything an evaluation reports: refusals and over-refusals of each model, and against the
    reference the first-token KL and the cross-entropy of its own answers (``evaluation.json``)."""
    import datetime

    import transformers

    from forge_hub import __version__
    from forge_hub.prompts.sources import prompts_hash

    s = settings or EvaluationSettings()
    check_prompt_lengths(tokenizer, [*harmful, *harmless], max_tokens=s.max_prompt_tokens,
                         system_prompt=s.system_prompt, context=model_context(model))
    sources = prompt_sources or {}
    models = {"model": model} | ({"reference": reference} if reference is not None else {})
    scores: dict[str, ModelScores] = {}
    answers: dict[str, dict[str, list]] = {}
    for label, m in models.items():
        harmful_out = generate_with_ids(m, tokenizer, harmful, max_new_tokens=s.max_new_tokens,
                                        batch_size=s.batch_size, system_prompt=s.system_prompt,
                                        desc=f"{label}: harmful")
        harmless_out = generate_with_ids(m, tokenizer, harmless, max_new_tokens=s.max_new_tokens,
                                         batch_size=s.batch_size, system_prompt=s.system_prompt,
                                         desc=f"{label}: harmless")
        answers[label] = {"harmful": harmful_out, "harmless": harmless_out}
        refusals = count_with_metric([a for a, _ in harmful_out])
        over = count_with_metric([a for a, _ in harmless_out])
        judged = judge_refusals(s.judge, [a for a, _ in harmful_out], s.judge_label) if s.judge else None
        scores[label] = ModelScores(refusals=refusals, refusal_rate=refusals / len(harmful), over_refusals=over,
                                    over_refusal_rate=over / len(harmless), judge_refusals=judged)
    results = Scores(model=scores["model"], reference=scores.get("reference"))
    if reference is not None:
        ref_lp = first_token_logprobs(reference, tokenizer, harmless, batch_size=s.batch_size,
                                      system_prompt=s.system_prompt)
        results.kl_divergence = kl_divergence(ref_lp,
                                              first_token_logprobs(model, tokenizer, harmless, batch_size=s.batch_size,
                                                                   system_prompt=s.system_prompt))
        reference_answers = [ids for _, ids in answers["reference"]["harmless"]]
        results.cross_entropy = {
            label: answer_cross_entropy(m, tokenizer, harmless, reference_answers, batch_size=s.batch_size,
                                        system_prompt=s.system_prompt)
            for label, m in models.items()
        }
    samples = [Sample(prompt=prompt, model=answers["model"]["harmful"][i][0],
                      reference=answers["reference"]["harmful"][i][0] if reference is not None else None)
               for i, prompt in enumerate(list(harmful)[: s.samples])]
    return EvaluationResults(
        model=model_name, reference=reference_name,
        prompts={side: PromptSet(count=len(prompts), hash=prompts_hash(list(prompts)), source=sources.get(side))
                 for side, prompts in (("harmful", harmful), ("harmless", harmless))},
        settings={**asdict(s), "markers": "forge-hub REFUSAL_MARKERS", "decoding": "greedy"},
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
