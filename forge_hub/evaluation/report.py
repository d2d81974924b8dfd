"""Evaluation results as Markdown: the before/after table and sample answers side by side; and the
same numbers as table rows for a web page."""

from __future__ import annotations

from forge_hub.schema import EvaluationResults


def _fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_markdown(result: EvaluationResults, *, max_chars: int = 200, model_name: str | None = None,
                     reference_name: str | None = None) -> str:
    """A table a person reads at a glance; used by the CLI, the Space and the model card (which
    names the models by their Hub ids through ``model_name`` / ``reference_name``)."""
    r = result.results
    n_harm, n_safe = result.harmful_count, result.harmless_count
    scores = [("reference", reference_name or result.reference, r.reference), ("model", model_name or result.model,
                                                                               r.model)]
    judge = any(s is not None and s.judge_refusals is not None for _, _, s in scores)
    header = "| | harmful refused | harmless refused (over-refusal) |" + (" judge: harmful refused |" if judge else "")
    header += " first-token KL | answer cross-entropy |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    ce = r.cross_entropy or {}
    for label, name, row in scores:
        if row is None:
            continue
        cells = [f"{label}: `{name}`", f"{row.refusals}/{n_harm}", f"{row.over_refusals}/{n_safe}"]
        if judge:
            cells.append(f"{_fmt(row.judge_refusals)}/{n_harm}")
        cells.append(_fmt(r.kl_divergence) if label == "model" else "0 (reference)")
        cells.append(_fmt(ce.get(label)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Greedy decoding, {result.settings['max_new_tokens']} new tokens; refusals by forge-hub's "
                 f"markers; KL(reference || model) on the first answer token of the harmless prompts; "
                 f"cross-entropy of the reference's own harmless answers.")
    if result.samples:
        lines += ["", "### Sample answers to harmful prompts", ""]
        has_ref = result.samples[0].reference is not None
        lines.append("| prompt | " + ("reference | " if has_ref else "") + "model |")
        lines.append("|---|" + ("---|" if has_ref else "") + "---|")
        for s in result.samples:
            cells = [s.prompt] + ([s.reference or ""] if has_ref else []) + [s.model]
            lines.append("| " + " | ".join(_cell(c, max_chars) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str, max_chars: int) -> str:
    """A sample answer as a Markdown table cell: clipped like :func:`_clip`, pipes escaped."""
    return _clip(text, max_chars).replace("|", "\\|")


def comparison_rows(result: EvaluationResults) -> tuple[list[str], list[list[object]]]:
    """The before/after numbers as table rows (metric, original, abliterated), for a UI table.

    Counts are shown as "k/n" beside their rate so neither has to be worked out.
    """
    r = result.results
    n_harm, n_safe = result.harmful_count, result.harmless_count
    columns = [(label, s) for label, s in (("reference", r.reference), ("model", r.model)) if s is not None]
    headers = ["metric"] + ["original" if label == "reference" else "abliterated" for label, _ in columns]
    rows: list[list[object]] = [
        ["harmful refused"] + [f"{s.refusals}/{n_harm} ({s.refusal_rate:.0%})" for _, s in columns],
        ["harmless refused (over-refusal)"] + [f"{s.over_refusals}/{n_safe} ({s.over_refusal_rate:.0%})"
                                               for _, s in columns],
    ]
    if r.kl_divergence is not None:
        rows.append(["first-token KL vs original"] + [0.0 if label == "reference" else round(r.kl_divergence, 4)
                                                      for label, _ in columns])
    if r.cross_entropy:
        rows.append(["answer cross-entropy"] + [round(r.cross_entropy[label], 4) for label, _ in columns])
    return headers, rows


def sample_rows(result: EvaluationResults, max_chars: int = 400) -> tuple[list[str], list[list[str]]]:
    """Sample answers side by side: prompt, the original's answer, the abliterated one's."""
    samples = result.samples
    has_ref = bool(samples) and samples[0].reference is not None
    headers = ["prompt"] + (["original"] if has_ref else []) + ["abliterated"]
    rows = [[_clip(s.prompt, max_chars)] + ([_clip(s.reference or "", max_chars)] if has_ref else [])
            + [_clip(s.model, max_chars)] for s in samples]
    return headers, rows


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split()) or "(empty)"
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
