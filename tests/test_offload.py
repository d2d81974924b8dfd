"""Models larger than the memory allowed: accelerate keeps layers on disk, and forge-hub edits,
scores and restores them there, never touching the checkpoint's files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from helpers.tiny import HARMFUL, HARMLESS, make_model, random_artifact, save_model

from forge_hub.abliterate.live import abliterate_model
from forge_hub.abliterate.search import SearchOptions, TrialEvaluator
from forge_hub.cli import main
from forge_hub.errors import ModelLoadError
from forge_hub.model.loading import load_model, parse_max_memory
from forge_hub.model.weights import EditedWeights
from forge_hub.schema import AblationSettings

LIMIT = "cpu=40KB"  # the tiny model is about 160 KB: most layers go to disk


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(make_model("llama"), tmp_path_factory.mktemp("offload") / "tiny", max_shard_size="40KB")


def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["write a tutorial to make a cake", "explain how to fix my door"], return_tensors="pt",
                      padding=True)
    return model(**batch).logits


def test_a_search_edits_offloaded_weights_in_place_and_restores_them(checkpoint, tmp_path):
    before = hashes(checkpoint)
    big, tok, _ = load_model(str(checkpoint), max_memory=LIMIT, offload_folder=tmp_path / "offload")
    assert "disk" in set(big.hf_device_map.values())
    assert sum(p.device.type == "meta" for p in big.parameters()) > len(list(big.parameters())) // 2
    plain = load_model(str(checkpoint))[0]
    original = logits(plain, tok)
    assert torch.allclose(logits(big, tok), original, atol=1e-5)

    artifact = random_artifact()
    settings = AblationSettings(direction_layer=2.5, norm_preserving=True,
                                component_kernels={"mlp": {"kernel": "linear", "center": 2, "width": 2, "floor": 0.2}})
    evaluator = TrialEvaluator(big, tok, HARMFUL[:2], HARMLESS[:2], SearchOptions(max_new_tokens=2, batch_size=2))
    evaluator.edit(artifact, settings)
    abliterate_model(plain, artifact, settings)
    edited = logits(big, tok)
    assert torch.allclose(edited, logits(plain, tok), atol=1e-5)  # the same edit as in memory
    assert not torch.allclose(edited, original, atol=1e-3)
    overlays = {id(h.weights_map): h.weights_map for m in big.modules()
                for h in [getattr(m, "_hf_hook", None)] if isinstance(getattr(h, "weights_map", None), EditedWeights)}
    assert overlays and all(t.device.type == "cpu" for o in overlays.values() for t in o.edits.values())
    assert list((tmp_path / "offload").glob("forge-hub-edits-*/*.bin"))  # edits of disk weights went to disk

    evaluator.restore()
    assert torch.allclose(logits(big, tok), original, atol=1e-5)
    assert hashes(checkpoint) == before  # the source is read in place, never written


def test_run_with_a_memory_cap_searches_applies_and_matches_the_uncapped_result(checkpoint, tmp_path, prompt_files,
                                                                               capsys):
    h, s = prompt_files
    # refined directions need every weight in memory (an offloaded run searches the plain ones), so both
    # runs search the plain directions here: the comparison is of offloaded and in-memory edits
    common = ["run", checkpoint, "--harmful", h, "--harmless", s, "--optimize", "--trials", "3", "--search-tokens",
              "3", "--batch-size", "4", "--check-tokens", "3", "--refine-steps", "0"]
    assert main([str(a) for a in [*common, "--max-memory", LIMIT, "--study", tmp_path / "capped.db",
                                   "--out", tmp_path / "capped"]]) == 0
    assert main([str(a) for a in [*common, "--study", tmp_path / "plain.db", "--out", tmp_path / "plain"]]) == 0
    capped = json.loads((tmp_path / "capped" / "refusal.json").read_text())
    plain = json.loads((tmp_path / "plain" / "refusal.json").read_text())
    assert capped["search"]["refusals"] == plain["search"]["refusals"]
    assert capped["search"]["kl"] == pytest.approx(plain["search"]["kl"], abs=1e-4)
    assert capped["apply_settings"] == plain["apply_settings"]
    assert hashes(tmp_path / "capped")["model-00001-of-00005.safetensors"] == \
        hashes(tmp_path / "plain")["model-00001-of-00005.safetensors"]


def test_memory_limits_are_read_or_refused_clearly():
    assert parse_max_memory("0=20GiB, cpu=8GiB") == {0: "20GiB", "cpu": "8GiB"}
    with pytest.raises(ModelLoadError, match="is not a size"):
        parse_max_memory("cpu=lots")
    with pytest.raises(ModelLoadError, match="DEVICE=SIZE"):
        parse_max_memory("8GiB")
