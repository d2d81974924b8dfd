"""Capability tasks through lm-evaluation-harness: `forge-hub evaluate --tasks` on tiny models with
small tasks of our own (lm-eval YAML over local JSON files), checked against lm-eval's own run."""

import importlib.util
import json

import pytest
from helpers.lm_eval_tasks import write_tasks
from helpers.tiny import HARMFUL, HARMLESS, make_model, save_model

from forge_hub.cli import main
from forge_hub.errors import MissingDependencyError, SettingsError
from forge_hub.evaluation.capability import CapabilitySettings, check_tasks, compare_tasks, headline, task_run

needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="pip install 'forge-hub[eval]' (lm-eval)")
@needs_lm_eval
def test_evaluate_tasks_equal_lm_evals_own_run(tmp_path, prompt_files):
    import lm_eval
    from lm_eval.tasks import TaskManager

    reference = save_model(make_model("llama", seed=1), tmp_path / "reference")
    model = save_model(make_model("llama", seed=2), tmp_path / "model")
    tasks = write_tasks(tmp_path / "tasks")
    h, s = prompt_files
    out = tmp_path / "results.json"
    assert main(["evaluate", str(model), "--reference", str(reference), "--harmful", str(h), "--harmless", str(s),
                 "--max-new-tokens", "3", "--tasks", "tiny_choice,tiny_words", "--include-path", str(tasks),
                 "--limit", "10", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["schema"] == "forge-hub/evaluation/v2"
    assert result["settings"]["capability"]["tasks"] == ["tiny_choice", "tiny_words"]
    assert result["settings"]["capability"]["include_path"] == "tasks"  # a name, never a local path
    capabilities = result["results"]["capabilities"]
    manager = TaskManager(include_path=str(tasks))
    for side, folder in (("model", model), ("reference", reference)):
        own = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32",
                                      tasks=["tiny_choice", "tiny_words"], limit=10, batch_size=16, device="cpu",
                                      task_manager=manager, log_samples=False)["results"]
        for task in ("tiny_choice", "tiny_words"):
            theirs = {k: v for k, v in own[task].items() if "," in k}
            assert capabilities[task]["metrics"][side] == theirs, (side, task)
    choice, words = capabilities["tiny_choice"], capabilities["tiny_words"]
    assert (choice["metric"], choice["filter"]) == ("acc_norm", "none")
    assert (words["metric"], words["filter"]) == ("exact_match", "first-word")
    for task in (choice, words):
        key = f"{task['metric']},{task['filter']}"
        assert task["model"]["value"] == task["metrics"]["model"][key]
        assert task["reference"]["stderr"] == task["metrics"]["reference"][f"{task['metric']}_stderr,{task['filter']}"]
        assert task["delta"] == pytest.approx(task["model"]["value"] - task["reference"]["value"])
        assert task["samples"] == 10 and task["num_fewshot"] == 0 and task["dataset"] is None
    markdown = out.with_suffix(".md").read_text()
    assert "### Capabilities (lm-evaluation-harness)" in markdown and "| `tiny_choice` | acc_norm | 0 |" in markdown
    assert "exact_match (first-word)" in markdown and "at most 10 documents per task" in markdown


@needs_lm_eval
def test_unknown_task_and_flags_without_tasks_fail_before_loading(tmp_path, prompt_files, capsys, monkeypatch):
    import forge_hub.model.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    tasks = write_tasks(tmp_path / "tasks")
    h, s = prompt_files
    common = ["evaluate", str(tmp_path / "missing-model"), "--harmful", str(h), "--harmless", str(s)]
    assert main([*common, "--tasks", "tiny_choice,no_such_task", "--include-path", str(tasks)]) == 2
    err = capsys.readouterr().err
    assert "lm-eval knows no task 'no_such_task'" in err and "--include-path" in err
    assert main([*common, "--limit", "5"]) == 2
    assert "name the tasks with --tasks" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="task folder"):
        check_tasks(CapabilitySettings(tasks=("tiny_choice",), include_path=str(tmp_path / "nowhere")))


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="lm-evaluation-harness") as info:
        check_tasks(CapabilitySettings(tasks=("hellaswag",)))
    assert "forge-hub[eval]" in info.value.hint


