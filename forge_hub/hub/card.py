"""The model card of an abliterated model: metadata the Hub reads, a page a person reads.

Everything on the card comes from what the folder already records about itself, so the card
cannot drift from the weights: ``refusal.json`` (base model and revision, method, layer and how
it was chosen, prompt counts and sources, apply settings, search results), the evaluation
results (schema ``forge-hub/evaluation/v2``, or v1), the GGUF files beside it and their check
(``gguf-evaluation.json``: each file's refusals and KL). The YAML is built with huggingface_hub's
:class:`~huggingface_hub.ModelCardData` and :class:`~huggingface_hub.EvalResult` (so the refusal
rate, over-refusal, XSTest over-refusal, KL and the lm-eval tasks, by their standard task and
metric names, show on the model page), and checked by reading the card back with the library's
own parser (:func:`check_card`); the Hub's ``/api/validate-yaml`` checks it again when it is pushed.

    card = build_model_card(Path("smollm2-abliterated"), "me/smollm2-abliterated",
                            results=json.loads(Path("results.json").read_text()))
    card.save("README.md")

Local paths never reach the card: a prompt file or a source folder is named by its file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from forge_hub import __version__
from forge_hub.errors import GGUFTypeError, HubError, SettingsError
from forge_hub.hub.common import repo_id_problem
from forge_hub.schema import (
    CONFIG_FILE,
    GGUF_CHECK_FILE,
    RESULTS_FILE,
    RESULTS_SCHEMA,
    RESULTS_SCHEMAS,
    DirectionMetadata,
    EvaluationResults,
    GGUFCheck,
    ModelScores,
    PromptSet,
    TaskResult,
)
from forge_hub.units import human_size

TAGS = ("abliterated", "uncensored", "forge-hub", "not-for-all-audience")
GGUF_TAGS = ("gguf", "llama-cpp")
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")  # what the Hub accepts
TASK = "text-generation"
_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})")
_GGUF_NAME = re.compile(r"-(?P<type>[A-Za-z0-9_]+)\.gguf$")
_PROMPT_FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")
SHIPPED_LISTS = {  # the lists forge-hub ships, as a card names them
    "builtin:advbench": "[AdvBench](https://github.com/llm-attacks/llm-attacks) harmful behaviours (MIT), "
                        "shipped with forge-hub",
    "builtin:alpaca": "[Alpaca](https://github.com/tatsu-lab/stanford_alpaca) instructions (CC BY-NC 4.0), "
                      "shipped with forge-hub",
}


@dataclass(frozen=True)
class Licence:
    """The base model's licence as the Hub spells it, and where it was read (said on the card)."""

    id: str  # a Hub licence id (apache-2.0, llama3.1, gemma, mit, ...) or "other"
    name: str | None = None  # license_name, for "other"
    link: str | None = None  # license_link, for "other"
    origin: str = ""  # how it was found, e.g. "read from the base model's card on the Hub"

    @classmethod
    def from_card_data(cls, data: Any, origin: str) -> Licence | None:
        """From a card's metadata (a dict or a CardData); None when it names no licence."""
        get = data.get if data is not None else (lambda key, default=None: default)
        licence = get("license")
        if isinstance(licence, list):
            licence = licence[0] if licence else None
        if not licence:
            return None
        return cls(str(licence), get("license_name"), get("license_link"), origin)

    @classmethod
    def from_readme(cls, path: Path, origin: str) -> Licence | None:
        """From a README.md with a YAML header (the base's card, copied beside the weights)."""
        from huggingface_hub import ModelCard

        try:
            card = ModelCard.load(path, ignore_metadata_errors=True)
        except (OSError, ValueError, yaml.YAMLError):  # an unreadable card is the same as none
            return None
        return cls.from_card_data(card.data, origin)


UNKNOWN_LICENCE = Licence("other", origin="")


