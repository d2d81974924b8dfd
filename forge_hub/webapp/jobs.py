"""The GPU-bound steps of the Space as small picklable jobs: compute, evaluate, one chat turn.

On ZeroGPU a ``@spaces.GPU`` function runs in a separate worker process that gets a GPU for the
duration of one call; its arguments and its result travel between processes by pickle. So each
job is a dataclass of plain values (paths, prompt lists, settings) whose ``run()`` loads what it
needs, writes its output to the session folder and returns plain values on the CPU. Its
``seconds`` field is the GPU time to ask for, estimated beforehand from the model's size
(:mod:`forge_hub.space_support`). A chat turn also has ``stream()``, whose items (the answers
so far) travel back one by one as ZeroGPU does for generators. The app needs two decorated
entry points::

    @spaces.GPU(duration=lambda job: job.seconds)
    def on_gpu(job):
        return job.run()

    @spaces.GPU(duration=lambda job: job.seconds)
    def on_gpu_stream(job):
        yield from job.stream()

Outside a Space the decorator does nothing and the jobs run in the app's own process, on CUDA
when there is one and on the CPU otherwise.
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from forge_hub.evaluation.capability import CapabilitySettings
from forge_hub.evaluation.compare import EvaluationSettings
from forge_hub.model.chat import chat_stream
from forge_hub.model.loading import ModelSource, load_model
from forge_hub.outputs.staging import staged_output
from forge_hub.pipeline import ComputeOptions, compute, evaluate, optimize, write_results
from forge_hub.prompts.choice import PromptLists
from forge_hub.prompts.xstest import XSTestPrompts
from forge_hub.schema import DirectionMetadata, EvaluationResults


def device_map() -> str | None:
    """Load straight onto the GPU when there is one (no CPU copy first); CPU otherwise."""
    return "cuda" if torch.cuda.is_available() else None


class LoadedModels:
    """A few loaded (model, tokenizer) pairs, so chat turns after an evaluation do not reload.

    Small on purpose: two entries hold one session's original and abliterated model. On
    ZeroGPU each task runs in a fresh worker, so there it only saves the second load inside one
    task; locally it saves every reload.
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple, tuple[torch.nn.Module, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> tuple[torch.nn.Module, object]:
        stat = Path(path).stat()  # a re-applied model is a new folder at the same path
        key = (str(path), stat.st_ino, stat.st_mtime_ns, device_map())
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            model, tokenizer, _ = load_model(str(path), device_map=device_map())
            self._items[key] = (model, tokenizer)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return model, tokenizer

    def drop(self, prefix: str | Path) -> None:
        """Forget models loaded from under ``prefix`` (a session folder being removed)."""
        prefix = str(prefix)
        with self._lock:
            for key in [k for k in self._items if k[0].startswith(prefix)]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


loaded_models = LoadedModels()


@dataclass
class ComputeJob:
    """Directions and the measured layer choice, saved as an artifact folder at ``out``.

    With ``search_trials``, the parameter search (``forge-hub run --optimize``) follows on the
    same loaded model, scored on the prompts held out from the directions; the artifact then
    carries the picked trial's method and settings (what apply uses), and the search's files
    (study, front plot ``front.png``) go to ``search_dir``.
    """

    model_path: str  # local folder or .gguf file (already downloaded)
    source: ModelSource  # what the artifact names as its model (the Hub id, not the cache path)
    prompts: PromptLists  # with what was read for each side, which the artifact records
    out: str
    options: ComputeOptions = field(default_factory=ComputeOptions)
    seconds: int = 60
    search_trials: int = 0
    search_dir: str | None = None
    search_tokens: int = 24

    def run(self) -> DirectionMetadata:
        model, tokenizer, _ = load_model(self.model_path, device_map=device_map())
        try:
            if self.search_trials > 0:
                artifact = self._search(model, tokenizer)
            else:
                artifact = compute(model, tokenizer, self.source, self.prompts, options=self.options)
        finally:
            del model
            _free_gpu()
        with staged_output(self.out, overwrite=True, kind="directions") as tmp:
            artifact.save(tmp)
        return artifact.metadata

    def _search(self, model: torch.nn.Module, tokenizer: object):
        from forge_hub.abliterate.search import SearchOptions, plot_front

        folder = Path(self.search_dir or Path(self.out).parent / "search")
        shutil.rmtree(folder, ignore_errors=True)  # a new compute is a new study, on new directions
        folder.mkdir(parents=True)
        search = SearchOptions(trials=self.search_trials, storage=folder / "study.db",
                               max_new_tokens=self.search_tokens, system_prompt=self.options.system_prompt)
        outcome = optimize(model, tokenizer, self.source, self.prompts, options=self.options, search=search)
        plot_front(outcome.study, folder / "front.png", outcome.chosen)
        return outcome.artifact


@dataclass
class EvaluateJob:
    """Before/after evaluation; the results JSON is written to ``out`` and returned."""

    original: str
    abliterated: str
    harmful: list[str]
    harmless: list[str]
    out: str
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    model_name: str = "abliterated"
    reference_name: str = "original"
    prompt_sources: dict[str, str] = field(default_factory=dict)
    seconds: int = 60
    capability: CapabilitySettings | None = None  # lm-eval tasks on both models
    xstest: XSTestPrompts | None = None  # over-refusal on XSTest's safe prompts, by type

    def run(self) -> EvaluationResults:
        reference, tokenizer = loaded_models.get(self.original)
        model, _ = loaded_models.get(self.abliterated)
        result = evaluate(model, tokenizer, self.harmful, self.harmless, reference=reference, settings=self.settings,
                          model_name=self.model_name, reference_name=self.reference_name,
                          prompt_sources=self.prompt_sources, capability=self.capability, xstest=self.xstest)
        write_results(result, self.out)
        return result


@dataclass
class ChatJob:
    """One turn: the same conversation so far, answered by each model (greedy, so repeatable)."""

    original: str
    abliterated: str
    original_messages: list[dict[str, str]]
    abliterated_messages: list[dict[str, str]]
    max_new_tokens: int = 128
    seconds: int = 60

    def stream(self) -> Iterator[tuple[str, str | None]]:
        """(original's answer so far, abliterated's answer so far or None before it starts): the
        original answers first; the last item holds both whole answers."""
        before = ""
        for before in self._answer(self.original, self.original_messages):
            yield before, None
        for after in self._answer(self.abliterated, self.abliterated_messages):
            yield before, after

    def run(self) -> tuple[str, str]:
        final = deque(self.stream(), maxlen=1)
        before, after = final[0] if final else ("", None)
        return before, after or ""

    def _answer(self, path: str, messages: list[dict[str, str]]) -> Iterator[str]:
        model, tokenizer = loaded_models.get(path)
        return chat_stream(model, tokenizer, messages, max_new_tokens=self.max_new_tokens)


def _free_gpu() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
