"""The refusal prompt dataset as forge-hub uses it: build it, publish it, read one side of it.

Example::

    counts = build_dataset("refusal-prompts")                    # every source, Hub repo layout
    push_dataset("refusal-prompts", "my-org/refusal-prompts")    # one commit
    harmful = load_side("harmful", n=128, seed=0)                # default dataset, train split

The builder itself (sources, normalisation, deduplication, splits) is
``datasets_builders/forge_prompts.py``; this module runs it, writes what it produces the way the
Hub expects (parquet per config and split under ``data/`` plus a card with a ``configs:``
block), and reads it back through ``datasets.load_dataset`` exactly as other projects do.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import HubError, PromptError
from .prompts import builtin_prompts, deduplicate
from .staging import staged_output

# The dataset compute and run read when no --harmful/--harmless is given. Override it with
# --prompts-dataset (a Hub id or a folder written by `forge-hub datasets build`) or this variable.
DEFAULT_DATASET = "forge-hub/refusal-prompts"
DATASET_ENV = "FORGE_HUB_PROMPTS_DATASET"
# Prompts per side drawn from the dataset when no --n-prompts is given: the harmless side holds
# tens of thousands of instructions, far more than a direction needs.
DEFAULT_SAMPLE = 128
SIDES = ("harmful", "harmless")
SPLIT_NAMES = ("train", "validation", "test")

# Datasets found unavailable in this process: announced once, and not retried for the other side
# (an unreachable Hub costs several retries each time).
_unavailable: set[str] = set()


def default_dataset() -> str:
    """The prompt dataset to use when none is named: ``$FORGE_HUB_PROMPTS_DATASET`` or the default."""
    return os.environ.get(DATASET_ENV) or DEFAULT_DATASET


def build_dataset(out: str | Path, sources: Sequence[str] | None = None,
                  urls: Mapping[str, str | Sequence[str]] | None = None, overwrite: bool = False,
                  repo_id: str | None = None, progress: bool = True) -> dict[str, dict[str, int]]:
    """Build the dataset into ``out`` in the Hub repo layout; returns {config: {split: rows}}.

    ``sources`` picks sources by name or family (default: all); ``urls`` maps a source name to a
    URL or local file (or a list of them) replacing its public URL. ``repo_id`` is the id the
    card's examples show. The folder appears only once complete.
    """
    from datasets_builders.card import data_path, render_card
    from datasets_builders.forge_prompts import ForgePrompts, check_urls, select_sources

    chosen = select_sources(sources)
    for side in SIDES:
        if not any(s.side == side for s in chosen):
            raise PromptError(f"no {side} source selected", "add one, e.g. --sources curated (both sides)")
    overrides = check_urls(dict(urls or {}))
    configs = list(SIDES) + [s.name for s in chosen]
    counts: dict[str, dict[str, int]] = {}
    with staged_output(out, overwrite) as tmp, _datasets_bars_off(), \
            tempfile.TemporaryDirectory(prefix="forge-prompts-cache-") as cache:
        from tqdm.auto import tqdm

        for config in tqdm(configs, desc="building configs", unit="config", disable=not progress):
            # a fresh cache per build: source files may change under the same URL or path
            builder = ForgePrompts(config_name=config, cache_dir=cache, urls=overrides or None,
                                   sources=list(sources) if sources and config in SIDES else None)
            builder.download_and_prepare()
            counts[config] = {}
            for split, part in builder.as_dataset().items():
                target = tmp / data_path(config, split)
                target.parent.mkdir(parents=True, exist_ok=True)
                part.to_parquet(str(target))
                counts[config][split] = len(part)
        (tmp / "README.md").write_text(render_card(counts, repo_id or DEFAULT_DATASET), encoding="utf-8")
    return counts


def push_dataset(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                 endpoint: str | None = None, commit_message: str | None = None) -> str:
    """Publish a built folder to the Hub dataset repo ``repo_id`` in one commit; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or the cached ``hf auth login``; it is sent to
    the Hub only, never printed. ``endpoint`` overrides the Hub URL (tests use a local server).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "data").is_dir():
        raise PromptError(f"{folder} is not a built prompt dataset (no README.md and data/)",
                          "build it first with `forge-hub datasets build --out DIR`")
    api = HfApi(endpoint=endpoint, token=check_push(repo_id, token))
    message = commit_message or "Upload the refusal prompt dataset (forge-hub datasets build)"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, commit_message=message)
    except OfflineModeIsEnabled as exc:
        raise HubError("cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to publish") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hints = {401: "the token was rejected: log in again with `hf auth login` or set a valid HF_TOKEN",
                 403: f"the token cannot write to {repo_id}: use a write token with access to that namespace"}
        raise HubError(f"the Hub refused the upload to {repo_id} (HTTP {status}): {str(exc).splitlines()[0]}",
                       hints.get(status, "check the repo id and your access to it")) from exc
    except Exception as exc:  # connection failures come as several httpx and OS error types
        raise HubError(f"could not push to {repo_id}: {type(exc).__name__}: {exc}",
                       "check the network connection to the Hub") from exc
    return info.commit_url


