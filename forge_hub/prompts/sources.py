"""Instruction lists: built-in curated lists, user files, folders, and datasets.

A prompt source is one string, so the CLI, the Space and scripts name sources the same way:

- ``builtin:harmful`` / ``builtin:harmless``: the curated lists shipped in ``forge_hub/data``;
  ``builtin:advbench`` / ``builtin:alpaca``: the default direction prompts; ``builtin:xstest-unsafe``:
  XSTest's unsafe prompts bar its privacy ones (175), on which the default run makes its final choice;
- a file: ``.txt`` (one prompt per line, ``#`` comments), ``.json`` (a list of strings or of
  records), ``.jsonl``, ``.csv`` or ``.parquet`` (records; pick the column with ``column=``);
- a folder of such files (read in name order);
- a Hub or local dataset: ``name[:config][:split]`` (through ``datasets.load_dataset``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from forge_hub.errors import PromptError
from forge_hub.prompts.xstest import BUILTIN_XSTEST_UNSAFE, xstest_unsafe_prompts

BUILTIN_PREFIX = "builtin:"
# The lists shipped in datasets_builders/data (licences and attribution in its SOURCES.md).
BUILTIN_LISTS = {
    "advbench": "advbench-harmful.txt",  # AdvBench, 520 harmful behaviours (MIT): the default harmful side
    "alpaca": "alpaca-harmless.txt",  # 1,024 Alpaca instructions (CC BY-NC 4.0): the default harmless side
    "harmful": "curated-harmful.txt",  # forge-hub's curated lists (Apache-2.0)
    "harmless": "curated-harmless.txt",
}
FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")
# Column names public prompt sets use, tried in this order when no column is named.
COMMON_COLUMNS = ("prompt", "instruction", "goal", "Behavior", "behavior", "question", "text", "query")


def load_prompts(source: str | Path | Sequence[str], *, column: str | None = None, limit: int | None = None,
                 seed: int = 0) -> list[str]:
    """Load, normalise and deduplicate prompts from one source.

    Example::

        harmful = load_prompts("builtin:harmful")
        harmless = load_prompts("data/alpaca.csv", column="instruction", limit=256)

    ``limit`` draws a seeded random sample, so two runs with the same seed see the same prompts.
    Raises :class:`PromptError` naming the source when it is missing, malformed or empty.
    """
    if isinstance(source, (list, tuple)):
        raw, name = list(source), "the given list"
    else:
        raw, name = _read_source(str(source), column), str(source)
    prompts = deduplicate(raw)
    if not prompts:
        raise PromptError(f"no prompts in {name}",
                          "give a file or dataset with at least one non-empty instruction")
    if limit is not None and limit < len(prompts):
        prompts = random.Random(seed).sample(prompts, limit)
    return prompts


def deduplicate(prompts: Iterable[object]) -> list[str]:
    """Whitespace-normalised prompts, first occurrence kept, empty ones dropped."""
    seen: set[str] = set()
    out: list[str] = []
    for p in prompts:
        if p is None:
            continue
        text = " ".join(str(p).split())
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def prompts_hash(prompts: Sequence[str]) -> str:
    """A short content hash recorded in artifacts, so results name exactly which prompts they used."""
    digest = hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"


def split_held_out(prompts: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split into (direction, held-out) parts; the held-out part scores layers without leaking."""
    if not 0.0 <= fraction < 1.0:
        raise PromptError(f"held-out fraction must be in [0, 1), got {fraction}")
    order = list(prompts)
    random.Random(seed).shuffle(order)
    n_held = int(round(len(order) * fraction))
    if n_held and len(order) - n_held < 2:
        raise PromptError(f"only {len(order)} prompts: too few to hold {n_held} out",
                          "give more prompts or lower the held-out fraction")
    return order[n_held:], order[:n_held]


