"""Evaluation results as Markdown: the before/after table and sample answers side by side."""

from __future__ import annotations


def _fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_markdown(result: dict, max_chars: int = 200) -> str:
    """A table a person reads at a glance; used by `forge-hub evaluate` and, later, the model card."""
    r = result["results"]
    n_harm, n_safe = result["prompts"]["harmful"]["count"], result["prompts"]["harmless"]["count"]
    judge = any("judge_refusals" in r.get(k, {}) for k in ("model", "reference"))
    header = "| | harmful refused | harmless refused (over-refusal) |" + (" judge: harmful refused |" if judge else "")
    header += " first-token KL | answer cross-entropy |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    ce = r.get("cross_entropy", {})
    for label, name in (("reference", result.get("reference")), ("model", result.get("model"))):
        if label not in r:
            continue
        row = r[label]
        cells = [f"{label}: `{name}`", f"{row['refusals']}/{n_harm}", f"{row['over_refusals']}/{n_safe}"]
        if judge:
            cells.append(f"{row.get('judge_refusals', '-')}/{n_harm}")
        cells.append(_fmt(r.get("kl_divergence")) if label == "model" else "0 (reference)")
        cells.append(_fmt(ce.get(label)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Greedy decoding, {result['settings']['max_new_tokens']} new tokens; refusals by forge-hub's "
                 f"markers; KL(reference || model) on the first answer token of the harmless prompts; "
                 f"cross-entropy of the reference's own harmless answers.")
    if result.get("samples"):
        lines += ["", "### Sample answers to harmful prompts", ""]
        has_ref = "reference" in result["samples"][0]
        lines.append("| prompt | " + ("reference | " if has_ref else "") + "model |")
        lines.append("|---|" + ("---|" if has_ref else "") + "---|")
        for s in result["samples"]:
            cells = [s["prompt"]] + ([s["reference"]] if has_ref else []) + [s["model"]]
            lines.append("| " + " | ".join(_cell(c, max_chars) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str, max_chars: int) -> str:
    """A sample answer as a Markdown table cell: clipped like :func:`_clip`, pipes escaped."""
    return _clip(text, max_chars).replace("|", "\\|")


def comparison_rows(result: dict) -> tuple[list[str], list[list[object]]]:
    """The before/after numbers as table rows (metric, original, abliterated), for a UI table.

    Counts are shown as "k/n" beside their rate so neither has to be worked out.
    """
    r = result["results"]
    n_harm, n_safe = result["prompts"]["harmful"]["count"], result["prompts"]["harmless"]["count"]
    columns = [label for label in ("reference", "model") if label in r]
    headers = ["metric"] + [f"{'original' if c == 'reference' else 'abliterated'}" for c in columns]
    rows: list[list[object]] = [
        ["harmful refused"] + [f"{r[c]['refusals']}/{n_harm} ({r[c]['refusal_rate']:.0%})" for c in columns],
        ["harmless refused (over-refusal)"]
        + [f"{r[c]['over_refusals']}/{n_safe} ({r[c]['over_refusal_rate']:.0%})" for c in columns],
    ]
    if "kl_divergence" in r:
        rows.append(["first-token KL vs original"] + [0.0 if c == "reference" else round(r["kl_divergence"], 4)
                                                      for c in columns])
    if "cross_entropy" in r:
        rows.append(["answer cross-entropy"] + [round(r["cross_entropy"][c], 4) for c in columns])
    return headers, rows


def sample_rows(result: dict, max_chars: int = 400) -> tuple[list[str], list[list[str]]]:
    """Sample answers side by side: prompt, the original's answer, the abliterated one's."""
    samples = result.get("samples") or []
    has_ref = bool(samples) and "reference" in samples[0]
    headers = ["prompt"] + (["original"] if has_ref else []) + ["abliterated"]
    rows = [[_clip(s["prompt"], max_chars)] + ([_clip(s["reference"], max_chars)] if has_ref else [])
            + [_clip(s["model"], max_chars)] for s in samples]
    return headers, rows


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split()) or "(empty)"
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
