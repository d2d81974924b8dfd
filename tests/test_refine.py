"""Refining directions by gradient descent: the differentiable edit is the real one, refinement
lowers its own loss, moves only the edited layers' directions, leaves the model as it was, and the
refined directions survive a save and reload."""

import optuna
import pytest
import torch
from helpers.tiny import HARMFUL, HARMLESS, make_model, make_tokenizer, random_artifact

from forge_hub.abliterate.ablation import project_out
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.live import plan_for_model
from forge_hub.abliterate.refine import RefineOptions, edited_weight, refine_directions
from forge_hub.abliterate.search import SearchOptions
from forge_hub.errors import SettingsError
from forge_hub.schema import AblationSettings

SETTINGS = AblationSettings(per_layer=True, attn_strength=1.2, mlp_strength=0.8, layer_start=1, layer_end=3,
                            row_normalized=True)


@pytest.mark.parametrize("mode", ["plain", "rows", "columns"])
def test_differentiable_edit_equals_project_out(mode):
    g = torch.Generator().manual_seed(1)
    weight, direction = torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    flags = dict(row_normalized=mode == "rows", norm_preserving=mode == "columns")
    expected = project_out(weight, direction, strength=1.3, **flags)
    direction.requires_grad_(True)
    got = edited_weight(weight, direction, 1.3, **flags)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert direction.grad is not None and direction.grad.abs().sum() > 0


def test_answer_loss_is_the_cross_entropy_of_the_answers_alone():
    """Only the answer positions' logits are computed; the loss must equal the cross-entropy of
    the answer tokens read off a full forward pass, each row left-padded to its own length."""
    from forge_hub.abliterate.refine import _answer_loss
    from forge_hub.model.chat import render

    model, tokenizer = make_model("llama"), make_tokenizer()
    prompts = HARMFUL[:3]
    targets = {prompts[0]: "Sure, here is how", prompts[1]: "Step one", prompts[2]: "Yes: first gather the things"}
    options = RefineOptions(answer_tokens=5)
    with torch.no_grad():
        got = _answer_loss(model, {}, tokenizer, prompts, targets, options, torch.device("cpu"))
        total, count = 0.0, 0
        for p in prompts:
            head = tokenizer(render(tokenizer, p, None), add_special_tokens=False)["input_ids"]
            answer = tokenizer(targets[p], add_special_tokens=False)["input_ids"][:5]
            logits = model(input_ids=torch.tensor([head + answer])).logits[0].float()
            predicted = logits[len(head) - 1:len(head) + len(answer) - 1]
            total += torch.nn.functional.cross_entropy(predicted, torch.tensor(answer), reduction="sum").item()
            count += len(answer)
    assert got.item() == pytest.approx(total / count, rel=1e-4)


def _refine(model, artifact, steps, **kw):
    options = RefineOptions(steps=steps, batch_size=len(HARMFUL), learning_rate=0.02, answer_tokens=4,
                            markers=("nothing like this appears",), **kw)
    return refine_directions(model, make_tokenizer(), artifact, SETTINGS, HARMFUL, HARMLESS, options,
                             progress=False)


def test_refinement_moves_only_the_edited_layers_and_lowers_its_loss(tmp_path):
    model, artifact = make_model("llama"), random_artifact()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    refined = _refine(model, artifact, steps=30)
    record = refined.metadata.refined
    edited = plan_for_model(model, artifact, SETTINGS).layers()
    assert record.layers == [layer + 1 for layer in edited] == [2, 3]
    for t in range(artifact.num_layers + 1):
        moved = not torch.allclose(refined.directions[t], artifact.directions[t])
        assert moved == (t in record.layers), t
        assert refined.directions[t].norm().item() == pytest.approx(1.0, abs=1e-5)
    # one fixed batch (every prompt each step): the loss it minimised went down
    answers_first, kl_first = record.first_losses
    answers_last, kl_last = record.last_losses
    assert answers_last + 0.5 * kl_last < answers_first + 0.5 * kl_first
    assert record.targets == len(HARMFUL) and record.steps == 30 and record.settings == SETTINGS
    assert 0 < record.mean_cosine_to_start < 1
    for k, v in model.state_dict().items():  # the model is as it was, gradients off again where they were
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())
    # the refined directions and their record survive the artifact's files
    refined.save(tmp_path / "art")
    loaded = RefusalDirections.load(tmp_path / "art")
    torch.testing.assert_close(loaded.directions, refined.directions)
    assert loaded.metadata.refined == record
    # another method recomputes directions from the means: no longer refined
    other = loaded.with_method("mean_diff")
    assert other.metadata.refined is None
    assert loaded.with_method(loaded.metadata.method) is loaded


def test_compliant_answers_are_written_only_for_the_prompts_the_steps_read():
    model, artifact = make_model("llama"), random_artifact()
    assert len(HARMFUL) > 2
    options = RefineOptions(steps=1, batch_size=2, answer_tokens=4, markers=("nothing like this appears",))
    refined = refine_directions(model, make_tokenizer(), artifact, SETTINGS, HARMFUL, HARMLESS, options,
                                progress=False)
    assert refined.metadata.refined.targets == 2