@dataclass(frozen=True)
class GGUFVariant:
    """One GGUF file as the card lists it."""

    path: Path
    type: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def from_path(cls, path: str | Path) -> GGUFVariant:
        """Check that ``path`` is a GGUF file named ``<name>-<TYPE>.gguf`` (the gguf-my-repo way)."""
        from forge_hub.outputs.gguf.quant import LLAMA_CPP_TYPES, NUMPY_TYPES

        path = Path(path).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise HubError(f"{path} is not a .gguf file", "give GGUF files written by the GGUF export (or GGUF types)",
                           input="gguf_files")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise HubError(f"{path} does not start with the GGUF magic bytes",
                               "write it again with the GGUF export", input="gguf_files")
        match = _GGUF_NAME.search(path.name)
        gguf_type = match["type"].upper() if match else ""
        if gguf_type not in NUMPY_TYPES + LLAMA_CPP_TYPES:
            raise GGUFTypeError(f"cannot tell the GGUF type of {path.name}: no known type before .gguf",
                                "name it <name>-<TYPE>.gguf with TYPE one of "
                                f"{', '.join(NUMPY_TYPES + LLAMA_CPP_TYPES)}")
        return cls(path, gguf_type, path.stat().st_size)


def base_model_id(metadata: DirectionMetadata | None, override: str | None = None) -> tuple[str | None, str | None]:
    """(Hub id, revision) of the model the direction was computed on, or (None, None) when it was a
    local folder or GGUF file that cannot be traced to the Hub (``override`` then names it)."""
    metadata = metadata or DirectionMetadata()
    revision = metadata.revision
    if override:
        return override, revision if metadata.model == override else None
    model = str(metadata.model or "")
    if metadata.source_kind == "hub" and model:
        return model, revision
    match = _HF_CACHE_SNAPSHOT.search(model.replace("\\", "/"))  # a folder inside the Hugging Face cache
    if match:
        return f"{match['owner']}/{match['name']}", match["revision"]
    return None, None


def dataset_of(source: str | None) -> tuple[str, str | None, str | None] | None:
    """(dataset id, config, split) when a prompt source is a Hub dataset, else None.

    Sources are what the CLI records: ``"forge-hub/refusal-prompts harmful/train"`` (the prompt
    dataset), ``"owner/name[:config][:split]"`` (a dataset given to --harmful), a file or folder,
    or ``"builtin:harmful"``.
    """
    if not source or source.startswith("builtin:"):
        return None
    head, _, rest = source.strip().partition(" ")
    ident, *parts = head.split(":")
    if (ident.startswith((".", "/", "~")) or ident.count("/") != 1 or ident.endswith(_PROMPT_FILE_SUFFIXES)
            or Path(ident).expanduser().exists()):
        return None
    if repo_id_problem(ident):
        return None
    if rest:  # "config/split", as the CLI writes the prompt dataset's sides
        config, _, split = rest.partition("/")
        return ident, config or None, split or None
    return ident, parts[0] if parts else None, parts[1] if len(parts) > 1 else None


def display_source(source: str | None, count: int | None = None) -> str:
    """A prompt source as the card shows it: Hub datasets by id, local files by file name only."""
    if not source:
        return "not recorded"
    if source.startswith("builtin:"):
        name, _, split = source.partition(" ")
        shown = SHIPPED_LISTS.get(name, f"forge-hub's built-in {name.split(':', 1)[1]} list")
        return shown + (f" ({split} split)" if split else "")
    if dataset_of(source):
        ident, config, split = dataset_of(source)
        where = "/".join(p for p in (config, split) if p)
        return f"[{ident}](https://huggingface.co/datasets/{ident})" + (f" ({where})" if where else "")
    return f"`{Path(source.split(' ')[0]).name}` (local)"


