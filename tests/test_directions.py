"""Directions from residual statistics, and the artifact on disk."""

import json

import pytest
import torch

from forge_hub.abliterate.directions import RefusalDirections, compute_directions
from forge_hub.errors import DirectionMismatchError
from forge_hub.model.activations import ResidualStats, winsorize
from forge_hub.schema import DirectionMetadata


@pytest.fixture
def stats():
    g = torch.Generator().manual_seed(0)
    harmless = torch.randn(40, 3, 16, generator=g) + 2.0
    shift = torch.zeros(16)
    shift[3] = 4.0
    harmful = harmless[:30] + shift + 0.1 * torch.randn(30, 3, 16, generator=g)
    return (ResidualStats(harmful.mean(0), 30, harmful), ResidualStats(harmless.mean(0), 40, harmless))


def test_mean_diff_and_projected(stats):
    harmful, harmless = stats
    dirs, sub = compute_directions(harmful, harmless, method="mean_diff")
    diff = harmful.mean - harmless.mean
    assert sub is None and torch.allclose(dirs, diff / diff.norm(dim=1, keepdim=True))
    proj, _ = compute_directions(harmful, harmless, method="projected")
    assert torch.allclose((proj * harmless.mean).sum(1), torch.zeros(3), atol=1e-5)  # orthogonal to harmless mean
    assert torch.allclose(proj.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (proj[:, 3] > 0.5).all()  # still points along the planted difference


def test_svd_subspace(stats):
    harmful, harmless = stats
    first, sub = compute_directions(harmful, harmless, method="svd", num_directions=3)
    assert sub.shape == (3, 3, 16)
    for layer in range(3):
        assert torch.allclose(sub[layer] @ sub[layer].T, torch.eye(3), atol=1e-4)
        assert first[layer] @ (harmful.mean[layer] - harmless.mean[layer]) > 0
    with pytest.raises(ValueError, match="per-prompt"):
        compute_directions(ResidualStats(harmful.mean, 30), harmless, method="svd")


def test_winsorize_clips_massive_activations():
    x = torch.randn(50, 2, 32)
    x[:, :, 5] = 1000.0
    clipped = winsorize(x, 0.95)
    assert clipped.abs().max() < 10 and torch.equal(clipped[:, :, 0].abs() <= x[:, :, 0].abs(),
                                                    torch.ones(50, 2, dtype=bool))


def test_artifact_round_trip_and_interpolation(tmp_path, stats):
    harmful, harmless = stats
    dirs, sub = compute_directions(harmful, harmless, method="svd", num_directions=2)
    art = RefusalDirections(harmful.mean, harmless.mean, dirs, sub, {"separation": torch.rand(3)},
                            DirectionMetadata(selected_layer=1.5, model="m", method="svd"))
    art.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "refusal.json").read_text())["selected_layer"] == 1.5
    back = RefusalDirections.load(tmp_path / "a" / "refusal.safetensors")
    assert torch.equal(back.directions, dirs) and torch.equal(back.subspaces, sub)
    assert torch.equal(back.scores["separation"], art.scores["separation"])
    assert back.metadata == art.metadata  # the typed metadata survives the JSON round trip
    mid = back.direction()
    expected = dirs[1] + dirs[2]
    assert torch.allclose(mid, expected / expected.norm(), atol=1e-6)
    with pytest.raises(DirectionMismatchError, match="outside"):
        back.direction(7)
