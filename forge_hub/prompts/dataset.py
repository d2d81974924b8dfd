"""One side of a refusal prompt dataset, read the way other projects read it: through
``datasets.load_dataset`` on a Hub id or on a folder built by :mod:`forge_hub.hub.datasets`.

Example::

    harmful = load_side("harmful", dataset="my-org/refusal-prompts", n=128, seed=0)   # train split

Nothing is read from the Hub unless a dataset is named (as ``dataset``, the prompts_dataset
setting, or ``$FORGE_HUB_PROMPTS_DATASET``); without one, forge-hub uses the lists it ships
(:mod:`forge_hub.prompts.choice`). A named dataset that cannot be read is an error, never a silent
stand-in. The builder itself is ``datasets_builders/forge_prompts.py``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from forge_hub.errors import PromptError
from forge_hub.prompts.sources import deduplicate

DATASET_ENV = "FORGE_HUB_PROMPTS_DATASET"
SIDES = ("harmful", "harmless")
SPLIT_NAMES = ("train", "validation", "test")


def default_dataset() -> str | None:
    """The prompt dataset named by ``$FORGE_HUB_PROMPTS_DATASET``, if any."""
    return os.environ.get(DATASET_ENV) or None


def load_side(side: str, *, dataset: str, split: str = "train", n: int | None = None, seed: int = 0,
              sources: Sequence[str] | None = None) -> list[str]:
    """One side's prompts from a prompt dataset (Hub id or local folder), optionally sampled.

    ``sources`` keeps rows whose ``source`` is one of these names (a family such as
    ``jailbreakbench`` or a list name such as ``jailbreakbench-harmless``). ``n`` draws a seeded
    sample.
    """
    from datasets_builders.forge_prompts import select_sources

    if side not in SIDES:
        raise PromptError(f"unknown side {side!r}", f"use one of {', '.join(SIDES)}")
    if split not in SPLIT_NAMES:
        raise PromptError(f"unknown split {split!r}", f"use one of {', '.join(SPLIT_NAMES)}", input="split")
    wanted = None if not sources else {s.strip() for s in sources if s.strip()}
    if wanted:
        with source_errors():
            select_sources(wanted)  # unknown names fail here, before any loading
    rows = _read_rows(dataset, side, split)
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


def _read_rows(dataset: str, side: str, split: str) -> list[dict]:
    """Rows of one config and split, from a built folder or the Hub."""
    from datasets.exceptions import DatasetNotFoundError

    local = Path(dataset).expanduser()
    if local.exists() or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        if not local.is_dir():
            raise PromptError(f"prompt dataset folder {dataset} does not exist",
                              "build one (forge-hub datasets build), or give a Hub id", input="prompts_dataset")
        return _load(str(local), side, split, dataset)
    try:
        return _load(dataset, side, split, dataset)
    except ConnectionError as exc:  # offline mode, or the Hub unreachable, and nothing cached
        raise PromptError(f"prompt dataset {dataset} cannot be read: the Hub cannot be reached and there is no "
                          "cached copy", "go online once, or build the dataset into a folder and name that, or "
                          "leave {prompts_dataset} out to use the lists forge-hub ships", input="prompts_dataset") \
            from exc
    except DatasetNotFoundError as exc:
        raise PromptError(f"prompt dataset {dataset} not found on the Hub ({exc})",
                          "check the id, log in for a private dataset, or give a local folder",
                          input="prompts_dataset") from exc


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


@contextmanager
def source_errors() -> Iterator[None]:
    """The builder's own errors (it imports nothing from forge-hub) as :class:`PromptError`."""
    from datasets_builders.forge_prompts import SourceError

    try:
        yield
    except SourceError as exc:
        raise PromptError(exc.message, exc.hint, input="sources") from exc