def eval_results(result: EvaluationResults) -> list[Any]:
    """The results as ``EvalResult`` entries for the model-index (values exactly as measured): refusal
    rate, over-refusal, KL, XSTest over-refusal, and each lm-eval task by its own task and metric
    name (``hellaswag`` / ``acc_norm``) and the dataset lm-eval read, as leaderboards record them."""
    from huggingface_hub import EvalResult

    r = result.results
    harmful = _eval_dataset(result.prompts["harmful"], "harmful")
    harmless = _eval_dataset(result.prompts["harmless"], "harmless")
    if (harmful["dataset_type"], harmful["dataset_config"]) == (harmless["dataset_type"], harmless["dataset_config"]):
        harmful["dataset_config"], harmless["dataset_config"] = "harmful", "harmless"  # keep the two apart
    rows = [EvalResult(task_type=TASK, task_name="Refusal of harmful requests", **harmful, metric_type="refusal_rate",
                       metric_name="Refusal rate on harmful prompts", metric_value=r.model.refusal_rate),
            EvalResult(task_type=TASK, task_name="Over-refusal of harmless requests", **harmless,
                       metric_type="over_refusal_rate", metric_name="Refusal rate on harmless prompts (over-refusal)",
                       metric_value=r.model.over_refusal_rate)]
    if r.kl_divergence is not None:
        rows.append(EvalResult(task_type=TASK, task_name="Over-refusal of harmless requests", **harmless,
                               metric_type="kl_divergence",
                               metric_name="First-token KL divergence from the original (harmless prompts)",
                               metric_value=r.kl_divergence))
    if r.model.xstest is not None:
        rows.append(EvalResult(task_type=TASK, task_name="Over-refusal of safe prompts that look unsafe (XSTest)",
                               **_xstest_dataset(result.prompts.get("xstest")), metric_type="over_refusal_rate",
                               metric_name="Refusal rate on XSTest safe prompts (over-refusal)",
                               metric_value=r.model.xstest.refusal_rate))
    limited = bool((result.settings.get("capability") or {}).get("limit"))
    for task in (r.capabilities or {}).values():
        shots = {"num_few_shot": task.num_fewshot} if task.num_fewshot is not None else None
        rows.append(EvalResult(task_type=TASK, task_name=task.task, dataset_type=task.dataset or task.task,
                               dataset_name=task.task + (f" ({task.samples} documents)" if limited and task.samples
                                                         else ""),
                               dataset_config=task.dataset_config, dataset_split=task.dataset_split,
                               dataset_args=shots, metric_type=task.metric, metric_name=metric_label(task),
                               metric_value=task.model.value))
    return rows


def metric_label(task: TaskResult) -> str:
    """``acc_norm``, or ``exact_match (strict-match)`` where lm-eval extracted the answer with a filter."""
    return task.metric if task.filter == "none" else f"{task.metric} ({task.filter})"


def _xstest_dataset(prompts: PromptSet | None) -> dict[str, Any]:
    found = dataset_of(prompts.source if prompts else None)
    count = prompts.count if prompts else 0
    if found:  # a prompt dataset with the xstest config, on the Hub
        return {"dataset_type": found[0], "dataset_name": f"XSTest ({count} safe prompts)", "dataset_config": found[1],
                "dataset_split": found[2]}
    return {"dataset_type": "xstest", "dataset_name": f"XSTest ({count} safe prompts)", "dataset_config": None,
            "dataset_split": None}


