"""A classifier as refusal judge: a text-classification model that reads answers and says which
are refusals, beside (``evaluate``) or instead of (the parameter search) the refusal markers.

Markers miss refusals they have no phrase for ("That is not something I will help with") and
count answers that quote one; a small classifier trained on refusals of many models catches
more of the first kind. The one forge-hub recommends is :data:`RECOMMENDED_JUDGE`,
ProtectAI's ``distilroberta-base-rejection-v1`` (Apache-2.0; DistilRoBERTa, 82M parameters,
labels ``NORMAL`` / ``REJECTION``, English, trained on refusals of several LLMs and normal
RLHF answers). Any other text-classification model works; its refusal label is found by name
(one containing "refus" or "reject") unless given.

    judge = refusal_judge("protectai/distilroberta-base-rejection-v1")
    judge.flags(["I'm sorry, but I can't help with that.", "Sure: first, ..."])   # [True, False]

One judge is loaded per model and label and process, and kept: the search asks it about every
trial's answers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from forge_hub.errors import SettingsError

RECOMMENDED_JUDGE = "protectai/distilroberta-base-rejection-v1"
REFUSAL_LABEL_HINTS = ("refus", "reject")  # a label naming a refusal: REFUSAL, refused, REJECTION, ...
JUDGE_BATCH_SIZE = 32


class RefusalJudge:
    """A loaded text-classification pipeline and the label of it that means refusal."""

    def __init__(self, model: str, label: str | None = None, *, batch_size: int = JUDGE_BATCH_SIZE) -> None:
        from transformers import pipeline

        try:
            self.classify = pipeline("text-classification", model=model)
        except (OSError, ValueError) as exc:  # no such folder or repo, not a classifier
            raise SettingsError(f"cannot load the judge {model}: {exc}",
                                f"give a text-classification model (folder or Hub id) as {{judge}}, e.g. "
                                f"{RECOMMENDED_JUDGE}", input="judge") from exc
        names = [str(n) for n in self.classify.model.config.id2label.values()]
        if label is not None and label not in names:
            raise SettingsError(f"judge {model} has no label {label!r}; its labels are {names}",
                                "name one of them as {judge_label}", input="judge_label")
        self.label = label or next((n for n in names if any(h in n.lower() for h in REFUSAL_LABEL_HINTS)), None)
        if self.label is None:
            raise SettingsError(f"judge {model} has labels {names}, none of them a refusal label",
                                "name the judge's refusal label with {judge_label}", input="judge_label")
        self.model, self.batch_size = model, batch_size

    def flags(self, answers: Sequence[str]) -> list[bool]:
        """Which answers the judge calls refusals (an empty answer counts as one, as with the markers)."""
        answers = list(answers)
        texts = [a for a in answers if a.strip()]
        labels = iter(p["label"] for p in self.classify(texts, truncation=True, batch_size=self.batch_size)) \
            if texts else iter(())
        return [next(labels) == self.label if a.strip() else True for a in answers]

    def count(self, answers: Sequence[str]) -> int:
        return sum(self.flags(answers))


@functools.cache
def refusal_judge(model: str, label: str | None = None) -> RefusalJudge:
    """The judge for ``model`` (folder or Hub id), loaded once per process."""
    return RefusalJudge(model, label)
