"""The share of answers that are refusals, as a Hugging Face ``evaluate`` metric.

Use it directly::

    from forge_hub.evaluation.metrics.refusal_rate.refusal_rate import RefusalRate
    RefusalRate().compute(predictions=["I'm sorry, I can't.", "Sure: ..."])  # refusal_rate 0.5

or load it by path (by bare name, ``evaluate`` would fetch code from the Hub)::

    import evaluate, forge_hub.metrics.refusal_rate as m
    evaluate.load(m.__path__[0]).compute(predictions=answers)
"""

import datasets
import evaluate

from forge_hub.evaluation.refusals import REFUSAL_MARKERS, is_refusal

_DESCRIPTION = """Fraction of model answers that refuse, detected by documented marker phrases
(case-insensitive, curly apostrophes folded, a leading <think> block skipped); an empty answer
counts as a refusal."""
_KWARGS = """
Args:
    predictions (list of str): the model's answers.
    markers (list of str, optional): refusal phrases, lower case; forge-hub's own by default.
Returns:
    refusal_rate (float), refusals (int), total (int), is_refusal (list of bool)
"""
_CITATION = """@misc{arditi2024refusal, title={Refusal in Language Models Is Mediated by a Single Direction},
author={Andy Arditi and Oscar Obeso and Aaquib Syed and Daniel Paleka and Nina Panickssery and Wes Gurnee
and Neel Nanda}, year={2024}, eprint={2406.11717}, archivePrefix={arXiv}}"""


class RefusalRate(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            homepage="https://github.com/forge-hub/forge-hub",
        )

    def _compute(self, predictions, markers=None):
        flags = [is_refusal(p, markers or REFUSAL_MARKERS) for p in predictions]
        total = len(flags)
        return {"refusal_rate": sum(flags) / total if total else 0.0, "refusals": sum(flags), "total": total,
                "is_refusal": flags}
