"""Publishing an abliterated model on the Hugging Face Hub: check, stage, create, upload.

    result = push_model(Path("smollm2-abliterated"), "me/smollm2-abliterated",
                        results=Path("results.json"), gguf_files=[Path("gguf/smollm2-abliterated-Q8_0.gguf")])
    print(result.repo_url, result.commit_url)

Every input is checked before the first request (a folder that is not a model, a repo name the
Hub would refuse, a file that is not a GGUF of a known type, no token), so a mistake never leaves
a half-made repo. The exact upload folder is then staged in a temporary folder (hard links, or
symbolic links across file systems: nothing large is copied): the weights and what loads them,
the direction artifact, the card (:mod:`forge_hub.model_card`), the evaluation results and the
GGUF files. ``huggingface_hub`` does the rest: ``create_repo`` and ``upload_folder``, which is
itself the resumable pipeline (files already on the Hub are not sent again, an interrupted upload
continues where it stopped when the same push is run again with ``exist_ok=True``).

The token comes from ``token``, ``HF_TOKEN`` or the cached ``hf auth login``. It is sent to the
Hub only: never printed, never written into a file, never part of an error message. The Hub's
address is ``HF_ENDPOINT`` (read by huggingface_hub when it is imported).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import NamedTuple

from forge_hub import __version__
from forge_hub.errors import HubError, ModelLoadError
from forge_hub.hub.card import (
    GGUFVariant,
    Licence,
    artifact_metadata,
    base_model_id,
    build_gguf_card,
    build_model_card,
    check_card,
    load_results,
)
from forge_hub.hub.common import check_online, check_repo_id, create_repo, hub_errors, require_token
from forge_hub.model.files import INDEX_FILE, weight_shards
from forge_hub.provenance import source_wheel
from forge_hub.schema import (
    ARTIFACT_FILES,
    CONFIG_FILE,
    GGUF_CHECK_FILE,
    RESULTS_FILE,
    DirectionMetadata,
    EvaluationResults,
    GGUFCheck,
    load_toml,
    to_toml,
)
from forge_hub.units import human_size

# What loads the model besides its shards; licence files of the base travel with its weights.
MODEL_FILES = ("config.json", "generation_config.json", INDEX_FILE, "chat_template.jinja", "chat_template.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "preprocessor_config.json",
               "processor_config.json", CONFIG_FILE)
MODEL_PATTERNS = ("*.tiktoken", "LICENSE*", "LICENCE*", "NOTICE*", "USE_POLICY*")
RESULTS_NAMES = (RESULTS_FILE, "results.json")  # looked for in the folder when no results file is given
# Weights of an earlier push that this one does not replace would sit beside the new ones and
# confuse loaders (a stale index, extra shards): they are deleted in the same commit.
STALE_PATTERNS = ["*.safetensors", INDEX_FILE]


class UploadFile(NamedTuple):
    """One file of an upload: its path in the repo and its size in bytes."""

    path: str
    size: int

    def __str__(self) -> str:
        return self.path


@dataclass
class PushResult:
    """What was (or, on a dry run, would be) uploaded, and where it went."""

    repo_id: str
    repo_url: str | None  # None on a dry run
    files: list[UploadFile]
    commit_url: str | None
    gguf_repo_id: str | None = None  # a separate GGUF repo, when there is one
    gguf_repo_url: str | None = None
    gguf_files: list[UploadFile] = field(default_factory=list)
    gguf_commit_url: str | None = None
    card: str = ""  # the README.md sent
    gguf_card: str | None = None
    notes: list[str] = field(default_factory=list)  # what the caller should tell the user
    dry_run: bool = False

    @property
    def urls(self) -> list[str]:
        return [u for u in (self.repo_url, self.gguf_repo_url) if u]

    @property
    def commit_urls(self) -> list[str]:
        return [u for u in (self.commit_url, self.gguf_commit_url) if u]


def push_model(folder: Path, repo_id: str, *, token: str | None = None, private: bool = False, exist_ok: bool = False,
               gguf_files: Sequence[Path] = (), gguf_repo: str | None = None, results: Path | None = None,
               license: str | None = None, commit_message: str | None = None, dry_run: bool = False,
               progress: bool = True, base_model: str | None = None, gguf_check: GGUFCheck | None = None) -> PushResult:
    """Publish the abliterated model in ``folder`` (written by ``forge-hub apply`` or ``run``) as ``repo_id``.

    ``gguf_files`` (``<name>-<TYPE>.gguf``) go into the same repo, or into ``gguf_repo`` with a card of
    their own (``base_model_relation: quantized``, pointing at ``repo_id``). ``results`` is a
    ``forge-hub evaluate`` results JSON (default: ``evaluation.json`` or ``results.json`` in the
    folder). ``license`` is the base model's Hub licence id when its card cannot be read;
    ``base_model`` its Hub id when the direction was computed on a local folder or GGUF file.
    ``exist_ok`` uploads into an existing repo (files of the same name are replaced, stale weight
    shards removed); without it an existing repo is an error. ``dry_run`` stages the exact folder
    and returns what would be uploaded without a single request. ``gguf_check`` (what
    :func:`forge_hub.evaluation.gguf_check.check_gguf_files` measured of the GGUF files) goes beside
    them as ``gguf-evaluation.json`` and into the cards' GGUF tables; its warnings become notes.

    Example::

        push_model(Path("smollm2-abliterated"), "me/smollm2-abliterated", dry_run=True).files
    """
    plan = plan_push(folder, repo_id, gguf_files=gguf_files, gguf_repo=gguf_repo, results=results,
                     base_model=base_model, gguf_check=gguf_check)
    if not dry_run:
        token = require_token(token)
        check_online()
    with _progress_bars(progress):
        api = None if dry_run else _api(token)
        if api is not None:
            with hub_errors(repo_id):  # a rejected token or a foreign namespace fails before anything is made
                check_namespaces(api, plan.repo_ids)
        licence = resolve_licence(plan.folder, plan.base, plan.revision, license, api=api)
        if licence.id == "other" and not licence.name:
            plan.notes.append("the base model's licence could not be read: the card says `other`; "
                              "name it with {license}")
        with tempfile.TemporaryDirectory(prefix="forge-hub-push-") as tmp:
            result = _stage(plan, Path(tmp), licence, dry_run)
            if not dry_run:
                _send(api, plan, result, Path(tmp), private, exist_ok, commit_message)
    return result


@dataclass
class PushPlan:
    """Everything a push needs, checked, before anything is staged or sent."""

    folder: Path
    repo_id: str
    files: list[Path]  # of the folder, to upload
    meta: DirectionMetadata | None  # refusal.json
    base: str | None  # the base model's Hub id
    revision: str | None
    base_model: str | None  # as given by the caller
    gguf: list[GGUFVariant]
    gguf_repo: str | None  # a separate repo for them, or None
    results_path: Path | None
    results: EvaluationResults | None
    notes: list[str]
    gguf_check: GGUFCheck | None = None

    @property
    def repo_ids(self) -> list[str]:
        return [self.repo_id] + ([self.gguf_repo] if self.gguf_repo else [])


def plan_push(folder: Path, repo_id: str, *, gguf_files: Sequence[Path] = (), gguf_repo: str | None = None,
              results: Path | None = None, base_model: str | None = None,
              gguf_check: GGUFCheck | None = None) -> PushPlan:
    """Check every input of a push without a request: the folder, repo names, GGUF files, results."""
    folder = Path(folder).expanduser().resolve()
    files, left_out = select_files(folder)
    check_repo_id(repo_id)
    gguf = [GGUFVariant.from_path(p) for p in gguf_files]
    _check_gguf_names(gguf)
    gguf_repo = gguf_repo if gguf_repo and gguf_repo != repo_id else None
    if gguf_repo:
        check_repo_id(gguf_repo, input="gguf_repo")
        if not gguf:
            raise HubError(f"a GGUF repo ({gguf_repo}) was named but no GGUF file was given",
                           "give GGUF types ({gguf}) or GGUF files ({gguf_files}), or leave out {gguf_repo}",
                           input="gguf_repo")
    results_path = Path(results).expanduser() if results else _results_in(folder)
    result_data = load_results(results_path) if results_path else None
    meta = artifact_metadata(folder)
    base, revision = base_model_id(meta, base_model)
    notes = [f"not uploaded (not part of a model): {', '.join(left_out)}"] if left_out else []
    notes += _results_notes(result_data, folder) if result_data else []
    if base is None:
        notes.append("the base model is not a Hub id (computed on a local folder or GGUF file), so the card has no "
                     "base_model; name it with {base_model} (OWNER/NAME)")
    if gguf_check is not None:
        gguf_check = dataclasses.replace(gguf_check, files=[f for f in gguf_check.files
                                                             if f.file in {g.name for g in gguf}])
        notes += [f"{f.file}: {f.warning}" for f in gguf_check.files if f.warning]
    return PushPlan(folder, repo_id, files, meta, base, revision, base_model, gguf, gguf_repo, results_path,
                    result_data, notes, gguf_check if gguf_check is not None and gguf_check.files else None)


def _stage(plan: PushPlan, tmp: Path, licence: Licence, dry_run: bool) -> PushResult:
    """The exact upload folder(s) under ``tmp/model`` (and ``tmp/gguf``), cards checked offline."""
    main_dir, gguf_dir = tmp / "model", tmp / "gguf"
    wheel = source_wheel()  # the exact code that made the model, installable from the repo itself
    local_names = {plan.meta.model if plan.meta else None: plan.base}
    if plan.gguf_check is not None:  # beside the files it measured, with this machine's paths made public
        write_json(gguf_dir if plan.gguf_repo else main_dir, GGUF_CHECK_FILE, plan.gguf_check.to_dict(), local_names)
    staged = stage_model(main_dir, plan.files + ([wheel] if wheel else []), plan.results_path if plan.results else None,
                         [] if plan.gguf_repo else plan.gguf, local_names=local_names)
    card = build_model_card(plan.folder, plan.repo_id, results=plan.results, licence=licence,
                            base_model=plan.base_model, gguf=plan.gguf, gguf_repo=plan.gguf_repo,
                            files=_card_files(staged), wheel=wheel.name if wheel else None,
                            gguf_check=plan.gguf_check)
    check_card(card, plan.results)
    card.save(main_dir / "README.md")
    result = PushResult(plan.repo_id, None, _listing(main_dir), None, card=str(card), notes=plan.notes,
                        dry_run=dry_run)
    if plan.gguf_repo:
        gguf_card = build_gguf_card(plan.repo_id, plan.gguf_repo, plan.gguf, licence=licence, base_model=plan.base,
                                    gguf_check=plan.gguf_check)
        check_card(gguf_card)
        stage_files(gguf_dir, {g.name: g.path for g in plan.gguf})
        gguf_card.save(gguf_dir / "README.md")
        result.gguf_repo_id, result.gguf_files, result.gguf_card = plan.gguf_repo, _listing(gguf_dir), str(gguf_card)
    return result


def _send(api, plan: PushPlan, result: PushResult, tmp: Path, private: bool, exist_ok: bool,
          commit_message: str | None) -> None:
    """Validate the cards with the Hub, then create each repo and commit its folder."""
    from huggingface_hub import ModelCard

    cards = [ModelCard(result.card)] + ([ModelCard(result.gguf_card)] if result.gguf_card else [])
    with hub_errors(plan.repo_id):
        for card in cards:  # the Hub's own YAML check, before a repo is created
            _validate_card(card)
        message = commit_message or default_commit_message(plan.meta, plan.base, plan.results, len(plan.gguf))
        result.repo_url, result.commit_url = _upload(
            api, tmp / "model", plan.repo_id, private, exist_ok, message,
            _description(plan.meta, plan.base, plan.results, result.files), STALE_PATTERNS)
    if plan.gguf_repo:
        with hub_errors(plan.gguf_repo):
            types = ", ".join(g.type for g in plan.gguf)
            result.gguf_repo_url, result.gguf_commit_url = _upload(
                api, tmp / "gguf", plan.gguf_repo, private, exist_ok,
                f"GGUF files of {plan.repo_id} ({types}) with forge-hub {__version__}",
                f"Converted from https://huggingface.co/{plan.repo_id}.", None)


# --- checks -------------------------------------------------------------------------------------------

def select_files(folder: Path) -> tuple[list[Path], list[str]]:
    """(files to upload, names left out) of a model folder; raises if it is not one forge-hub wrote."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder", "push the output folder of apply or run", input="folder")
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (f"this folder holds {', '.join(ggufs)}: a GGUF source was edited as GGUF; run apply/run with "
                "{to_safetensors} to get a model folder to push" if ggufs else
                "push the output folder of apply or run (config.json, *.safetensors, tokenizer)")
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)", hint)
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON: {exc}", "write the folder again") from exc
    shards = weight_shards(folder)  # raises with a hint when there are none, or the index names missing ones
    if not (folder / "refusal.json").is_file():
        raise ModelLoadError(f"{folder} has no refusal.json, so it was not written by forge-hub",
                             "push the output folder of apply or run; it documents the edit")
    chosen = {p.name: p for p in shards}
    left_out = []
    for item in sorted(folder.iterdir()):
        if item.name in chosen or item.name in RESULTS_NAMES:
            continue
        if item.is_file() and (item.name in MODEL_FILES + ARTIFACT_FILES
                               or any(fnmatch(item.name, p) for p in MODEL_PATTERNS)):
            chosen[item.name] = item
        elif not item.name.startswith("."):
            left_out.append(item.name + ("/" if item.is_dir() else ""))
    return [chosen[name] for name in sorted(chosen)], left_out