def score_rows(result: EvaluationResults) -> list[tuple[str, str, str, str]]:
    """The model-index's numbers as the card body shows them, with the base model's beside them:
    (what, dataset, this model, base model)."""
    r, n_harm, n_safe = result.results, result.harmful_count, result.harmless_count
    base = r.reference

    def counted(scores: ModelScores | None, side: str) -> str:
        if scores is None:
            return "-"
        if side == "xstest":
            return "-" if scores.xstest is None else \
                f"{scores.xstest.refusals}/{scores.xstest.total} ({scores.xstest.refusal_rate:.0%})"
        count, total = (scores.refusals, n_harm) if side == "harmful" else (scores.over_refusals, n_safe)
        return f"{count}/{total} ({count / total:.0%})" if total else "-"

    rows = [("harmful prompts refused", _dataset_text(result.prompts["harmful"]), counted(r.model, "harmful"),
             counted(base, "harmful")),
            ("harmless prompts refused (over-refusal)", _dataset_text(result.prompts["harmless"]),
             counted(r.model, "harmless"), counted(base, "harmless"))]
    if r.model.xstest is not None:
        rows.append(("XSTest safe prompts refused (over-refusal)", "XSTest (Röttger et al. 2024)",
                     counted(r.model, "xstest"), counted(base, "xstest")))
    if r.kl_divergence is not None:
        rows.append(("first-token KL divergence from the base", _dataset_text(result.prompts["harmless"]),
                     f"{r.kl_divergence:.4f}", "0"))
    if r.kl_divergence_answered is not None:
        rows.append(("the same KL on the harmless prompts the base answers (its over-refusals left out)",
                     _dataset_text(result.prompts["harmless"]), f"{r.kl_divergence_answered:.4f}", "0"))
    for task in (r.capabilities or {}).values():
        shots = f", {task.num_fewshot}-shot" if task.num_fewshot is not None else ""
        where = (f"[{task.dataset}](https://huggingface.co/datasets/{task.dataset})" if task.dataset else "local task")
        rows.append((f"`{task.task}` {metric_label(task)}{shots}", where + (f", {task.samples} documents"
                                                                             if task.samples else ""),
                     _value(task.model), _value(task.reference)))
    return [tuple(cell.replace("|", "\\|") for cell in row) for row in rows]


def _value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value.value:.4f}" + (f" ± {value.stderr:.4f}" if value.stderr is not None else "")


def _dataset_text(prompts: PromptSet) -> str:
    return f"{prompts.count}, {display_source(prompts.source)}"


def gguf_rows(gguf: Sequence[GGUFVariant], check: GGUFCheck | None) -> list[dict[str, str]]:
    """One row per GGUF file: name, type, size and, when the files were checked, what each refuses
    and how far it is from the base (a file that brought refusals back is marked)."""
    rows = []
    for g in gguf:
        row = {"name": g.name, "type": g.type, "size": human_size(g.size)}
        found = check.file(g.name) if check is not None else None
        if found is not None:
            s = found.scores
            row.update(refused=f"{s.refusals}/{check.prompts['harmful'].count} ({s.refusal_rate:.0%})",
                       over=f"{s.over_refusals}/{check.prompts['harmless'].count} ({s.over_refusal_rate:.0%})",
                       kl=f"{found.kl_divergence:.4f}" if found.kl_divergence is not None else "-",
                       note=("⚠ " + found.warning) if found.warning else "")
        rows.append(row)
    return rows


def gguf_check_text(check: GGUFCheck | None, where: str | None = None) -> str | None:
    """The sentence under the GGUF table: how the files were measured, and the unquantized model's numbers."""
    if check is None:
        return None
    n, m = check.prompts["harmful"].count, check.prompts["harmless"].count
    parts = []
    for label, scores in (("the unquantized model", check.unquantized_scores),
                          ("the base model", check.reference_scores)):
        if scores is not None:
            parts.append(f"{label} refused {scores.refusals}/{n} and {scores.over_refusals}/{m}")
    kl = f" (first-token KL from the base {check.unquantized_kl:.4f})" if check.unquantized_kl is not None else ""
    backends = sorted({f.backend for f in check.files})
    return (f"Each file was run as users run it ({' and '.join(backends)}) on {n} harmful and {m} harmless prompts, "
            f"greedy, {check.settings.get('max_new_tokens')} new tokens; KL is the first-token KL divergence from "
            f"the base model on the harmless prompts. On the same prompts, {' and '.join(parts) or 'no model'}{kl}. "
            f"The full check is in `{GGUF_CHECK_FILE}`" + (f" of [{where}](https://huggingface.co/{where})." if where
                                                          else "."))


