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

from . import __version__
from .errors import HubError, ModelLoadError
from .model_card import (
    RESULTS_FILE,
    GGUFVariant,
    Licence,
    artifact_metadata,
    base_model_id,
    build_gguf_card,
    build_model_card,
    check_card,
    human_size,
    load_results,
)

INDEX_FILE = "model.safetensors.index.json"
ARTIFACT_FILES = ("refusal.safetensors", "refusal.json", "abliteration.json")
# What loads the model besides its shards; licence files of the base travel with its weights.
MODEL_FILES = ("config.json", "generation_config.json", INDEX_FILE, "chat_template.jinja", "chat_template.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "preprocessor_config.json",
               "processor_config.json")
MODEL_PATTERNS = ("*.tiktoken", "LICENSE*", "LICENCE*", "NOTICE*", "USE_POLICY*")
RESULTS_NAMES = (RESULTS_FILE, "results.json")  # looked for in the folder when no results file is given
# Weights of an earlier push that this one does not replace would sit beside the new ones and
# confuse loaders (a stale index, extra shards): they are deleted in the same commit.
STALE_PATTERNS = ["*.safetensors", INDEX_FILE]
MAX_NAME = 96  # the Hub's limit on a repo name


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
               progress: bool = True, base_model: str | None = None) -> PushResult:
    """Publish the abliterated model in ``folder`` (written by ``forge-hub apply`` or ``run``) as ``repo_id``.

    ``gguf_files`` (``<name>-<TYPE>.gguf``) go into the same repo, or into ``gguf_repo`` with a card of
    their own (``base_model_relation: quantized``, pointing at ``repo_id``). ``results`` is a
    ``forge-hub evaluate`` results JSON (default: ``evaluation.json`` or ``results.json`` in the
    folder). ``license`` is the base model's Hub licence id when its card cannot be read;
    ``base_model`` its Hub id when the direction was computed on a local folder or GGUF file.
    ``exist_ok`` uploads into an existing repo (files of the same name are replaced, stale weight
    shards removed); without it an existing repo is an error. ``dry_run`` stages the exact folder
    and returns what would be uploaded without a single request.

    Example::

        push_model(Path("smollm2-abliterated"), "me/smollm2-abliterated", dry_run=True).files
    """
    plan = plan_push(folder, repo_id, gguf_files=gguf_files, gguf_repo=gguf_repo, results=results,
                     base_model=base_model)
    if not dry_run:
        token = require_token(token)
        _check_online()
    with _progress_bars(progress):
        api = None if dry_run else _api(token)
        if api is not None:
            with hub_errors(repo_id):  # a rejected token or a foreign namespace fails before anything is made
                check_namespaces(api, plan.repo_ids)
        licence = resolve_licence(plan.folder, plan.base, plan.revision, license, api=api)
        if licence.id == "other" and not licence.name:
            plan.notes.append("the base model's licence could not be read: the card says `other`; pass --license ID")
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
    meta: dict  # refusal.json
    base: str | None  # the base model's Hub id
    revision: str | None
    base_model: str | None  # as given by the caller
    gguf: list[GGUFVariant]
    gguf_repo: str | None  # a separate repo for them, or None
    results_path: Path | None
    results: dict | None
    notes: list[str]

    @property
    def repo_ids(self) -> list[str]:
        return [self.repo_id] + ([self.gguf_repo] if self.gguf_repo else [])


def plan_push(folder: Path, repo_id: str, *, gguf_files: Sequence[Path] = (), gguf_repo: str | None = None,
              results: Path | None = None, base_model: str | None = None) -> PushPlan:
    """Check every input of a push without a request: the folder, repo names, GGUF files, results."""
    folder = Path(folder).expanduser().resolve()
    files, left_out = select_files(folder)
    check_repo_id(repo_id)
    gguf = [GGUFVariant.from_path(p) for p in gguf_files]
    _check_gguf_names(gguf)
    gguf_repo = gguf_repo if gguf_repo and gguf_repo != repo_id else None
    if gguf_repo:
        check_repo_id(gguf_repo, "--gguf-repo")
        if not gguf:
            raise HubError(f"a GGUF repo ({gguf_repo}) was named but no GGUF file was given",
                           "pass --gguf TYPES (or GGUF files), or leave out --gguf-repo")
    results_path = Path(results).expanduser() if results else _results_in(folder)
    result_data = load_results(results_path) if results_path else None
    meta = artifact_metadata(folder)
    base, revision = base_model_id(meta, base_model)
    notes = [f"not uploaded (not part of a model): {', '.join(left_out)}"] if left_out else []
    notes += _results_notes(result_data, folder) if result_data else []
    if base is None:
        notes.append("the base model is not a Hub id (computed on a local folder or GGUF file), so the card has no "
                     "base_model; pass --base-model OWNER/NAME to name it")
    return PushPlan(folder, repo_id, files, meta, base, revision, base_model, gguf, gguf_repo, results_path,
                    result_data, notes)


