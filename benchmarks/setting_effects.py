"""What each way of applying a direction buys: single settings on a refusing model.

Computes the directions once as `forge-hub compute` does with the shipped prompt lists (their
train split, all of it: no layer is chosen here), then bakes each setting into the loaded model
in turn and measures it on prompts that neither the directions nor the models' safety tuning
used: refusals among greedy answers to 100 harmful prompts (HarmBench validation + TDC 2023),
forge-hub's markers, and first-token KL on 100 Alpaca validation prompts.

    python benchmarks/setting_effects.py [--model fixture|second] [--tokens 40] [--settings JSON ...]

Each ``--settings`` is a JSON object of ablation settings (``direction_layer``, ``row_normalized``,
``skip_first``, ``strength``, ``biprojected``, ``component_kernels``, ...), plus ``method``
(``projected`` or ``mean_diff``). Without it, the rows of the README's table for the model run.
Needs ../shared; exits 0 with a note where it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from forge_bench import CACHE, evaluation_prompts, refusing_model, shared_available

README_ROWS = {
    "fixture": [
        {"direction_layer": 18, "row_normalized": False},
        {"direction_layer": 18},
        {"direction_layer": 18, "method": "mean_diff"},
        {"direction_layer": 18, "biprojected": True},
        {"direction_layer": 16}, {"direction_layer": 17}, {"direction_layer": 20},
        {"direction_layer": 17, "skip_first": 6},
        {"direction_layer": 17, "strength": 0.9},
        {"direction_layer": 17, "skip_first": 6, "strength": 0.9},
        {"direction_layer": 17, "layer_end": 20}, {"direction_layer": 17, "layer_end": 22},
        {"direction_layer": 17, "layer_end": 23}, {"direction_layer": 17, "layer_end": 26},
        {"direction_layer": 17, "skip_first": 6, "layer_end": 23},
        {"direction_layer": 17, "layer_end": 23, "mlp_strength": 0.85},
        {"direction_layer": 17, "layer_end": 23, "attn_strength": 0.85},
        {"direction_layer": 17, "per_layer": True},
        {"direction_layer": 17, "embeddings": "untie"},
        {"direction_layer": 18, "component_kernels": {c: {"kernel": "linear", "center": 23, "width": 12, "floor": 0}
                                                      for c in ("attn", "mlp")}},
    ],
    "second": [{"direction_layer": 18}, {"direction_layer": 18, "skip_first": 6},
               {"direction_layer": 16, "skip_first": 6}, {"direction_layer": 17, "layer_end": 23},
               {"direction_layer": 17, "skip_first": 6, "layer_end": 23}],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fixture", "second"], default="fixture")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--settings", type=json.loads, nargs="*", help="JSON objects (default: the README's rows)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0
    from forge_hub.abliterate.directions import RefusalDirections
    from forge_hub.abliterate.search import SearchOptions, TrialEvaluator
    from forge_hub.model.loading import load_model
    from forge_hub.pipeline import ComputeOptions, compute
    from forge_hub.prompts.choice import PromptChoice, load_prompt_lists
    from forge_hub.schema import AblationSettings

    path = refusing_model(args.model)
    model, tokenizer, source = load_model(str(path))
    cached = CACHE / "setting-effects" / path.name
    if not (cached / "refusal.json").exists():  # the directions for every layer, once per model
        compute(model, tokenizer, source, load_prompt_lists(PromptChoice()),
                options=ComputeOptions(layer=18, batch_size=32)).save(cached)
    artifact = RefusalDirections.load(cached)
    harmful, harmless = evaluation_prompts()
    evaluator = TrialEvaluator(model, tokenizer, harmful, harmless, SearchOptions(max_new_tokens=args.tokens,
                                                                                 batch_size=50))
    print(f"{path.name}: refusals among {len(harmful)} held-out harmful prompts ({args.tokens} tokens), "
          f"first-token KL on {len(harmless)} harmless ones\n")
    print("| settings | refused | KL | seconds |\n|---|---|---|---|")
    for row in args.settings or README_ROWS[args.model]:
        row = dict(row)
        method = row.pop("method", "projected")
        settings = AblationSettings.from_dict({"row_normalized": True, **row})
        started = time.time()
        refusals, kl, _ = evaluator(artifact.with_method(method), settings)
        label = ", ".join(f"{k}={json.dumps(v)}" for k, v in {"method": method, **row}.items())
        print(f"| {label} | {refusals:.0f}/{len(harmful)} | {kl:.3f} | {time.time() - started:.0f} |", flush=True)
    evaluator.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
