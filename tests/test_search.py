"""The parameter search: reversible trials, early stopping, resumable study, pick, plot."""


import optuna
import pytest
import torch
from helpers.tiny import HARMFUL, HARMLESS, make_model, make_tokenizer, random_artifact

from forge_hub.abliterate.architecture import ATTN, MLP
from forge_hub.abliterate.live import abliterate_model
from forge_hub.abliterate.plan import layer_weights
from forge_hub.abliterate.search import (
    BAND_LADDER,
    BROAD_LADDER,
    MAGNITUDES,
    MLP_BAND,
    SearchOptions,
    TrialEvaluator,
    default_trial_params,
    front_table,
    pick_trial,
    plot_front,
    run_search,
    trial_choice,
)
from forge_hub.errors import SettingsError
from forge_hub.evaluation.generation import generate
from forge_hub.evaluation.refusal_count import count_refusals
from forge_hub.evaluation.refusals import is_refusal
from forge_hub.model.chat import token_counts
from forge_hub.schema import AblationSettings

QUEUED = 1 + len(BAND_LADDER) + len(BROAD_LADDER)  # a new study's start-up trials: default, then ladder


def options(tmp_path, **kw):
    return SearchOptions(storage=tmp_path / "study.db", max_new_tokens=3, batch_size=4, **kw)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trial_edit_equals_a_fresh_abliteration_and_is_undone(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    before = state(model)
    artifact = random_artifact()
    evaluator = TrialEvaluator(model, tok, HARMFUL, HARMLESS, options(tmp_path))
    a = AblationSettings(direction_layer=1.5, attn_strength=1.3,
                         component_kernels={"mlp": {"kernel": "linear", "center": 2, "width": 2, "floor": 0.2}})
    b = AblationSettings(direction_layer=2.0, strength=0.7)
    first = evaluator(artifact, a)
    evaluator(artifact, b)
    assert evaluator(artifact, a) == first  # same settings, same numbers: b left nothing behind
    fresh = make_model("llama")
    abliterate_model(fresh, artifact, a)
    for k, v in state(fresh).items():
        assert torch.equal(v, model.state_dict()[k]), k
    evaluator.restore()
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_dominated_trials_stop_counting_early(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    opts = options(tmp_path, markers=("",))  # every non-empty answer counts as a refusal
    evaluator = TrialEvaluator(model, tok, HARMFUL, HARMLESS, opts)
    refusals, kl, complete = evaluator(random_artifact(), AblationSettings(), lambda kl: 0)
    assert (refusals, complete) == (len(HARMFUL), False)  # stopped at the first refusal, scaled up
    assert evaluator(random_artifact(), AblationSettings())[:1] + (True,) == (len(HARMFUL), True)


@pytest.mark.parametrize("markers", [("how",), ("the", "a"), ("zzz-never",), ("",)])
def test_counting_refusals_as_answers_decide_equals_full_answers(markers):
    """Rows leave the batch once they end or refuse; the count is what full greedy answers give."""
    model, tok = make_model("llama", seed=3), make_tokenizer()
    prompts = HARMFUL + HARMLESS
    full = generate(model, tok, prompts, max_new_tokens=6, batch_size=5)
    counted = count_refusals(model, tok, prompts, max_new_tokens=6, batch_size=5, markers=markers)
    assert counted.complete and counted.refusals == sum(is_refusal(a, markers) for a in full)
    assert sorted(counted.refused) == [i for i, a in enumerate(full) if is_refusal(a, markers)]
    assert counted.tokens <= 6 * len(prompts)


def test_prompts_refused_by_earlier_trials_are_answered_first(tmp_path):
    """So a beaten trial shows it in its first batch; a finished trial's count does not depend on the order."""
    model, tok = make_model("llama"), make_tokenizer()
    opts = options(tmp_path, markers=("door", "recipe"))
    evaluator = TrialEvaluator(model, tok, HARMFUL, HARMLESS, opts)
    lengths = token_counts(tok, HARMFUL)
    assert evaluator.answering_order() == sorted(range(len(HARMFUL)), key=lengths.__getitem__)  # none refused yet
    settings = AblationSettings(direction_layer=1.0, strength=0.3)
    refusals, _, complete = evaluator(random_artifact(), settings)
    answers = generate(model, tok, HARMFUL, max_new_tokens=opts.max_new_tokens, batch_size=1)  # still edited
    refused = {i for i, a in enumerate(answers) if is_refusal(a, opts.markers)}
    assert complete and refusals == len(refused) and 0 < len(refused) < len(HARMFUL)
    order = evaluator.answering_order()
    assert set(order[:len(refused)]) == refused
    assert order[len(refused):] == sorted(set(range(len(HARMFUL))) - refused, key=lengths.__getitem__)
    assert evaluator(random_artifact(), settings)[:1] == (refusals,)  # answered in the new order, same count
    assert evaluator.times_refused == [2 * (i in refused) for i in range(len(HARMFUL))]


def test_study_runs_resumes_and_starts_from_the_default(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    before = state(model)
    artifact = random_artifact()
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=3), progress=False)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert study.trials[0].params == default_trial_params(artifact)  # the measured default goes first
    for k, v in state(model).items():
        assert torch.equal(v, before[k])  # the model is left as it was
    first_values = [t.values for t in study.trials]
    resumed = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=5), progress=False)
    assert len(resumed.trials) == 5
    assert [t.values for t in resumed.trials[:3]] == first_values
    method, settings = trial_choice(resumed.trials[4])
    assert method in ("projected", "mean_diff") and settings.component_kernels["attn"]["kernel"] == "linear"


