"""What a hosted front end (the Gradio Space) decides before it runs the pipeline: is this model
usable here, does it fit the hardware, how much GPU time to ask ZeroGPU for; and before a push,
which repo it goes to.

These checks run on the CPU, from metadata only (the Hub's safetensors index, or the headers of
local files), so a bad id, a gated or missing repo or a model far too large fails in a second,
before any download and before any GPU time is spent.

Example::

    info = check_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_local=False)
    check_fits(info, copies=2)                      # evaluation holds the original and the edit
    seconds = compute_seconds(info, prompts_per_side=64)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forge_hub.errors import ModelLoadError, PromptError, SettingsError
from forge_hub.hub.common import http_status, repo_id_problem
from forge_hub.model.loading import ModelSource, resolve_source

# ZeroGPU gives each task a slice of an H200: 74.6 GB (69.5 GiB) by the `spaces` package's own
# table. Keep about 6 GB of it for activations, the KV cache and the CUDA context.
ZEROGPU_MEMORY_BYTES = 64 * 2**30
MAX_MEMORY_ENV = "FORGE_HUB_SPACE_MAX_GB"  # override the memory budget (GB) on any hardware
MAX_SECONDS_ENV = "FORGE_HUB_SPACE_MAX_GPU_SECONDS"
DEFAULT_MAX_SECONDS = 600
MIN_SECONDS = 30
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
               "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

# Throughput assumptions behind the GPU-time estimates. They are deliberately pessimistic for an
# H200 slice: asking for too little time aborts the task; asking for more only costs queue priority.
LOAD_BYTES_PER_SECOND = 1.0e9  # local disk -> GPU, including transformers' set-up
PREFILL_FLOPS = 5.0e13  # sustained for batched prompt passes
DECODE_BYTES_PER_SECOND = 1.5e12  # one greedy step reads every weight once
STEP_OVERHEAD_SECONDS = 0.03  # kernel launches and Python per forward pass, whatever the size
PROMPT_TOKENS = 96  # chat template + an instruction, generously
SAFETY_FACTOR = 1.5
TASK_OVERHEAD_SECONDS = 15  # process start, CUDA context, moving results back
# lm-eval tasks (the evaluate step's capability tasks), as rough upper figures: answer choices per
# document, prompt tokens of a few-shot request, tokens a generative task writes, and the seconds to
# fetch and prepare its data inside the GPU task (MMLU is 57 subsets).
CHOICES_PER_DOCUMENT = 4
TASK_PROMPT_TOKENS = 768
GENERATIVE_TASKS = ("gsm8k",)
GENERATED_TOKENS = 256
TASK_DATA_SECONDS = {"mmlu": 120, "default": 30}
FULL_TASK_DOCUMENTS = 14_042  # no limit: the largest default task (MMLU's test set)


@dataclass(frozen=True)
class ModelInfo:
    """A model checked to be loadable here, and its size from metadata."""

    source: ModelSource
    parameters: int
    checkpoint_bytes: int  # the weights as stored (for GGUF: as they will be dequantized)

    @property
    def label(self) -> str:
        return self.source.id if self.source.kind == "hub" else Path(self.source.id).name

    @property
    def size_label(self) -> str:
        """``135 M parameters``, ``7.6 B parameters``, ``20,352 parameters``."""
        n = self.parameters
        if n >= 1e9:
            return f"{n / 1e9:.1f} B parameters"
        return f"{n / 1e6:,.0f} M parameters" if n >= 1e6 else f"{n:,} parameters"

    def to_dict(self) -> dict:
        return {"kind": self.source.kind, "id": self.source.id, "revision": self.source.revision,
                "parameters": self.parameters, "checkpoint_bytes": self.checkpoint_bytes}

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        return cls(ModelSource(data["kind"], data["id"], data.get("revision")), int(data["parameters"]),
                   int(data["checkpoint_bytes"]))


def on_space() -> bool:
    """True when running on Hugging Face Spaces (the platform sets SYSTEM=spaces and SPACE_ID;
    the same test Gradio uses to decide between real and mocked OAuth)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