def test_refinement_wants_per_layer_directions_and_answered_prompts():
    model, artifact = make_model("llama"), random_artifact()
    with pytest.raises(SettingsError, match="at least one step"):
        refine_directions(model, make_tokenizer(), artifact, SETTINGS, HARMFUL, HARMLESS, RefineOptions(steps=0))
    with pytest.raises(SettingsError, match="each layer's own direction"):
        refine_directions(model, make_tokenizer(), artifact, AblationSettings(direction_layer=2.0), HARMFUL,
                          HARMLESS, RefineOptions(steps=1), progress=False)
    with pytest.raises(SettingsError, match="nothing to refine towards"):  # every answer counted as a refusal
        refine_directions(model, make_tokenizer(), artifact, SETTINGS, HARMFUL, HARMLESS,
                          RefineOptions(steps=1, batch_size=4, markers=("",)), progress=False)


def test_optimize_searches_refined_directions_from_the_refined_rung(tmp_path, prompt_files):
    from helpers.tiny import save_model

    from forge_hub.abliterate.search import (
        BAND_LADDER,
        REFINED_MAX_PEAK,
        REFINED_RUNG,
        band_trial_params,
        trial_directions,
    )
    from forge_hub.abliterate.study import load_directions
    from forge_hub.cli import main

    src = save_model(make_model("llama"), tmp_path / "tiny")
    h, s = prompt_files
    common = ["run", src, "--harmful", h, "--harmless", s, "--optimize", "--search-tokens", "3", "--batch-size", "4",
              "--trials", "4", "--check-tokens", "3"]
    assert main([str(a) for a in [*common, "--study", tmp_path / "r.db", "--out", tmp_path / "refined"]]) == 0
    assert main([str(a) for a in [*common, "--study", tmp_path / "p.db", "--out", tmp_path / "plain",
                                   "--refine-steps", "0"]]) == 0
    written, plain = (RefusalDirections.load(tmp_path / name) for name in ("refined", "plain"))
    study = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{tmp_path / 'r.db'}")
    refined = load_directions(study)  # what the study searched
    assert refined.metadata.refined.steps == SearchOptions.refine_steps and plain.metadata.refined is None
    moved = refined.metadata.refined.layers
    assert moved  # only those layers' directions differ from the plain run's mean differences
    for t in range(refined.num_layers + 1):
        assert torch.allclose(refined.directions[t], plain.directions[t], atol=1e-6) == (t not in moved), t
    # the refined artifact's plain view is the plain run's mean differences
    torch.testing.assert_close(refined.plain().directions, plain.directions, atol=1e-6, rtol=0)
    assert refined.plain().metadata.refined is None and plain.plain() is plain
    # no layer scan: the study starts with the ladder, at the refined rung on the refined directions (peaks may go
    # past the plain 1.5); the band's rungs after it keep the plain directions, scoring what the plain study scored
    n = refined.num_layers
    assert refined.metadata.selection.how == "separation" and "refusal_probability" not in refined.scores
    assert study.trials[0].params == {**band_trial_params(n, REFINED_RUNG), "directions": "refined"}
    assert study.trials[0].distributions["attn_peak"].high == REFINED_MAX_PEAK
    assert study.trials[1].params == {**band_trial_params(n, BAND_LADDER[0]), "directions": "plain"}
    plain_study = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{tmp_path / 'p.db'}")
    assert "directions" not in plain_study.trials[0].params  # nothing to choose without refinement
    assert plain_study.trials[0].params == band_trial_params(n, BAND_LADDER[0])
    assert study.trials[1].values == plain_study.trials[0].values
    # refined under a biprojected edit, and every trial on them edits biprojected; the plain ones as chosen
    assert refined.metadata.refined.settings.biprojected
    for t in study.trials:
        recorded = AblationSettings.from_dict(t.user_attrs["settings"])
        assert recorded.biprojected == (t.params["directions"] == "refined" or t.params["biprojected"]), t.number
    for number, expected in ((0, refined), (1, plain)):
        assert torch.equal(trial_directions(refined, study.trials[number]).directions, expected.directions), number
    # the written model carries the directions its picked trial edited with, and a refinement record only then
    picked = study.trials[written.metadata.search.trial]
    assert torch.equal(written.directions, trial_directions(refined, picked).directions)
    assert (written.metadata.refined is not None) == (picked.params["directions"] == "refined")
    assert written.metadata.apply_settings.to_dict() == picked.user_attrs["settings"]  # the edit it scored


def test_a_search_of_one_global_direction_is_not_refined(tmp_path, prompt_files):
    from helpers.tiny import save_model

    from forge_hub.cli import main

    src = save_model(make_model("llama"), tmp_path / "tiny")
    h, s = prompt_files
    assert main([str(a) for a in ["run", src, "--harmful", h, "--harmless", s, "--optimize", "--search-tokens", "3",
                                  "--batch-size", "4", "--trials", "2", "--check-tokens", "3", "--search-without",
                                  "per-layer-directions", "--study", tmp_path / "g.db", "--out", tmp_path / "g"]]) == 0
    assert RefusalDirections.load(tmp_path / "g").metadata.refined is None