def check_namespaces(api, repo_ids: Sequence[str]) -> None:
    """Ask the Hub who the token belongs to, and refuse namespaces it cannot create repos in.

    A rejected token fails here, before a repo is created or a byte is sent.
    """
    me = api.whoami()
    mine = {me.get("name")} | {o.get("name") for o in me.get("orgs") or []}
    for repo_id in repo_ids:
        owner = repo_id.split("/")[0]
        if owner not in mine:
            raise HubError(f"the token of {me.get('name')!r} cannot create repos under {owner!r}",
                           f"push to {me.get('name')}/{repo_id.split('/')[-1]} or to one of your organisations "
                           f"({', '.join(sorted(n for n in mine if n and n != me.get('name'))) or 'none'})")


def _check_gguf_names(gguf: Sequence[GGUFVariant]) -> None:
    names = [g.name for g in gguf]
    if len(set(names)) != len(names):
        raise HubError(f"two GGUF files share a name: {', '.join(sorted({n for n in names if names.count(n) > 1}))}",
                       "each GGUF file needs its own name (<name>-<TYPE>.gguf)")


def _results_in(folder: Path) -> Path | None:
    for name in RESULTS_NAMES:
        path = folder / name
        if path.is_file():
            try:
                if json.loads(path.read_text(encoding="utf-8")).get("schema"):
                    return path
            except (ValueError, AttributeError):
                continue
    return None