LOCAL_FILES_ENV = "FORGE_HUB_SPACE_ALLOW_LOCAL"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def local_files_allowed() -> bool:
    """May visitors name this machine's files (models, prompt datasets) and push with its login?
    Only off a Space, and only when the app listens on this machine alone (Gradio's
    GRADIO_SERVER_NAME, 127.0.0.1 by default) or the owner set FORGE_HUB_SPACE_ALLOW_LOCAL=1."""
    if on_space():
        return False
    if os.environ.get(LOCAL_FILES_ENV, "").lower() in ("1", "true", "yes"):
        return True
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1") in _LOOPBACK


def on_zerogpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true", "yes")


def check_model(text: str, *, revision: str | None = None, allow_local: bool = True,
                token: str | None = None) -> ModelInfo:
    """Validate a model reference and read its size, without downloading weights.

    Local folders and ``.gguf`` files are accepted only with ``allow_local`` (never on a public
    Space: a visitor must not be able to make the server read its own files). Raises
    :class:`ModelLoadError` with a fix for a malformed id, a missing or gated repo, a revision
    that does not exist, or a repo without safetensors weights.
    """
    text = (text or "").strip()
    if not text:
        raise ModelLoadError("no model given", "enter a Hub model id such as HuggingFaceTB/SmolLM2-135M-Instruct")
    looks_local = text.startswith((".", "/", "~")) or text.endswith(".gguf") or Path(text).expanduser().exists()
    if looks_local and not allow_local:
        raise ModelLoadError(f"{text!r} is a local path, and this Space only loads models from the Hub",
                             "enter a Hub model id (owner/name), or run the app on your own machine for local files")
    source = resolve_source(text, revision or None)
    if source.kind == "folder":
        return _folder_info(source)
    if source.kind == "gguf":
        return _gguf_info(source)
    return _hub_info(source, token)


def check_dataset(text: str | None, allow_local: bool = True) -> str | None:
    """The prompt dataset field: None for the default, a Hub id, or (only with ``allow_local``)
    a folder built by ``forge-hub datasets build``."""
    text = (text or "").strip()
    if not text:
        return None
    local = text.startswith((".", "/", "~")) or text.count("/") > 1 or Path(text).expanduser().exists()
    if local and not allow_local:
        raise PromptError(f"{text!r} is a local path, and this Space only reads prompt datasets from the Hub",
                          "enter a Hub dataset id (owner/name), or leave the field empty for the default",
                          input="dataset")
    if not allow_local and repo_id_problem(text):
        # a bare name such as `json` or `csv` would make datasets read the server's own files
        raise PromptError(f"{text!r} is not a Hub dataset id: {repo_id_problem(text)}",
                          "enter a Hub dataset id (owner/name), or leave the field empty for the default",
                          input="dataset")
    return text


def _hub_info(source: ModelSource, token: str | None) -> ModelInfo:
    from huggingface_hub import HfApi, auth_check
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = source.id
    problem = repo_id_problem(repo_id)
    if problem:
        raise ModelLoadError(f"{repo_id!r} is not a valid Hub model id: {problem}",
                             "write it as owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct", input="model")
    try:
        info = HfApi().model_info(repo_id, revision=source.revision, expand=["safetensors", "gated"], token=token)
        if info.gated:
            auth_check(repo_id, token=token)
    except GatedRepoError as exc:
        raise ModelLoadError(f"{repo_id} is gated, and this app has no access to it",
                             "accept its conditions on the model page and run forge-hub with your own token, "
                             "or pick an ungated model") from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"{repo_id} has no revision {source.revision!r}",
                             "leave the revision empty for the default branch, or give an existing branch, tag "
                             "or commit") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(f"model {repo_id} was not found on the Hub (or it is private)",
                             "check the spelling of owner/name on huggingface.co") from exc
    except OfflineModeIsEnabled as exc:
        raise ModelLoadError(f"cannot look up {repo_id}: HF_HUB_OFFLINE is set",
                             "unset HF_HUB_OFFLINE, or give a local model folder") from exc
    except HfHubHTTPError as exc:
        status = http_status(exc)
        if status == 404:
            raise ModelLoadError(f"model {repo_id} was not found on the Hub (or it is private)",
                                 "check the spelling of owner/name on huggingface.co") from exc
        raise ModelLoadError(f"the Hub refused to describe {repo_id} (HTTP {status})",
                             "try again later, or check the id") from exc
    except Exception as exc:  # connection failures arrive as several httpx and OS error types
        raise ModelLoadError(f"could not reach the Hub to look up {repo_id}: {type(exc).__name__}: {exc}",
                             "check the network connection, or give a local model folder") from exc
    if not info.safetensors:
        raise ModelLoadError(f"{repo_id} has no safetensors weights",
                             "forge-hub loads safetensors only (pickle checkpoints are unsafe); pick a repo "
                             "that has *.safetensors files")
    parameters = int(info.safetensors.total)
    size = sum(count * DTYPE_BYTES.get(dtype, 4) for dtype, count in info.safetensors.parameters.items())
    return _with_config_size(ModelInfo(source, parameters, size), _hub_config(source, token))


