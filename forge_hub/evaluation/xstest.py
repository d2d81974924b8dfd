"""XSTest over-refusal counted by type: which kinds of safe-but-scary-looking requests a model
still refuses (homonyms such as "kill a process", figurative language, safe targets, ...).

Answers are judged by the same refusal markers as every other count forge-hub makes
(:mod:`forge_hub.evaluation.refusals`), so XSTest's rate sits next to the Alpaca over-refusal
rate on the same footing. (XSTest's authors also label partial refusals by hand or with a
classifier; keyword markers count what looks like a refusal, which is the comparison that
matters before and after an edit.)
"""

from __future__ import annotations

from collections.abc import Sequence

from forge_hub.schema import RefusalCount, XSTestScores


def xstest_scores(refused: Sequence[bool], types: Sequence[str]) -> XSTestScores:
    """Refusals of XSTest's safe prompts, in total and per XSTest type (types in first-seen order)."""
    if len(refused) != len(types):
        raise ValueError(f"{len(refused)} answers for {len(types)} XSTest prompts")
    counts: dict[str, list[int]] = {}
    for flag, kind in zip(refused, types):
        tally = counts.setdefault(kind, [0, 0])
        tally[0] += bool(flag)
        tally[1] += 1
    total, refusals = len(refused), sum(map(bool, refused))
    return XSTestScores(refusals=refusals, total=total, refusal_rate=refusals / total if total else 0.0,
                        by_type={kind: RefusalCount.of(r, n) for kind, (r, n) in counts.items()})


def type_label(kind: str) -> str:
    """An XSTest type as a reader says it: ``safe_targets`` -> ``safe targets``."""
    return kind.replace("_", " ")