def _results_notes(result: dict, folder: Path) -> list[str]:
    """Results of another model would put wrong numbers on the model page: say so."""
    evaluated = str(result.model or "")
    path = Path(evaluated).expanduser()
    if evaluated and path.is_dir() and path.resolve() != folder:
        return [f"the results were measured on {path.name}, not on {folder.name}: check that they belong to it"]
    return []


# --- licence ------------------------------------------------------------------------------------------

def resolve_licence(folder: Path, base: str | None, revision: str | None, explicit: str | None,
                    *, api=None) -> Licence:
    """The licence for the card: ``explicit``, else the base model's card on the Hub
    (asked through ``api``; None stays offline), else the base's README.md that apply carried into
    the folder, else ``other``."""
    if explicit:
        return Licence(explicit, origin="given explicitly")
    if base and api is not None:
        try:
            info = api.model_info(base, revision=revision)
        except Exception:  # noqa: BLE001 - unreachable, gated, renamed: fall back to what the folder knows
            info = None
        found = Licence.from_card_data(info.card_data, "read from the base model's card on the Hub") if info else None
        if found:
            return found
    readme = folder / "README.md"
    found = Licence.from_readme(readme, "read from the base model's card in the source folder") if readme.is_file() \
        else None
    return found or Licence("other")


