"""One side of the refusal prompt dataset, read the way other projects read it: through
``datasets.load_dataset`` on a Hub id or on a folder built by :mod:`forge_hub.hub.datasets`.

Example::

    harmful = load_side("harmful", n=128, seed=0)                # default dataset, train split

The builder itself (sources, normalisation, deduplication, splits) is
``datasets_builders/forge_prompts.py``.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from forge_hub.errors import PromptError
from forge_hub.prompts.sources import builtin_prompts, deduplicate

# The dataset compute and run read for the sides not given as sources. Override it with the
# prompts_dataset setting (a Hub id or a folder built by forge_hub.hub.datasets) or this variable.
DEFAULT_DATASET = "forge-hub/refusal-prompts"
DATASET_ENV = "FORGE_HUB_PROMPTS_DATASET"
# Prompts per side drawn from the dataset when no sample size is given: the harmless side holds
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


def load_side(side: str, *, dataset: str | None = None, split: str = "train", n: int | None = None, seed: int = 0,
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
        with source_errors():
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
                          "pick other {sources} or another {split}", input="sources")
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
                              "build one (forge-hub datasets build), or give a Hub id", input="prompts_dataset")
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
                          "rebuild it (forge-hub datasets build)", input="prompts_dataset") from exc
    missing = {"prompt", "source"} - set(ds.column_names)
    if missing:
        raise PromptError(f"prompt dataset {name} has no column {', '.join(sorted(missing))}",
                          "use a dataset built by forge-hub datasets build, or give {harmful} and {harmless}",
                          input="prompts_dataset")
    return ds.select_columns(["prompt", "source"]).to_list()


def _curated_rows(dataset: str, side: str, split: str, wanted: set[str] | None) -> list[dict]:
    """The curated list of one side, restricted to ``split`` as the built dataset would hold it."""
    from datasets_builders.forge_prompts import split_of

    if wanted and not wanted & {"curated", f"curated-{side}"}:
        raise PromptError(f"prompt dataset {dataset} is unavailable and the built-in lists only hold the "
                          f"'curated' source, not {', '.join(sorted(wanted))}",
                          "build the dataset (forge-hub datasets build) and give its folder as {prompts_dataset}",
                          input="sources")
    return [{"prompt": p, "source": "curated"} for p in builtin_prompts(side) if split_of(p) == split]


def _notice(dataset: str, reason: str) -> None:
    _unavailable.add(dataset)
    print(f"note: prompt dataset {dataset} is unavailable ({reason}); using the curated lists shipped with "
          f"forge-hub instead. For every source: build the dataset (forge-hub datasets build) and use its folder.",
          file=sys.stderr)


@contextmanager
def source_errors() -> Iterator[None]:
    """The builder's own errors (it imports nothing from forge-hub) as :class:`PromptError`."""
    from datasets_builders.forge_prompts import SourceError

    try:
        yield
    except SourceError as exc:
        raise PromptError(exc.message, exc.hint, input="sources") from exc
