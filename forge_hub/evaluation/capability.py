"""Capability retention: lm-evaluation-harness tasks (MMLU, GSM8K, HellaSwag, ARC, Winogrande, ...)
on the model and its original, with standard errors and the change.

The question users ask of an abliterated model is whether it kept its intelligence. The
standard answer is lm-evaluation-harness's numbers, so forge-hub does not reimplement any task:
it hands lm-eval the models it already has in memory (``lm_eval.models.huggingface.HFLM`` takes
a loaded model and tokenizer, so nothing is loaded twice) and records what lm-eval reports.
Scores are therefore the ones ``lm_eval.simple_evaluate`` gives on the same model with the same
settings (its seeds, no chat template unless asked), and comparable with published ones.

    settings = CapabilitySettings(tasks=("hellaswag", "arc_challenge"), limit=100)
    check_tasks(settings)                                   # unknown names fail before any work
    before = run_tasks(original, tokenizer, settings=settings)
    after = run_tasks(edited, tokenizer, settings=settings)
    results = compare_tasks(after, before)                  # {task: TaskResult}

lm-eval is an optional extra (``pip install 'forge-hub[eval]'``); the standard tasks download
their data from the Hugging Face Hub on first use. Custom tasks are YAML files in a folder given
as ``include_path`` (lm-eval's own mechanism, local JSON/CSV data files included).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from forge_hub.errors import MissingDependencyError, SettingsError
from forge_hub.schema import MetricValue, TaskResult

# A short, common set: knowledge, arithmetic reasoning, common sense, science questions, coreference.
DEFAULT_TASKS = ("mmlu", "gsm8k", "hellaswag", "arc_challenge", "winogrande")
# The metric a task is usually quoted by, in order of preference among those lm-eval reports
# (HellaSwag and ARC by length-normalised accuracy, MMLU and Winogrande by accuracy, GSM8K by
# exact match); a task reporting none of these is quoted by its first metric.
HEADLINE_METRICS = ("acc_norm", "acc", "exact_match", "mc2", "f1", "em", "pass@1", "bleu", "rouge1", "word_perplexity")
INSTALL_HINT = "pip install 'forge-hub[eval]' (lm-evaluation-harness)"
_NOT_METRICS = ("alias", "name", "sample_len", "sample_count")


@dataclass
class CapabilitySettings:
    """Which lm-eval tasks, on how many documents, with how many examples in the prompt."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | float | None = None  # documents per task (a fraction when below 1); None: all
    num_fewshot: int | None = None  # None: each task's own default
    batch_size: int = 16
    include_path: str | None = None  # a folder of lm-eval task YAML files, for tasks of your own
    apply_chat_template: bool = False  # lm-eval's default, and how published scores are usually made

    def record(self) -> dict[str, Any]:
        """What the results file says about the run (the task folder by name only, never a local path)."""
        from importlib.metadata import version

        return {"tasks": list(self.tasks), "limit": self.limit, "num_fewshot": self.num_fewshot,
                "batch_size": self.batch_size, "apply_chat_template": self.apply_chat_template,
                "include_path": Path(self.include_path).name if self.include_path else None,
                "lm_eval": version("lm-eval")}


@dataclass
class TaskRun:
    """One model's lm-eval results for the requested tasks: every metric, and what each task was."""

    metrics: dict[str, dict[str, float | None]]  # task -> {"acc,none": 0.41, "acc_stderr,none": 0.01, ...}
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)
    num_fewshot: dict[str, int | None] = field(default_factory=dict)
    samples: dict[str, int | None] = field(default_factory=dict)
    datasets: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)  # path, config, split


def require_lm_eval() -> None:
    """lm-eval is an optional extra: say how to install it before anything else happens."""
    if importlib.util.find_spec("lm_eval") is None:
        raise MissingDependencyError("capability tasks need lm-evaluation-harness, which is not installed",
                                     INSTALL_HINT)


def check_tasks(settings: CapabilitySettings) -> None:
    """Every task name is one lm-eval knows (its own, or one in ``include_path``); before any work."""
    require_lm_eval()
    if not settings.tasks:
        raise SettingsError("no capability task named", "name lm-eval tasks in {tasks}, e.g. hellaswag,arc_challenge",
                            input="tasks")
    if settings.include_path and not Path(settings.include_path).expanduser().is_dir():
        raise SettingsError(f"task folder {settings.include_path} does not exist",
                            "give a folder of lm-eval task YAML files as {include_path}", input="include_path")
    if settings.limit is not None and (not math.isfinite(settings.limit) or settings.limit <= 0):
        raise SettingsError(f"limit {settings.limit} is not a positive number of documents",
                            "give {limit} as a count, or a fraction below 1", input="limit")
    known = set(_task_manager(_folder(settings.include_path)).all_tasks)
    unknown = [t for t in settings.tasks if t not in known]
    if unknown:
        raise SettingsError(f"lm-eval knows no task {', '.join(map(repr, unknown))}",
                            "use lm-eval's task names (`lm-eval ls tasks`), e.g. "
                            f"{','.join(DEFAULT_TASKS)}, or a folder of your own task YAML files as {{include_path}}",
                            input="tasks")


