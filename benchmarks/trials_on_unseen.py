"""How a search's trials do on prompts the search never saw: the figures behind "--optimize's pick".

A search ranks its trials on its own evaluation prompts. This script takes a finished study
(``forge-hub run MODEL --optimize`` writes ``forge-hub-<model>.study.db``), re-applies each
chosen trial's edit with the directions stored in the study, and measures it the way
``refusal_removal.py`` measures a finished model: 100 harmful prompts from HarmBench validation
and TDC 2023, 100 Alpaca validation prompts, greedy, forge-hub's markers, first-token KL from the
original, and that KL once more on only the harmless prompts the original answers (its
over-refusals left out, since the edit is meant to change those).

    python benchmarks/trials_on_unseen.py STUDY.db [--model fixture|second] [--trials 1,12,20] [--tokens 40]

Without ``--trials`` it measures every trial of the study's Pareto front. About a minute per
trial on this 2-core CPU. Needs ../shared; exits 0 with a note where it is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forge_bench import evaluation_prompts, refusing_model, shared_available


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the search's study file (SQLite or *.journal)")
    parser.add_argument("--model", choices=["fixture", "second"], default="fixture")
    parser.add_argument("--study-name", default="forge-hub")
    parser.add_argument("--trials", help="comma-separated trial numbers (default: the Pareto front)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per answer (default 40)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0

    import optuna

    from forge_hub.abliterate.search import (
        SearchOptions,
        TrialEvaluator,
        finished_trials,
        pareto_front,
        trial_choice,
        trial_directions,
    )
    from forge_hub.abliterate.study import StudyLocation, load_directions
    from forge_hub.evaluation.compare import answered_kl, refusal_flags
    from forge_hub.evaluation.generation import first_token_logprobs, generate
    from forge_hub.model.loading import load_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study_name, storage=StudyLocation.parse(args.study).storage(heartbeat=60))
    directions = load_directions(study)
    by_number = {t.number: t for t in finished_trials(study)}
    chosen = ([by_number[int(n)] for n in args.trials.split(",")] if args.trials else pareto_front(study))

    model, tokenizer, _ = load_model(str(refusing_model(args.model)))
    harmful, harmless = evaluation_prompts()
    evaluator = TrialEvaluator(model, tokenizer, harmful, harmless,
                               SearchOptions(max_new_tokens=args.tokens, batch_size=50))
    refused = refusal_flags(generate(model, tokenizer, harmless, max_new_tokens=args.tokens, batch_size=50))
    print(f"study {args.study} ({len(by_number)} finished trials), model {args.model}; the original refuses "
          f"{sum(refused)}/{len(harmless)} of the harmless prompts")
    print("\n| trial | on the search's prompts (refusals, KL) | unseen harmful refused | first-token KL | "
          "KL on the prompts the original answers |\n|---|---|---|---|---|")
    for trial in chosen:
        _, settings = trial_choice(trial)
        refusals, kl, _ = evaluator(trial_directions(directions, trial), settings)
        edited = first_token_logprobs(model, tokenizer, harmless, batch_size=50)
        kept = answered_kl(evaluator.reference, edited, refused)
        print(f"| {trial.number} | {trial.values[0]:.0f}, {trial.values[1]:.3f} | {refusals:.0f}/{len(harmful)} | "
              f"{kl:.4f} | {'-' if kept is None else f'{kept:.4f}'} |", flush=True)
    evaluator.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
