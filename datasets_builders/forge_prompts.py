"""The forge-hub refusal prompts: harmful and harmless instructions as one Hugging Face dataset.

A ``datasets.GeneratorBasedBuilder`` used directly (datasets 5 no longer runs loading scripts from a
repository, so what gets published is the parquet this builder produces)::

    builder = ForgePrompts(config_name="harmful", cache_dir=tmp)
    builder.download_and_prepare()
    harmful = builder.as_dataset()          # DatasetDict: train / validation / test

Configs: ``harmful`` and ``harmless`` (every source of that side) and one config per source
list (``advbench``, ``jailbreakbench-harmless``, ...). ``xstest`` is an evaluation set, not a
side: its safe prompts that look unsafe and their unsafe contrasts stay in one config, all in
the ``test`` split, with XSTest's own ``label`` and ``type`` columns kept. Sources are fetched from their public
URLs through the download manager; ``urls={"advbench": "/data/advbench.csv"}`` points any of them
at another URL or a local file, which is how the tests build offline.

Rows are whitespace-normalised; exact and case/punctuation-insensitive duplicates are dropped,
the first occurrence kept (curated lists first, then the order of :data:`SOURCES`). The split of
a prompt is a hash of its normalised text, so a prompt never changes split when sources are
added or removed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import datasets


class SourceError(ValueError):
    """A source cannot be read as prompts: ``message`` says what is wrong, ``hint`` how to fix it.

    Its own class, so that the builder needs nothing but ``datasets`` (forge-hub turns it into its
    ``PromptError``).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


BUILDER_VERSION = "1.0.0"  # of the builder's output; bump when rows or columns change meaning
SIDES = ("harmful", "harmless")
# Split boundaries on a uniform hash in [0, 1): train below 0.8, validation below 0.9, test above.
SPLITS = (("train", 0.8), ("validation", 0.9), ("test", 1.0))
# Part of every split hash: changing it would reshuffle every split, so it is versioned, not tuned.
SPLIT_SALT = "forge-hub-prompts/v1"
FEATURES = datasets.Features({
    "prompt": datasets.Value("string"),
    "source": datasets.Value("string"),
    "category": datasets.Value("string"),
    "license": datasets.Value("string"),
})

_GITHUB = "https://raw.githubusercontent.com"
_ARDITI = f"{_GITHUB}/andyrdt/refusal_direction/main/dataset"
_JBB = "https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors/resolve/main/data"
_SUMANDORA = f"{_GITHUB}/Sumandora/remove-refusals-with-transformers/master"
XSTEST_URL = f"{_GITHUB}/paul-rottger/xstest/main/xstest_prompts.csv"
XSTEST_COLUMNS = ("label", "type", "focus", "note")  # kept beside the usual columns: label says safe or unsafe


def _curated(side: str) -> str:
    """The curated list shipped inside the forge_hub package (a local path the download manager keeps)."""
    return str(resources.files("datasets_builders").joinpath("data", f"curated-{side}.txt"))


@dataclass(frozen=True)
class Source:
    """One list of prompts from one public source, on one side.

    ``name`` is its config name and the key for URL overrides; ``family`` is what the ``source``
    column says (both lists of a two-sided source share it, so filtering by it picks the matching
    list on each side).
    """

    name: str
    family: str
    side: str  # "harmful", "harmless", or "mixed" for an evaluation set with a label column (never in a side)
    urls: tuple[str, ...]
    fmt: str  # "txt" (one per line, # comments), "csv" (header row) or "json" (list of strings or records)
    license: str
    title: str
    homepage: str
    column: str | None = None  # prompt column for csv and json records
    category: str | None = None  # category column, when the source has one
    keep: tuple[str, str] | None = None  # (column, value): only rows whose column has this value
    note: str = ""
    extra_columns: tuple[str, ...] = ()  # more of the source's columns kept as they are (csv and json records)
    split: str | None = None  # every row in this split (an evaluation set), instead of the hash split


