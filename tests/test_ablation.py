"""The projection math on bare tensors."""

import pytest
import torch

from forge_hub.abliterate.ablation import (
    as_direction_rows,
    layer_kernel,
    orthogonal_to,
    project_out,
    project_out_activations,
    through_norm_gain,
)

H = 16


def unit(v):
    return v / v.norm()


@pytest.fixture
def r():
    torch.manual_seed(1)
    return unit(torch.randn(H))


def test_linear_weight_loses_its_output_along_r(r):
    w = torch.randn(H, 24)  # nn.Linear [out=H, in]
    edited = project_out(w, r, residual_axis=0)
    assert torch.allclose(r @ edited, torch.zeros(24), atol=1e-5)  # W^T r = 0
    # everything orthogonal to r is untouched
    p = torch.eye(H) - torch.outer(r, r)
    assert torch.allclose(p @ edited, p @ w, atol=1e-5)


def test_embedding_rows_and_bias(r):
    emb = torch.randn(50, H)
    assert torch.allclose(project_out(emb, r, residual_axis=1) @ r, torch.zeros(50), atol=1e-5)
    bias = torch.randn(H)
    assert abs(project_out(bias, r) @ r) < 1e-5


def test_strength_scales_the_removed_component(r):
    w = torch.randn(H, 8)
    half = project_out(w, r, strength=0.5)
    assert torch.allclose(r @ half, 0.5 * (r @ w), atol=1e-5)
    assert torch.equal(project_out(w, r, strength=0.0), w)


def test_norm_preserving_keeps_each_residual_vector_norm(r):
    w = torch.randn(H, 24)
    edited = project_out(w, r, norm_preserving=True)
    assert torch.allclose(edited.norm(dim=0), w.norm(dim=0), atol=1e-5)  # columns live in the stream
    assert torch.allclose(r @ edited, torch.zeros(24), atol=1e-5)
    emb = torch.randn(30, H)
    e2 = project_out(emb, r, residual_axis=1, norm_preserving=True)
    assert torch.allclose(e2.norm(dim=1), emb.norm(dim=1), atol=1e-5)


def test_subspace_removes_every_direction():
    torch.manual_seed(2)
    q = torch.randn(3, H)
    w = torch.randn(H, 10)
    edited = project_out(w, q)
    assert torch.allclose(q @ edited, torch.zeros(3, 10), atol=1e-4)
    rows = as_direction_rows(q)
    assert torch.allclose(rows @ rows.T, torch.eye(3), atol=1e-5)


def test_fused_experts_equal_per_expert_bit_for_bit(r):
    experts = torch.randn(4, H, 12).to(torch.bfloat16)  # [E, out=H, in]
    fused = project_out(experts, r, residual_axis=1)
    for e in range(4):
        assert torch.equal(fused[e], project_out(experts[e].clone(), r, residual_axis=0))
    transposed = torch.randn(4, 12, H)  # [E, in, out=H] (x @ W layout)
    assert torch.allclose(project_out(transposed, r, residual_axis=2) @ r, torch.zeros(4, 12), atol=1e-5)


def test_row_normalized_is_the_projection_on_unit_rows_with_row_norms_restored(r):
    w = torch.randn(H, 24) * torch.linspace(0.2, 3.0, H)[:, None]  # rows of very different norms
    edited = project_out(w, r, row_normalized=True)
    # written out by hand: normalise rows, project along the residual axis, renormalise, rescale
    norms = w.norm(dim=1, keepdim=True)
    projected = w / norms - torch.outer(r, r) @ (w / norms)
    expected = projected / projected.norm(dim=1, keepdim=True) * norms
    assert torch.allclose(edited, expected, atol=1e-5)
    assert torch.allclose(edited.norm(dim=1), w.norm(dim=1), atol=1e-5)  # every row keeps its norm
    # chunked to the last float bits (the row blocks sum Q N in another order: on an AVX-512 CPU that
    # moved some bits; every caller uses the same blocks), and one expert at a time for fused experts, bit for bit
    assert torch.allclose(project_out(w, r, row_normalized=True, chunk_bytes=3 * 4 * 24), edited, atol=1e-6, rtol=0)
    fused = torch.stack([w, 2 * w])
    assert torch.equal(project_out(fused, r, residual_axis=1, row_normalized=True)[1],
                       project_out(2 * w, r, row_normalized=True))
    # biases and embeddings (residual vectors as rows) get the plain projection in this mode
    emb = torch.randn(30, H)
    assert torch.equal(project_out(emb, r, residual_axis=1, row_normalized=True), project_out(emb, r, residual_axis=1))


def test_the_two_ways_of_keeping_magnitudes_exclude_each_other(r):
    from forge_hub.errors import SettingsError
    from forge_hub.schema import AblationSettings

    with pytest.raises(SettingsError, match="pick one"):
        project_out(torch.randn(H, 4), r, norm_preserving=True, row_normalized=True)
    with pytest.raises(SettingsError, match="pick one"):
        AblationSettings(norm_preserving=True, row_normalized=True).check()


def test_low_precision_keeps_dtype_and_leaves_input_alone(r):
    w = torch.randn(H, 8).to(torch.bfloat16)
    before = w.clone()
    out = project_out(w, r)
    assert out.dtype == torch.bfloat16 and torch.equal(w, before)
    assert (r @ out.float()).abs().max() < 0.05


def test_chunking_does_not_change_the_result(r):
    w = torch.randn(H, 100)
    assert torch.allclose(project_out(w, r, chunk_bytes=7 * 4 * 100), project_out(w, r), atol=1e-6)
    emb = torch.randn(100, H)
    assert torch.allclose(project_out(emb, r, residual_axis=1, chunk_bytes=7 * 4 * H),
                          project_out(emb, r, residual_axis=1), atol=1e-6)


def test_activation_projection_matches_weight_projection(r):
    w, b, x = torch.randn(H, 10), torch.randn(H), torch.randn(5, 10)
    baked = x @ project_out(w, r).T + project_out(b, r)
    hooked = project_out_activations(x @ w.T + b, r)
    assert torch.allclose(baked, hooked, atol=1e-5)


def test_direction_through_a_norm_gain_leaves_no_component_after_the_norm(r):
    torch.manual_seed(3)
    gain = 1.0 + 0.5 * torch.randn(H)
    w = torch.randn(H, 20)
    edited = project_out(w, through_norm_gain(r, gain))
    out = torch.randn(7, 20) @ edited.T
    normed = gain * out / out.pow(2).mean(-1, keepdim=True).sqrt()
    assert torch.allclose(normed @ r, torch.zeros(7), atol=1e-4)


def test_orthogonal_to_removes_the_other_vector(r):
    other = torch.randn(H)
    d = orthogonal_to(r, other)
    assert abs(d @ other) < 1e-5 and abs(d.norm() - 1) < 1e-6


def test_layer_kernels():
    assert layer_kernel(4) == [1.0] * 4
    lin = layer_kernel(7, shape="linear", center=3, width=2, floor=0.5)
    assert lin == [0.0, 0.5, 0.75, 1.0, 0.75, 0.5, 0.0]
    g = layer_kernel(5, shape="gaussian", center=2, width=1)
    assert g[2] == 1.0 and g[1] == g[3] and g[0] < g[1]
    with pytest.raises(ValueError):
        layer_kernel(4, shape="linear")