def test_the_first_trial_is_the_default_runs_choice(tmp_path):
    """Whatever the default run chose (here: layers 1-2 of 4, leaving the bottom and the top one alone,
    at 0.9, row-normalized), the search's first trial makes exactly that edit."""
    artifact = random_artifact()
    chosen = AblationSettings(direction_layer=2.0, row_normalized=True, skip_first=1, layer_end=3,
                              attn_strength=0.9, mlp_strength=0.9)
    artifact.metadata = artifact.metadata.replace(apply_settings=chosen)
    model, tok = make_model("llama"), make_tokenizer()
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=1), progress=False)
    _, first = trial_choice(study.trials[0])
    by_search, by_default = make_model("llama"), make_model("llama")
    abliterate_model(by_search, artifact, first)
    abliterate_model(by_default, artifact, chosen)
    for (name, a), b in zip(state(by_search).items(), state(by_default).values()):
        assert torch.allclose(a, b, atol=1e-6), name
    untouched = make_model("llama").state_dict()
    assert torch.equal(state(by_default)["model.layers.0.mlp.down_proj.weight"],
                       untouched["model.layers.0.mlp.down_proj.weight"])  # the bottom layer was left alone
    assert torch.equal(state(by_default)["model.layers.3.self_attn.o_proj.weight"],
                       untouched["model.layers.3.self_attn.o_proj.weight"])  # and the top one
    assert not torch.equal(state(by_default)["model.layers.2.self_attn.o_proj.weight"],
                           untouched["model.layers.2.self_attn.o_proj.weight"])


def test_the_start_up_trials_climb_a_ladder_along_the_upper_band_then_edit_on_broad_kernels(tmp_path):
    """After the default, the next trials remove each layer's own direction from the top layers
    only, at the ladder's strengths, then from most layers on broad kernels; a study smaller than the
    queue gets only what fits."""
    model, tok = make_model("llama"), make_tokenizer()
    artifact = random_artifact()
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=QUEUED), progress=False)
    ladder, broad = study.trials[1:1 + len(BAND_LADDER)], study.trials[1 + len(BAND_LADDER):]
    assert [t.params["attn_peak"] for t in ladder] == pytest.approx([rung.attn for rung in BAND_LADDER])
    assert [t.params["mlp_peak"] for t in ladder] == pytest.approx([rung.mlp for rung in BAND_LADDER])
    assert [t.params["attn_center"] for t in ladder] == pytest.approx([rung.attn_center * 3 for rung in BAND_LADDER])
    assert [t.params["mlp_center"] for t in ladder] == pytest.approx([MLP_BAND[0] * 3] * len(ladder))  # 4 layers
    assert [t.params["attn_width"] for t in ladder] == pytest.approx([1.0] * len(ladder))  # 0.18 of 4, at least 1
    assert [t.params["magnitudes"] for t in ladder] == [rung.magnitudes for rung in BAND_LADDER]
    assert [t.params["magnitudes"] for t in broad] == ["rows"] * len(BROAD_LADDER)
    plain = trial_choice(ladder[4])[1]  # the light rung is a plain projection, the others row-normalized
    assert not plain.row_normalized and not plain.norm_preserving and trial_choice(ladder[0])[1].row_normalized
    for i, component in enumerate((ATTN, MLP)):
        assert [t.params[f"{component}_peak"] for t in broad] == pytest.approx([k[i].peak for k in BROAD_LADDER])
    assert all(trial_choice(t)[1].per_layer for t in ladder + broad)
    edited, untouched = make_model("llama"), make_model("llama").state_dict()
    abliterate_model(edited, artifact, trial_choice(ladder[0])[1])
    for layer, changed in ((0, False), (1, False), (3, True)):  # 4 layers: the band is the top two
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            key = f"model.layers.{layer}.{name}.weight"
            assert torch.equal(edited.state_dict()[key], untouched[key]) != changed, key
    # a broad rung at 4 layers: attention peaks at 0.78 of 3 (2.34) and falls to 0.6 of its peak two
    # layers away (half of 4), zero beyond; the MLP peaks at 0.98 of 3 (2.94)
    settings = trial_choice(broad[0])[1]
    assert (settings.attn_strength, settings.mlp_strength) == pytest.approx((1.5, 1.3))
    assert layer_weights(settings, 4, ATTN) == pytest.approx([0.0, *(1 - 0.4 * d / 2 for d in (1.34, 0.34, 0.66))])
    assert layer_weights(settings, 4, MLP) == pytest.approx([0.0, 1 - 0.4 * 1.94 / 2, 1 - 0.4 * 0.94 / 2,
                                                             1 - 0.4 * 0.06 / 2])
    small = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path / "small", trials=2),
                       progress=False)
    assert len(small.trials) == 2 and small.trials[1].params == ladder[0].params  # nothing left queued


