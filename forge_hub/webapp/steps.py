"""The Space's steps as functions of a session's workspace: compute, apply, evaluate, chat, publish.

Each step checks its inputs first (on the CPU, from metadata), runs the GPU-bound part as a job
through the ``run`` callable the app gives it (its ``@spaces.GPU`` entry point), calls the same
pipeline functions as the CLI, and returns typed results; ``space/app.py`` only turns those into
widgets. ``progress(fraction, text)`` reports what is happening.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.errors import ForgeHubError, SettingsError
from forge_hub.evaluation.capability import CapabilitySettings, check_tasks
from forge_hub.evaluation.compare import EvaluationSettings
from forge_hub.hub.push import PushResult
from forge_hub.outputs.checkpoint import ApplyReport
from forge_hub.pipeline import ComputeOptions, apply, push
from forge_hub.prompts.choice import PromptChoice, PromptLists, load_prompt_lists
from forge_hub.prompts.xstest import load_xstest
from forge_hub.schema import EvaluationResults
from forge_hub.webapp import checks
from forge_hub.webapp.jobs import ChatJob, ComputeJob, EvaluateJob
from forge_hub.webapp.workspace import Workspace

Run = Callable[[Any], Any]
Progress = Callable[[float, str], None]
DEFAULT_TASK_LIMIT = 50  # documents per capability task: a quick estimate that fits the GPU time of one task


class StepMissing(ForgeHubError):
    """A step was asked for before the one it builds on (apply before compute, ...)."""


def _no_progress(fraction: float, text: str) -> None:
    del fraction, text


def _need(path: Path, step: str) -> None:
    if not path.exists():
        raise StepMissing(f"Run “{step}” first.")


def _prompts(dataset: str | None, sources: Sequence[str] | None, split: str, n: int) -> PromptLists:
    """Both sides from the prompt dataset (a Hub id only, on a public Space)."""
    dataset = checks.check_dataset(dataset, allow_local=checks.local_files_allowed())
    return load_prompt_lists(PromptChoice(dataset=dataset, split=split, sources=list(sources or []) or None,
                                          n_prompts=int(n)))


@dataclass
class ComputeOutcome:
    info: checks.ModelInfo
    artifact: RefusalDirections
    front_plot: Path | None  # the search's Pareto front, when a search ran


def compute_step(open_workspace: Callable[[], Workspace], *, model_id: str, revision: str | None, dataset: str | None,
                 sources: Sequence[str] | None, n_prompts: int, method: str, layer: float | None,
                 search_trials: int, run: Run, progress: Progress = _no_progress) -> ComputeOutcome:
    """Check the model and that it fits, read the prompts, download the model, then compute the
    directions (and search, with ``search_trials``) as one GPU job; a new compute starts the
    session over. The session's folder is opened only once every check has passed."""
    progress(0, "checking the model")
    info = checks.check_model(model_id, revision=revision, allow_local=checks.local_files_allowed())
    checks.check_fits(info, copies=2)  # evaluation and chat hold both models: refuse now, not later
    progress(0.02, "reading the prompts")
    prompts = _prompts(dataset, sources, "train", n_prompts)
    progress(0.05, "downloading the model")
    local = checks.local_copy(info)
    ws = open_workspace()
    ws.reset()
    seconds = checks.compute_seconds(info, len(prompts.harmful), num_layers=checks.num_layers(local),
                                     search_trials=search_trials)
    what = f"computing directions and searching {search_trials} settings" if search_trials else "computing directions"
    progress(0.1, f"{what} (up to {seconds}s of GPU)")
    run(ComputeJob(str(local), info.source, prompts, str(ws.directions), ComputeOptions(method=method, layer=layer),
                   seconds, search_trials=search_trials, search_dir=str(ws.search)))
    ws.save_state(model=info.to_dict(), local_path=str(local), dataset=dataset, sources=list(sources or []))
    front = ws.search / "front.png"
    return ComputeOutcome(info, RefusalDirections.load(ws.directions), front if front.exists() else None)


def apply_step(ws: Workspace, *, progress: Progress = _no_progress) -> tuple[RefusalDirections, ApplyReport]:
    """Write the abliterated model into the session (a GGUF source becomes safetensors here:
    evaluation, chat and the push read that)."""
    _need(ws.directions / "refusal.safetensors", "1. Compute directions")
    progress(0, "writing the abliterated model")
    ws.check_room(checks.ModelInfo.from_dict(ws.state()["model"]).checkpoint_bytes)
    artifact = RefusalDirections.load(ws.directions)
    report = apply(ws.state()["local_path"], artifact, ws.model, overwrite=True, gguf_output="safetensors")
    ws.results.unlink(missing_ok=True)  # an earlier evaluation was of an earlier edit
    return artifact, report


