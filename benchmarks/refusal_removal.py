"""Refusal removal on the refusing fixture, with the default settings of `forge-hub run`.

Prints refusals on 100 held-out harmful prompts (before / after), over-refusals on 100 harmless
prompts, first-token KL divergence from the original, wall time, and sample answers.

    python benchmarks/refusal_removal.py [--tokens 40] [--out results.json]

Needs ../shared (the fixture's build script and the public prompt lists); exits 0 with a note
where it is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forge_bench import (
    FORGE_HUB,
    direction_prompts,
    evaluation_prompts,
    refusing_fixture,
    shared_available,
    write_lines,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per answer (default 40)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("cli_args", nargs="*", help="extra arguments for `forge-hub run` (after --)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0
    fixture = refusing_fixture()
    work = Path(tempfile.mkdtemp(prefix="forge-hub-bench-"))
    harmful, harmless = direction_prompts()
    cmd = [*FORGE_HUB, "run", str(fixture), "--harmful", str(write_lines(work / "harmful.txt", harmful)),
           "--harmless", str(write_lines(work / "harmless.txt", harmless)), "--out", str(work / "abliterated"),
           *args.cli_args]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True)
    run_seconds = time.time() - start

    from forge_hub.evaluation.compare import EvaluationSettings, evaluate_models
    from forge_hub.evaluation.report import results_markdown
    from forge_hub.model.loading import load_model

    reference, tokenizer, _ = load_model(str(fixture))
    edited, _, _ = load_model(str(work / "abliterated"))
    eval_harmful, eval_harmless = evaluation_prompts()
    results = evaluate_models(edited, tokenizer, eval_harmful, eval_harmless, reference=reference,
                              settings=EvaluationSettings(max_new_tokens=args.tokens, batch_size=50),
                              model_name="forge-hub run (defaults)", reference_name="refusing-smollm2")
    print(f"\nforge-hub run took {run_seconds:.0f} s\n")
    print(results_markdown(results))
    if args.out:
        result = results.to_dict()
        result["run_seconds"] = round(run_seconds, 1)
        result["apply_settings"] = json.loads((work / "abliterated" / "abliteration.json").read_text())["settings"]
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