def test_the_focused_space_searches_only_its_choices_after_the_default(tmp_path):
    """Trials after the first stay within the focused choices; the first is the default's edit even
    where that lies outside them (here exact column norms), so the space widens by exactly it."""
    model, tok = make_model("llama"), make_tokenizer()
    artifact = random_artifact()  # its default edit: exact column norms, no biprojection
    artifact.metadata.apply_settings = AblationSettings(norm_preserving=True)
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=QUEUED + 2),
                       progress=False)
    assert study.trials[0].params["magnitudes"] == "columns"
    assert study.trials[-1].distributions["magnitudes"].choices == ("rows", "none", "columns")
    later = [t.params for t in study.trials[1:]]
    assert {p["method"] for p in later} <= {"projected"} and {p["biprojected"] for p in later} == {False}
    assert all(p["layer_end"] == 4 and p["skip_first"] == 0 for p in later)  # the default's range: all layers
    assert all(p["direction_layer"] >= 0.4 * 3 for p in later if p["direction_scope"] == "global")
    # without the ladder only the default is queued, so the sampler draws the rest of the 12 trials
    wide = run_search(model, tok, artifact, HARMFUL, HARMLESS,
                      options(tmp_path / "wide", trials=12, space="wide", without=("start-up-ladder",)),
                      progress=False)
    sampled = wide.trials[-1].distributions
    assert set(sampled["magnitudes"].choices) == set(MAGNITUDES)
    assert set(sampled["biprojected"].choices) == {False, True} and len(sampled["method"].choices) > 1
    assert len({t.params["biprojected"] for t in wide.trials}) == 2  # both drawn, not only offered


def test_an_unknown_search_space_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="unknown search space 'broad'"):
        run_search(make_model("llama"), make_tokenizer(), random_artifact(), HARMFUL, HARMLESS,
                   options(tmp_path, trials=1, space="broad"), progress=False)
    with pytest.raises(SettingsError, match="cannot switch off kernels"):
        run_search(make_model("llama"), make_tokenizer(), random_artifact(), HARMFUL, HARMLESS,
                   options(tmp_path / "b", trials=1, without=("kernels",)), progress=False)


def test_an_ablation_switches_a_choice_off(tmp_path):
    """Without per-layer directions every trial, the ladder's included, removes one global direction
    (the ladder's at the default's layer); without the ladder the sampler starts after the default."""
    model, tok, artifact = make_model("llama"), make_tokenizer(), random_artifact()
    default_layer = default_trial_params(artifact)["direction_layer"]
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS,
                       options(tmp_path, trials=QUEUED + 3, without=("per-layer-directions",)), progress=False)
    assert all(t.params["direction_scope"] == "global" for t in study.trials)
    ladder = study.trials[1:1 + len(BAND_LADDER)]
    assert all(t.params["direction_layer"] == default_layer for t in study.trials[1:QUEUED])
    assert [t.params["attn_peak"] for t in ladder] == pytest.approx([rung.attn for rung in BAND_LADDER])
    assert study.trials[-1].distributions["direction_scope"].choices == ("global",)

    plain = run_search(model, tok, artifact, HARMFUL, HARMLESS,
                       options(tmp_path / "plain", trials=3, without=("start-up-ladder",)), progress=False)
    queued = [t for t in plain.trials if t.system_attrs.get("fixed_params")]
    assert len(queued) == 1 and queued[0].number == 0  # only the default edit was queued


