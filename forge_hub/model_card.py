"""The model card of an abliterated model: metadata the Hub reads, a page a person reads.

Everything on the card comes from what the folder already records about itself, so the card
cannot drift from the weights: ``refusal.json`` (base model and revision, method, layer and how
it was chosen, prompt counts and sources, apply settings, search results), the evaluation
results (schema ``forge-hub/evaluation/v1``) and the GGUF files beside it. The YAML is built with
huggingface_hub's :class:`~huggingface_hub.ModelCardData` and :class:`~huggingface_hub.EvalResult`
(so the refusal rate, over-refusal and KL show on the model page), and checked by reading the
card back with the library's own parser (:func:`check_card`); the Hub's ``/api/validate-yaml``
checks it again when it is pushed.

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

from . import __version__
from .errors import HubError

TAGS = ("abliterated", "uncensored", "forge-hub", "not-for-all-audience")
GGUF_TAGS = ("gguf", "llama-cpp")
RESULTS_FILE = "evaluation.json"  # the results JSON's name in the repo
RESULTS_SCHEMA = "forge-hub/evaluation/v1"  # as written by forge_hub.evaluation (not imported: it pulls in torch)
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")  # what the Hub accepts
TASK = "text-generation"
_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})")
_GGUF_NAME = re.compile(r"-(?P<type>[A-Za-z0-9_]+)\.gguf$")
_PROMPT_FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")


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
        from .gguf_quant import LLAMA_CPP_TYPES, NUMPY_TYPES, GGUFTypeError

        path = Path(path).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise HubError(f"{path} is not a .gguf file", "pass GGUF files written by `forge-hub gguf` (or --gguf TYPES)")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise HubError(f"{path} does not start with the GGUF magic bytes", "write it again with `forge-hub gguf`")
        match = _GGUF_NAME.search(path.name)
        gguf_type = match["type"].upper() if match else ""
        if gguf_type not in NUMPY_TYPES + LLAMA_CPP_TYPES:
            raise GGUFTypeError(f"cannot tell the GGUF type of {path.name}: no known type before .gguf",
                                f"name it <name>-<TYPE>.gguf with TYPE one of {', '.join(NUMPY_TYPES + LLAMA_CPP_TYPES)}")
        return cls(path, gguf_type, path.stat().st_size)


def base_model_id(metadata: dict, override: str | None = None) -> tuple[str | None, str | None]:
    """(Hub id, revision) of the model the direction was computed on, or (None, None) when it was a
    local folder or GGUF file that cannot be traced to the Hub (``override`` then names it)."""
    revision = metadata.get("revision")
    if override:
        return override, revision if metadata.get("model") == override else None
    model = str(metadata.get("model") or "")
    if metadata.get("source_kind") == "hub" and model:
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
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not source or source.startswith("builtin:"):
        return None
    head, _, rest = source.strip().partition(" ")
    ident, *parts = head.split(":")
    if (ident.startswith((".", "/", "~")) or ident.count("/") != 1 or ident.endswith(_PROMPT_FILE_SUFFIXES)
            or Path(ident).expanduser().exists()):
        return None
    try:
        validate_repo_id(ident)
    except HFValidationError:
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
        return f"forge-hub's built-in {source.split(':', 1)[1]} list"
    if dataset_of(source):
        ident, config, split = dataset_of(source)
        where = "/".join(p for p in (config, split) if p)
        return f"[{ident}](https://huggingface.co/datasets/{ident})" + (f" ({where})" if where else "")
    return f"`{Path(source.split(' ')[0]).name}` (local)"


def eval_results(result: dict) -> list[Any]:
    """The results JSON as ``EvalResult`` entries for the model-index (values exactly as measured)."""
    from huggingface_hub import EvalResult

    r = result["results"]
    harmful = _eval_dataset(result["prompts"]["harmful"], "harmful")
    harmless = _eval_dataset(result["prompts"]["harmless"], "harmless")
    if (harmful["dataset_type"], harmful["dataset_config"]) == (harmless["dataset_type"], harmless["dataset_config"]):
        harmful["dataset_config"], harmless["dataset_config"] = "harmful", "harmless"  # keep the two apart
    rows = [EvalResult(task_type=TASK, task_name="Refusal of harmful requests", **harmful, metric_type="refusal_rate",
                       metric_name="Refusal rate on harmful prompts", metric_value=r["model"]["refusal_rate"]),
            EvalResult(task_type=TASK, task_name="Over-refusal of harmless requests", **harmless,
                       metric_type="over_refusal_rate", metric_name="Refusal rate on harmless prompts (over-refusal)",
                       metric_value=r["model"]["over_refusal_rate"])]
    if r.get("kl_divergence") is not None:
        rows.append(EvalResult(task_type=TASK, task_name="Over-refusal of harmless requests", **harmless,
                               metric_type="kl_divergence",
                               metric_name="First-token KL divergence from the original (harmless prompts)",
                               metric_value=r["kl_divergence"]))
    return rows


def _eval_dataset(prompts: dict, side: str) -> dict[str, Any]:
    found = dataset_of(prompts.get("source"))
    if found:
        ident, config, split = found
        where = "/".join(p for p in (config, split) if p)
        return {"dataset_type": ident, "dataset_name": f"{ident} {where}".strip(), "dataset_config": config,
                "dataset_split": split}
    source = display_source(prompts.get("source")).replace("`", "")
    return {"dataset_type": "custom", "dataset_name": f"{prompts.get('count', '?')} {side} prompts ({source})",
            "dataset_config": side, "dataset_split": None}


def load_results(path: str | Path) -> dict:
    """A results JSON written by ``forge-hub evaluate``, checked to be one."""
    path = Path(path).expanduser()
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HubError(f"results file {path} does not exist", "pass the --out file of `forge-hub evaluate`") from exc
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read results file {path}: {exc}", "pass the --out file of `forge-hub evaluate`") from exc
    if not isinstance(result, dict) or result.get("schema") != RESULTS_SCHEMA:
        raise HubError(f"{path} is not forge-hub evaluation results (schema {RESULTS_SCHEMA})",
                       "pass the --out file of `forge-hub evaluate`")
    return result


def build_model_card(folder: Path, repo_id: str, *, results: dict | None = None, licence: Licence | None = None,
                     base_model: str | None = None, gguf: Sequence[GGUFVariant] = (), gguf_repo: str | None = None,
                     files: Sequence[tuple[str, int]] = ()) -> Any:
    """The card of the abliterated model in ``folder``, to be pushed to ``repo_id``.

    ``gguf`` lists GGUF files in this repo, or in ``gguf_repo`` when that is given; ``files`` are
    the (path in repo, size) pairs the card lists. Returns a :class:`huggingface_hub.ModelCard`.
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
        "search_rows": _search_rows(meta), "results_md": _results_markdown(results, repo_id), "results_file": RESULTS_FILE,
        "harmful_prompts": _prompts_line(results, "harmful"), "harmless_prompts": _prompts_line(results, "harmless"),
        "base_ref": base or "ORIGINAL", "files": [(p, human_size(s)) for p, s in files],
        "gguf_rows": [(g.name, g.type, human_size(g.size)) for g in gguf], "gguf_repo": gguf_repo,
        "reproduce": _reproduce(meta, base, revision, repo_id), "licence_text": _licence_text(licence, base),
    }
    return ModelCard.from_template(data, template_str=_template("model_card.md"), **context)


