"""The per-layer picture of a direction artifact: how far apart harmful and harmless prompts sit at
every layer, what ablating each candidate layer's direction did, and which layer was chosen.

The numbers come from the artifact itself (``scores.separation`` for every layer; for a measured
choice also ``scores.refusal_probability`` and ``scores.kl`` at the candidate layers), so the
plot shows exactly what the layer choice saw. Used by the Space; works on any saved artifact::

    artifact = RefusalDirections.load("directions/")
    rows = layer_rows(artifact)          # one dict per layer, for a table
    figure = layer_figure(artifact)      # matplotlib Figure with the chosen layer marked
"""

from __future__ import annotations

import math
from typing import Any

from forge_hub.abliterate.directions import RefusalDirections

COLUMNS = ("layer", "separation", "refusal_probability", "kl", "chosen")


def layer_rows(artifact: RefusalDirections) -> list[dict[str, Any]]:
    """One row per residual-stream index: separation, the candidate's scores (None where the
    layer was not a candidate) and whether it is the chosen layer.

    Index ``num_layers`` (the final hidden state) is left out: no layer writes after it, so it
    can never be chosen and its separation only stretches the plot.
    """
    separation = artifact.scores.get("separation")
    if separation is None:
        separation = artifact.separation()
    refusal, kl = artifact.scores.get("refusal_probability"), artifact.scores.get("kl")
    chosen = chosen_layer(artifact)
    rows = []
    for layer in range(artifact.num_layers):
        rows.append({
            "layer": layer,
            "separation": float(separation[layer]),
            "refusal_probability": _finite(refusal, layer),
            "kl": _finite(kl, layer),
            "chosen": chosen is not None and round(chosen) == layer,
        })
    return rows


def chosen_layer(artifact: RefusalDirections) -> float | None:
    """The layer the artifact will apply (possibly fractional), or None when none was stored."""
    value = artifact.metadata.selected_layer
    return None if value is None else float(value)


def layer_figure(artifact: RefusalDirections, title: str | None = None):
    """A two-panel matplotlib Figure: separation per layer on top; refusal probability and KL of
    each candidate below (when the layer was measured); the chosen layer marked on both.

    Built on a bare ``Figure`` (no pyplot state), so concurrent sessions cannot draw into each
    other's plots and nothing has to be closed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = layer_rows(artifact)
    layers = [r["layer"] for r in rows]
    chosen = chosen_layer(artifact)
    measured = any(r["refusal_probability"] is not None for r in rows)
    fig = Figure(figsize=(8, 5.5 if measured else 3.2), layout="constrained")
    axes = fig.subplots(2 if measured else 1, 1, sharex=True, squeeze=False)[:, 0]

    top = axes[0]
    top.plot(layers, [r["separation"] for r in rows], marker="o", color="tab:blue")
    top.set_ylabel("separation\n|μ harmful − μ harmless| / |μ|")
    top.set_title(title or f"{artifact.metadata.model or 'model'}: refusal direction per layer")
    if measured:
        bottom = axes[1]
        candidates = [r for r in rows if r["refusal_probability"] is not None]
        xs = [r["layer"] for r in candidates]
        bottom.plot(xs, [r["refusal_probability"] for r in candidates], marker="o", color="tab:red",
                    label="refusal probability (ablated, held-out harmful)")
        bottom.plot(xs, [r["kl"] for r in candidates], marker="s", color="tab:green",
                    label="first-token KL (ablated, held-out harmless)")
        baseline = artifact.metadata.selection.baseline_refusal_probability
        if baseline is not None:
            bottom.axhline(baseline, color="tab:red", linestyle=":", linewidth=1, label="refusal probability, original")
        bottom.set_ylabel("score")
        bottom.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("layer (residual stream entering it)")
    if chosen is not None:
        how = artifact.metadata.selection.how
        for ax in axes:
            ax.axvline(chosen, color="black", linestyle="--", linewidth=1.2)
        top.annotate(f"layer {chosen:g} ({how})", xy=(chosen, 1), xycoords=("data", "axes fraction"),
                     xytext=(4, -12), textcoords="offset points", fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    return fig


def _finite(values, layer: int) -> float | None:
    if values is None:
        return None
    value = float(values[layer])
    return None if math.isnan(value) else value