def fake_study(points):
    study = optuna.create_study(directions=["minimize", "minimize"])
    dist = {"method": optuna.distributions.CategoricalDistribution(["projected"]),
            "direction_layer": optuna.distributions.FloatDistribution(0, 10),
            "attn_peak": optuna.distributions.FloatDistribution(0, 2),
            "mlp_peak": optuna.distributions.FloatDistribution(0, 2)}
    for refusals, kl in points:
        study.add_trial(optuna.trial.create_trial(
            values=[refusals, kl], distributions=dist,
            params={"method": "projected", "direction_layer": 5.0, "attn_peak": 1.0, "mlp_peak": 1.0},
            user_attrs={"settings": AblationSettings(direction_layer=5.0).to_dict(), "complete": True}))
    return study


def test_pick_rule_and_choice(tmp_path):
    study = fake_study([(10, 0.05), (2, 0.12), (1, 0.30), (2, 0.10), (0, 0.9), (1, 0.19)])
    trial, rule = pick_trial(study, 100, max_kl=0.2)  # fewest refusals with KL <= 0.2: trial 5 (1 at 0.19)
    assert (trial.number, rule) == (5, "fewest refusals with KL <= 0.2")
    trial, rule = pick_trial(study, 100)  # the default bound, 0.12: 2 refusals twice, the lower KL wins
    assert (trial.number, rule) == (3, "fewest refusals with KL <= 0.12")
    assert pick_trial(study, 100, max_kl=1.0)[0].number == 4
    # none under the bound: lowest refusals/100 + KL (0.15, 0.14, 0.31, 0.12, 0.90, 0.20)
    trial, rule = pick_trial(study, 100, max_kl=0.01)
    assert trial.number == 3 and rule.startswith("no trial with KL <= 0.01")
    assert pick_trial(study, 100, number=2) == (study.trials[2], "given")
    with pytest.raises(ValueError, match="not a finished trial"):
        pick_trial(study, 100, number=42)
    table = front_table(study, pick_trial(study, 100, max_kl=0.2)[0], total=100)
    assert "| 5 (picked) | 1/100 | 0.190 |" in table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["4", "5 (picked)", "3", "0"]
    png = plot_front(study, tmp_path / "front.png", pick_trial(study, 100, max_kl=0.2)[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_a_queued_trial_another_worker_finished_first_is_dropped_not_fatal(tmp_path, monkeypatch):
    """Two workers on one SQLite study can both take the same queued trial (its queue has no lock);
    the one telling second gets "Cannot tell a COMPLETE trial" from Optuna and must go on."""
    import forge_hub.abliterate.search as search

    model, tok = make_model("llama"), make_tokenizer()
    artifact = random_artifact()
    scored, finished_by_other = [], []
    real = search.TrialEvaluator.__call__

    def racing(self, art, settings, bound=lambda kl: None):
        result = real(self, art, settings, bound)
        scored.append(result)
        if len(scored) == 2:  # the other worker tells this same trial first, with its own figures
            other = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{tmp_path / 'study.db'}")
            running = [t for t in other.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
            other.tell(running[0].number, [99.0, 9.0])
            finished_by_other.append(running[0].number)
        return result

    monkeypatch.setattr(search.TrialEvaluator, "__call__", racing)
    study = run_search(model, tok, artifact, HARMFUL, HARMLESS, options(tmp_path, trials=4), progress=False)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len(scored) == 4  # the other worker's tell is one of the four; ours dropped
    assert study.trials[finished_by_other[0]].values == [99.0, 9.0]  # the first tell stands


def test_only_a_trial_finished_by_someone_else_counts_as_finished_elsewhere(tmp_path):
    """Any other error telling a trial (it is still running: the tell itself failed) is not swallowed."""
    from forge_hub.abliterate.search import _finished_elsewhere

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["minimize", "minimize"])
    running = study.ask()
    assert not _finished_elsewhere(study, [running.number]) and not _finished_elsewhere(study, [])
    study.tell(running, [1.0, 0.1])
    assert _finished_elsewhere(study, [running.number])


def test_a_value_error_while_scoring_a_trial_is_not_swallowed(tmp_path, monkeypatch):
    """Only Optuna's refusal to tell a trial someone else finished is dropped; a bug in scoring stops the run."""
    import forge_hub.abliterate.search as search

    def broken(self, art, settings, bound=lambda kl: None):
        raise ValueError("a bug in scoring")

    monkeypatch.setattr(search.TrialEvaluator, "__call__", broken)
    with pytest.raises(ValueError, match="a bug in scoring"):
        run_search(make_model("llama"), make_tokenizer(), random_artifact(), HARMFUL, HARMLESS,
                   options(tmp_path, trials=2), progress=False)