def _stage(plan: PushPlan, tmp: Path, licence: Licence, dry_run: bool) -> PushResult:
    """The exact upload folder(s) under ``tmp/model`` (and ``tmp/gguf``), cards checked offline."""
    main_dir, gguf_dir = tmp / "model", tmp / "gguf"
    staged = stage_model(main_dir, plan.files, plan.results_path if plan.results else None,
                         [] if plan.gguf_repo else plan.gguf, local_names={plan.meta.get("model"): plan.base})
    card = build_model_card(plan.folder, plan.repo_id, results=plan.results, licence=licence,
                            base_model=plan.base_model, gguf=plan.gguf, gguf_repo=plan.gguf_repo,
                            files=_card_files(staged))
    check_card(card, plan.results)
    card.save(main_dir / "README.md")
    result = PushResult(plan.repo_id, None, _listing(main_dir), None, card=str(card), notes=plan.notes,
                        dry_run=dry_run)
    if plan.gguf_repo:
        gguf_card = build_gguf_card(plan.repo_id, plan.gguf_repo, plan.gguf, licence=licence, base_model=plan.base)
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
    from .checkpoint import weight_shards

    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder", "push the --out folder of `forge-hub apply` or `run`")
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (f"this folder holds {', '.join(ggufs)}: a GGUF source was edited as GGUF; run apply/run with "
                "--to-safetensors to get a model folder to push" if ggufs else
                "push the --out folder of `forge-hub apply` or `run` (config.json, *.safetensors, tokenizer)")
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)", hint)
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON: {exc}", "write the folder again") from exc
    shards = weight_shards(folder)  # raises with a hint when there are none, or the index names missing ones
    if not (folder / "refusal.json").is_file():
        raise ModelLoadError(f"{folder} has no refusal.json, so it was not written by forge-hub",
                             "push the --out folder of `forge-hub apply` or `run`; it documents the edit")
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


def check_repo_id(repo_id: str, flag: str = "--repo") -> None:
    """huggingface_hub's repo id rules plus the Hub's own: an owner, a name of at most 96 characters."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    hint = f"write {flag} as OWNER/NAME with letters, digits, '-', '_' and '.', e.g. my-name/smollm2-abliterated"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"invalid Hub repo id {repo_id!r}: {exc}", hint) from exc
    owner, _, name = repo_id.rpartition("/")
    if not owner:
        raise HubError(f"invalid Hub repo id {repo_id!r}: it names no owner (user or organisation)", hint)
    if len(name) > MAX_NAME:
        raise HubError(f"invalid Hub repo id {repo_id!r}: the name is longer than {MAX_NAME} characters", hint)


def require_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN``, else the cached ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token found", "log in with `hf auth login`, or set HF_TOKEN to a write token")
    return token


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
    evaluated = str(result.get("model") or "")
    path = Path(evaluated).expanduser()
    if evaluated and path.is_dir() and path.resolve() != folder:
        return [f"the results were measured on {path.name}, not on {folder.name}: check that they belong to it"]
    return []


# --- licence ------------------------------------------------------------------------------------------

def resolve_licence(folder: Path, base: str | None, revision: str | None, explicit: str | None,
                    api=None) -> Licence:
    """The licence for the card: ``explicit`` (--license), else the base model's card on the Hub
    (asked through ``api``; None stays offline), else the base's README.md that apply carried into
    the folder, else ``other``."""
    if explicit:
        return Licence(explicit, origin="given with --license")
    if base and api is not None:
        try:
            info = api.model_info(base, revision=revision)
        except Exception:  # noqa: BLE001 - unreachable, gated, renamed: fall back to what the folder knows
            info = None
        found = Licence.from_card_data(info.card_data, "read from the base model's card on the Hub") if info else None
        if found:
            return found
    readme = folder / "README.md"
    found = Licence.from_readme(readme, "read from the base model's card in the source folder") if readme.is_file() else None
    return found or Licence("other")


# --- staging ------------------------------------------------------------------------------------------

def stage_model(target: Path, files: Sequence[Path], results: Path | None,
                gguf: Sequence[GGUFVariant], local_names: dict | None = None) -> list[UploadFile]:
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
    return _listing(target)


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
                      exists_fix="pass --exist-ok to upload into it (files of the same name are replaced), or "
                      "choose another --repo")
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message,
                             commit_description=description, delete_patterns=delete_patterns)
    return str(url), info.commit_url


def create_repo(api, repo_id: str, *, exist_ok: bool, exists_fix: str, **kwargs):
    """``api.create_repo``; an existing repo without ``exist_ok`` is a HubError with ``exists_fix``."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.create_repo(repo_id, exist_ok=exist_ok, **kwargs)
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 409:
            raise HubError(f"{repo_id} already exists on the Hub", exists_fix) from exc
        raise