# In deduplication priority order: the curated lists win, then the originals, then re-packagings.
SOURCES: tuple[Source, ...] = (
    Source("curated-harmful", "curated", "harmful", (_curated("harmful"),), "txt", "Apache-2.0",
           "forge-hub curated lists", "https://pypi.org/project/forge-hub/",
           note="written for forge-hub; line N parallels line N of the harmless list"),
    Source("curated-harmless", "curated", "harmless", (_curated("harmless"),), "txt", "Apache-2.0",
           "forge-hub curated lists", "https://pypi.org/project/forge-hub/"),
    Source("advbench", "advbench", "harmful",
           (f"{_GITHUB}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",), "csv", "MIT",
           "AdvBench harmful behaviours", "https://github.com/llm-attacks/llm-attacks", column="goal"),
    Source("harmbench", "harmbench", "harmful",
           (f"{_GITHUB}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",),
           "csv", "MIT", "HarmBench text behaviours", "https://github.com/centerforaisafety/HarmBench",
           column="Behavior", category="SemanticCategory", keep=("FunctionalCategory", "standard"),
           note="standard behaviours only: contextual ones need their context string, copyright ones ask for lyrics"),
    Source("jailbreakbench-harmful", "jailbreakbench", "harmful", (f"{_JBB}/harmful-behaviors.csv",), "csv", "MIT",
           "JailbreakBench JBB-Behaviors (harmful)", "https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors",
           column="Goal", category="Category"),
    Source("jailbreakbench-harmless", "jailbreakbench", "harmless", (f"{_JBB}/benign-behaviors.csv",), "csv", "MIT",
           "JailbreakBench JBB-Behaviors (benign)", "https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors",
           column="Goal", category="Category", note="benign requests on the same topics as the harmful ones"),
    Source("maliciousinstruct", "maliciousinstruct", "harmful",
           (f"{_GITHUB}/Princeton-SysML/Jailbreak_LLM/main/data/MaliciousInstruct.txt",), "txt", "unknown",
           "MaliciousInstruct", "https://github.com/Princeton-SysML/Jailbreak_LLM",
           note="the repository states no licence"),
    Source("tdc2023", "tdc2023", "harmful",
           (f"{_ARDITI}/raw/tdc2023_dev_behaviors.json", f"{_ARDITI}/raw/tdc2023_test_behaviors.json"), "json", "MIT",
           "TDC 2023 red-teaming behaviours (dev + test)", "https://github.com/centerforaisafety/tdc2023-starter-kit"),
    Source("arditi-harmful", "arditi", "harmful",
           (f"{_ARDITI}/splits/harmful_train.json", f"{_ARDITI}/splits/harmful_val.json"), "json", "Apache-2.0",
           "Arditi et al. harmful splits (train + val)", "https://github.com/andyrdt/refusal_direction",
           column="instruction", category="category", note="AdvBench, MaliciousInstruct, TDC 2023 and HarmBench"),
    Source("arditi-harmless", "arditi", "harmless",
           (f"{_ARDITI}/splits/harmless_train.json", f"{_ARDITI}/splits/harmless_val.json"), "json", "CC-BY-NC-4.0",
           "Arditi et al. harmless splits (train + val)", "https://github.com/andyrdt/refusal_direction",
           column="instruction", category="category", note="Alpaca instructions that need no input"),
    Source("sumandora-harmful", "sumandora", "harmful", (f"{_SUMANDORA}/harmful.txt",), "txt", "MIT",
           "Sumandora harmful list", "https://github.com/Sumandora/remove-refusals-with-transformers",
           note="AdvBench goals"),
    Source("sumandora-harmless", "sumandora", "harmless", (f"{_SUMANDORA}/harmless.txt",), "txt", "CC-BY-NC-4.0",
           "Sumandora harmless list", "https://github.com/Sumandora/remove-refusals-with-transformers",
           note="Alpaca instructions, some of which refer to an input that is not included"),
    Source("xstest", "xstest", "mixed", (XSTEST_URL,), "csv", "CC-BY-4.0",
           "XSTest: exaggerated safety (Röttger et al., NAACL 2024)", "https://github.com/paul-rottger/xstest",
           column="prompt", category="type", extra_columns=XSTEST_COLUMNS, split="test",
           note="250 safe prompts that look unsafe and 200 unsafe contrasts (label column); all in test, for "
                "measuring over-refusal, never for directions"),
)
SOURCE_NAMES = tuple(s.name for s in SOURCES)


