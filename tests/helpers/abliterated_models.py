"""Abliterated tiny models as `forge-hub run` leaves them, for the publishing tests.

The direction is really computed (the tiny random Llama of helpers.tiny, its prompts) and applied with
forge_hub.pipeline, so the folder holds what a push meets in practice: shards, config, tokenizer,
chat template, generation config, refusal.safetensors/refusal.json/abliteration.json. The
artifact's metadata says it was computed on the Hub model ``test-org/tiny-base`` at ``main``, as
for a Hub source, and names its prompt sources as the CLI records them.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.tiny import HARMFUL, HARMLESS, make_model, save_model

BASE = "test-org/tiny-base"
BASE_CARD = b"---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny-base\n"


def make_abliterated(root: Path, *, save_base=None, layer: float | None = None) -> Path:
    """``root/source`` (the base model folder, written by ``save_base(folder)``, default helpers.tiny's
    random Llama) and ``root/abliterated`` (the edited copy, returned)."""
    from forge_hub.model.loading import ModelSource, load_model
    from forge_hub.pipeline import ComputeOptions, apply, compute
    from forge_hub.prompts.choice import PromptLists

    base = save_base(root / "source") if save_base else save_model(make_model("llama"), root / "source")
    model, tokenizer, _ = load_model(str(base))
    prompts = PromptLists(HARMFUL, HARMLESS, "forge-hub/refusal-prompts harmful/train",
                          str(root / "private" / "harmless.txt"))
    artifact = compute(model, tokenizer, ModelSource("hub", BASE, "main"), prompts,
                       options=ComputeOptions(layer=layer), progress=False)
    out = root / "abliterated"
    apply(str(base), artifact, out, progress=False)
    return out


def write_results(folder: Path, path: Path, reference: Path | None = None) -> Path:
    """``forge-hub evaluate`` results for ``folder`` (short answers: the tests need the schema, not quality)."""
    from forge_hub.evaluation.compare import EvaluationSettings, evaluate_models
    from forge_hub.model.loading import load_model

    model, tokenizer, _ = load_model(str(folder))
    ref = load_model(str(reference))[0] if reference else None
    result = evaluate_models(model, tokenizer, HARMFUL, HARMLESS, reference=ref,
                             settings=EvaluationSettings(max_new_tokens=6, samples=2), model_name=str(folder),
                             reference_name=BASE if reference else None,
                             prompt_sources={"harmful": "forge-hub/refusal-prompts harmful/test",
                                             "harmless": "forge-hub/refusal-prompts harmless/test"}).to_dict()
    # A random model refuses nothing: distinct counts make every number on the card traceable to this file.
    n_harm, n_safe = len(HARMFUL), len(HARMLESS)
    for label, refusals, over in (("model", 1, 2), ("reference", 7, 3)):
        if label in result["results"]:
            result["results"][label].update(refusals=refusals, refusal_rate=refusals / n_harm, over_refusals=over,
                                            over_refusal_rate=over / n_safe)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