def test_headline_metrics_groups_and_missing_stderr():
    out = {
        "results": {
            "mmlu": {"alias": "mmlu", "acc,none": 0.5, "acc_stderr,none": 0.01},
            "mmlu_a": {"acc,none": 0.4, "acc_stderr,none": 0.02}, "mmlu_b": {"acc,none": 0.6, "acc_stderr,none": 0.02},
            "gsm8k": {"exact_match,strict-match": 0.2, "exact_match_stderr,strict-match": "N/A",
                      "exact_match,flexible-extract": 0.3, "exact_match_stderr,flexible-extract": 0.04},
            "hellaswag": {"acc,none": 0.3, "acc_stderr,none": 0.01, "acc_norm,none": 0.35,
                          "acc_norm_stderr,none": 0.01},
        },
        "group_subtasks": {"mmlu": ["mmlu_a", "mmlu_b"]},
        "n-shot": {"mmlu_a": 5, "mmlu_b": 5, "gsm8k": 5, "hellaswag": 0},
        "n-samples": {"mmlu_a": {"original": 9, "effective": 4}, "mmlu_b": {"original": 9, "effective": 4},
                      "gsm8k": {"original": 9, "effective": 4}, "hellaswag": {"original": 9, "effective": 4}},
        "higher_is_better": {"hellaswag": {"acc": True, "acc_norm": True}},
        "configs": {"mmlu_a": {"dataset_path": "cais/mmlu", "dataset_name": "a", "test_split": "test"},
                    "mmlu_b": {"dataset_path": "cais/mmlu", "dataset_name": "b", "test_split": "test"},
                    "gsm8k": {"dataset_path": "openai/gsm8k", "dataset_name": "main", "test_split": "test"},
                    "hellaswag": {"dataset_path": "Rowan/hellaswag", "validation_split": "validation"}},
    }
    run = task_run(out, ["mmlu", "gsm8k", "hellaswag"])
    assert run.num_fewshot == {"mmlu": 5, "gsm8k": 5, "hellaswag": 0} and run.samples["mmlu"] == 8
    assert run.datasets == {"mmlu": ("cais/mmlu", None, "test"), "gsm8k": ("openai/gsm8k", "main", "test"),
                            "hellaswag": ("Rowan/hellaswag", None, "validation")}
    assert headline(run.metrics["gsm8k"]) == ("exact_match", "strict-match")
    assert headline(run.metrics["hellaswag"]) == ("acc_norm", "none")
    compared = compare_tasks(run)
    assert compared["gsm8k"].model.stderr is None and compared["gsm8k"].reference is None
    assert compared["mmlu"].model.value == 0.5 and "mmlu_a" not in compared
    assert (compared["mmlu"].dataset, compared["mmlu"].dataset_split) == ("cais/mmlu", "test")
    with pytest.raises(SettingsError, match="no results for task 'arc_easy'"):
        task_run(out, ["arc_easy"])


@needs_lm_eval
def test_run_measures_tasks_before_and_after_the_edit(tmp_path, capsys):
    from forge_hub.evaluation.compare import measure
    from forge_hub.model.loading import load_model

    src = save_model(make_model("llama"), tmp_path / "tiny")
    h, s = tmp_path / "h.txt", tmp_path / "s.txt"
    h.write_text("\n".join(HARMFUL * 2))
    s.write_text("\n".join(HARMLESS * 2))
    tasks = write_tasks(tmp_path / "tasks")
    assert main(["run", str(src), "--harmful", str(h), "--harmless", str(s), "--layer", "2", "--check-tokens", "3",
                 "--evaluate-tasks", "tiny_choice", "--include-path", str(tasks), "--limit", "6",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("| `tiny_choice` |"))
    # the original's column is the unedited model's score, as lm-eval gives it on the source folder
    model, tokenizer, _ = load_model(str(src))
    from forge_hub.evaluation.compare import EvaluationSettings

    original = measure(model, tokenizer, HARMFUL[:1], HARMLESS[:1], settings=EvaluationSettings(max_new_tokens=1),
                       capability=CapabilitySettings(tasks=("tiny_choice",), limit=6, include_path=str(tasks)))
    assert f"{original.tasks.metrics['tiny_choice']['acc_norm,none']:.4f}" in line.split("|")[4]
