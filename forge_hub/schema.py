"""Typed records of what forge-hub writes and reads back: the direction artifact's metadata
(``refusal.json``), the apply settings, where the prompts came from, the search's pick, and the
evaluation results (``evaluation.json``).

Plain dataclasses with ``to_json`` / ``from_json`` and no torch, so the model card, the Hub code
and the Space read them without a model library. The JSON they write is the files' published
format; reading is lenient where older files lack a field (it takes its default), strict where a
value has the wrong type.

Example::

    meta = DirectionMetadata.from_json(Path("out/refusal.json").read_text())
    print(meta.model, meta.selected_layer, meta.prompts.harmful.count)
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from forge_hub.errors import SettingsError

RESULTS_SCHEMA = "forge-hub/evaluation/v2"  # v2 adds XSTest over-refusal and capability tasks
RESULTS_SCHEMA_V1 = "forge-hub/evaluation/v1"
RESULTS_SCHEMAS = (RESULTS_SCHEMA_V1, RESULTS_SCHEMA)  # what reading accepts: v1 files still load
GGUF_CHECK_SCHEMA = "forge-hub/gguf-check/v1"
# The files forge-hub writes beside a model: the direction artifact, what apply did, the results.
DIRECTION_TENSORS_FILE = "refusal.safetensors"
DIRECTION_METADATA_FILE = "refusal.json"
SETTINGS_FILE = "abliteration.json"
ARTIFACT_FILES = (DIRECTION_TENSORS_FILE, DIRECTION_METADATA_FILE, SETTINGS_FILE)
RESULTS_FILE = "evaluation.json"
GGUF_CHECK_FILE = "gguf-evaluation.json"  # each GGUF file measured, beside the files and in a pushed repo
CONFIG_FILE = "forge-hub.toml"  # the command's own settings, ready for --config
EMBEDDING_MODES = ("auto", "keep", "edit", "untie")
KERNELS = ("constant", "linear", "gaussian")
KERNEL_KEYS = ("kernel", "center", "width", "floor")


def _from_mapping(cls: type, data: Mapping[str, Any], *, what: str, strict: bool = False) -> dict[str, Any]:
    """The fields of ``cls`` found in ``data``; unknown keys are an error when ``strict``."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{what} must be a JSON object, not {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if strict and unknown:
        raise SettingsError(f"unknown {what}: {', '.join(sorted(unknown))}",
                            f"use only {', '.join(sorted(names))}")
    return {k: v for k, v in data.items() if k in names}