def _eval_dataset(prompts: PromptSet, side: str) -> dict[str, Any]:
    found = dataset_of(prompts.source)
    if found:
        ident, config, split = found
        where = "/".join(p for p in (config, split) if p)
        return {"dataset_type": ident, "dataset_name": f"{ident} {where}".strip(), "dataset_config": config,
                "dataset_split": split}
    source = display_source(prompts.source).replace("`", "")
    return {"dataset_type": "custom", "dataset_name": f"{prompts.count} {side} prompts ({source})",
            "dataset_config": side, "dataset_split": None}


def load_results(path: str | Path) -> EvaluationResults:
    """A results file written by an evaluation, checked to be one."""
    path = Path(path).expanduser()
    fix = "give the results file an evaluation wrote ({results})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HubError(f"results file {path} does not exist", fix, input="results") from exc
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read results file {path}: {exc}", fix, input="results") from exc
    if not isinstance(data, dict) or data.get("schema") not in RESULTS_SCHEMAS:
        raise HubError(f"{path} is not forge-hub evaluation results (schema {' or '.join(RESULTS_SCHEMAS)})", fix,
                       input="results")
    try:
        return EvaluationResults.from_dict(data)
    except (KeyError, TypeError, SettingsError) as exc:
        raise HubError(f"{path} is not complete forge-hub evaluation results: {exc}", fix, input="results") from exc


def build_model_card(folder: Path, repo_id: str, *, results: EvaluationResults | None = None,
                     licence: Licence | None = None, base_model: str | None = None, gguf: Sequence[GGUFVariant] = (),
                     gguf_repo: str | None = None, files: Sequence[tuple[str, int]] = (),
                     wheel: str | None = None, gguf_check: GGUFCheck | None = None) -> Any:
    """The card of the abliterated model in ``folder``, to be pushed to ``repo_id``.

    ``gguf`` lists GGUF files in this repo, or in ``gguf_repo`` when that is given, with what
    ``gguf_check`` measured of each; ``files`` are the (path in repo, size) pairs the card lists.
    Returns a :class:`huggingface_hub.ModelCard`.
    """
    from huggingface_hub import ModelCard, ModelCardData

    meta = artifact_metadata(folder)
    base, revision = base_model_id(meta, base_model)
    licence = licence or UNKNOWN_LICENCE
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        base_model=base, license=licence.id, license_name=licence.name, license_link=licence.link,
        library_name="transformers", pipeline_tag=TASK,
        tags=list(TAGS) + (list(GGUF_TAGS) if gguf and not gguf_repo else []),
        datasets=_direction_datasets(meta) or None,
        model_name=name if results else None, eval_results=eval_results(results) if results else None,
    )
    if base:
        data.base_model_relation = "finetune"
    context = {
        "title": name, "repo_id": repo_id, "intro": _intro(meta, base, revision, folder),
        "summary": _summary(results), "edits_embeddings": _edits_embeddings(folder),
        "direction_rows": _direction_rows(meta), "settings_rows": _settings_rows(meta),
        "search_rows": _search_rows(meta), "results_md": _results_markdown(results, repo_id),
        "score_rows": score_rows(results) if results else [],
        "results_file": RESULTS_FILE, "results_schema": RESULTS_SCHEMA,
        "harmful_prompts": _prompts_line(results, "harmful"), "harmless_prompts": _prompts_line(results, "harmless"),
        "base_ref": base or "ORIGINAL", "files": [(p, human_size(s)) for p, s in files],
        "gguf_rows": gguf_rows(gguf, gguf_check), "gguf_checked": gguf_check is not None,
        "gguf_check_text": gguf_check_text(gguf_check, gguf_repo), "gguf_repo": gguf_repo,
        "reproduce": _reproduce(meta, base, revision, repo_id), "licence_text": _licence_text(licence, base),
        "install": _install(meta, repo_id, wheel), "has_settings": any(path == CONFIG_FILE for path, _ in files),
    }
    return ModelCard.from_template(data, template_str=_template("model_card.md"), **context)


