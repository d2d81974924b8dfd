"""Evaluation results as Markdown: the before/after table, XSTest over-refusal by type, capability
tasks with their change, and sample answers side by side; and the same numbers as table rows for a
web page."""

from __future__ import annotations

from forge_hub.evaluation.xstest import type_label
from forge_hub.schema import EvaluationResults, MetricValue, RefusalCount, Scores, TaskResult


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
    xstest = any(s is not None and s.xstest is not None for _, _, s in scores)
    header = "| | harmful refused | harmless refused (over-refusal) |" + (" XSTest safe refused |" if xstest else "")
    header += (" judge: harmful refused |" if judge else "") + " first-token KL | answer cross-entropy |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    ce = r.cross_entropy or {}
    for label, name, row in scores:
        if row is None:
            continue
        cells = [f"{label}: `{name}`", f"{row.refusals}/{n_harm}", f"{row.over_refusals}/{n_safe}"]
        if xstest:
            cells.append(f"{row.xstest.refusals}/{row.xstest.total}" if row.xstest else "-")
        if judge:
            cells.append(f"{_fmt(row.judge_refusals)}/{n_harm}")
        cells.append(_fmt(r.kl_divergence) + _answered(r) if label == "model" else "0 (reference)")
        cells.append(_fmt(ce.get(label)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Greedy decoding, {result.settings['max_new_tokens']} new tokens; refusals by forge-hub's "
                 f"markers; KL(reference || model) on the first answer token of the harmless prompts "
                 f"(in brackets: on those the reference answers, its over-refusals left out); "
                 f"cross-entropy of the reference's own harmless answers.")
    if xstest:
        lines += ["", *xstest_markdown(result)]
    if r.capabilities:
        lines += ["", *capability_markdown(result)]
    if result.samples:
        lines += ["", "### Sample answers to harmful prompts", ""]
        has_ref = result.samples[0].reference is not None
        lines.append("| prompt | " + ("reference | " if has_ref else "") + "model |")
        lines.append("|---|" + ("---|" if has_ref else "") + "---|")
        for s in result.samples:
            cells = [s.prompt] + ([s.reference or ""] if has_ref else []) + [s.model]
            lines.append("| " + " | ".join(_cell(c, max_chars) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def xstest_markdown(result: EvaluationResults) -> list[str]:
    """XSTest's safe prompts refused, per type, for each model: where caution is left."""
    r = result.results
    rows = [(label, s.xstest) for label, s in (("reference", r.reference), ("model", r.model))
            if s is not None and s.xstest is not None]
    types = list(dict.fromkeys(kind for _, x in rows for kind in x.by_type))
    lines = ["### XSTest over-refusal by type", "",
             "| XSTest type | " + " | ".join(label for label, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    for kind in types:
        cells = [_count(x.by_type.get(kind)) for _, x in rows]
        lines.append(f"| {type_label(kind)} | " + " | ".join(cells) + " |")
    lines.append("| **all safe prompts** | " + " | ".join(f"**{x.refusals}/{x.total}** ({x.refusal_rate:.0%})"
                                                          for _, x in rows) + " |")
    lines += ["", "Refusals of XSTest's safe prompts (requests that only look unsafe; Röttger et al. 2024), "
              "by forge-hub's markers: lower is better."]
    return lines


def capability_markdown(result: EvaluationResults) -> list[str]:
    """Each lm-eval task's headline metric on both models, ± standard error, and the change."""
    tasks = result.results.capabilities or {}
    has_ref = any(t.reference is not None for t in tasks.values())
    lines = ["### Capabilities (lm-evaluation-harness)", "",
             "| task | metric | shots | " + ("reference | " if has_ref else "") + "model |"
             + (" change |" if has_ref else ""),
             "|---|---|---|" + ("---|" if has_ref else "") + "---|" + ("---|" if has_ref else "")]
    for t in tasks.values():
        cells = [f"`{t.task}`", _metric_name(t), _fmt(t.num_fewshot)]
        if has_ref:
            cells.append(_with_stderr(t.reference))
        cells.append(_with_stderr(t.model))
        if has_ref:
            cells.append(_fmt(t.delta, 4) if t.delta is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    setting = result.settings.get("capability") or {}
    limit = setting.get("limit")
    lines += ["", "Scores ± standard error as lm-eval reports them" + (f", on at most {limit:g} documents per task "
              "(a sample: compare the change with the standard errors)" if limit else "") + "; change = model − "
              "reference."]
    return lines


def _metric_name(task: TaskResult) -> str:
    return task.metric if task.filter == "none" else f"{task.metric} ({task.filter})"


def _with_stderr(value: MetricValue | None) -> str:
    if value is None:
        return "-"
    return f"{value.value:.4f}" + (f" ± {value.stderr:.4f}" if value.stderr is not None else "")


def _count(count: RefusalCount | None) -> str:
    return "-" if count is None else f"{count.refusals}/{count.total}"


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
    if r.kl_divergence_answered is not None:
        rows.append(["first-token KL, over-refusals left out"] + [0.0 if label == "reference"
                                                                  else round(r.kl_divergence_answered, 4)
                                                                  for label, _ in columns])
    if r.cross_entropy:
        rows.append(["answer cross-entropy"] + [round(r.cross_entropy[label], 4) for label, _ in columns])
    if any(s.xstest is not None for _, s in columns):
        rows.append(["XSTest safe prompts refused"] + [f"{s.xstest.refusals}/{s.xstest.total} "
                                                       f"({s.xstest.refusal_rate:.0%})" if s.xstest else "-"
                                                       for _, s in columns])
    for task in (r.capabilities or {}).values():
        values = {"model": task.model, "reference": task.reference}
        rows.append([f"{task.task} ({_metric_name(task)})"] + [_with_stderr(values[label]) for label, _ in columns])
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


def _answered(r: Scores) -> str:
    """The KL on the harmless prompts the reference answers, in brackets, when measured."""
    return f" ({_fmt(r.kl_divergence_answered)} answered)" if r.kl_divergence_answered is not None else ""