class JsonRecord:
    """``to_json`` / ``from_json`` for the dataclasses below (nested records handled by each class)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))  # type: ignore[attr-defined]


# --- settings ---------------------------------------------------------------------------------------

@dataclass
class AblationSettings(JsonRecord):
    """How to apply a direction: which layers, how strongly, which variant of the projection."""

    direction_layer: float | None = None  # None: the layer the artifact selected; fractional interpolates
    per_layer: bool = False  # each writer removes the direction measured where it writes
    layer_start: int | None = None  # first edited layer (inclusive)
    layer_end: int | None = None  # last edited layer (exclusive)
    skip_first: int = 0
    skip_last: int = 0
    strength: float = 1.0
    attn_strength: float = 1.0
    mlp_strength: float = 1.0
    kernel: str = "constant"  # constant | linear | gaussian, over layers
    kernel_center: float | None = None
    kernel_width: float | None = None
    kernel_floor: float = 0.0
    norm_preserving: bool = False  # give each residual vector (weight column) its norm back, exactly
    row_normalized: bool = False  # edit row-normalized writer weights, then give each row its norm back
    biprojected: bool = False  # orthogonalize the direction against each target layer's harmless mean
    subspace: bool = False  # remove the artifact's SVD subspace instead of one direction
    embeddings: str = "auto"  # auto (edit when untied), keep, edit, untie (copy lm_head, then edit)
    # per-component kernel overrides, e.g. {"attn": {"kernel": "linear", "center": 18, "width": 6, "floor": 0.2}}
    component_kernels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationSettings:
        values = _from_mapping(cls, data, what="ablation settings", strict=True)
        if "component_kernels" in values:
            values["component_kernels"] = {k: dict(v) for k, v in values["component_kernels"].items()}
        return cls(**values)

    def check(self, num_layers: int | None = None) -> AblationSettings:
        """Raise a :class:`SettingsError` for a value no edit can use (NaN or infinite numbers, a layer
        outside the model, an unknown kernel or embeddings mode); returns the settings."""
        for name in ("direction_layer", "strength", "attn_strength", "mlp_strength", "kernel_center", "kernel_width",
                     "kernel_floor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise SettingsError(f"{name} must be a finite number, not {value!r}", f"give {{{name}}} a number",
                                    input=name)
        for component, kernel in self.component_kernels.items():
            for key in ("center", "width", "floor"):
                value = kernel.get(key)
                if value is not None and not math.isfinite(float(value)):
                    raise SettingsError(f"the {component} kernel's {key} must be a finite number, not {value!r}",
                                        "give it a number", input="component_kernels")
        if self.kernel not in KERNELS:
            raise SettingsError(f"unknown kernel {self.kernel!r}", f"use one of {', '.join(KERNELS)}", input="kernel")
        self.embedding_mode(tied=False)
        if self.norm_preserving and self.row_normalized:
            raise SettingsError("norm_preserving and row_normalized are two ways to keep weight magnitudes; pick one",
                                "leave out {norm_preserving} or {row_normalized}", input="norm_preserving")
        if num_layers is not None and self.direction_layer is not None and not 0 <= self.direction_layer <= num_layers:
            raise SettingsError(f"direction layer {self.direction_layer:g} is outside the model's 0..{num_layers}",
                                f"give {{direction_layer}} between 0 and {num_layers}", input="direction_layer")
        return self

    def embedding_mode(self, tied: bool) -> str:
        """What happens to the embedding matrix, given whether it is tied to the output head."""
        if self.embeddings not in EMBEDDING_MODES:
            raise SettingsError(f"unknown embeddings mode {self.embeddings!r}",
                                f"use one of {', '.join(EMBEDDING_MODES)}", input="embeddings")
        if self.embeddings == "auto":
            return "keep" if tied else "edit"
        if self.embeddings == "edit" and tied:
            # editing a tied matrix also rewrites the output head; untie instead of silently doing that
            return "untie"
        return self.embeddings

    def edited_layers(self, num_layers: int) -> range:
        start = self.layer_start if self.layer_start is not None else 0
        end = self.layer_end if self.layer_end is not None else num_layers
        start, end = max(start, self.skip_first), min(end, num_layers - self.skip_last)
        return range(max(start, 0), max(min(end, num_layers), 0))

    def replace(self, **changes: Any) -> AblationSettings:
        return dataclasses.replace(self, **changes)


# --- prompts ----------------------------------------------------------------------------------------

@dataclass
class PromptSet(JsonRecord):
    """One prompt list as it was used: how many, their hash, and what was read to get them."""

    count: int = 0
    hash: str | None = None
    source: str | None = None  # a file name, "DATASET CONFIG/SPLIT", "builtin:harmful", ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PromptSet | None:
        return None if data is None else cls(**_from_mapping(cls, data, what="prompt set"))


@dataclass
class PromptProvenance(JsonRecord):
    """Where the direction's prompts came from: the two lists it was computed from, and the parts held
    out to choose the layer."""

    harmful: PromptSet = field(default_factory=PromptSet)
    harmless: PromptSet = field(default_factory=PromptSet)
    held_out_harmful: PromptSet | None = None
    held_out_harmless: PromptSet | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PromptProvenance:
        data = data or {}
        return cls(**{name: PromptSet.from_dict(data.get(name)) or PromptSet() if name in ("harmful", "harmless")
                      else PromptSet.from_dict(data.get(name))
                      for name in ("harmful", "harmless", "held_out_harmful", "held_out_harmless")})

    def with_sources(self, harmful: str | None, harmless: str | None) -> PromptProvenance:
        """The same counts and hashes, with what was read for each side recorded."""
        return dataclasses.replace(self, harmful=dataclasses.replace(self.harmful, source=harmful),
                                   harmless=dataclasses.replace(self.harmless, source=harmless))


# --- the direction artifact ----------------------------------------------------------------------------

@dataclass
class LayerSelection(JsonRecord):
    """How the direction's layer was chosen: measured on held-out prompts, or given."""

    how: str = "given"  # "measured", "given", or "separation" (named, not measured: ComputeOptions.scan_layers)
    baseline_refusal_probability: float | None = None
    refusal_token_ids: list[int] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    # the final choice by generation (see forge_hub.abliterate.selection.measure_settings): each
    # shortlisted setting's label, refusals, KL and whether its count finished; which was chosen
    measured: list[dict[str, Any]] = field(default_factory=list)
    chosen: str | None = None
    held_out_harmful: int | None = None  # how many harmful prompts the final choice counted refusals on
    choice_harmful: PromptSet | None = None  # which ones (XSTest's unsafe prompts by default)
    choice_harmless: PromptSet | None = None  # the harmless prompts its KL was measured on
    answer_tokens: int | None = None
    refusal_target: float | None = None
    refusal_rate_left: float | None = None  # what the chosen setting still refuses, held out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LayerSelection:
        values = _from_mapping(cls, data or {}, what="layer selection")
        for name in ("choice_harmful", "choice_harmless"):
            if values.get(name) is not None:
                values[name] = PromptSet.from_dict(values[name])
        return cls(**values)

    def replace(self, **changes: Any) -> LayerSelection:
        return dataclasses.replace(self, **changes)