def build_gguf_card(source_repo: str, repo_id: str, gguf: Sequence[GGUFVariant], *, licence: Licence | None = None,
                    base_model: str | None = None, gguf_check: GGUFCheck | None = None) -> Any:
    """The card of a separate GGUF repo: ``base_model`` is the abliterated repo, relation ``quantized``.

    Each file's check (``gguf_check``) is in the body's table; no model-index, which describes one
    model, and these are several.
    """
    from huggingface_hub import ModelCard, ModelCardData

    licence = licence or UNKNOWN_LICENCE
    data = ModelCardData(base_model=source_repo, license=licence.id, license_name=licence.name,
                         license_link=licence.link, library_name="gguf", pipeline_tag=TASK,
                         tags=list(TAGS) + list(GGUF_TAGS))
    data.base_model_relation = "quantized"
    base_text = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "its base model"
    context = {"title": repo_id.split("/")[-1], "repo_id": repo_id, "source_repo": source_repo, "base_text": base_text,
               "forge_hub_version": __version__, "gguf_rows": gguf_rows(gguf, gguf_check),
               "gguf_checked": gguf_check is not None, "gguf_check_text": gguf_check_text(gguf_check),
               "first_file": gguf[0].name if gguf else "", "licence_text": _licence_text(licence, base_model)}
    return ModelCard.from_template(data, template_str=_template("gguf_card.md"), **context)