def build_gguf_card(source_repo: str, repo_id: str, gguf: Sequence[GGUFVariant], *, licence: Licence | None = None,
                    base_model: str | None = None) -> Any:
    """The card of a separate GGUF repo: ``base_model`` is the abliterated repo, relation ``quantized``.

    No model-index here: the measurements were taken on the unquantized model, not these files.
    """
    from huggingface_hub import ModelCard, ModelCardData

    licence = licence or UNKNOWN_LICENCE
    data = ModelCardData(base_model=source_repo, license=licence.id, license_name=licence.name,
                         license_link=licence.link, library_name="gguf", pipeline_tag=TASK,
                         tags=list(TAGS) + list(GGUF_TAGS))
    data.base_model_relation = "quantized"
    base_text = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "its base model"
    context = {"title": repo_id.split("/")[-1], "repo_id": repo_id, "source_repo": source_repo, "base_text": base_text,
               "forge_hub_version": __version__, "gguf_rows": [(g.name, g.type, human_size(g.size)) for g in gguf],
               "first_file": gguf[0].name if gguf else "", "licence_text": _licence_text(licence, base_model)}
    return ModelCard.from_template(data, template_str=_template("gguf_card.md"), **context)


def check_card(card: Any, results: dict | None = None) -> None:
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


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --- the pieces of the body -------------------------------------------------------------------------

def _template(name: str) -> str:
    return resources.files("forge_hub").joinpath("templates", name).read_text(encoding="utf-8")


def artifact_metadata(folder: Path) -> dict:
    """refusal.json of the folder ({} when there is none)."""
    path = folder / "refusal.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise HubError(f"{path} is not valid JSON: {exc}", "write the folder again with `forge-hub apply`") from exc


def _direction_datasets(meta: dict) -> list[str]:
    prompts = meta.get("prompts") or {}
    found = [dataset_of((prompts.get(side) or {}).get("source")) for side in ("harmful", "harmless")]
    return list(dict.fromkeys(f[0] for f in found if f))


def _intro(meta: dict, base: str | None, revision: str | None, folder: Path) -> str:
    if base:
        at = f" at revision `{revision}`" if revision else ""
        what = f"[{base}](https://huggingface.co/{base}){at}"
    elif meta.get("model"):
        what = f"`{Path(str(meta['model'])).name}` (a local {meta.get('source_kind', 'model')}, not traced to the Hub)"
    else:
        what = f"the model in `{folder.name}`"
    version = meta.get("forge_hub_version", __version__)
    return (f"An abliterated copy of {what}: its refusal direction was removed from the weights with "
            f"forge-hub {version} (Arditi et al. 2024, *Refusal in Language Models Is Mediated by a Single "
            f"Direction*). Nothing else was trained or changed.")