# --- staging ------------------------------------------------------------------------------------------

def stage_model(target: Path, files: Sequence[Path], results: Path | None,
                gguf: Sequence[GGUFVariant], *, local_names: dict | None = None) -> list[UploadFile]:
    """Lay out the upload folder (all but the card) and list it.

    The JSON files (direction metadata, settings, results) are written anew without this
    machine's absolute paths, which say nothing to readers of the repo and can name a user's home
    folder: a path in ``local_names`` becomes its value (the base model's Hub id), any other its
    last part.
    """
    stage_files(target, {p.name: p for p in files} | {g.name: g.path for g in gguf}
                | ({RESULTS_FILE: results} if results else {}))
    for name in (*ARTIFACT_FILES, RESULTS_FILE):
        path = target / name
        if name.endswith(".json") and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()  # a link to the source file: never write through it
            path.write_text(json.dumps(without_local_paths(data, local_names or {}), indent=2, ensure_ascii=False)
                            + "\n", encoding="utf-8")
    config = target / CONFIG_FILE
    if config.exists():  # the run's settings, with the same paths made public
        text = config.read_text(encoding="utf-8")
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#")).replace("# ", "")
        config.unlink()
        config.write_text(to_toml(without_local_paths(load_toml(text), local_names or {}), header=header.strip()),
                          encoding="utf-8")
    return _listing(target)