def check_card(card: Any, results: EvaluationResults | None = None) -> None:
    """Read the card back with huggingface_hub's own parser and check what the Hub relies on.

    Offline (the Hub's ``/api/validate-yaml`` is asked at push time): the YAML parses into
    ``ModelCardData``, the model-index reads back (``model_index_to_eval_results``) to exactly the
    values of ``results``, a ``base_model_relation`` is one the Hub knows and has a ``base_model``.
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    try:
        data = ModelCard(str(card)).data.to_dict()
        if results is not None:
            if "model-index" not in data:
                raise ValueError("the evaluation results are missing from the model-index")
            _, read_back = model_index_to_eval_results(data["model-index"])
            if [vars(r) for r in read_back] != [vars(r) for r in eval_results(results)]:
                raise ValueError("the model-index does not read back to the evaluation results")
        elif "model-index" in data:
            model_index_to_eval_results(data["model-index"])
        relation = data.get("base_model_relation")
        if relation is not None and (relation not in BASE_MODEL_RELATIONS or not data.get("base_model")):
            raise ValueError(f"base_model_relation {relation!r} needs a base_model and one of {BASE_MODEL_RELATIONS}")
        missing = set(TAGS) - set(data.get("tags") or [])
        if missing:
            raise ValueError(f"tags {sorted(missing)} are missing")
    except ValueError as exc:
        raise HubError(f"the model card fails huggingface_hub's metadata checks: {exc}",
                       "this is a forge-hub bug if the inputs are forge-hub's own files; please report it") from exc


# --- the pieces of the body -------------------------------------------------------------------------

def _template(name: str) -> str:
    return resources.files("forge_hub.hub").joinpath("templates", name).read_text(encoding="utf-8")


def artifact_metadata(folder: Path) -> DirectionMetadata | None:
    """refusal.json of the folder (None when there is none)."""
    path = folder / "refusal.json"
    try:
        return DirectionMetadata.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise HubError(f"{path} is not valid direction metadata: {exc}", "write the folder again (apply)",
                       input="folder") from exc


def _direction_datasets(meta: DirectionMetadata | None) -> list[str]:
    if meta is None:
        return []
    found = [dataset_of(meta.prompts.harmful.source), dataset_of(meta.prompts.harmless.source)]
    return list(dict.fromkeys(f[0] for f in found if f))


def _intro(meta: DirectionMetadata | None, base: str | None, revision: str | None, folder: Path) -> str:
    if base:
        at = f" at revision `{revision}`" if revision else ""
        what = f"[{base}](https://huggingface.co/{base}){at}"
    elif meta is not None and meta.model:
        what = f"`{Path(meta.model).name}` (a local {meta.source_kind or 'model'}, not traced to the Hub)"
    else:
        what = f"the model in `{folder.name}`"
    version = (meta.forge_hub_version if meta is not None else None) or __version__
    return (f"An abliterated copy of {what}: its refusal direction was removed from the weights with "
            f"forge-hub {version} (Arditi et al. 2024, *Refusal in Language Models Is Mediated by a Single "
            f"Direction*). Nothing else was trained or changed.")


def _summary(results: EvaluationResults | None) -> str | None:
    if not results:
        return None
    r, n_harm, n_safe = results.results, results.harmful_count, results.harmless_count
    text = (f"On {n_harm} harmful prompts it refused {r.model.refusals}/{n_harm}"
            + (f" (the original: {r.reference.refusals}/{n_harm})" if r.reference else "")
            + f"; on {n_safe} harmless prompts {r.model.over_refusals}/{n_safe}"
            + (f" (the original: {r.reference.over_refusals}/{n_safe})" if r.reference else ""))
    if r.kl_divergence is not None:
        text += f"; first-token KL divergence from the original {r.kl_divergence:.3f}"
    x = r.model.xstest
    if x is not None:
        text += (f"; on XSTest's {x.total} safe prompts that look unsafe {x.refusals}/{x.total}"
                 + (f" (the original: {r.reference.xstest.refusals}/{x.total})"
                    if r.reference is not None and r.reference.xstest is not None else ""))
    tasks = [f"{t.task} {t.metric} {t.model.value:.3f}" + (f" (the original: {t.reference.value:.3f})"
                                                            if t.reference is not None else "")
             for t in (r.capabilities or {}).values()]
    if tasks:
        text += "; " + ", ".join(tasks)
    return text + "."


def _direction_rows(meta: DirectionMetadata | None) -> list[tuple[str, str]]:
    if meta is None:
        return [("direction artifact", "not found in the folder")]
    methods = {"projected": "projected (harmful − harmless mean, its component along the harmless mean removed)",
               "mean_diff": "mean difference (Arditi et al.)", "svd": "SVD of the per-prompt differences"}
    layer = f"{meta.selected_layer:g} of {meta.num_layers or '?'}" if meta.selected_layer is not None else "?"
    rows = [("method", methods.get(meta.method, str(meta.method))), ("layer", layer)]
    how = meta.selection.how
    if how == "measured":
        rows.append(("layer chosen by",
                     "measuring every candidate layer's refusal probability and KL on held-out prompts"))
    elif how == "separation":
        rows.append(("layer chosen by", "the largest separation of the two sides' means, not measured (the search "
                                        "edits with each layer's own direction)"))
    elif how:
        rows.append(("layer chosen by", how))
    for side in ("harmful", "harmless"):
        used: PromptSet = getattr(meta.prompts, side)
        held = getattr(meta.prompts, f"held_out_{side}")
        held_count = held.count if held is not None else None
        rows.append((f"{side} prompts", f"{used.count} for the direction"
                     + (f", {held_count} held out" if held_count else "") + f"; {display_source(used.source)}"))
    if meta.refined is not None:
        r = meta.refined
        rows.append(("refined", f"layers {r.layers[0]}-{r.layers[-1]} by {r.steps} steps of gradient descent "
                                f"(answers to {r.targets} harmful prompts + {r.kl_weight:g} x first-token KL on "
                                f"harmless ones; mean cosine to the plain direction {r.mean_cosine_to_start:.2f})"))
    for value, label in ((meta.positions, "prompt positions"), (meta.system_prompt, "system prompt"),
                         (meta.winsorize_quantile, "winsorized at quantile")):
        if value not in (None, [], [-1], ""):
            rows.append((label, str(value)))
    return [(name, value.replace("|", "\\|")) for name, value in rows]


def _settings_rows(meta: DirectionMetadata | None) -> list[tuple[str, str]]:
    settings = meta.apply_settings.to_dict() if meta is not None else {}
    return [(k, _setting(v)) for k, v in settings.items() if v not in (None, {}, [])]


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def _search_rows(meta: DirectionMetadata | None) -> list[tuple[str, str]]:
    search = meta.search if meta is not None else None
    if search is None:
        return []
    harmful = search.eval_prompts.get("harmful")
    n = harmful.count if harmful is not None else None
    rows = [("trials", str(search.trials)), ("picked trial", str(search.trial)),
            ("its refusals", f"{search.refusals:.0f}" + (f"/{n}" if n else "") + f" at {search.max_new_tokens} tokens"),
            ("its first-token KL", f"{search.kl:.4f}"), ("pick rule", str(search.pick))]
    return [(name, value.replace("|", "\\|")) for name, value in rows]


def _results_markdown(results: EvaluationResults | None, repo_id: str) -> str | None:
    """The before/after table and sample answers, with this repo's id in place of a local path."""
    if not results:
        return None
    from forge_hub.evaluation.report import results_markdown

    return results_markdown(results, model_name=repo_id, reference_name=_model_name(results.reference))