def run_tasks(model: torch.nn.Module, tokenizer: object, *, settings: CapabilitySettings) -> TaskRun:
    """The tasks on a loaded model through ``lm_eval.simple_evaluate``, as lm-eval would run them on
    the same checkpoint (its default seeds; the tokenizer's padding side is restored afterwards)."""
    require_lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    padding_side = getattr(tokenizer, "padding_side", None)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=list(settings.tasks), num_fewshot=settings.num_fewshot,
                                      limit=settings.limit, log_samples=False,
                                      apply_chat_template=settings.apply_chat_template,
                                      task_manager=_task_manager(_folder(settings.include_path)))
    finally:
        if padding_side is not None:
            tokenizer.padding_side = padding_side
    return task_run(out, settings.tasks)


def task_run(out: Mapping[str, Any], tasks: Sequence[str]) -> TaskRun:
    """The requested tasks' part of what ``simple_evaluate`` returned (a group, such as ``mmlu``, by
    its aggregate over its subtasks)."""
    results, configs = out["results"], out.get("configs") or {}
    run = TaskRun(metrics={})
    for task in tasks:
        row = results.get(task)
        if row is None:
            raise SettingsError(f"lm-eval returned no results for task {task!r}",
                                "check the task name and its data (`lm-eval run --tasks NAME` on its own)",
                                input="tasks")
        run.metrics[task] = {k: _number(v) for k, v in row.items() if k not in _NOT_METRICS and "," in k}
        run.higher_is_better[task] = dict((out.get("higher_is_better") or {}).get(task) or {})
        shots = (out.get("n-shot") or {}).get(task)
        leaves = _leaves(task, out.get("group_subtasks") or {}) or [task]
        if shots is None:  # a group: its subtasks share the setting when they agree
            values = {(out.get("n-shot") or {}).get(leaf) for leaf in leaves}
            shots = values.pop() if len(values) == 1 else None
        run.num_fewshot[task] = shots
        counts = [((out.get("n-samples") or {}).get(leaf) or {}).get("effective") for leaf in leaves]
        run.samples[task] = sum(counts) if counts and all(isinstance(c, int) for c in counts) else None
        config = configs.get(leaves[0]) or {}
        split = config.get("test_split") or config.get("validation_split")
        path = config.get("dataset_path")
        hub = isinstance(path, str) and path.count("/") == 1 and not Path(path).expanduser().exists()
        run.datasets[task] = (path if hub else None, config.get("dataset_name") if len(leaves) == 1 else None, split)
    return run


def compare_tasks(model: TaskRun, reference: TaskRun | None = None) -> dict[str, TaskResult]:
    """Each task's headline metric on both models, their standard errors and the change, with every
    metric lm-eval reported kept beside it."""
    out = {}
    for task, metrics in model.metrics.items():
        metric, filter_name = headline(metrics)
        key, stderr_key = f"{metric},{filter_name}", f"{metric}_stderr,{filter_name}"
        ours = MetricValue(metrics[key], metrics.get(stderr_key))
        theirs = None
        if reference is not None and reference.metrics.get(task, {}).get(key) is not None:
            theirs = MetricValue(reference.metrics[task][key], reference.metrics[task].get(stderr_key))
        dataset, config, split = model.datasets.get(task, (None, None, None))
        out[task] = TaskResult(
            task=task, metric=metric, filter=filter_name, model=ours, reference=theirs,
            delta=ours.value - theirs.value if theirs is not None else None,
            higher_is_better=bool(model.higher_is_better.get(task, {}).get(metric, True)),
            num_fewshot=model.num_fewshot.get(task), samples=model.samples.get(task), dataset=dataset,
            dataset_config=config, dataset_split=split,
            metrics={"model": dict(metrics), **({"reference": dict(reference.metrics[task])}
                                                if reference is not None and task in reference.metrics else {})})
    return out


def headline(metrics: Mapping[str, float | None]) -> tuple[str, str]:
    """(metric, filter) a task is quoted by: the first of :data:`HEADLINE_METRICS` it reports, under
    the first filter lm-eval lists for it (GSM8K: ``strict-match``)."""
    reported = [tuple(k.split(",", 1)) for k, v in metrics.items() if v is not None and "_stderr" not in k]
    if not reported:
        raise SettingsError("lm-eval reported no numeric metric for a task", "check the task's metric_list")
    for wanted in HEADLINE_METRICS:
        for metric, filter_name in reported:
            if metric == wanted:
                return metric, filter_name
    return reported[0]


def _number(value: object) -> float | None:
    """lm-eval writes "N/A" for a standard error it could not compute."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _leaves(task: str, groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The tasks a group runs, through nested groups; [] for a task that is not a group."""
    if task not in groups:
        return []
    out = []
    for child in groups[task]:
        out += _leaves(child, groups) or [child]
    return out


def _folder(include_path: str | None) -> str | None:
    return str(Path(include_path).expanduser().resolve()) if include_path else None


@functools.cache
def _task_manager(include_path: str | None):
    """One index of lm-eval's tasks per folder and process: building it reads thousands of YAML files."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)