def write_json(folder: Path, name: str, data: dict, local_names: dict) -> None:
    """A JSON file of the upload, with this machine's absolute paths replaced (see :func:`stage_model`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(without_local_paths(data, local_names), indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")


def without_local_paths(data, local_names: dict):
    """``data`` (parsed JSON) with absolute file paths replaced; see :func:`stage_model`."""
    if isinstance(data, dict):
        return {k: without_local_paths(v, local_names) for k, v in data.items()}
    if isinstance(data, list):
        return [without_local_paths(v, local_names) for v in data]
    if isinstance(data, str) and "\n" not in data and (os.path.isabs(data) or re.match(r"^[A-Za-z]:[\\/]", data)):
        return local_names.get(data) or re.split(r"[\\/]", data.rstrip("/\\"))[-1] or data
    return data


def stage_files(target: Path, files: dict[str, Path]) -> None:
    """Hard links where the file system allows them, symbolic links elsewhere: no large copies."""
    target.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        source = source.resolve()
        try:
            os.link(source, target / name)
        except OSError:
            (target / name).symlink_to(source)


def _listing(folder: Path) -> list[UploadFile]:
    return [UploadFile(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()]


def _card_files(files: Sequence[UploadFile]) -> list[tuple[str, int]]:
    return [(f.path, f.size) for f in files if not f.path.endswith(".gguf")]


# --- upload -------------------------------------------------------------------------------------------

def _api(token: str):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _upload(api, folder: Path, repo_id: str, private: bool, exist_ok: bool, message: str, description: str,
            delete_patterns: list[str] | None) -> tuple[str, str]:
    """Create the repo (or find it, with ``exist_ok``) and commit the folder; (repo URL, commit URL)."""
    url = create_repo(api, repo_id, exist_ok=exist_ok, private=private or None,
                      exists_fix="use {exist_ok} to upload into it (files of the same name are replaced), or "
                      "choose another {repo}")
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message,
                             commit_description=description, delete_patterns=delete_patterns)
    return str(url), info.commit_url


def _validate_card(card) -> None:
    """``ModelCard.validate``: the Hub's /api/validate-yaml (at HF_ENDPOINT); a 400 is a bad card."""
    try:
        card.validate()
    except ValueError as exc:
        raise HubError(f"the Hub rejected the model card's metadata: {exc}",
                       "check {license} and {base_model}") from exc