def _model_name(model: str | None) -> str | None:
    """A Hub id as it is; a local path by its last part only."""
    if not model or (model.count("/") == 1 and not model.startswith((".", "/", "~"))
                     and not Path(model).expanduser().exists()):
        return model
    return f"{Path(model).name} (local)"


def _prompts_line(results: EvaluationResults | None, side: str) -> str:
    if not results:
        return ""
    prompts = results.prompts[side]
    return f"{prompts.count}, {display_source(prompts.source)}"


def _edits_embeddings(folder: Path) -> bool:
    try:
        edited = json.loads((folder / "abliteration.json").read_text(encoding="utf-8")).get("edited_tensors", [])
    except (OSError, ValueError):
        return False
    return any("embed" in name for name in edited)


def _install(meta: DirectionMetadata | None, repo_id: str, wheel: str | None) -> str:
    """How to get the forge-hub that made this model: its own wheel in this repo when one was pushed."""
    version = (meta.forge_hub_version if meta is not None else None) or __version__
    commit = meta.forge_hub_commit if meta is not None else None
    made = f"# made with forge-hub {version}" + (f", commit {commit}" if commit else "")
    if wheel:
        return f"{made}; this repo holds that code as a wheel:\npip install https://huggingface.co/{repo_id}/resolve/main/{wheel}"
    return f"{made}:\npip install 'forge-hub=={version}'"


def _reproduce(meta: DirectionMetadata | None, base: str | None, revision: str | None, repo_id: str) -> str:
    source = base or "BASE_MODEL  # the original model: a Hub id or folder"
    rev = f" --revision {revision}" if base and revision else ""
    lines = [f"hf download {repo_id} refusal.safetensors refusal.json --local-dir directions",
             f"forge-hub apply {source}{rev} --directions directions --out {repo_id.split('/')[-1]}"]
    if meta is not None:
        again = f"forge-hub run {base or 'BASE_MODEL'}{rev} --method {meta.method}"
        again += " --optimize" if meta.search else ""
        lines.append(f"# or measure the direction again (prompt sampling can differ):\n# {again} --out my-copy")
    return "\n".join(lines)


def _licence_text(licence: Licence, base: str | None) -> str:
    if licence.id != "other" or licence.name or licence.link:
        name = licence.name or licence.id
        where = f" ({licence.origin})" if licence.origin else ""
        link = f" ({licence.link})" if licence.link else ""
        of = f"of [{base}](https://huggingface.co/{base})" if base else "of the base model"
        return f"`{name}`{link}, the licence {of}{where}. Its terms and use policy apply to this copy."
    return ("The base model's licence could not be read, so this card says `other`. The base model's licence "
            "and use policy apply to this copy: check them before you use or share it, and push again with "
            "a licence id to record it.")