def _folder_info(source: ModelSource) -> ModelInfo:
    from forge_hub.model.files import read_header, weight_shards

    parameters = size = 0
    for shard in weight_shards(Path(source.id)):
        _, header = read_header(shard)
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(entry["shape"])
            parameters += count
            size += count * DTYPE_BYTES.get(entry["dtype"], 4)
    from forge_hub.model.files import read_config

    return _with_config_size(ModelInfo(source, parameters, size), read_config(Path(source.id)))


def _gguf_info(source: ModelSource) -> ModelInfo:
    from gguf import GGUFReader

    try:
        parameters = sum(int(t.n_elements) for t in GGUFReader(source.id).tensors)
    except Exception as exc:
        raise ModelLoadError(f"{source.id} is not a readable GGUF file: {exc}", "check the file") from exc
    return ModelInfo(source, parameters, parameters * 4)  # transformers dequantizes to float32


def config_parameters(config: dict) -> int | None:
    """The parameters a decoder's config describes (embeddings, attention, MLP or experts per layer):
    a model's size as it will be loaded, whatever its weight files claim. None when the config
    lacks the sizes."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config

    def get(*names: str) -> int | None:
        for name in names:
            value = text.get(name)
            if isinstance(value, int) and value > 0:
                return value
        return None

    hidden, layers, vocab = get("hidden_size", "n_embd", "d_model"), get("num_hidden_layers", "n_layer"), \
        get("vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = get("num_attention_heads", "n_head") or 1
    head_dim = get("head_dim") or hidden // heads
    kv_heads = get("num_key_value_heads") or heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    intermediate = get("intermediate_size", "n_inner") or 4 * hidden
    experts = get("num_experts", "num_local_experts", "n_routed_experts") or 0
    mlp = 3 * hidden * (experts * (get("moe_intermediate_size") or intermediate) if experts else intermediate)
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", True)))
    return vocab * hidden * (1 if tied else 2) + layers * (attention + mlp)


def _with_config_size(info: ModelInfo, config: dict | None) -> ModelInfo:
    """The larger of the two sizes: the weight files' and the config's (a config that declares a
    huge model over a few stored weights must not pass the memory check)."""
    declared = config_parameters(config) if config else None
    if not declared or declared <= info.parameters:
        return info
    per_parameter = info.checkpoint_bytes / info.parameters if info.parameters else 2
    return ModelInfo(info.source, declared, int(declared * max(per_parameter, 1)))


def _hub_config(source: ModelSource, token: str | None) -> dict | None:
    """config.json of a Hub model (a few kB), None when it cannot be had: the model's metadata then
    decides alone (and the model could not be loaded anyway)."""
    import json

    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(source.id, "config.json", revision=source.revision, token=token)
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - offline, gated, missing: the metadata check still stands
        return None
    return config if isinstance(config, dict) else None


def local_copy(info: ModelInfo) -> Path:
    """The model on local disk: downloaded (weights, config, tokenizer) for a Hub id, as is
    otherwise. Runs on the CPU before a GPU task, so GPU time is not spent downloading."""
    from forge_hub.model.loading import download_checkpoint

    return download_checkpoint(info.source) if info.source.kind == "hub" else Path(info.source.id)


def num_layers(path: Path) -> int | None:
    """Depth of a local checkpoint folder from its config, None for a GGUF file."""
    from forge_hub.outputs.checkpoint import checkpoint_architecture

    return checkpoint_architecture(path).num_layers if path.is_dir() else None


def memory_budget() -> int:
    """Bytes of accelerator memory (or RAM, on a CPU-only machine) one task may fill with weights."""
    override = os.environ.get(MAX_MEMORY_ENV)
    if override:
        return int(float(override) * 1e9)
    if on_zerogpu():
        return ZEROGPU_MEMORY_BYTES  # never touch CUDA in the main process of a ZeroGPU Space
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory * 0.9)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.7)


def loaded_bytes(info: ModelInfo, on_gpu: bool) -> int:
    """Bytes the weights take once loaded: the checkpoint dtype on a GPU, float32 on a CPU
    (what ``load_model(dtype="auto")`` does)."""
    return info.checkpoint_bytes if on_gpu else info.parameters * 4


def check_fits(info: ModelInfo, *, copies: int = 2, budget: int | None = None, on_gpu: bool | None = None) -> None:
    """Raise a clear error when ``copies`` loaded copies of the model (the original and the
    abliterated one, side by side for evaluation and chat) would not fit in memory."""
    from forge_hub.units import human_size

    if on_gpu is None:
        on_gpu = on_zerogpu() or _cuda_available()
    budget = memory_budget() if budget is None else budget
    needed = int(loaded_bytes(info, on_gpu) * copies * 1.2)
    if needed > budget:
        where = "this Space's GPU" if on_space() else ("this GPU" if on_gpu else "this machine's memory")
        raise ModelLoadError(
            f"{info.label} is too large for {where}: it has {info.size_label}, and {copies} loaded copies need "
            f"about {human_size(needed)}, more than the {human_size(budget)} available",
            "pick a smaller model, or run forge-hub on bigger hardware (the CLI streams the edit without "
            "loading the model twice)")


def compute_seconds(info: ModelInfo, prompts_per_side: int, *, num_layers: int | None = None,
                    held_out_fraction: float = 0.25, batch_size: int = 16, search_trials: int = 0,
                    search_tokens: int = 24) -> int:
    """GPU seconds to ask for the compute step: load once, one pass over both prompt lists,
    then two held-out passes per candidate layer (about 65% of the depth) plus the baseline (not for
    a search, which scans no layer), then the final choice's measured settings;
    with ``search_trials``, each trial answers the held-out harmful prompts and takes one KL pass
    over the held-out harmless ones. Raises ValueError, naming how many trials would fit, when
    the search cannot finish within one task's time."""
    from forge_hub.abliterate.search import SearchOptions, needs_layer_scan

    layers = num_layers or _guess_layers(info.parameters)
    held_out = max(1, round(prompts_per_side * held_out_fraction))
    # a search with its defaults edits with each layer's own direction and scans no layer
    candidates = 0 if search_trials > 0 and not needs_layer_scan(SearchOptions()) else max(1, round(0.65 * layers))
    prompts = 2 * (prompts_per_side - held_out) + (2 * held_out * (candidates + 1) if candidates else 0)
    seconds = _load_seconds(info) + _prefill_seconds(info, prompts, batch_size)
    from forge_hub.pipeline import ComputeOptions
    from forge_hub.prompts.sources import load_prompts

    # the final choice: each shortlisted setting answers the choice's harmful prompts (XSTest's 175
    # unsafe ones by default) and takes one KL pass over all the harmless ones; a search skips it
    defaults = ComputeOptions()
    if defaults.choice_tokens and search_trials <= 0:
        settings_measured = defaults.shortlist * len(defaults.variations)
        choice = len(load_prompts(defaults.choice_harmful)) if defaults.choice_harmful else held_out
        seconds += settings_measured * (math.ceil(choice / batch_size) * defaults.choice_tokens * _step_seconds(info)
                                        + _prefill_seconds(info, choice + prompts_per_side, batch_size))
    if search_trials > 0:
        seconds += _refine_seconds(info, prompts_per_side - held_out)
        per_trial = (math.ceil(held_out / batch_size) * search_tokens * _step_seconds(info)
                     + _prefill_seconds(info, 2 * held_out, batch_size))
        room = (max_seconds() - TASK_OVERHEAD_SECONDS) / SAFETY_FACTOR - seconds
        if search_trials * per_trial > room:
            raise SettingsError(f"{search_trials} search trials do not fit in the {max_seconds()}s of GPU time one "
                                "task may use here",
                                f"choose at most {max(0, int(room // per_trial))} trials in {{search_trials}}, or "
                                "fewer prompts per side", input="search_trials")
        seconds += search_trials * per_trial
    return _bounded(seconds)