def builtin_prompts(kind: str) -> list[str]:
    """A list shipped with forge-hub: ``advbench``, ``alpaca``, or the curated ``harmful`` / ``harmless``."""
    if kind not in BUILTIN_LISTS:
        raise PromptError(f"unknown built-in list {kind!r}",
                          f"use one of {', '.join(BUILTIN_PREFIX + k for k in BUILTIN_LISTS)}")
    text = resources.files("datasets_builders").joinpath("data", BUILTIN_LISTS[kind]).read_text(encoding="utf-8")
    return _parse_txt(text)


def _read_source(source: str, column: str | None) -> list[object]:
    if source == BUILTIN_XSTEST_UNSAFE:
        return list(xstest_unsafe_prompts())
    if source.startswith(BUILTIN_PREFIX):
        return list(builtin_prompts(source[len(BUILTIN_PREFIX):]))
    path = Path(source).expanduser()
    if path.is_dir() and not _looks_like_dataset_dir(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise PromptError(f"folder {path} holds no prompt files",
                              f"put files ending in {', '.join(FILE_SUFFIXES)} in it")
        return [p for f in files for p in _read_file(f, column)]
    if path.is_file():
        return _read_file(path, column)
    name = Path(source.split(":")[0]).expanduser()
    if name.is_dir() or not (path.suffix.lower() in FILE_SUFFIXES or source.startswith((".", "/", "~"))):
        return _read_dataset(source, column)
    raise PromptError(f"prompt file {source} does not exist", "check the path")


def _looks_like_dataset_dir(path: Path) -> bool:
    """A folder in the Hub dataset layout (card with configs, or data/ subfolder), not a bag of files."""
    return (path / "data").is_dir() or (path / "dataset_info.json").exists()


def _read_file(path: Path, column: str | None) -> list[object]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return list(_parse_txt(path.read_text(encoding="utf-8")))
        if suffix == ".json":
            return _pick_column(_json_records(json.loads(path.read_text(encoding="utf-8"))), column, path)
        if suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            return _pick_column([json.loads(line) for line in lines if line.strip()], column, path)
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return _pick_column(list(csv.DictReader(f)), column, path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _pick_column(pq.read_table(path).to_pylist(), column, path)
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path} is not UTF-8 text ({exc.reason})", "re-save the file as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path} is not valid JSON: {exc}",
                          "fix the file or save it as .txt, one prompt per line") from exc
    raise PromptError(f"{path}: unsupported file type {suffix!r}", f"use one of {', '.join(FILE_SUFFIXES)}")


def _parse_txt(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _json_records(data: object) -> list[object]:
    if isinstance(data, dict):  # {"prompts": [...]} or {"train": [...]}: take the single list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        raise PromptError("JSON object must hold exactly one list of prompts", "save the prompts as a JSON list")
    if not isinstance(data, list):
        raise PromptError("JSON prompts must be a list", "save the prompts as a JSON list")
    return data


def _pick_column(records: list[object], column: str | None, origin: object) -> list[object]:
    """Strings pass through; records give the named column, or the first common prompt column."""
    if not records or all(isinstance(r, str) for r in records):
        return list(records)
    first = records[0]
    if not isinstance(first, dict):
        raise PromptError(f"{origin}: expected strings or records, found {type(first).__name__}")
    if column is None:
        column = next((c for c in COMMON_COLUMNS if c in first), None)
        if column is None:
            raise PromptError(f"{origin}: no prompt column among {sorted(first)}",
                              "name the column with {column}", input="column")
    elif column not in first:
        raise PromptError(f"{origin}: no column {column!r}; columns are {sorted(first)}", "pick one of those columns")
    return [r.get(column) for r in records if isinstance(r, dict)]


def _read_dataset(spec: str, column: str | None) -> list[object]:
    """``name[:config][:split]``, local folder or Hub id, loaded through ``datasets``."""
    import datasets

    parts = spec.split(":")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types; name the spec and the cause
        raise PromptError(f"could not load dataset {spec!r}: {type(exc).__name__}: {exc}",
                          "give a local prompt file, or a reachable dataset as name[:config][:split]") from exc
    return _pick_column(list(ds), column, spec)
