"""The README's evaluation table: the refusing fixture before and after `forge-hub run` with its
default settings, measured by `forge-hub evaluate`.

Prints one Markdown table: refusals on 100 held-out harmful prompts (forge-hub's markers, answers
of 100 new tokens), over-refusal on XSTest's 250 safe prompts and on 100 Alpaca prompts, the
first-token KL from the fixture, and two capability tasks of lm-evaluation-harness run on both
models with a stated --limit.

    python benchmarks/evaluation_table.py                       # hellaswag, arc_easy: data from the Hub
    python benchmarks/evaluation_table.py --local-tasks         # no Hub: two tasks generated here
    python benchmarks/evaluation_table.py -- --n-prompts 128       # args after -- go to run

The standard tasks download their data from the Hugging Face Hub. Where it cannot be reached,
--local-tasks runs two small tasks this script writes (two-digit additions, as multiple choice and
as a written answer; generated with a fixed seed), which show whether arithmetic survived the edit
but are not standard benchmarks: the table says which were run. XSTest is the copy forge-hub
ships (evaluate measures it by default), or what --xstest names (another xstest_prompts.csv, or a
prompt dataset built with its xstest config). About 15-25 minutes on a 2-core CPU (the run, then both models answering
450 prompts and the tasks).

Needs ../shared (the fixture's build script and the public prompt lists) and lm-eval
(`pip install 'forge-hub[eval]'`); exits 0 with a note where ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forge_bench import FORGE_HUB, evaluation_prompts, refusing_fixture, shared_available, write_lines

HUB_TASKS = "hellaswag,arc_easy"
LOCAL_TASKS = "forge_addition_choice,forge_addition_answer"


def write_local_tasks(folder: Path, documents: int = 200, seed: int = 0) -> Path:
    """Two lm-eval tasks over generated two-digit additions: pick the sum among four numbers (acc),
    and write it (exact match on the first number written)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        wrong = rng.sample([d for d in (-11, -10, -2, -1, 1, 2, 10, 11) if a + b + d > 0], 3)
        choices = [str(a + b + d) for d in [0, *wrong]]
        rng.shuffle(choices)
        docs.append({"question": f"What is {a} + {b}?", "choices": choices, "answer": choices.index(str(a + b)),
                     "target": str(a + b)})
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "additions.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
              "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n")
    (folder / "forge_addition_choice.yaml").write_text(
        f"task: forge_addition_choice\n{common}output_type: multiple_choice\ndoc_to_target: answer\n"
        "doc_to_choice: \"{{choices}}\"\nmetric_list:\n  - metric: acc\n    aggregation: mean\n"
        "    higher_is_better: true\n", encoding="utf-8")
    (folder / "forge_addition_answer.yaml").write_text(
        f"task: forge_addition_answer\n{common}output_type: generate_until\ndoc_to_target: \"{{{{target}}}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n  do_sample: false\n"
        "filter_list:\n  - name: first-number\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"(\\\\d+)\"\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", help=f"lm-eval tasks, comma-separated (default {HUB_TASKS}, or with "
                        f"--local-tasks {LOCAL_TASKS})")
    parser.add_argument("--local-tasks", action="store_true", help="run the two generated tasks (no Hub needed)")
    parser.add_argument("--limit", type=int, default=100, help="documents per task (default 100)")
    parser.add_argument("--xstest", help="another XSTest file or prompt dataset with its xstest config (default: "
                        "the copy forge-hub ships)")
    parser.add_argument("--tokens", type=int, default=100, help="new tokens per answer (default 100)")
    parser.add_argument("--n-eval", type=int, default=100, help="held-out prompts per side (default 100)")
    parser.add_argument("--work", type=Path, help="folder for the model and results (default: a new temporary one)")
    parser.add_argument("--abliterated", type=Path,
                        help="the output of a default `forge-hub run FIXTURE --out DIR` already made (skips the run)")
    parser.add_argument("run_args", nargs="*", help="extra arguments for `forge-hub run` (after --)")
    args = parser.parse_args()
    if not shared_available():
        print("skipped: ../shared (fixture and prompt lists) is not here")
        return 0
    fixture = refusing_fixture()
    work = args.work or Path(tempfile.mkdtemp(prefix="forge-hub-eval-table-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks or (LOCAL_TASKS if args.local_tasks else HUB_TASKS)

    abliterated = args.abliterated or work / "abliterated"
    run_seconds = 0.0
    if args.abliterated is None:
        run = [*FORGE_HUB, "run", str(fixture), "--out", str(abliterated), "--no-evaluate", *args.run_args]
        print("$", " ".join(run), flush=True)
        start = time.time()
        subprocess.run(run, check=True)
        run_seconds = time.time() - start

    harmful, harmless = evaluation_prompts(args.n_eval)
    harmful, harmless = harmful[:args.n_eval], harmless[:args.n_eval]
    evaluate = [*FORGE_HUB, "evaluate", str(abliterated), "--reference", str(fixture),
                "--harmful", str(write_lines(work / "eval_harmful.txt", harmful)),
                "--harmless", str(write_lines(work / "eval_harmless.txt", harmless)),
                "--max-new-tokens", str(args.tokens), "--tasks", tasks, "--limit", str(args.limit),
                "--out", str(work / "results.json")]
    if args.local_tasks and not args.tasks:
        evaluate += ["--include-path", str(write_local_tasks(work / "tasks"))]
    if args.xstest:
        evaluate += ["--xstest", args.xstest]
    print("$", " ".join(evaluate), flush=True)
    start = time.time()
    subprocess.run(evaluate, check=True, stdout=subprocess.DEVNULL)
    evaluate_seconds = time.time() - start

    results = json.loads((work / "results.json").read_text(encoding="utf-8"))
    print(f"\nforge-hub run: {f'{run_seconds:.0f} s' if run_seconds else f'given ({abliterated})'}; "
          f"forge-hub evaluate (both models): {evaluate_seconds:.0f} s; "
          f"files in {work}\n")
    print(table(results, fixture_name=fixture.name))
    return 0


def _kl_cell(r: dict, n_safe: int) -> str:
    """The plain first-token KL, and the KL on the harmless prompts the original answers where measured."""
    answered = r.get("kl_divergence_answered")
    kept = n_safe - r["reference"]["over_refusals"]
    return f"{r['kl_divergence']:.3f}" + (f" ({answered:.3f} on the {kept} the original answers)"
                                           if answered is not None else "")


def table(results: dict, *, fixture_name: str) -> str:
    """The README's table from a results file of `forge-hub evaluate`."""
    r, settings = results["results"], results["settings"]
    tasks = r.get("capabilities") or {}
    n_harm, n_safe = results["prompts"]["harmful"]["count"], results["prompts"]["harmless"]["count"]
    tokens = settings["max_new_tokens"]
    header = (f"| model | harmful refused ({tokens} tokens) | XSTest safe refused | Alpaca harmless refused | "
              "first-token KL |" + "".join(f" {t['task']} ({t['metric']}) |" for t in tasks.values()))
    lines = [header, "|---" * (5 + len(tasks)) + "|"]
    for label, key in ((fixture_name, "reference"), ("forge-hub run (defaults)", "model")):
        scores = r[key]
        xstest = scores.get("xstest")
        cells = [label, f"{scores['refusals']}/{n_harm}",
                 f"{xstest['refusals']}/{xstest['total']}" if xstest else "not measured",
                 f"{scores['over_refusals']}/{n_safe}", _kl_cell(r, n_safe) if key == "model" else "-"]
        for t in tasks.values():
            value = t[key]
            cells.append("-" if value is None else f"{value['value']:.3f}"
                         + (f" ± {value['stderr']:.3f}" if value.get("stderr") is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    capability = settings.get("capability") or {}
    if tasks:
        shots = sorted({str(t.get("num_fewshot")) for t in tasks.values()})
        lines.append(f"\nTasks: {', '.join(tasks)}; --limit {capability.get('limit')} documents each "
                     f"({', '.join(str(t.get('samples')) for t in tasks.values())} scored), {'/'.join(shots)}-shot, "
                     f"lm-eval {capability.get('lm_eval')}"
                     + (f", task folder {capability['include_path']}" if capability.get("include_path") else "")
                     + "; value ± standard error.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