@dataclass
class SearchRecord(JsonRecord):
    """The parameter search behind an artifact's settings: the study, the picked trial, its scores."""

    study: str
    study_name: str
    trial: int
    refusals: float
    kl: float
    eval_prompts: dict[str, PromptSet]
    max_new_tokens: int
    trials: int
    pick: str
    judge: str | None = None  # the classifier that counted the trials' refusals; None: the markers

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SearchRecord | None:
        if data is None:
            return None
        values = _from_mapping(cls, data, what="search record")
        values["eval_prompts"] = {k: PromptSet.from_dict(v) for k, v in (values.get("eval_prompts") or {}).items()}
        return cls(**values)


@dataclass
class RefineRecord(JsonRecord):
    """How the directions were refined by gradient descent (forge_hub.abliterate.refine), so a
    reader knows they are no longer the plain mean differences."""

    layers: list[int]  # the residual-stream indices whose directions moved
    steps: int
    learning_rate: float
    kl_weight: float
    batch_size: int
    answer_tokens: int
    target_scale: float
    targets: int  # harmful prompts with a compliant answer to follow
    settings: AblationSettings  # the edit refined for
    mean_cosine_to_start: float  # how far the directions turned (1: not at all)
    first_losses: list[float]  # answers' cross-entropy, harmless first-token KL
    last_losses: list[float]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RefineRecord | None:
        if data is None:
            return None
        values = _from_mapping(cls, data, what="refinement record")
        values["settings"] = AblationSettings.from_dict(values.get("settings") or {})
        return cls(**values)