def _summary(results: dict | None) -> str | None:
    if not results:
        return None
    r, n_harm = results["results"], results["prompts"]["harmful"]["count"]
    n_safe = results["prompts"]["harmless"]["count"]
    text = (f"On {n_harm} harmful prompts it refused {r['model']['refusals']}/{n_harm}"
            + (f" (the original: {r['reference']['refusals']}/{n_harm})" if "reference" in r else "")
            + f"; on {n_safe} harmless prompts {r['model']['over_refusals']}/{n_safe}"
            + (f" (the original: {r['reference']['over_refusals']}/{n_safe})" if "reference" in r else ""))
    if r.get("kl_divergence") is not None:
        text += f"; first-token KL divergence from the original {r['kl_divergence']:.3f}"
    return text + "."


def _direction_rows(meta: dict) -> list[tuple[str, str]]:
    if not meta:
        return [("direction artifact", "not found in the folder")]
    methods = {"projected": "projected (harmful − harmless mean, its component along the harmless mean removed)",
               "mean_diff": "mean difference (Arditi et al.)", "svd": "SVD of the per-prompt differences"}
    rows = [("method", methods.get(meta.get("method"), str(meta.get("method")))),
            ("layer", f"{meta.get('selected_layer', '?'):g} of {meta.get('num_layers', '?')}"
             if isinstance(meta.get("selected_layer"), (int, float)) else str(meta.get("selected_layer", "?")))]
    how = (meta.get("selection") or {}).get("how")
    if how == "measured":
        rows.append(("layer chosen by", "measuring every candidate layer's refusal probability and KL on held-out prompts"))
    elif how:
        rows.append(("layer chosen by", how))
    prompts = meta.get("prompts") or {}
    for side in ("harmful", "harmless"):
        if side in prompts:
            held = (prompts.get(f"held_out_{side}") or {}).get("count")
            count = prompts[side].get("count")
            rows.append((f"{side} prompts", f"{count} for the direction" + (f", {held} held out" if held else "")
                         + f"; {display_source(prompts[side].get('source'))}"))
    for key, label in (("positions", "prompt positions"), ("system_prompt", "system prompt"),
                       ("winsorize_quantile", "winsorized at quantile")):
        if meta.get(key) not in (None, [], [-1], ""):
            rows.append((label, str(meta[key])))
    return [(name, value.replace("|", "\\|")) for name, value in rows]


def _settings_rows(meta: dict) -> list[tuple[str, str]]:
    settings = meta.get("apply_settings") or {}
    return [(k, _setting(v)) for k, v in settings.items() if v not in (None, {}, [])]


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def _search_rows(meta: dict) -> list[tuple[str, str]]:
    search = meta.get("search")
    if not search:
        return []
    n = ((search.get("eval_prompts") or {}).get("harmful") or {}).get("count")
    rows = [("trials", str(search.get("trials"))), ("picked trial", str(search.get("trial"))),
            ("its refusals", f"{search.get('refusals', 0):.0f}" + (f"/{n}" if n else "")
             + f" at {search.get('max_new_tokens')} tokens"),
            ("its first-token KL", f"{search.get('kl', float('nan')):.4f}"), ("pick rule", str(search.get("pick")))]
    return [(name, value.replace("|", "\\|")) for name, value in rows]


def _results_markdown(results: dict | None, repo_id: str) -> str | None:
    """The before/after table and sample answers, with this repo's id in place of a local path."""
    if not results:
        return None
    from .report import results_markdown

    return results_markdown({**results, "model": repo_id, "reference": _model_name(results.get("reference"))})


def _model_name(model: str | None) -> str | None:
    """A Hub id as it is; a local path by its last part only."""
    if not model or (model.count("/") == 1 and not model.startswith((".", "/", "~"))
                     and not Path(model).expanduser().exists()):
        return model
    return f"{Path(model).name} (local)"


def _prompts_line(results: dict | None, side: str) -> str:
    if not results:
        return ""
    prompts = results["prompts"][side]
    return f"{prompts.get('count')}, {display_source(prompts.get('source'))}"


def _edits_embeddings(folder: Path) -> bool:
    try:
        edited = json.loads((folder / "abliteration.json").read_text(encoding="utf-8")).get("edited_tensors", [])
    except (OSError, ValueError):
        return False
    return any("embed" in name for name in edited)


def _reproduce(meta: dict, base: str | None, revision: str | None, repo_id: str) -> str:
    source = base or "BASE_MODEL  # the original model: a Hub id or folder"
    rev = f" --revision {revision}" if base and revision else ""
    lines = [f"hf download {repo_id} refusal.safetensors refusal.json --local-dir directions",
             f"forge-hub apply {source}{rev} --directions directions --out {repo_id.split('/')[-1]}"]
    method = meta.get("method")
    if method:
        again = f"forge-hub run {base or 'BASE_MODEL'}{rev} --method {method}"
        again += " --optimize" if meta.get("search") else ""
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
            "`--license ID` to record it.")
