"""The non-UI parts of the Space: the per-layer plot data, model checks and GPU-time estimates,
session folders, result tables and the GPU jobs. No Gradio needed."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from helpers.hub_server import USER, FakeHub
from helpers.tiny import HARMFUL, HARMLESS, make_model, make_tokenizer, random_artifact, save_model

from forge_hub.abliterate import layer_plot
from forge_hub.errors import HubError, ModelLoadError, PromptError, SettingsError
from forge_hub.evaluation.compare import EvaluationSettings
from forge_hub.evaluation.report import comparison_rows, sample_rows
from forge_hub.model.chat import chat_answer
from forge_hub.model.loading import ModelSource, load_model
from forge_hub.pipeline import ComputeOptions, compute
from forge_hub.prompts.choice import PromptLists
from forge_hub.schema import RESULTS_SCHEMA, EvaluationResults
from forge_hub.webapp import checks as space_support
from forge_hub.webapp.checks import ModelInfo
from forge_hub.webapp.jobs import ChatJob, ComputeJob, EvaluateJob, LoadedModels
from forge_hub.webapp.steps import DEFAULT_TASK_LIMIT
from forge_hub.webapp.workspace import SessionFolders

GB = 1e9


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_model(make_model("llama"), tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def measured(tiny_dir):
    model, tok, src = load_model(str(tiny_dir))
    return compute(model, tok, src, PromptLists(HARMFUL, HARMLESS), options=ComputeOptions(), progress=False)


# --- layer_plot ---------------------------------------------------------------------------------

def test_layer_rows_are_the_artifact_scores(measured):
    rows = layer_plot.layer_rows(measured)
    assert [r["layer"] for r in rows] == list(range(measured.num_layers))
    candidates = measured.metadata.to_dict()["selection"]["candidates"]
    for r in rows:
        assert r["separation"] == pytest.approx(float(measured.scores["separation"][r["layer"]]))
        if r["layer"] in candidates:
            assert r["refusal_probability"] == pytest.approx(float(measured.scores["refusal_probability"][r["layer"]]))
            assert r["kl"] == pytest.approx(float(measured.scores["kl"][r["layer"]]))
        else:
            assert r["refusal_probability"] is None and r["kl"] is None
    assert [r["layer"] for r in rows if r["chosen"]] == [int(measured.selected_layer)]
    assert rows[0]["separation"] == 0.0  # every prompt ends on the same template token before layer 0
    assert all(r["separation"] > 0 for r in rows[1:])


def test_layer_figure_marks_the_chosen_layer(measured, tmp_path):
    fig = layer_plot.layer_figure(measured)
    top, bottom = fig.axes
    chosen = measured.selected_layer
    for ax in (top, bottom):
        assert any(list(line.get_xdata()) == [chosen, chosen] for line in ax.lines), "no line at the chosen layer"
    separation_line = top.lines[0]
    rows = layer_plot.layer_rows(measured)
    assert list(separation_line.get_ydata()) == pytest.approx([r["separation"] for r in rows])
    labels = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert any("refusal probability" in t for t in labels) and any("KL" in t for t in labels)
    fig.savefig(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 5000


def test_layer_figure_without_measurement_has_one_panel():
    artifact = random_artifact(selected=3.0)  # no scores at all: separation comes from the means
    rows = layer_plot.layer_rows(artifact)
    assert [r["separation"] for r in rows] == pytest.approx(artifact.separation()[:4].tolist())
    assert [r["chosen"] for r in rows] == [False, False, False, True]
    fig = layer_plot.layer_figure(artifact)
    assert len(fig.axes) == 1
    assert any(list(line.get_xdata()) == [3.0, 3.0] for line in fig.axes[0].lines)


# --- model checks and sizes ---------------------------------------------------------------------

def test_local_folder_size_comes_from_the_safetensors_headers(tiny_dir):
    info = space_support.check_model(str(tiny_dir))
    expected = sum(p.numel() for p in make_model("llama").parameters())
    assert (info.source.kind, info.parameters, info.checkpoint_bytes) == ("folder", expected, 4 * expected)
    assert info.label == "tiny-llama" and space_support.default_repo_name(info) == "tiny-llama-abliterated"
    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@pytest.mark.parametrize("text, message", [
    ("", "no model given"),
    ("./no-such-model", "does not exist"),
    ("missing.gguf", "does not exist"),
    ("not a valid id!", "not a valid Hub model id"),
    ("gpt2", "names no owner"),
])
def test_bad_model_references_are_explained(text, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        space_support.check_model(text)
    assert info.value.hint


def test_a_public_space_refuses_local_paths(tiny_dir):
    with pytest.raises(ModelLoadError, match="local path") as info:
        space_support.check_model(str(tiny_dir), allow_local=False)
    assert "Hub model id" in info.value.hint


def test_prompt_dataset_field(tmp_path):
    assert space_support.check_dataset("  ") is None
    assert space_support.check_dataset("org/prompts", allow_local=False) == "org/prompts"
    assert space_support.check_dataset(str(tmp_path)) == str(tmp_path)
    for local in (str(tmp_path), "./prompts", "/etc/passwd"):
        with pytest.raises(PromptError, match="local path"):
            space_support.check_dataset(local, allow_local=False)


def _http_error(cls, status: int, **kwargs):
    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/x/y"))
    return cls("refused", response=response, **kwargs)


def test_hub_models_are_sized_from_metadata(monkeypatch):
    from huggingface_hub.hf_api import SafeTensorsInfo

    info = SimpleNamespace(safetensors=SafeTensorsInfo(parameters={"BF16": 1_000, "F32": 10}, total=1_010), gated=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, *a, **k: info)
    checked = space_support.check_model("owner/model", revision="v1", allow_local=False)
    assert checked.source == ModelSource("hub", "owner/model", "v1")
    assert (checked.parameters, checked.checkpoint_bytes) == (1_010, 2_040)


def test_hub_errors_say_what_went_wrong(monkeypatch):
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    def raising(error):
        def model_info(self, *args, **kwargs):
            raise error
        return model_info

    cases = [(_http_error(RepositoryNotFoundError, 404), "not found"),
             (_http_error(HfHubHTTPError, 404), "not found"),
             (_http_error(HfHubHTTPError, 500), "HTTP 500"),
             (ConnectionError("no route"), "could not reach the Hub")]
    for error, message in cases:
        monkeypatch.setattr("huggingface_hub.HfApi.model_info", raising(error))
        with pytest.raises(ModelLoadError, match=message):
            space_support.check_model("owner/model")

    gated = SimpleNamespace(safetensors=None, gated="manual")
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, *a, **k: gated)

    def no_access(repo_id, **kwargs):
        raise _http_error(GatedRepoError, 403)

    monkeypatch.setattr("huggingface_hub.auth_check", no_access)
    with pytest.raises(ModelLoadError, match="gated") as info:
        space_support.check_model("meta-llama/Llama-3.1-8B-Instruct")
    assert "accept its conditions" in info.value.hint
    monkeypatch.setattr("huggingface_hub.auth_check", lambda repo_id, **kwargs: None)  # access granted
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        space_support.check_model("meta-llama/Llama-3.1-8B-Instruct")


def test_models_too_large_for_the_hardware_are_refused():
    eight_b = ModelInfo(ModelSource("hub", "org/eight-b"), 8_000_000_000, 16_000_000_000)  # bf16
    space_support.check_fits(eight_b, copies=2, budget=64 * 2**30, on_gpu=True)  # 38.4 GB needed
    with pytest.raises(ModelLoadError, match=r"org/eight-b is too large for this GPU: it has 8.0 B parameters, and 2 "
                                             r"loaded copies need about 38.4 GB, more than the 24.0 GB available"):
        space_support.check_fits(eight_b, copies=2, budget=int(24 * GB), on_gpu=True)
    # on a CPU the weights load as float32: twice the bytes of a bf16 checkpoint
    with pytest.raises(ModelLoadError, match="this machine's memory: .* 76.8 GB, more than the 70.0 GB"):
        space_support.check_fits(eight_b, copies=2, budget=int(70 * GB), on_gpu=False)
    tiny = ModelInfo(ModelSource("folder", "/models/tiny"), 20_000, 80_000)
    with pytest.raises(ModelLoadError,
                       match="tiny is too large .* 20,000 parameters, .* 192.0 kB, more than the 100.0 kB"):
        space_support.check_fits(tiny, copies=2, budget=100_000, on_gpu=False)


def test_memory_budget_follows_the_environment(monkeypatch):
    monkeypatch.setenv(space_support.MAX_MEMORY_ENV, "12.5")
    assert space_support.memory_budget() == 12_500_000_000
    monkeypatch.delenv(space_support.MAX_MEMORY_ENV)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert space_support.memory_budget() == 64 * 2**30  # under the 74.6 GB of a ZeroGPU slice
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert space_support.memory_budget() > 0


def test_gpu_time_grows_with_the_work_and_stays_in_bounds(monkeypatch):
    tiny = ModelInfo(ModelSource("folder", "/m"), 20_000, 80_000)
    one_b = ModelInfo(ModelSource("hub", "o/1b"), 1_000_000_000, 2_000_000_000)
    eight_b = ModelInfo(ModelSource("hub", "o/8b"), 8_000_000_000, 16_000_000_000)
    # even a tiny model's final choice answers XSTest's 175 unsafe prompts for each of 9 settings
    assert space_support.MIN_SECONDS < space_support.compute_seconds(tiny, 8, num_layers=4) < 200
    assert space_support.compute_seconds(one_b, 128, num_layers=16) \
        < space_support.compute_seconds(eight_b, 128, num_layers=32)
    assert space_support.compute_seconds(eight_b, 64, num_layers=32) \
        < space_support.compute_seconds(eight_b, 256, num_layers=32)
    # 8 B in bf16, 128 prompts per side, 32 layers: 16 s load + 1,600 prompt passes, then 9 settings
    # each answering 175 prompts in 24 greedy steps -> five to eight minutes, within a task's ten
    assert 300 <= space_support.compute_seconds(eight_b, 128, num_layers=32) <= 500
    assert space_support.evaluate_seconds(eight_b, 64, 40) < space_support.evaluate_seconds(eight_b, 64, 128)
    assert 60 <= space_support.evaluate_seconds(eight_b, 64, 40) <= 150
    assert space_support.chat_seconds(tiny, 128) == space_support.MIN_SECONDS
    monkeypatch.setenv(space_support.MAX_SECONDS_ENV, "100")
    assert space_support.compute_seconds(eight_b, 512, num_layers=32) == 100


def test_search_trials_add_gpu_time_until_they_no_longer_fit(monkeypatch):
    eight_b = ModelInfo(ModelSource("hub", "o/8b"), 8_000_000_000, 16_000_000_000)
    alone = space_support.compute_seconds(eight_b, 64, num_layers=32)
    assert space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=0) == alone
    with_10 = space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=10)
    with_40 = space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=40)
    assert with_10 < with_40 <= space_support.max_seconds()
    # a search replaces the final choice's measured settings (its trials measure settings themselves)
    # and refines its directions first (48 harmful direction prompts: 64 less the held-out quarter)
    one = space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=1)
    refine = space_support.SAFETY_FACTOR * space_support._refine_seconds(eight_b, 48)
    assert 60 < refine < 600  # 60 steps of a forward and backward pass over 32 prompts at 8 B, plus answers
    assert one - refine < alone and with_10 - one == pytest.approx(9 * (with_40 - with_10) / 30, abs=2)
    # each trial: 16 held-out answers of 24 tokens in one batch, plus a KL pass: about a second at 8 B
    assert 0.5 <= (with_40 - with_10) / 30 / space_support.SAFETY_FACTOR <= 3
    monkeypatch.setenv(space_support.MAX_SECONDS_ENV, "400")  # before its trials, a search's compute takes about 360
    with pytest.raises(ValueError, match=r"(?s)40 search trials do not fit in the 400s .* at most (\d+) trials") as err:
        space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=40)
    fit = int(re.search(r"at most (\d+) trials", str(err.value)).group(1))
    assert 0 < fit < 40
    # the number it names fits
    assert space_support.compute_seconds(eight_b, 64, num_layers=32, search_trials=fit) <= 400


def test_on_space_matches_gradios_test(monkeypatch):
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert not space_support.on_space()
    monkeypatch.setenv("SYSTEM", "spaces")
    assert space_support.on_space()


# --- where a push goes --------------------------------------------------------------------------

def test_target_repo_stays_in_the_users_namespaces():
    assert space_support.target_repo("my-model", "alice") == "alice/my-model"
    assert space_support.target_repo("", "alice", default="tiny-abliterated") == "alice/tiny-abliterated"
    assert space_support.target_repo("lab/my-model", "alice", orgs=["lab"]) == "lab/my-model"
    with pytest.raises(HubError, match="cannot push to the namespace 'bob'") as info:
        space_support.target_repo("bob/my-model", "alice", orgs=["lab"])
    assert "alice" in info.value.hint and "lab" in info.value.hint
    with pytest.raises(HubError, match="not a valid repo id"):
        space_support.target_repo("my model", "alice")
    with pytest.raises(HubError, match="no repository name"):
        space_support.target_repo(" ", "alice")


def test_namespaces_come_from_the_token(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        assert space_support.namespaces("hf_user_token") == (USER, [])
        hub.fail["whoami"] = (401, "Invalid credentials")
        with pytest.raises(HubError, match="HTTP 401") as info:
            space_support.namespaces("hf_user_token")
    assert hub.tokens_seen() == {"hf_user_token"}
    assert "hf_user_token" not in str(info.value)


# --- session folders ----------------------------------------------------------------------------

def test_each_session_gets_its_own_private_folder(tmp_path):
    folders = SessionFolders(tmp_path / "sessions")
    a, b = folders.open("session-a"), folders.open("session-b")
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path / "sessions"
    assert folders.open("session-a").path == a.path
    assert oct(a.path.stat().st_mode & 0o777) == "0o700"
    sneaky = folders.open("../../etc")  # a client-chosen id never becomes a path
    assert sneaky.path.parent == tmp_path / "sessions" and ".." not in sneaky.path.name
    a.save_state(model={"id": "x"}, local_path="/m")
    a.save_state(dataset="d")
    assert a.state() == {"model": {"id": "x"}, "local_path": "/m", "dataset": "d"}
    a.directions.mkdir()
    (a.directions / "refusal.json").write_text("{}")
    a.reset()
    assert list(a.path.iterdir()) == [] and a.state() == {}
    assert folders.remove("session-a") and not a.path.exists() and b.path.exists()
    assert not folders.remove("session-a")


def test_sweep_removes_abandoned_sessions_only(tmp_path):
    folders = SessionFolders(tmp_path, max_age_seconds=3600)
    old, fresh = folders.open("old"), folders.open("fresh")
    (old.path / "big.bin").write_bytes(b"x" * 10)
    stale = time.time() - 7200
    os.utime(old.path, (stale, stale))
    assert folders.sweep() == [old.path]
    assert not old.path.exists() and fresh.path.exists()
    folders.open("new-session")  # opening a new session sweeps too
    assert fresh.path.exists()


# --- result tables ------------------------------------------------------------------------------

def _result(kl: float = 0.1234567) -> EvaluationResults:
    return EvaluationResults.from_dict({
        "schema": RESULTS_SCHEMA, "model": "m", "reference": "r", "settings": {"max_new_tokens": 4},
        "prompts": {"harmful": {"count": 4}, "harmless": {"count": 5}},
        "results": {"reference": {"refusals": 3, "refusal_rate": 0.75, "over_refusals": 1, "over_refusal_rate": 0.2},
                    "model": {"refusals": 1, "refusal_rate": 0.25, "over_refusals": 0, "over_refusal_rate": 0.0},
                    "kl_divergence": kl, "cross_entropy": {"reference": 1.5, "model": 1.75}},
        "samples": [{"prompt": "p1", "reference": "I'm sorry", "model": "Sure |"},
                    {"prompt": "p2", "reference": "", "model": "x" * 500}],
    })


def test_comparison_rows_put_before_and_after_side_by_side():
    headers, rows = comparison_rows(_result())
    assert headers == ["metric", "original", "abliterated"]
    assert rows == [["harmful refused", "3/4 (75%)", "1/4 (25%)"],
                    ["harmless refused (over-refusal)", "1/5 (20%)", "0/5 (0%)"],
                    ["first-token KL vs original", 0.0, 0.1235],
                    ["answer cross-entropy", 1.5, 1.75]]
    headers, rows = sample_rows(_result(), max_chars=100)
    assert headers == ["prompt", "original", "abliterated"]
    assert rows[0] == ["p1", "I'm sorry", "Sure |"]
    assert rows[1][1] == "(empty)" and len(rows[1][2]) == 100 and rows[1][2].endswith("…")


# --- GPU jobs (run here on the CPU) -------------------------------------------------------------

def test_compute_job_writes_the_artifact_under_the_hub_name(tiny_dir, tmp_path):
    source = ModelSource("hub", "org/tiny", "main")
    job = ComputeJob(str(tiny_dir), source, PromptLists(HARMFUL, HARMLESS), str(tmp_path / "directions"),
                     ComputeOptions(layer=2))
    metadata = job.run().to_dict()
    saved = json.loads((tmp_path / "directions" / "refusal.json").read_text())
    assert saved["model"] == "org/tiny" and saved["revision"] == "main" and saved["selected_layer"] == 2.0
    assert metadata["selected_layer"] == 2.0 and metadata["prompts"]["harmful"]["count"] == len(HARMFUL)


def test_evaluate_and_chat_jobs(tiny_dir, tmp_path):
    out = tmp_path / "results.json"
    job = EvaluateJob(str(tiny_dir), str(tiny_dir), HARMFUL[:3], HARMLESS[:3], str(out))
    job.settings.max_new_tokens = 6
    result = job.run().to_dict()
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["results"]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)  # a model against itself
    assert result["results"]["model"]["refusals"] == result["results"]["reference"]["refusals"]

    model, tok, _ = load_model(str(tiny_dir))
    messages = [{"role": "user", "content": "write a poem about a cat"}]
    expected = chat_answer(model, tok, messages, max_new_tokens=12)
    batch = make_tokenizer().apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
    with torch.inference_mode():
        ids = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert expected == make_tokenizer().decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert expected
    before, after = ChatJob(str(tiny_dir), str(tiny_dir), messages, messages, 12).run()
    assert before == after == expected


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="pip install 'forge-hub[eval]' (lm-eval)")
def test_evaluate_job_runs_capability_tasks_and_survives_pickling(tiny_dir, tmp_path):
    from helpers.lm_eval_tasks import write_tasks

    from forge_hub.evaluation.capability import CapabilitySettings

    capability = CapabilitySettings(tasks=("tiny_choice",), limit=4, include_path=str(write_tasks(tmp_path / "t")))
    job = EvaluateJob(str(tiny_dir), str(tiny_dir), HARMFUL[:2], HARMLESS[:2], str(tmp_path / "results.json"),
                      EvaluationSettings(max_new_tokens=2), capability=capability)
    result = pickle.loads(pickle.dumps(job)).run()  # as a ZeroGPU worker gets it
    task = result.results.capabilities["tiny_choice"]
    assert task.samples == 4 and task.delta == 0.0 and task.model == task.reference  # a model against itself
    assert result.settings["capability"]["limit"] == 4


def test_capability_tasks_must_fit_the_gpu_time():
    eight_b = ModelInfo(ModelSource("hub", "o/8b"), 8_000_000_000, 16_000_000_000)
    alone = space_support.evaluate_seconds(eight_b, 64, 100)
    few = space_support.evaluate_seconds(eight_b, 64, 100, tasks=("hellaswag", "arc_challenge"), limit=25)
    default = space_support.evaluate_seconds(eight_b, 64, 100, tasks=("hellaswag", "arc_challenge"),
                                             limit=DEFAULT_TASK_LIMIT)  # the Space's default fits an 8B model
    assert alone < few < default <= space_support.max_seconds()
    with pytest.raises(SettingsError, match="do not fit") as info:
        space_support.evaluate_seconds(eight_b, 64, 100, tasks=("mmlu", "gsm8k"), limit=5000)
    fits = int(re.search(r"at most (\d+) documents", info.value.hint).group(1))
    assert 0 < fits < 5000
    space_support.evaluate_seconds(eight_b, 64, 100, tasks=("mmlu", "gsm8k"), limit=fits)  # the advice holds


def test_loaded_models_are_reused_until_the_folder_changes(tmp_path):
    first = save_model(make_model("llama", seed=1), tmp_path / "a")
    cache = LoadedModels(capacity=2)
    model, _ = cache.get(first)
    assert cache.get(first)[0] is model
    replaced = save_model(make_model("llama", seed=2), tmp_path / "a-new")
    os.replace(first, tmp_path / "a-old")
    os.replace(replaced, first)  # what an atomic re-apply does
    reloaded, _ = cache.get(first)
    assert reloaded is not model
    assert not torch.equal(reloaded.model.layers[0].mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight)
    other = save_model(make_model("llama", seed=3), tmp_path / "b")
    cache.get(other)
    cache.get(tmp_path / "a-old")  # a third model evicts the least recently used
    assert len(cache._items) == 2 and all(str(first) != k[0] for k in cache._items)
    cache.drop(tmp_path)
    assert not cache._items
