"""Refusal removal as a user gets it: `forge-hub run MODEL --out DIR`, nothing else.

The run reads the prompt lists forge-hub ships (offline: AdvBench and Alpaca, their train
split) and chooses everything itself. The edited model is then measured on prompts the project
never uses for directions or choices: 100 harmful (HarmBench validation + TDC 2023) and 100
harmless (Alpaca validation), greedy answers, forge-hub's refusal markers, first-token KL from
the original. Prints the table and the run's wall time.

    python benchmarks/refusal_removal.py [--model fixture|second] [--tokens 40] [--out results.json]
    python benchmarks/refusal_removal.py -- --optimize      # extra `forge-hub run` flags, printed with the figures

``fixture`` is ../shared's refusing-smollm2; ``second`` another safety tuning of the same base
(benchmarks/second_refusing_model.py, built on first use). Needs ../shared; exits 0 with a note
where it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forge_bench import FORGE_HUB, evaluation_prompts, refusing_model, shared_available


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fixture", "second"], default="fixture")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per answer (default 40)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("cli_args", nargs="*", help="extra arguments for `forge-hub run` (after --)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0
    model = refusing_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="forge-hub-bench-"))
    cmd = [*FORGE_HUB, "run", str(model), "--out", str(work / "abliterated"), *args.cli_args]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # as offline as this machine
    run_seconds = time.time() - start

    from forge_hub.evaluation.compare import EvaluationSettings, evaluate_models
    from forge_hub.evaluation.report import results_markdown
    from forge_hub.model.loading import load_model

    reference, tokenizer, _ = load_model(str(model))
    edited, _, _ = load_model(str(work / "abliterated"))
    eval_harmful, eval_harmless = evaluation_prompts()
    results = evaluate_models(edited, tokenizer, eval_harmful, eval_harmless, reference=reference,
                              settings=EvaluationSettings(max_new_tokens=args.tokens, batch_size=50),
                              model_name="forge-hub run " + (" ".join(args.cli_args) or "(defaults)"),
                              reference_name=model.name)
    print(f"\nforge-hub run {' '.join(args.cli_args) or '(no flags)'} on {model.name} took {run_seconds:.0f} s\n")
    print(results_markdown(results))
    if args.out:
        result = results.to_dict()
        result["run_seconds"] = round(run_seconds, 1)
        result["apply_settings"] = json.loads((work / "abliterated" / "abliteration.json").read_text())["settings"]
        result["selection"] = json.loads((work / "abliterated" / "refusal.json").read_text())["selection"]
        result["flags"] = args.cli_args
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