def default_commit_message(meta: DirectionMetadata | None, base: str | None, results: EvaluationResults | None,
                           n_gguf: int) -> str:
    """One line that says what this commit is: the base, the method and layer, the effect."""
    meta = meta or DirectionMetadata(method="?")
    what = base or Path(str(meta.model or "model")).name
    layer = meta.selected_layer
    how = f"{meta.method}, layer {layer:g}" if layer is not None else str(meta.method)
    message = f"Abliterated {what} ({how}) with forge-hub {__version__}"
    if results:
        r, n = results.results, results.harmful_count
        before = f"{r.reference.refusals}/{n} -> " if r.reference else ""
        message += f": harmful refused {before}{r.model.refusals}/{n}"
    return message + (f", {n_gguf} GGUF file(s)" if n_gguf else "")


def _description(meta: DirectionMetadata | None, base: str | None, results: EvaluationResults | None,
                 files: Sequence[UploadFile]) -> str:
    total = sum(f.size for f in files)
    lines = [f"{len(files)} files, {human_size(total)}: weights, tokenizer, direction artifact (refusal.safetensors, "
             f"refusal.json), model card" + (f", evaluation results ({RESULTS_FILE})" if results else "") + "."]
    if base:
        revision = meta.revision if meta is not None else None
        lines.append(f"Base model: {base}" + (f" at {revision}" if revision else "") + ".")
    return "\n".join(lines)


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            enable_progress_bars()


def print_result(result: PushResult, out=None) -> None:
    """The upload as a table, for the CLI (the dry run prints the same list, and the card's YAML)."""
    out = out or sys.stdout
    groups = [(result.repo_id, result.files, result.repo_url, result.commit_url)]
    if result.gguf_repo_id:
        groups.append((result.gguf_repo_id, result.gguf_files, result.gguf_repo_url, result.gguf_commit_url))
    for repo_id, files, url, commit in groups:
        verb = "would upload to" if result.dry_run else "uploaded to"
        print(f"\n{verb} {repo_id}:", file=out)
        width = max([len(f.path) for f in files] + [20])
        for f in files:
            print(f"  {f.path:{width}s} {human_size(f.size):>10s}", file=out)
        print(f"  {len(files)} files, {human_size(sum(f.size for f in files))}", file=out)
        if url:
            print(f"repo:   {url}\ncommit: {commit}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.dry_run:
        header = re.match(r"^---\r?\n(.*?)\r?\n---", result.card, re.DOTALL)
        print(f"\nmodel card metadata (README.md):\n{header.group(1) if header else ''}", file=out)
        print("\ndry run: nothing was sent to the Hub", file=out)


def check_push_inputs(folder: Path, repo_id: str, *, gguf_repo: str | None = None, token: str | None = None,
                      dry_run: bool = False) -> str | None:
    """The checks ``push_model`` starts with, for callers with long work before the push (a GGUF
    export, a whole run); returns the token (None on a dry run)."""
    select_files(Path(folder).expanduser().resolve())
    return check_push_target(repo_id, gguf_repo=gguf_repo, token=token, dry_run=dry_run)


def check_push_target(repo_id: str, *, gguf_repo: str | None = None, token: str | None = None,
                      dry_run: bool = False) -> str | None:
    """Repo ids and token, before the folder exists (a run that pushes when it is done); returns the token."""
    check_repo_id(repo_id)
    if gguf_repo:
        check_repo_id(gguf_repo, input="gguf_repo")
    if dry_run:
        return None
    token = require_token(token)
    check_online()
    return token