@dataclass
class DirectionMetadata(JsonRecord):
    """``refusal.json``: which model the directions belong to, how they were computed and chosen, from
    which prompts, and the settings ``apply`` uses by default."""

    model: str | None = None  # Hub id, or the local path it was computed on
    revision: str | None = None
    source_kind: str | None = None  # "hub", "folder" or "gguf"
    model_type: str | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    method: str = "projected"
    num_directions: int = 1
    positions: list[int] = field(default_factory=lambda: [-1])
    system_prompt: str | None = None
    winsorize_quantile: float | None = None
    prompts: PromptProvenance = field(default_factory=PromptProvenance)
    selected_layer: float | None = None
    selection: LayerSelection = field(default_factory=LayerSelection)
    apply_settings: AblationSettings = field(default_factory=AblationSettings)
    search: SearchRecord | None = None
    refined: RefineRecord | None = None  # the directions were refined for one edit, not the plain means
    forge_hub_version: str | None = None
    forge_hub_commit: str | None = None  # when it ran from a git checkout (``-dirty``: with local changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DirectionMetadata:
        values = _from_mapping(cls, data, what="direction metadata")
        values["prompts"] = PromptProvenance.from_dict(values.get("prompts"))
        values["selection"] = LayerSelection.from_dict(values.get("selection"))
        values["apply_settings"] = AblationSettings.from_dict(values.get("apply_settings") or {})
        values["search"] = SearchRecord.from_dict(values.get("search"))
        values["refined"] = RefineRecord.from_dict(values.get("refined"))
        return cls(**values)

    def replace(self, **changes: Any) -> DirectionMetadata:
        return dataclasses.replace(self, **changes)


@dataclass
class AbliterationRecord(JsonRecord):
    """``abliteration.json``: what ``apply`` did to which source, so an output documents itself."""

    source: str
    settings: AblationSettings
    edited_tensors: list[str]
    untied_output_head: bool | None = None  # GGUF sources: the output head got its own copy first
    type_changes: dict[str, dict[str, str]] | None = None  # GGUF sources: tensors stored in another type

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AbliterationRecord:
        values = _from_mapping(cls, data, what="abliteration record")
        values["settings"] = AblationSettings.from_dict(values.get("settings") or {})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


# --- evaluation results --------------------------------------------------------------------------------

