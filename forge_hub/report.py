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
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text.replace("|", "\\|") or "(empty)"
