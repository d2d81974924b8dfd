"""Building the refusal prompt dataset and publishing it on the Hub.

Example::

    counts = build_dataset("refusal-prompts")                    # every source, Hub repo layout
    push_dataset("refusal-prompts", "my-org/refusal-prompts")    # one commit

The builder itself (sources, normalisation, deduplication, splits) is
``datasets_builders/forge_prompts.py``; this module runs it and writes what it produces the way
the Hub expects (parquet per config and split under ``data/`` plus a card with a ``configs:``
block), so that ``datasets.load_dataset`` reads it exactly as other projects do.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from forge_hub.errors import PromptError
from forge_hub.hub.common import check_repo_id, create_repo, hub_errors, require_token
from forge_hub.outputs.staging import OUTPUT_MARKER, check_output, staged_output
from forge_hub.prompts.dataset import SIDES, source_errors

EXAMPLE_REPO = "your-name/refusal-prompts"  # the id the card's examples show when no repo is named


def build_dataset(out: str | Path, *, sources: Sequence[str] | None = None,
                  urls: Mapping[str, str | Sequence[str]] | None = None, overwrite: bool = False,
                  repo_id: str | None = None, progress: bool = True) -> dict[str, dict[str, int]]:
    """Build the dataset into ``out`` in the Hub repo layout; returns {config: {split: rows}}.

    ``sources`` picks sources by name or family (default: all); ``urls`` maps a source name to a
    URL or local file (or a list of them) replacing its public URL. ``repo_id`` is the id the
    card's examples show. The folder appears only once complete.
    """
    from datasets_builders.card import data_path, render_card
    from datasets_builders.forge_prompts import ForgePrompts, check_urls, select_sources

    with source_errors():
        chosen = select_sources(sources)
        overrides = check_urls(dict(urls or {}))
    for side in SIDES:
        if not any(s.side == side for s in chosen):
            raise PromptError(f"no {side} source selected", "add one to {sources}, e.g. curated (both sides)",
                              input="sources")
    configs = list(SIDES) + [s.name for s in chosen]
    counts: dict[str, dict[str, int]] = {}
    check_output(out, overwrite=overwrite, kind="dataset")
    with staged_output(out, overwrite, kind="dataset") as tmp, _datasets_bars_off(), \
            tempfile.TemporaryDirectory(prefix="forge-prompts-cache-") as cache:
        from tqdm.auto import tqdm

        for config in tqdm(configs, desc="building configs", unit="config", disable=not progress):
            # a fresh cache per build: source files may change under the same URL or path
            builder = ForgePrompts(config_name=config, cache_dir=cache, urls=overrides or None,
                                   sources=list(sources) if sources and config in SIDES else None)
            with source_errors():
                builder.download_and_prepare()
            counts[config] = {}
            for split, part in builder.as_dataset().items():
                target = tmp / data_path(config, split)
                target.parent.mkdir(parents=True, exist_ok=True)
                part.to_parquet(str(target))
                counts[config][split] = len(part)
        (tmp / "README.md").write_text(render_card(counts, repo_id or EXAMPLE_REPO), encoding="utf-8")
    return counts


def push_dataset(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                 endpoint: str | None = None, commit_message: str | None = None) -> str:
    """Publish a built folder to the Hub dataset repo ``repo_id`` in one commit; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or the cached ``hf auth login``; it is sent to
    the Hub only, never printed. ``endpoint`` overrides the Hub URL (tests use a local server).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "data").is_dir():
        raise PromptError(f"{folder} is not a built prompt dataset (no README.md and data/)",
                          "build it first (forge-hub datasets build)", input="folder")
    api = HfApi(endpoint=endpoint, token=check_push(repo_id, token))
    message = commit_message or "Upload the refusal prompt dataset (forge-hub datasets build)"
    with hub_errors(repo_id):
        create_repo(api, repo_id, repo_type="dataset", private=private or None, exist_ok=True, exists_fix="")
        info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, commit_message=message,
                                 ignore_patterns=[OUTPUT_MARKER])
    return info.commit_url


def check_push(repo_id: str, token: str | None = None) -> str:
    """The token to push with, after checking the repo id; run before a long build, not after it."""
    check_repo_id(repo_id, input="push_to", example="my-org/refusal-prompts")
    return require_token(token)


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