def normalize(text: str) -> str:
    """NFC and single spaces: the form every row is stored in."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def dedup_key(text: str) -> str:
    """Case- and punctuation-insensitive form: "Write a poem." and "write a poem" are one prompt."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(ch for ch in folded if not unicodedata.category(ch).startswith("P")).split())


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, from a hash of its normalised text alone (never its neighbours)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\n{dedup_key(prompt)}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, upper in SPLITS if position < upper)


def select_sources(names: Iterable[str] | None = None, side: str | None = None) -> list[Source]:
    """Sources by config name or family (``jailbreakbench`` picks both sides), in priority order.

    Raises :class:`SourceError` for a name that is neither, listing the valid ones.
    """
    wanted = None if names is None else {n.strip() for n in names if n.strip()}
    known = set(SOURCE_NAMES) | {s.family for s in SOURCES}
    unknown = sorted((wanted or set()) - known)
    if unknown:
        raise SourceError(f"unknown prompt source(s): {', '.join(unknown)}",
                          f"use source names ({', '.join(SOURCE_NAMES)}) or families "
                          f"({', '.join(sorted({s.family for s in SOURCES}))})")
    return [s for s in SOURCES if (side is None or s.side == side)
            and (wanted is None or s.name in wanted or s.family in wanted)]


def check_urls(urls: dict[str, str | Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """URL overrides as tuples, keyed by known source names only (a typo must not be ignored)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in (urls or {}).items():
        if name not in SOURCE_NAMES:
            raise SourceError(f"URL given for unknown source {name!r}", f"use one of {', '.join(SOURCE_NAMES)}")
        out[name] = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        if not out[name]:
            raise SourceError(f"empty URL list for source {name!r}", "give at least one URL or path")
    return out


@dataclass
class ForgePromptsConfig(datasets.BuilderConfig):
    """A side (every source on it) or one source list; ``sources`` and ``urls`` are build options."""

    side: str = "harmful"
    members: tuple[str, ...] = ()  # source names this config is made of, in priority order
    sources: Sequence[str] | None = None  # keep only these names or families (None: all members)
    urls: dict | None = None  # {source name: URL, path or list of them}: overrides the public URLs

    def chosen(self) -> list[Source]:
        picked = {s.name for s in select_sources(self.sources, self.side)}
        return [s for s in SOURCES if s.name in self.members and s.name in picked]


def features_for(sources: Sequence[Source]) -> datasets.Features:
    """The usual columns, plus the extra columns the sources keep (XSTest's label and type)."""
    extra = dict.fromkeys(c for s in sources for c in s.extra_columns)
    return datasets.Features({**FEATURES, **{c: datasets.Value("string") for c in extra}})


def _configs() -> list[ForgePromptsConfig]:
    version = datasets.Version(BUILDER_VERSION)
    sides = [ForgePromptsConfig(name=side, version=version, side=side,
                                members=tuple(s.name for s in SOURCES if s.side == side),
                                description=f"every {side} source, deduplicated") for side in SIDES]
    singles = [ForgePromptsConfig(name=s.name, version=version, side=s.side, members=(s.name,),
                                  description=s.title) for s in SOURCES]
    return sides + singles


class ForgePrompts(datasets.GeneratorBasedBuilder):
    """Harmful and harmless instructions from public refusal benchmarks plus forge-hub's curated lists."""

    VERSION = datasets.Version(BUILDER_VERSION)
    BUILDER_CONFIG_CLASS = ForgePromptsConfig
    BUILDER_CONFIGS = _configs()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Harmful and harmless instructions for measuring refusal in chat models. "
                        "Content warning: the harmful side is requests for harmful content.",
            features=features_for(self.config.chosen()), license="other (per row: see the license column)",
            homepage="https://pypi.org/project/forge-hub/")

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        # Everything is read and deduplicated here, before generation: dedup needs every source at
        # once, and errors raised here reach the caller as they are (generation errors get wrapped).
        chosen = self.config.chosen()
        rows = collect_rows(chosen, check_urls(self.config.urls), dl_manager.download)
        fixed = {s.family: s.split for s in chosen if s.split}  # evaluation sets: one split, whole
        parts: dict[str, list[dict]] = {name: [] for name, _ in SPLITS}
        for row in rows:
            parts[fixed.get(row["source"]) or split_of(row["prompt"])].append(row)
        # an empty split cannot be prepared; it is simply absent (tiny sources only)
        return [datasets.SplitGenerator(name=name, gen_kwargs={"rows": part}) for name, part in parts.items() if part]

    def _generate_examples(self, rows: list[dict]):
        yield from enumerate(rows)


def collect_rows(sources: Sequence[Source], urls: dict[str, tuple[str, ...]],
                 download: Callable[[list[str]], list[str]]) -> list[dict]:
    """Rows of every source in order, normalised, first occurrence of each dedup key kept."""
    seen: set[str] = set()
    rows: list[dict] = []
    for source in sources:
        locations = urls.get(source.name, source.urls)
        try:
            paths = download(list(locations))
        except Exception as exc:  # network errors, 404s and missing files come in many types
            raise SourceError(f"source {source.name!r}: could not fetch {', '.join(locations)} "
                              f"({type(exc).__name__}: {exc})",
                              f"check the network, or point {source.name!r} at a local copy "
                              "with a URL override") from exc
        for location, path in zip(locations, paths, strict=True):
            for prompt, category, extra in read_source_file(source, location, str(path)):
                text = normalize(prompt)
                key = dedup_key(text)
                if key and key not in seen:
                    seen.add(key)
                    rows.append({"prompt": text, "source": source.family, "category": category,
                                 "license": source.license, **extra})
    return rows


def read_source_file(source: Source, location: str,
                     path: str) -> list[tuple[str, str | None, dict[str, str | None]]]:
    """(prompt, category, extra columns) of one file, or a :class:`SourceError` naming the source and the file."""
    where = location if location == path else f"{location} (downloaded to {path})"

    def fail(problem: str, hint: str) -> SourceError:
        return SourceError(f"source {source.name!r}: {where}: {problem}", hint)

    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise fail("the file is empty", "point the source at the complete file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                   "re-save the file as UTF-8") from exc
    if source.fmt == "txt":
        pairs = [(line, None, {}) for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    elif source.fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        records = list(reader)
        _require_columns(source, reader.fieldnames or [], fail)
        pairs = _from_records(source, records)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(f"not valid JSON ({exc})", "point the source at the original JSON file") from exc
        if not isinstance(data, list):
            raise fail(f"expected a JSON list, found {type(data).__name__}", "point the source at the original file")
        if all(isinstance(item, str) for item in data):
            pairs = [(item, None, {}) for item in data]
        elif all(isinstance(item, dict) for item in data):
            for item in data:
                _require_columns(source, list(item), fail)
            pairs = _from_records(source, data)
        else:
            raise fail("expected a list of strings or of records", "point the source at the original file")
    pairs = [(p, c, extra) for p, c, extra in pairs if p and p.strip()]
    if not pairs:
        raise fail("holds no prompts", "point the source at the complete file")
    return pairs


def _require_columns(source: Source, columns: list[str], fail: Callable[[str, str], SourceError]) -> None:
    needed = [c for c in (source.column, source.category, source.keep[0] if source.keep else None,
                          *source.extra_columns) if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise fail(f"no column {', '.join(map(repr, missing))}; its columns are {sorted(columns)}",
                   f"point the source at the {source.title} file (it needs {', '.join(needed)})")


def _from_records(source: Source, records: list[dict]) -> list[tuple[str, str | None, dict[str, str | None]]]:
    if source.keep:
        column, value = source.keep
        records = [r for r in records if r.get(column) == value]
    return [(_text(r.get(source.column)), (_text(r.get(source.category)) or None) if source.category else None,
             {c: _text(r.get(c)) or None for c in source.extra_columns}) for r in records]


def _text(value: object) -> str:
    return "" if value is None else str(value)