def _validate_card(card) -> None:
    """``ModelCard.validate``: the Hub's /api/validate-yaml (at HF_ENDPOINT); a 400 is a bad card."""
    try:
        card.validate()
    except ValueError as exc:
        raise HubError(f"the Hub rejected the model card's metadata: {exc}", "check --license and --base-model") from exc


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubError("cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to publish (or use --dry-run)")


def default_commit_message(meta: dict, base: str | None, results: dict | None, n_gguf: int) -> str:
    """One line that says what this commit is: the base, the method and layer, the effect."""
    what = base or Path(str(meta.get("model") or "model")).name
    layer = meta.get("selected_layer")
    how = f"{meta.get('method', '?')}, layer {layer:g}" if isinstance(layer, (int, float)) else str(meta.get("method"))
    message = f"Abliterated {what} ({how}) with forge-hub {__version__}"
    if results:
        r, n = results["results"], results["prompts"]["harmful"]["count"]
        before = f"{r['reference']['refusals']}/{n} -> " if "reference" in r else ""
        message += f": harmful refused {before}{r['model']['refusals']}/{n}"
    return message + (f", {n_gguf} GGUF file(s)" if n_gguf else "")


def _description(meta: dict, base: str | None, results: dict | None, files: Sequence[UploadFile]) -> str:
    total = sum(f.size for f in files)
    lines = [f"{len(files)} files, {human_size(total)}: weights, tokenizer, direction artifact (refusal.safetensors, "
             f"refusal.json), model card" + (f", evaluation results ({RESULTS_FILE})" if results else "") + "."]
    if base:
        lines.append(f"Base model: {base}" + (f" at {meta['revision']}" if meta.get("revision") else "") + ".")
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


@contextlib.contextmanager
def hub_errors(repo_id: str, card_fix: str = "check --license and --base-model") -> Iterator[None]:
    """huggingface_hub's exceptions as HubError with a fix; none of them carries the token.
    ``card_fix`` is what to do when the Hub rejects the README's YAML."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise HubError("cannot push: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to publish") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hints = {401: "the token was rejected: log in again with `hf auth login` or set a valid HF_TOKEN",
                 403: f"the token cannot write to {repo_id}: use a write token with access to that namespace",
                 404: f"check the repo id and that the token can see {repo_id}"}
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(f"the Hub refused the push to {repo_id} (HTTP {status}): {first}",
                       hints.get(status, "check the repo id and your access to it, then push again with --exist-ok")) \
            from exc
    except ValueError as exc:  # upload_folder's own YAML check raises ValueError on a 400
        if "metadata" not in str(exc).lower():
            raise
        raise HubError(f"the Hub rejected the README's metadata: {exc}", card_fix) from exc
    except HubError:
        raise
    except Exception as exc:  # dropped connections come as several httpx and OS error types
        cause = exc.__cause__ or exc
        raise HubError(f"the push to {repo_id} was interrupted: {type(cause).__name__}: {cause}",
                       "run the same push again with --exist-ok: files already on the Hub are not sent again") from exc


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
    """Repo ids and token, before the folder exists (``forge-hub run --push-to``); returns the token."""
    check_repo_id(repo_id)
    if gguf_repo:
        check_repo_id(gguf_repo, "--gguf-repo")
    if dry_run:
        return None
    token = require_token(token)
    _check_online()
    return token