@dataclass
class RefusalCount(JsonRecord):
    """Refusals among some answers: the count, the total it is out of, and their ratio."""

    refusals: int
    total: int
    refusal_rate: float

    @classmethod
    def of(cls, refusals: int, total: int) -> RefusalCount:
        return cls(refusals, total, refusals / total if total else 0.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RefusalCount:
        return cls(**_from_mapping(cls, data, what="refusal count"))


@dataclass
class XSTestScores(JsonRecord):
    """Over-refusal on XSTest's safe prompts (Röttger et al. 2024): requests that only look unsafe
    ("how do I kill a Python process?"), refused in total and per XSTest type (homonyms,
    figurative language, safe targets, ...), so a reader sees which kind of caution is left."""

    refusals: int
    total: int
    refusal_rate: float
    by_type: dict[str, RefusalCount] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> XSTestScores | None:
        if data is None:
            return None
        values = _from_mapping(cls, data, what="XSTest scores")
        values["by_type"] = {k: RefusalCount.from_dict(v) for k, v in (values.get("by_type") or {}).items()}
        return cls(**values)


@dataclass
class ModelScores(JsonRecord):
    """One model's answers to the harmful and harmless prompts (and XSTest's safe ones), counted."""

    refusals: int
    refusal_rate: float
    over_refusals: int
    over_refusal_rate: float
    judge_refusals: int | None = None
    xstest: XSTestScores | None = None  # schema v2, when XSTest prompts were given

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelScores | None:
        if data is None:
            return None
        values = _from_mapping(cls, data, what="model scores")
        values["xstest"] = XSTestScores.from_dict(values.get("xstest"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for optional in ("judge_refusals", "xstest"):
            if out[optional] is None:
                del out[optional]
        return out


@dataclass
class MetricValue(JsonRecord):
    """One score with its standard error, as lm-evaluation-harness reports it."""

    value: float
    stderr: float | None = None  # None where lm-eval reports none ("N/A", or bootstrap turned off)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MetricValue | None:
        return None if data is None else cls(**_from_mapping(cls, data, what="metric value"))


@dataclass
class TaskResult(JsonRecord):
    """One capability task (lm-eval's name, e.g. ``hellaswag``) on both models: its headline metric
    with standard errors and the change, and every metric lm-eval reported, for whoever wants more.

    The headline metric is what the task is usually quoted by (``acc_norm`` where lm-eval reports
    it, else ``acc``, else ``exact_match`` ...); ``filter`` is lm-eval's answer extraction
    (``none``, or ``strict-match`` for GSM8K)."""

    task: str
    metric: str
    filter: str
    model: MetricValue
    reference: MetricValue | None = None
    delta: float | None = None  # model - reference, in the metric's own units
    higher_is_better: bool = True
    num_fewshot: int | None = None
    samples: int | None = None  # documents scored (after a limit)
    dataset: str | None = None  # the Hub dataset lm-eval read (its dataset_path), when it names one
    dataset_config: str | None = None
    dataset_split: str | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # "model"/"reference" -> "acc,none": v

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        values = _from_mapping(cls, data, what="task result")
        values["model"] = MetricValue.from_dict(values["model"])
        values["reference"] = MetricValue.from_dict(values.get("reference"))
        values["metrics"] = {k: dict(v) for k, v in (values.get("metrics") or {}).items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.reference is None:
            for absent in ("reference", "delta"):
                del out[absent]
        return out


@dataclass
class Scores(JsonRecord):
    """The evaluated model's scores, the reference's, and how far apart the two are."""

    model: ModelScores
    reference: ModelScores | None = None
    kl_divergence: float | None = None  # first-token KL(reference || model) on the harmless prompts
    # the same on the harmless prompts the reference answers: its over-refusals, which an abliteration is
    # meant to change (and whose changed first token dominates the KL above), left out
    kl_divergence_answered: float | None = None
    cross_entropy: dict[str, float] | None = None  # of the reference's harmless answers, per model
    capabilities: dict[str, TaskResult] | None = None  # schema v2: lm-eval tasks by name, when run

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scores:
        values = _from_mapping(cls, data, what="results")
        values["model"] = ModelScores.from_dict(values["model"])
        values["reference"] = ModelScores.from_dict(values.get("reference"))
        if values.get("capabilities") is not None:
            values["capabilities"] = {k: TaskResult.from_dict(v) for k, v in values["capabilities"].items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.to_dict()}
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
            out["kl_divergence"] = self.kl_divergence
            if self.kl_divergence_answered is not None:
                out["kl_divergence_answered"] = self.kl_divergence_answered
            out["cross_entropy"] = self.cross_entropy
        if self.capabilities is not None:
            out["capabilities"] = {k: v.to_dict() for k, v in self.capabilities.items()}
        return out


@dataclass
class Sample(JsonRecord):
    """One harmful prompt and each model's answer, for the report."""

    prompt: str
    model: str
    reference: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        return cls(**_from_mapping(cls, data, what="sample"))

    def to_dict(self) -> dict[str, Any]:
        out = {"prompt": self.prompt, "model": self.model}
        if self.reference is not None:
            out["reference"] = self.reference
        return out


@dataclass
class EvaluationResults(JsonRecord):
    """``evaluation.json`` (schema ``forge-hub/evaluation/v2``): a model measured against its original.

    Version 1 files (no XSTest, no capability tasks) still read: the fields they lack are empty,
    and ``schema`` keeps the version the file was written with."""

    model: str
    reference: str | None
    prompts: dict[str, PromptSet]  # "harmful", "harmless" and, with XSTest, "xstest" (its safe prompts)
    settings: dict[str, Any]
    results: Scores
    samples: list[Sample] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    schema: str = RESULTS_SCHEMA

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResults:
        if not isinstance(data, Mapping) or data.get("schema") not in RESULTS_SCHEMAS:
            raise SettingsError(f"not forge-hub evaluation results (schema {' or '.join(RESULTS_SCHEMAS)})",
                                "use the results file written by an evaluation", input="results")
        values = _from_mapping(cls, data, what="evaluation results")
        values["prompts"] = {k: PromptSet.from_dict(v) for k, v in values["prompts"].items()}
        values["results"] = Scores.from_dict(values["results"])
        values["samples"] = [Sample.from_dict(s) for s in values.get("samples") or []]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "model": self.model, "reference": self.reference,
                "prompts": {k: v.to_dict() for k, v in self.prompts.items()}, "settings": dict(self.settings),
                "results": self.results.to_dict(), "samples": [s.to_dict() for s in self.samples],
                "versions": dict(self.versions), "created": self.created}

    @property
    def harmful_count(self) -> int:
        return self.prompts["harmful"].count

    @property
    def harmless_count(self) -> int:
        return self.prompts["harmless"].count

    @property
    def xstest_count(self) -> int | None:
        """How many XSTest safe prompts were answered (None: XSTest was not run)."""
        xstest = self.prompts.get("xstest")
        return xstest.count if xstest is not None else None


# --- GGUF files measured -------------------------------------------------------------------------------

@dataclass
class GGUFFileCheck(JsonRecord):
    """One GGUF file measured as users run it: refusals, over-refusal and KL from the base model,
    and a warning when quantization brought refusals back."""

    file: str  # the file's name (never a local path)
    type: str  # Q8_0, Q4_K_M, ...
    size: int  # bytes
    backend: str  # "llama.cpp" (llama-cpp-python) or "transformers" (dequantized to float32)
    scores: ModelScores
    kl_divergence: float | None = None  # first-token KL(base || file) on the harmless prompts
    warning: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GGUFFileCheck:
        values = _from_mapping(cls, data, what="GGUF file check")
        values["scores"] = ModelScores.from_dict(values["scores"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scores": self.scores.to_dict()}


@dataclass
class GGUFCheck(JsonRecord):
    """``gguf-evaluation.json``: GGUF files measured on the same prompts as the base model and the
    unquantized model they were made from, so what quantization changed is read off one table."""

    reference: str | None  # the base model (KL is measured from it)
    unquantized: str | None  # the model folder the files were converted from
    prompts: dict[str, PromptSet]
    settings: dict[str, Any]
    files: list[GGUFFileCheck]
    reference_scores: ModelScores | None = None
    unquantized_scores: ModelScores | None = None
    unquantized_kl: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    schema: str = GGUF_CHECK_SCHEMA

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GGUFCheck:
        if not isinstance(data, Mapping) or data.get("schema") != GGUF_CHECK_SCHEMA:
            raise SettingsError(f"not a forge-hub GGUF check (schema {GGUF_CHECK_SCHEMA})",
                                "use the file written by the GGUF check", input="gguf_check")
        values = _from_mapping(cls, data, what="GGUF check")
        values["prompts"] = {k: PromptSet.from_dict(v) for k, v in values["prompts"].items()}
        values["files"] = [GGUFFileCheck.from_dict(f) for f in values["files"]]
        values["reference_scores"] = ModelScores.from_dict(values.get("reference_scores"))
        values["unquantized_scores"] = ModelScores.from_dict(values.get("unquantized_scores"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [f.to_dict() for f in self.files]
        for name in ("reference_scores", "unquantized_scores"):
            value = getattr(self, name)
            out[name] = value.to_dict() if value is not None else None
        out["prompts"] = {k: v.to_dict() for k, v in self.prompts.items()}
        return out

    def file(self, name: str) -> GGUFFileCheck | None:
        return next((f for f in self.files if f.file == name), None)


# --- settings as TOML ----------------------------------------------------------------------------------

def load_toml(text: str) -> dict[str, Any]:
    """TOML text as a table (the standard library's reader; tomli on Python 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def to_toml(settings: Mapping[str, Any], *, header: str = "") -> str:
    """A flat table of strings, numbers, booleans and lists of them, as TOML."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key in sorted(settings):
        lines.append(f"{key} = {_toml_value(settings[key])}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
