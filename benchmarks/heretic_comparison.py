"""forge-hub against Heretic on the refusing fixture, same prompts, same trial budget, same machine.

Protocol (the issue's): 40 trials, seed 0, answers of 100 new tokens (Heretic's default), Heretic's default refusal
markers and system prompt, 100 held-out harmful + 100 harmless evaluation prompts that neither
tool uses for its directions; both read the same local text files. Heretic's Pareto front is
read from its own study journal; forge-hub's from its study. forge-hub's pick is then measured
again with forge-hub's own markers and 40 tokens.

Heretic is AGPL-3.0 and is only run here, never imported: install it in a separate virtualenv
(its pins differ from ours) and point at its executable:

    python3 -m venv .heretic && .heretic/bin/pip install torch==2.13.0 heretic-llm==1.4.0
    python benchmarks/heretic_comparison.py --heretic .heretic/bin/heretic [--model second]

It prints both Pareto fronts, whether forge-hub's dominates Heretic's (for every point of
Heretic's front a forge-hub trial with no more refusals and no more KL) and the wall-time ratio.

With --work, each side's finished run is kept and reused, so the two sides may also run at the
same time, one core each, as two invocations (--heretic-only, and --markers-from-heretic for
forge-hub's side); a last invocation with --heretic then only reads and compares them.

Extra `forge-hub run` flags go after `--` (an ablation: `-- --search-space wide`); they are stored
with forge-hub's side and printed beside its figures.

Without --heretic, only forge-hub runs. Needs ../shared; exits 0 with a note where it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forge_bench import (
    FORGE_HUB,
    direction_prompts,
    evaluation_prompts,
    refusing_model,
    shared_available,
    write_lines,
)

HERETIC_SYSTEM_PROMPT = "You are a helpful assistant."
READ_HERETIC_STUDY = r"""
import json, sys
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage = JournalStorage(JournalFileBackend(sys.argv[1]))
study = optuna.load_study(study_name=storage.get_all_studies()[0].study_name, storage=storage)
rows = [(t.user_attrs["refusals"], t.user_attrs["kl_divergence"]) for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE]
print(json.dumps(rows))
"""
HERETIC_MARKERS = r"""
import json
from heretic.config import Settings
print(json.dumps(Settings.model_fields["refusal_markers"].default))
"""


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front = [p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]
    return sorted(set(front))


def run_heretic(heretic: Path, fixture: Path, files: dict[str, Path], work: Path, trials: int, tokens: int) -> dict:
    python = heretic.parent / "python"
    checkpoints = work / "heretic-study"
    timing = work / "heretic-seconds.json"
    if timing.exists():  # finished in an earlier run with this --work folder: read it again
        return _read_heretic(python, checkpoints, **json.loads(timing.read_text()))
    cmd = [str(heretic), "--model", str(fixture), "--n-trials", str(trials), "--seed", "0",
           "--max-response-length", str(tokens), "--study-checkpoint-dir", str(checkpoints),
           "--good-prompts.dataset", str(files["harmless"]), "--bad-prompts.dataset", str(files["harmful"]),
           "--good-evaluation-prompts.dataset", str(files["eval_harmless"]),
           "--bad-evaluation-prompts.dataset", str(files["eval_harmful"])]
    print("$", " ".join(cmd), flush=True)
    # Heretic asks which trial to keep once it is done; with no terminal it stops there
    with open(work / "heretic.log", "w") as log, Timer() as timer:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                       env={**os.environ, **ONE_THREAD, "TERM": "dumb"})
    timing.write_text(json.dumps(timer.figures()))
    return _read_heretic(python, checkpoints, **timer.figures())


def _read_heretic(python: Path, checkpoints: Path, seconds: float, cpu_seconds: float) -> dict:
    journal = next(checkpoints.glob("*.jsonl"))
    points = json.loads(subprocess.run([str(python), "-c", READ_HERETIC_STUDY, str(journal)], check=True,
                                       capture_output=True, text=True).stdout)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "trials": len(points),
            "front": pareto([tuple(p) for p in points])}


# Both tools run with one thread each, so their CPU seconds compare fairly even on a busy machine.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Timer:
    """Wall seconds and the CPU seconds (user + system) of the child processes run inside."""

    def __enter__(self) -> Timer:
        self.start, self.cpu = time.time(), _children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds, self.cpu_seconds = time.time() - self.start, _children_cpu() - self.cpu

    def figures(self) -> dict[str, float]:
        return {"seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def heretic_markers(heretic: Path) -> list[str]:
    out = subprocess.run([str(heretic.parent / "python"), "-c", HERETIC_MARKERS], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def run_forge_hub(fixture: Path, files: dict[str, Path], work: Path, trials: int, tokens: int,
                  markers: Path | None, extra: list[str]) -> dict:
    study = work / "forge-hub.study.db"
    timing = work / "forge-hub-seconds.json"
    if timing.exists():  # finished in an earlier run with this --work folder: read it again
        return _read_forge_hub(work, **json.loads(timing.read_text()))
    cmd = [*FORGE_HUB, "run", str(fixture), "--harmful", str(files["harmful"]), "--harmless", str(files["harmless"]),
           "--optimize", "--trials", str(trials), "--study", str(study), "--search-tokens", str(tokens),
           "--eval-harmful", str(files["eval_harmful"]), "--eval-harmless", str(files["eval_harmless"]),
           "--system-prompt", HERETIC_SYSTEM_PROMPT, "--batch-size", "50", "--no-evaluate",
           "--out", str(work / "forge-hub-out")]
    if markers is not None:
        cmd += ["--refusal-markers", str(markers)]
    cmd += extra
    print("$", " ".join(cmd), flush=True)
    with open(work / "forge-hub.log", "w") as log, Timer() as timer:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    timing.write_text(json.dumps({**timer.figures(), "flags": extra}))
    return _read_forge_hub(work, **timer.figures(), flags=extra)


def _read_forge_hub(work: Path, seconds: float, cpu_seconds: float, flags: list[str] | None = None) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials_done = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{work / 'forge-hub.study.db'}").trials
    points = [tuple(t.values) for t in trials_done if t.values]
    picked = json.loads((work / "forge-hub-out" / "refusal.json").read_text())["search"]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "trials": len(points), "front": pareto(points),
            "picked": (picked["refusals"], picked["kl"], picked["trial"]), "flags": flags or []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heretic", type=Path, default=os.environ.get("HERETIC_BIN"),
                        help="Heretic's executable (in its own virtualenv)")
    parser.add_argument("--markers-from-heretic", action="store_true",
                        help="with --heretic: take Heretic's markers for forge-hub's search but do not run Heretic")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=100, help="answer length for both tools (default 100)")
    parser.add_argument("--model", choices=["fixture", "second"], default="fixture",
                        help="the refusing fixture, or the second refusing model (second_refusing_model.py)")
    parser.add_argument("--work", type=Path,
                        help="work folder (kept); a finished Heretic or forge-hub side in it is reused, so the two "
                             "sides can run at the same time as two invocations, one core each")
    parser.add_argument("--heretic-only", action="store_true",
                        help="run Heretic's side into --work and stop (forge-hub's side reuses it later)")
    parser.add_argument("--rerun-forge-hub", action="store_true",
                        help="discard a finished forge-hub side in --work and run it again")
    parser.add_argument("forge_hub_flags", nargs="*", help="extra `forge-hub run` flags (after --)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0
    fixture = refusing_model(args.model)
    work = args.work or Path(tempfile.mkdtemp(prefix="forge-hub-vs-heretic-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.rerun_forge_hub or not (work / "forge-hub-seconds.json").exists():
        (work / "forge-hub-seconds.json").unlink(missing_ok=True)
        shutil.rmtree(work / "forge-hub-out", ignore_errors=True)
        (work / "forge-hub.study.db").unlink(missing_ok=True)
        shutil.rmtree(work / "forge-hub.study.directions", ignore_errors=True)
    harmful, harmless = direction_prompts()
    eval_harmful, eval_harmless = evaluation_prompts()
    files = {"harmful": write_lines(work / "harmful.txt", harmful),
             "harmless": write_lines(work / "harmless.txt", harmless),
             "eval_harmful": write_lines(work / "eval_harmful.txt", eval_harmful),
             "eval_harmless": write_lines(work / "eval_harmless.txt", eval_harmless)}
    results: dict[str, dict] = {}
    markers_file = None
    if args.heretic:
        markers_file = write_lines(work / "heretic_markers.txt", heretic_markers(args.heretic))
        if not args.markers_from_heretic:
            results["heretic"] = run_heretic(args.heretic, fixture, files, work, args.trials, args.tokens)
            if args.heretic_only:
                print(json.dumps(results["heretic"]))
                return 0
    results["forge-hub"] = run_forge_hub(fixture, files, work, args.trials, args.tokens, markers_file,
                                         args.forge_hub_flags)

    # forge-hub's pick, measured again with forge-hub's own markers and 40 tokens (once per forge-hub side)
    evaluation = work / "forge-hub-eval.json"
    if not evaluation.exists() or evaluation.stat().st_mtime < (work / "forge-hub-seconds.json").stat().st_mtime:
        subprocess.run([*FORGE_HUB, "evaluate", str(work / "forge-hub-out"), "--reference", str(fixture), "--harmful",
                        str(files["eval_harmful"]), "--harmless", str(files["eval_harmless"]), "--max-new-tokens",
                        "40", "--system-prompt", HERETIC_SYSTEM_PROMPT, "--batch-size", "50", "--out", str(evaluation)],
                       check=True, stdout=subprocess.DEVNULL)
    own = json.loads(evaluation.read_text())["results"]

    marker_note = "Heretic's default markers" if args.heretic else "forge-hub's markers"
    print(f"\n{args.trials} trials, {args.tokens} new tokens, {marker_note}, 100 + 100 evaluation prompts\n")
    print("| tool | CPU time (one thread) | wall time | Pareto front (refusals/100 at KL) |\n|---|---|---|---|")
    for tool, r in results.items():
        front = ", ".join(f"{int(round(a))} at {b:.3f}" for a, b in r["front"])
        name = " ".join([tool, *r.get("flags", [])])
        print(f"| {name} | {r['cpu_seconds'] / 60:.1f} min | {r['seconds'] / 60:.1f} min | {front} |")
    if "heretic" in results:
        ours = results["forge-hub"]["front"]
        beaten = [pt for pt in results["heretic"]["front"] if not any(a <= pt[0] and b <= pt[1] for a, b in ours)]
        ratio = results["forge-hub"]["cpu_seconds"] / results["heretic"]["cpu_seconds"]
        wall = results["forge-hub"]["seconds"] / results["heretic"]["seconds"]
        print(f"\nforge-hub's front dominates Heretic's: {'yes' if not beaten else 'no'}"
              + (f" (not matched: {', '.join(f'{a:.0f} at {b:.3f}' for a, b in beaten)})" if beaten else "")
              + f"; wall time {wall:.2f}x, CPU time {ratio:.2f}x Heretic's (goal: at most 0.5x)")
    p = results["forge-hub"]["picked"]
    print(f"\nforge-hub's default pick: trial {p[2]}, {p[0]:.0f}/100 refused at KL {p[1]:.3f}; with forge-hub's own "
          f"markers and 40 tokens: {own['model']['refusals']}/100 refused, {own['model']['over_refusals']}/100 "
          f"harmless refused (original {own['reference']['refusals']}/100 and {own['reference']['over_refusals']}/100)"
          f", KL {own['kl_divergence']:.3f}")
    (work / "comparison.json").write_text(json.dumps({"results": results, "forge_hub_own_markers": own}, indent=2))
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