def _refine_seconds(info: ModelInfo, harmful: int) -> float:
    """A search's direction refinement: compliant answers to the harmful direction prompts, then
    each step a forward and backward pass (about three forwards) over a batch of each side."""
    from forge_hub.abliterate.refine import RefineOptions
    from forge_hub.abliterate.search import SearchOptions

    refine = RefineOptions(steps=SearchOptions().refine_steps)
    if refine.steps <= 0:
        return 0.0
    harmful = min(harmful, refine.prompts_read)
    answers = math.ceil(harmful / 32) * refine.generated_tokens * _step_seconds(info) \
        + _prefill_seconds(info, harmful, 32)
    return answers + refine.steps * 3 * _prefill_seconds(info, 2 * refine.batch_size, 2 * refine.batch_size)


def evaluate_seconds(info: ModelInfo, prompts: int, max_new_tokens: int, *, batch_size: int = 16,
                     tasks: Sequence[str] = (), limit: int | None = None) -> int:
    """GPU seconds for the evaluation: two models load, each answers every prompt greedily, then
    a KL pass and a cross-entropy pass per model over the harmless half; and with ``tasks``, each
    lm-eval task on both models over ``limit`` documents (its data read inside the task too).
    Raises a :class:`SettingsError` naming a limit that fits when the tasks cannot finish in one
    task's time (asking for less would only abort them half way)."""
    batches = 2 * math.ceil(max(prompts, 1) / 2 / batch_size)  # harmful and harmless lists separately
    decode = 2 * batches * max_new_tokens * _step_seconds(info)
    prefill = _prefill_seconds(info, 2 * prompts + 2 * prompts, batch_size)
    seconds = 2 * _load_seconds(info) + decode + prefill
    if tasks:
        documents = limit or FULL_TASK_DOCUMENTS
        per_document = sum(_task_seconds(info, task, 1, batch_size) for task in tasks)
        fixed = sum(TASK_DATA_SECONDS.get(task, TASK_DATA_SECONDS["default"]) for task in tasks)
        room = (max_seconds() - TASK_OVERHEAD_SECONDS) / SAFETY_FACTOR - seconds - fixed
        if documents * per_document > room:
            fits = max(0, int(room // per_document)) if per_document > 0 else 0
            raise SettingsError(f"{len(tasks)} capability task(s) on {documents} documents each do not fit in the "
                                f"{max_seconds()}s of GPU time one task may use here",
                                f"choose at most {fits} documents per task in {{limit}}, or fewer tasks",
                                input="limit")
        seconds += fixed + documents * per_document
    return _bounded(seconds)


def _task_seconds(info: ModelInfo, task: str, documents: int, batch_size: int) -> float:
    """Both models on ``documents`` of one lm-eval task: generated answers for the generative tasks,
    one scored continuation per answer choice for the others (few-shot prompts are long)."""
    if task in GENERATIVE_TASKS:
        steps = 2 * documents / batch_size * GENERATED_TOKENS
        flops = 2 * info.parameters * TASK_PROMPT_TOKENS * 2 * documents
        return steps * _step_seconds(info) + flops / PREFILL_FLOPS
    requests = 2 * documents * CHOICES_PER_DOCUMENT
    return 2 * info.parameters * TASK_PROMPT_TOKENS * requests / PREFILL_FLOPS + requests / batch_size * \
        _step_seconds(info)


def chat_seconds(info: ModelInfo, max_new_tokens: int) -> int:
    """GPU seconds for one chat turn on both models (each loaded once, then one answer each)."""
    return _bounded(2 * _load_seconds(info) + 2 * max_new_tokens * _step_seconds(info))


def max_seconds() -> int:
    return int(os.environ.get(MAX_SECONDS_ENV, DEFAULT_MAX_SECONDS))


def _bounded(seconds: float) -> int:
    return int(min(max_seconds(), max(MIN_SECONDS, math.ceil(TASK_OVERHEAD_SECONDS + SAFETY_FACTOR * seconds))))


def _load_seconds(info: ModelInfo) -> float:
    return info.checkpoint_bytes / LOAD_BYTES_PER_SECOND


def _step_seconds(info: ModelInfo) -> float:
    return STEP_OVERHEAD_SECONDS + info.checkpoint_bytes / DECODE_BYTES_PER_SECOND


def _prefill_seconds(info: ModelInfo, prompts: int, batch_size: int) -> float:
    flops = 2 * info.parameters * PROMPT_TOKENS * prompts
    return flops / PREFILL_FLOPS + math.ceil(prompts / batch_size) * _step_seconds(info)


def _guess_layers(parameters: int) -> int:
    """Depth when no config is at hand (GGUF): 32 layers at 8 B, growing slowly with size."""
    return max(24, min(96, round(32 * (parameters / 8e9) ** 0.25)))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_repo_name(info: ModelInfo) -> str:
    """``owner/Model-Name`` or ``/path/model-folder`` -> ``Model-Name-abliterated``."""
    name = Path(info.source.id).stem if info.source.kind == "gguf" else info.source.id.rstrip("/").split("/")[-1]
    return f"{name}-abliterated"


def namespaces(token: str) -> tuple[str, list[str]]:
    """(user name, organisation names) the token belongs to, asked of the Hub.

    The token is sent to the Hub only; it is neither stored nor logged.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from forge_hub.errors import HubError

    try:
        me = HfApi().whoami(token=token, cache=False)
    except HfHubHTTPError as exc:
        status = http_status(exc)
        raise HubError(f"the Hub did not accept your login (HTTP {status})",
                       "log out and log in again with the button above") from exc
    except Exception as exc:
        raise HubError(f"could not reach the Hub to check your login: {type(exc).__name__}",
                       "try again in a moment") from exc
    return me["name"], [org["name"] for org in me.get("orgs") or [] if org.get("name")]


def target_repo(name: str, user: str, *, orgs: list[str] | tuple[str, ...] = (), default: str | None = None) -> str:
    """The repo to push to: ``name`` in the user's namespace, or ``org/name`` for one of their
    organisations; anything else is refused before an upload starts."""
    from forge_hub.errors import HubError

    name = (name or "").strip() or (default or "")
    if not name:
        raise HubError("no repository name given", "enter a name for the new model repo, e.g. my-model-abliterated")
    owner, _, rest = name.rpartition("/")
    owner = owner or user
    if owner not in (user, *orgs):
        raise HubError(f"you cannot push to the namespace {owner!r}",
                       f"use your own ({user}){' or one of ' + ', '.join(orgs) if orgs else ''}")
    repo_id = f"{owner}/{rest}"
    problem = repo_id_problem(repo_id)
    if problem:
        raise HubError(f"{repo_id!r} is not a valid repo id: {problem}",
                       "use letters, digits, '-', '_' and '.', e.g. my-model-abliterated", input="repo")
    return repo_id


def check_new_repo(repo_id: str, token: str, update: bool) -> None:
    """Refuse to write into an existing repo unless the user said so, in the words of the page
    (before any GGUF export or staging starts)."""
    from huggingface_hub import HfApi

    from forge_hub.errors import HubError

    if not update and HfApi().repo_exists(repo_id, token=token):
        raise HubError(f"{repo_id} already exists on the Hub",
                       "tick “Update the repo if it exists” to upload into it, or choose another name")