def evaluate_step(ws: Workspace, *, n_prompts: int, max_new_tokens: int, run: Run, tasks: Sequence[str] = (),
                  limit: int | None = DEFAULT_TASK_LIMIT, xstest: bool = True,
                  progress: Progress = _no_progress) -> EvaluationResults:
    """Both models on the test split of the session's prompt dataset, on XSTest's safe prompts (the
    shipped copy, as `forge-hub evaluate` does by default) and on the lm-eval ``tasks`` (``limit``
    documents each, so they fit one GPU task); the results are saved in the session (the push puts
    them on the card)."""
    _need(ws.model, "2. Apply")
    state = ws.state()
    info = checks.ModelInfo.from_dict(state["model"])
    capability = None
    if tasks:
        progress(0, "checking the capability tasks")
        capability = CapabilitySettings(tasks=tuple(tasks), limit=int(limit) if limit else None)
        check_tasks(capability)
    progress(0.01, "reading the test prompts")
    prompts = _prompts(state.get("dataset"), state.get("sources"), "test", n_prompts)
    settings = EvaluationSettings(max_new_tokens=int(max_new_tokens), samples=5)
    safe_prompts = load_xstest() if xstest else None
    total = len(prompts.harmful) + len(prompts.harmless) + (len(safe_prompts.prompts) if safe_prompts else 0)
    seconds = checks.evaluate_seconds(info, total, settings.max_new_tokens, tasks=tuple(tasks),
                                      limit=capability.limit if capability else None)
    job = EvaluateJob(state["local_path"], str(ws.model), prompts.harmful, prompts.harmless, str(ws.results), settings,
                      model_name=f"{info.label} (abliterated)", reference_name=info.label,
                      prompt_sources={"harmful": prompts.harmful_source, "harmless": prompts.harmless_source},
                      seconds=seconds, capability=capability, xstest=safe_prompts)
    also = (" (XSTest's safe prompts included)" if safe_prompts else "") + (
        f" and {len(tasks)} capability task(s)" if tasks else "")
    progress(0.05, f"answering {total} prompts{also} with both models (up to {seconds}s of GPU)")
    return run(job)


def chat_step(ws: Workspace, *, original: list[dict[str, str]], abliterated: list[dict[str, str]],
              max_new_tokens: int, run_stream: Callable[[Any], Iterator[Any]]) -> Iterator[tuple[str, str | None]]:
    """One turn of the same conversation with both models, streamed."""
    _need(ws.model, "2. Apply")
    state = ws.state()
    info = checks.ModelInfo.from_dict(state["model"])
    if not original or original[-1]["role"] != "user" or not original[-1]["content"].strip():
        raise SettingsError("the message is empty", "type a message first")
    job = ChatJob(state["local_path"], str(ws.model), original, abliterated, int(max_new_tokens),
                  checks.chat_seconds(info, int(max_new_tokens)))
    return run_stream(job)


def publish_step(ws: Workspace, *, repo_name: str, private: bool, update: bool, gguf_types: Sequence[str],
                 token: str, username: str | None, progress: Progress = _no_progress) -> tuple[str, PushResult]:
    """Push the session's model, with its results and GGUF variants, to the visitor's namespace (or
    one of their organisations); an existing repo only when ``update``. Returns (repo id, result)."""
    _need(ws.model, "2. Apply")
    info = checks.ModelInfo.from_dict(ws.state()["model"])
    progress(0, "checking your login")
    user, orgs = checks.namespaces(token)
    repo_id = checks.target_repo(repo_name, username or user, orgs=orgs, default=checks.default_repo_name(info))
    checks.check_new_repo(repo_id, token, update=update)
    progress(0.1, f"writing GGUF files and uploading to {repo_id}" if gguf_types else f"uploading to {repo_id}")
    # No GGUF check here: it would run every file on the CPU of the Space; `forge-hub gguf
    # --evaluate-against` or `forge-hub push` on a machine of your own measures them.
    result = push(ws.model, repo_id, token=token, private=private, exist_ok=update, gguf_types=list(gguf_types),
                     results=ws.results if ws.results.exists() else None)
    return repo_id, result
