"""Streaming apply over a multi-shard safetensors checkpoint."""

import hashlib
import json

import pytest
import torch
from helpers.tiny import make_model, random_artifact, save_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.live import abliterate_model
from forge_hub.errors import ModelLoadError, OutputError
from forge_hub.model.files import INDEX_FILE
from forge_hub.outputs import checkpoint
from forge_hub.outputs.checkpoint import apply_to_checkpoint
from forge_hub.schema import AblationSettings


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def all_tensors(folder):
    out = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        out.update(load_file(shard))
    return out


@pytest.mark.parametrize("arch,settings", [
    ("llama", AblationSettings()),
    ("gemma3", AblationSettings(norm_preserving=True, strength=0.9)),
    ("qwen2_moe", AblationSettings(kernel="gaussian", kernel_center=1.5, kernel_width=1.0)),
    ("mistral", AblationSettings(biprojected=True, per_layer=True)),
])
def test_streaming_equals_in_memory_bit_for_bit(tmp_path, arch, settings):
    model = make_model(arch).to(torch.bfloat16)
    src = save_model(model, tmp_path / "src", max_shard_size="20KB")
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) > 3 and (src / INDEX_FILE).exists()
    before = folder_digest(src)
    artifact = random_artifact()

    report = apply_to_checkpoint(src, tmp_path / "out", artifact, settings, progress=False)

    out = tmp_path / "out"
    assert folder_digest(src) == before  # the source is never modified
    assert sorted(p.name for p in out.glob("model-*.safetensors")) == [p.name for p in shards]
    for name in ("config.json", INDEX_FILE, "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    assert report.edited_tensors > 0 and report.shards == len(shards)

    abliterate_model(model, artifact, settings)
    model.save_pretrained(tmp_path / "memory", max_shard_size="20KB")
    streamed, in_memory, original = all_tensors(out), all_tensors(tmp_path / "memory"), all_tensors(src)
    assert streamed.keys() == in_memory.keys()
    changed = 0
    for name, tensor in in_memory.items():
        assert torch.equal(streamed[name], tensor), name
        changed += not torch.equal(tensor, original[name])
    assert changed == report.edited_tensors
    # the output carries its own direction artifact and settings, and loads in transformers
    assert RefusalDirections.load(out).selected_layer == artifact.selected_layer
    assert json.loads((out / "abliteration.json").read_text())["settings"] == settings.to_dict()
    AutoModelForCausalLM.from_pretrained(out)


def test_streaming_untie_of_tied_embeddings(tmp_path):
    model = make_model("qwen2", tied=True)
    src = save_model(model, tmp_path / "src")
    artifact = random_artifact()
    apply_to_checkpoint(src, tmp_path / "out", artifact, AblationSettings(embeddings="untie"), progress=False)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    assert torch.equal(reloaded.lm_head.weight, model.get_input_embeddings().weight)
    r = artifact.direction()
    assert (reloaded.get_input_embeddings().weight @ r).abs().max() < 1e-4
    abliterate_model(model, artifact, AblationSettings(embeddings="untie"))
    ids = torch.tensor([[2, 10, 20, 30]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    src = save_model(make_model("llama"), tmp_path / "src", max_shard_size="20KB")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)

    original = checkpoint.rewrite_shard
    monkeypatch.setattr(checkpoint, "rewrite_shard", broken)
    with pytest.raises(OutputError, match="disk full"):
        apply_to_checkpoint(src, tmp_path / "out", random_artifact(), AblationSettings(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary folder


def test_not_enough_space_is_refused_before_writing(tmp_path, monkeypatch):
    src = save_model(make_model("llama"), tmp_path / "src")
    monkeypatch.setattr("forge_hub.outputs.staging.shutil.disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(OutputError, match="not enough disk space"):
        apply_to_checkpoint(src, tmp_path / "out", random_artifact(), AblationSettings(), progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path):
    src = save_model(make_model("llama"), tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        apply_to_checkpoint(src, tmp_path / "out", random_artifact(), AblationSettings(), progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="not a forge-hub output"):  # overwrite never takes a folder of yours
        apply_to_checkpoint(src, tmp_path / "out", random_artifact(), AblationSettings(), overwrite=True,
                            progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    apply_to_checkpoint(src, tmp_path / "edited", random_artifact(), AblationSettings(), progress=False)
    first = (tmp_path / "edited" / "model.safetensors").read_bytes()
    apply_to_checkpoint(src, tmp_path / "edited", random_artifact(seed=1), AblationSettings(), overwrite=True,
                        progress=False)  # a previous model output: replaced
    assert (tmp_path / "edited" / "model.safetensors").read_bytes() != first


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        apply_to_checkpoint(tmp_path / "src", tmp_path / "out", random_artifact(), AblationSettings())
    assert not (tmp_path / "out").exists()
