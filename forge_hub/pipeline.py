"""The steps end to end, as the CLI, the Space and scripts call them: compute, then apply."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .activations import collect_residuals
from .architecture import Architecture
from .checkpoint import ARTIFACT_FILES, SETTINGS_FILE, ApplyReport, apply_to_checkpoint
from .directions import RefusalDirections, compute_directions
from .errors import ModelLoadError
from .live import abliterate_model
from .modeling import ModelSource, load_model, resolve_source
from .plan import AblationSettings
from .prompts import prompts_hash, split_held_out
from .search import SearchOptions, finished_trials, pick_trial, run_search, trial_choice
from .selection import LayerScores, default_candidates, score_layers
from .staging import staged_output

log = logging.getLogger("forge_hub")


@dataclass
class ComputeOptions:
    method: str = "projected"  # mean_diff | projected | svd
    num_directions: int = 1  # svd only
    positions: tuple[int, ...] = (-1,)
    batch_size: int = 16
    system_prompt: str | None = None
    winsorize_quantile: float | None = None
    held_out_fraction: float = 0.25  # prompts kept aside to score layers
    layer: float | None = None  # fix the layer (index, or a fraction of depth when < 1); None measures it
    candidates: tuple[int, ...] | None = None
    max_kl: float = 1.0  # hard bound on a candidate layer's KL
    kl_weight: float = 1.0  # layer score: refusal probability + kl_weight * KL
    seed: int = 0
    settings: AblationSettings = field(default_factory=AblationSettings)  # how scoring ablates


def compute(model: torch.nn.Module, tokenizer: object, source: ModelSource, harmful: list[str], harmless: list[str],
            options: ComputeOptions | None = None, progress: bool = True) -> RefusalDirections:
    """Residual statistics -> per-layer directions -> measured layer choice -> artifact."""
    options = options or ComputeOptions()
    start = time.time()
    arch = Architecture.from_config(model.config)
    measure = options.layer is None
    fraction = options.held_out_fraction if measure else 0.0
    harm_dir, harm_held = split_held_out(harmful, fraction, options.seed)
    safe_dir, safe_held = split_held_out(harmless, fraction, options.seed)
    keep = options.method == "svd"
    kwargs = dict(batch_size=options.batch_size, system_prompt=options.system_prompt, positions=options.positions,
                  winsorize_quantile=options.winsorize_quantile)
    harm_stats = collect_residuals(model, tokenizer, harm_dir, keep_per_prompt=keep, desc="harmful", **kwargs)
    safe_stats = collect_residuals(model, tokenizer, safe_dir, desc="harmless", **kwargs)
    directions, subspaces = compute_directions(harm_stats, safe_stats, options.method, options.num_directions)
    artifact = RefusalDirections(harm_stats.mean, safe_stats.mean, directions, subspaces)
    artifact.metadata = {
        "model": source.id, "revision": source.revision, "source_kind": source.kind,
        "model_type": arch.model_type, "hidden_size": arch.hidden_size, "num_layers": arch.num_layers,
        "method": options.method, "num_directions": options.num_directions if subspaces is not None else 1,
        "positions": list(options.positions), "system_prompt": options.system_prompt,
        "winsorize_quantile": options.winsorize_quantile,
        "prompts": {
            "harmful": {"count": len(harm_dir), "hash": prompts_hash(harm_dir)},
            "harmless": {"count": len(safe_dir), "hash": prompts_hash(safe_dir)},
            "held_out_harmful": {"count": len(harm_held), "hash": prompts_hash(harm_held)},
            "held_out_harmless": {"count": len(safe_held), "hash": prompts_hash(safe_held)},
        },
        "forge_hub_version": __version__,
    }
    artifact.scores["separation"] = artifact.separation()
    if measure:
        scores = score_layers(model, tokenizer, artifact, options.settings, harm_held, safe_held,
                              options.candidates or default_candidates(arch.num_layers), options.max_kl, options.kl_weight,
                              options.batch_size, options.system_prompt, progress)
        _store_scores(artifact, scores)
        layer = float(scores.chosen)
    else:
        layer = options.layer * arch.num_layers if 0 < options.layer < 1 else float(options.layer)
        artifact.metadata["selection"] = {"how": "given"}
    artifact.metadata["selected_layer"] = layer
    artifact.metadata["apply_settings"] = dataclasses.replace(options.settings, direction_layer=layer).to_dict()
    artifact.metadata["compute_seconds"] = round(time.time() - start, 1)
    return artifact


def optimize(model: torch.nn.Module, tokenizer: object, source: ModelSource, harmful: list[str], harmless: list[str],
             options: ComputeOptions, search: SearchOptions, eval_harmful: list[str] | None = None,
             eval_harmless: list[str] | None = None, pick: int | None = None, progress: bool = True):
    """Compute (or reuse) the directions, run or resume the search, and return the artifact
    carrying the picked trial's method and settings, with the study.

    Trials are scored on ``eval_harmful`` / ``eval_harmless`` when given, else on the prompts
    held out from the directions. The directions are cached beside the study file, so a resumed
    search searches the same directions.
    """
    cache = search.storage.with_suffix(".directions")
    artifact = None
    if (cache / "refusal.safetensors").exists():
        artifact = RefusalDirections.load(cache)
        if artifact.metadata.get("model") != source.id:
            raise ModelLoadError(f"study {search.storage} belongs to {artifact.metadata.get('model')}, not {source.id}",
                                 "use another --study file for this model")
        log.info("reusing directions from %s", cache)
    else:
        artifact = compute(model, tokenizer, source, harmful, harmless, options, progress)
        artifact.save(cache)
    if eval_harmful is None or eval_harmless is None:
        fraction = options.held_out_fraction or 0.25
        eval_harmful = eval_harmful or split_held_out(harmful, fraction, options.seed)[1]
        eval_harmless = eval_harmless or split_held_out(harmless, fraction, options.seed)[1]
    study = run_search(model, tokenizer, artifact, eval_harmful, eval_harmless, search, progress)
    chosen, rule = pick_trial(study, len(eval_harmful), search.pick_max_kl, pick)
    method, settings = trial_choice(chosen)
    result = artifact.with_method(method)
    result.metadata["apply_settings"] = settings.to_dict()
    result.metadata["search"] = {
        "study": str(search.storage.resolve()), "study_name": search.study_name, "trial": chosen.number,
        "refusals": chosen.values[0], "kl": chosen.values[1], "eval_prompts": {
            "harmful": {"count": len(eval_harmful), "hash": prompts_hash(eval_harmful)},
            "harmless": {"count": len(eval_harmless), "hash": prompts_hash(eval_harmless)}},
        "max_new_tokens": search.max_new_tokens, "trials": len(finished_trials(study)),
        "pick": rule,
    }
    return result, study, chosen


def _store_scores(artifact: RefusalDirections, scores: LayerScores) -> None:
    n = artifact.num_layers + 1
    refusal = torch.full((n,), float("nan"))
    kl = torch.full((n,), float("nan"))
    refusal[scores.layers] = torch.tensor(scores.refusal)
    kl[scores.layers] = torch.tensor(scores.kl)
    artifact.scores["refusal_probability"] = refusal
    artifact.scores["kl"] = kl
    artifact.metadata["selection"] = {
        "how": "measured", "baseline_refusal_probability": scores.baseline_refusal,
        "refusal_token_ids": scores.refusal_tokens, "candidates": scores.layers,
    }


def apply(source: str, artifact: RefusalDirections, out: str | Path, settings: AblationSettings | None = None,
          revision: str | None = None, overwrite: bool = False, dtype: str = "auto", trust_remote_code: bool = False,
          progress: bool = True, gguf_output: str = "gguf") -> ApplyReport:
    """Write an abliterated copy of ``source`` (folder, Hub id or GGUF file) to ``out``.

    Checkpoint folders and Hub ids are streamed shard by shard. A GGUF file stays GGUF
    (``out/<same name>.gguf``, only the residual writers requantized, see
    :mod:`forge_hub.gguf_edit`); ``gguf_output="safetensors"`` instead dequantizes it through
    transformers (``dtype``), edits it in memory and saves safetensors.
    """
    settings = settings or AblationSettings.from_dict(artifact.metadata.get("apply_settings", {}))
    src = resolve_source(source, revision)
    if src.kind == "gguf":
        if gguf_output == "safetensors":
            return _apply_in_memory(src, artifact, out, settings, overwrite, dtype, trust_remote_code)
        if gguf_output != "gguf":
            raise ValueError(f"unknown gguf_output {gguf_output!r}: use 'gguf' or 'safetensors'")
        from .gguf_edit import apply_to_gguf

        return apply_to_gguf(src.id, out, artifact, settings, overwrite, progress)
    folder = Path(src.id) if src.kind == "folder" else _download_checkpoint(src)
    return apply_to_checkpoint(folder, out, artifact, settings, overwrite, progress)


def _download_checkpoint(src: ModelSource) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src.id, revision=src.revision, allow_patterns=[
            "*.safetensors", "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]))
    except Exception as exc:
        raise ModelLoadError(f"could not download {src.id}: {type(exc).__name__}: {exc}",
                             "check the id, --revision and your login (`hf auth login`); offline, use a local folder") from exc


def _apply_in_memory(src: ModelSource, artifact: RefusalDirections, out: str | Path, settings: AblationSettings,
                     overwrite: bool, dtype: str, trust_remote_code: bool) -> ApplyReport:
    model, tokenizer, _ = load_model(src, dtype=dtype, trust_remote_code=trust_remote_code)
    artifact.check_fits(Architecture.from_config(model.config))
    plan = abliterate_model(model, artifact, settings)
    with staged_output(out, overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        artifact.metadata["apply_settings"] = settings.to_dict()
        artifact.save(tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps({
            "source": src.id, "settings": settings.to_dict(), "edited_tensors": sorted(plan.edits)}, indent=2) + "\n")
        shards = len(list(tmp.glob("*.safetensors"))) - 1
        written = sum(p.stat().st_size for p in tmp.iterdir() if p.name not in ARTIFACT_FILES)
    return ApplyReport(Path(out).expanduser().resolve(), len(plan), plan.layers(), shards, written)