def check_push(repo_id: str, token: str | None = None) -> str:
    """The token to push with, after checking the repo id; run before a long build, not after it."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"invalid Hub repo id {repo_id!r}: {exc}", "write it as ORG/NAME, e.g. my-org/refusal-prompts") \
            from exc
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token found", "log in with `hf auth login`, or set HF_TOKEN to a write token")
    return token


def load_side(side: str, dataset: str | None = None, split: str = "train", n: int | None = None, seed: int = 0,
              sources: Sequence[str] | None = None) -> list[str]:
    """One side's prompts from the prompt dataset (Hub id or local folder), optionally sampled.

    ``sources`` keeps rows whose ``source`` is one of these names (a family such as
    ``jailbreakbench`` or a list name such as ``jailbreakbench-harmless``). ``n`` draws a seeded
    sample. Offline with no cached copy (or when the default dataset is not published), the
    curated lists shipped with forge-hub stand in, the same split of them, with a notice printed
    once per dataset.
    """
    from datasets_builders.forge_prompts import select_sources

    if side not in SIDES:
        raise PromptError(f"unknown side {side!r}", f"use one of {', '.join(SIDES)}")
    if split not in SPLIT_NAMES:
        raise PromptError(f"unknown split {split!r}", f"use one of {', '.join(SPLIT_NAMES)}")
    wanted = None if not sources else {s.strip() for s in sources if s.strip()}
    if wanted:
        select_sources(wanted)  # unknown names fail here, before any loading
    dataset = dataset or default_dataset()
    rows = _read_rows(dataset, side, split)
    if rows is None:
        rows = _curated_rows(dataset, side, split, wanted)
    if wanted:
        rows = [r for r in rows if r["source"] in wanted or f"{r['source']}-{side}" in wanted]
    prompts = deduplicate(r["prompt"] for r in rows)
    if not prompts:
        picked = f" from {', '.join(sorted(wanted))}" if wanted else ""
        raise PromptError(f"no {side} prompts in {dataset} ({split} split){picked}",
                          "pick other --sources or another --split")
    if n is not None and n < len(prompts):
        prompts = random.Random(seed).sample(prompts, n)
    return prompts


def _read_rows(dataset: str, side: str, split: str) -> list[dict] | None:
    """Rows of one config and split, or None where the curated fallback applies."""
    from datasets.exceptions import DatasetNotFoundError

    if dataset in _unavailable:
        return None
    local = Path(dataset).expanduser()
    if local.exists() or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        if not local.is_dir():
            raise PromptError(f"prompt dataset folder {dataset} does not exist",
                              "build one with `forge-hub datasets build --out DIR`, or give a Hub id")
        return _load(str(local), side, split, dataset)
    try:
        return _load(dataset, side, split, dataset)
    except ConnectionError:  # offline mode, or the Hub unreachable, and nothing cached
        _notice(dataset, "the Hub cannot be reached and there is no cached copy")
    except DatasetNotFoundError as exc:
        if dataset != DEFAULT_DATASET:
            raise PromptError(f"prompt dataset {dataset} not found on the Hub ({exc})",
                              "check the id, log in for a private dataset, or give a local folder") from exc
        _notice(dataset, "it is not on the Hub")
    return None


def _load(path: str, side: str, split: str, name: str) -> list[dict]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        ds = datasets.load_dataset(path, side, split=split)
    except (ConnectionError, DatasetNotFoundError):
        raise
    except ValueError as exc:  # unknown config or split
        raise PromptError(f"prompt dataset {name}: {exc}",
                          f"it needs configs {' and '.join(SIDES)} with splits {', '.join(SPLIT_NAMES)}") from exc
    except Exception as exc:  # datasets raises many types for unreadable folders
        raise PromptError(f"could not load prompt dataset {name}: {type(exc).__name__}: {exc}",
                          "rebuild it with `forge-hub datasets build --out DIR`") from exc
    missing = {"prompt", "source"} - set(ds.column_names)
    if missing:
        raise PromptError(f"prompt dataset {name} has no column {', '.join(sorted(missing))}",
                          "use a dataset built by `forge-hub datasets build`, or --harmful/--harmless files")
    return ds.select_columns(["prompt", "source"]).to_list()


def _curated_rows(dataset: str, side: str, split: str, wanted: set[str] | None) -> list[dict]:
    """The curated list of one side, restricted to ``split`` as the built dataset would hold it."""
    from datasets_builders.forge_prompts import split_of

    if wanted and not wanted & {"curated", f"curated-{side}"}:
        raise PromptError(f"prompt dataset {dataset} is unavailable and the built-in lists only hold the "
                          f"'curated' source, not {', '.join(sorted(wanted))}",
                          "build the dataset with `forge-hub datasets build --out DIR` and pass --prompts-dataset DIR")
    return [{"prompt": p, "source": "curated"} for p in builtin_prompts(side) if split_of(p) == split]


def _notice(dataset: str, reason: str) -> None:
    _unavailable.add(dataset)
    print(f"note: prompt dataset {dataset} is unavailable ({reason}); using the curated lists shipped with "
          f"forge-hub instead. For every source: `forge-hub datasets build --out DIR`, then --prompts-dataset DIR.",
          file=sys.stderr)


@contextmanager
def _datasets_bars_off() -> Iterator[None]:
    """datasets draws several bars per config and split; one bar over the configs says more."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
