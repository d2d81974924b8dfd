"""Abliteration of live models of every supported family: weights, residual stream, hooks."""

import copy

import pytest
import torch
from helpers.tiny import ARCHITECTURES, make_model, random_artifact, residual_stream

from forge_hub.abliterate.architecture import ATTN, EMBED, MLP, Architecture, tensor_shapes
from forge_hub.abliterate.live import ablation_hooks, abliterate_model, apply_plan, plan_for_model
from forge_hub.errors import DirectionMismatchError, UnsupportedArchitectureError
from forge_hub.schema import AblationSettings

IDS = torch.tensor([[2, 10, 20, 30, 40, 50, 60, 70], [2, 11, 21, 31, 41, 51, 61, 71]])


def along(tensor: torch.Tensor, axis: int, dirs: torch.Tensor) -> torch.Tensor:
    return tensor.float().movedim(axis, -1) @ dirs.T


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_layer_has_its_writers(arch):
    model = make_model(arch)
    a = Architecture.from_config(model.config)
    writers = a.writers(tensor_shapes(model.named_parameters()))
    for layer in range(a.num_layers):
        kinds = {w.component for w in writers if w.layer == layer}
        assert kinds == {ATTN, MLP}, (layer, kinds)
    assert [w.component for w in writers if w.layer is None] == [EMBED]
    if arch.endswith("moe") or arch == "mixtral":
        assert any(w.name.endswith("experts.down_proj") and w.residual_axis == 1 for w in writers)
    if arch == "qwen2_moe":
        assert any("shared_expert.down_proj" in w.name for w in writers)
    if arch == "gemma3":
        assert all(w.post_norm and w.norm_offset == 1.0 for w in writers if w.layer is not None)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_apply_removes_the_direction_from_weights_and_stream(arch, tied):
    model = make_model(arch, tied)
    artifact = random_artifact()
    r = artifact.direction()
    settings = AblationSettings(embeddings="untie" if tied else "auto")
    original = copy.deepcopy(model)
    plan = abliterate_model(model, artifact, settings)
    params = dict(model.named_parameters())
    assert plan.layers() == [0, 1, 2, 3]
    for name, edit in plan.edits.items():  # W^T r = 0 for every edited matrix
        assert along(params[name].detach(), edit.writer.residual_axis, edit.directions).abs().max() < 1e-4, name
    for h in residual_stream(model, IDS):  # and nothing along r ever enters the stream
        assert (h @ r).abs().max() < 1e-3
    if tied:  # the output head kept the original embedding
        assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
        assert torch.equal(model.get_output_embeddings().weight, original.get_input_embeddings().weight)
    else:
        assert any(w.writer.component == EMBED for w in plan.edits.values())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tied_embeddings_are_left_alone_by_default(arch):
    model = make_model(arch, tied=True)
    artifact = random_artifact()
    r = artifact.direction()
    plan = abliterate_model(model, artifact, AblationSettings())
    assert all(e.writer.component != EMBED for e in plan.edits.values())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    stream = residual_stream(model, IDS)
    # no layer adds anything along r: the component is the embedding's own, unchanged to the end
    for h in stream[1:]:
        assert torch.allclose(h @ r, stream[0] @ r, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_norm_preserving_keeps_residual_vector_norms(arch):
    model = make_model(arch)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    plan = abliterate_model(model, random_artifact(), AblationSettings(norm_preserving=True))
    params = dict(model.named_parameters())
    for name, edit in plan.edits.items():
        axis = edit.writer.residual_axis
        old, new = before[name].movedim(axis, -1), params[name].detach().movedim(axis, -1)
        if old.ndim == 1:
            assert torch.allclose(old.norm(), new.norm(), atol=1e-4)
        else:
            assert torch.allclose(old.norm(dim=-1), new.norm(dim=-1), atol=1e-4), name
        assert along(params[name].detach(), axis, edit.directions).abs().max() < 1e-4


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_hook_ablation_equals_baked_weights(arch):
    model = make_model(arch)
    artifact = random_artifact()
    settings = AblationSettings(strength=0.8, kernel="linear", kernel_center=2, kernel_width=2, kernel_floor=0.3)
    plan = plan_for_model(model, artifact, settings)
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
        with ablation_hooks(model, plan):
            hooked = model(input_ids=IDS).logits
        after_hooks = model(input_ids=IDS).logits
        apply_plan(model, plan)
        baked = model(input_ids=IDS).logits
    assert torch.equal(plain, after_hooks)  # hooks leave nothing behind
    assert not torch.allclose(plain, baked, atol=1e-3)  # the edit did something
    assert torch.allclose(hooked, baked, atol=1e-4)


def test_per_layer_and_biprojected_directions_differ_per_layer():
    model = make_model("llama")
    artifact = random_artifact()
    plan = plan_for_model(model, artifact, AblationSettings(per_layer=True, biprojected=True))
    o0 = plan.edits["model.layers.0.self_attn.o_proj.weight"].directions[0]
    o2 = plan.edits["model.layers.2.self_attn.o_proj.weight"].directions[0]
    assert not torch.allclose(o0, o2)
    # biprojected: orthogonal to the harmless mean of the stream each layer writes into
    assert abs(o2 @ artifact.harmless_mean[3]) < 1e-4


def test_layer_range_and_skips():
    model = make_model("llama", layers=6)
    artifact = random_artifact(layers=6)
    plan = plan_for_model(model, artifact, AblationSettings(layer_start=1, layer_end=5, skip_last=2))
    assert plan.layers() == [1, 2, 3]


def test_mismatched_direction_is_refused():
    model = make_model("llama")
    with pytest.raises(DirectionMismatchError, match="hidden size 48 does not match the model's 32"):
        plan_for_model(model, random_artifact(hidden=48), AblationSettings())
    with pytest.raises(DirectionMismatchError, match="6 layers, the model has 4"):
        plan_for_model(model, random_artifact(layers=6), AblationSettings())


def test_unknown_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        plan_for_model(model, random_artifact(layers=2), AblationSettings())
