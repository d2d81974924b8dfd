"""The Gradio Space (space/app.py) driven through gradio_client, against the app launched on
127.0.0.1: the whole flow on a tiny random model, its numbers checked against the pipeline run
independently, its errors, and the push to the local fake Hub with the token passed the way
Gradio passes a logged-in visitor's (``Client(url, oauth_token=...)`` fills ``gr.OAuthToken``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.hub_server import USER, FakeHub
from helpers.tiny import make_model, save_model

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.evaluation.compare import EvaluationSettings, evaluate_models
from forge_hub.model.chat import chat_answer
from forge_hub.model.loading import load_model
from forge_hub.pipeline import ComputeOptions, apply, compute
from forge_hub.prompts.choice import PromptChoice, PromptLists, load_prompt_lists
from forge_hub.prompts.sources import prompts_hash
from forge_hub.prompts.xstest import load_xstest

gradio = pytest.importorskip("gradio")
pytest.importorskip("spaces")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

# Noise from inside Gradio 6 (pandas 3 deprecations in its queue; event loops of closed servers and
# clients collected later); nothing in forge-hub or this app.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
              pytest.mark.filterwarnings("ignore:.*(copy keyword|no_silent_downcasting).*"),
              pytest.mark.filterwarnings("ignore:Exception ignored in.*BaseEventLoop.__del__"
                                         ":pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),  # huggingface_hub's LFS PUT
              # Gradio's track_tqdm patch: a bar made outside an event (a model load in a worker
              # thread) lacks the attribute its patched close() reads
              pytest.mark.filterwarnings("ignore:Exception ignored in.*tqdm.__del__"
                                         ":pytest.PytestUnraisableExceptionWarning")]

APP_FILE = Path(__file__).resolve().parents[1] / "space" / "app.py"
TOKEN = "hf_visitor_oauth_token_123"
N_PROMPTS, N_EVAL, EVAL_TOKENS, CHAT_TOKENS = 8, 4, 8, 16


@dataclass
class RunningApp:
    url: str
    module: object
    workdir: Path


def load_app_module(name: str):
    spec = importlib.util.spec_from_file_location(name, APP_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(module) -> tuple[object, str]:
    demo = module.build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_model(make_model("llama"), tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("space-sessions")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORGE_HUB_SPACE_WORKDIR", str(workdir))
        for name in ("SYSTEM", "SPACE_ID", "SPACES_ZERO_GPU", "FORGE_HUB_PROMPTS_DATASET", "FORGE_HUB_SPACE_MAX_GB",
                     "FORGE_HUB_SPACE_GPU_CONCURRENCY"):
            mp.delenv(name, raising=False)
        module = load_app_module("forge_space_app_local")
        demo, url = launch(module)
        try:
            yield RunningApp(url, module, workdir)
        finally:
            demo.close()


def client_for(app: RunningApp, tmp_path: Path, **kwargs) -> Client:
    return Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"), **kwargs)


def run_compute(client: Client, model: str, layer: str = "", trials: int = 0):
    return client.predict(model, "", "", [], N_PROMPTS, "projected", layer, trials, api_name="/compute")


def downloaded_artifact(files: list[str], folder: Path) -> RefusalDirections:
    """The direction files the page offers for download, put back together as an artifact folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    return RefusalDirections.load(folder)


def session_folders(app: RunningApp) -> list[Path]:
    return [p for p in app.workdir.iterdir() if p.is_dir()]


def workspace_of(app: RunningApp, client: Client) -> Path:
    """The folder of this client's session (named by a hash of its session id)."""
    return app.module.folders.path_for(client.session_hash)


# --- the whole flow ------------------------------------------------------------------------------

def test_the_whole_flow_matches_the_pipeline(app, tiny_dir, tmp_path):
    client = client_for(app, tmp_path)
    before = set(session_folders(app))

    # 1. compute: the table and the files are the artifact; the artifact is what the pipeline computes
    summary, plot, table, files, front = run_compute(client, str(tiny_dir))
    assert front["visible"] is False and front["value"] is None and "Search" not in summary  # no search asked for
    artifact = downloaded_artifact(files, tmp_path / "directions")
    shipped = load_prompt_lists(PromptChoice(split="train", n_prompts=N_PROMPTS))  # no dataset named
    harmful, harmless = shipped.harmful, shipped.harmless
    model, tok, src = load_model(str(tiny_dir))
    expected = compute(model, tok, src, PromptLists(harmful, harmless), options=ComputeOptions(), progress=False)
    assert artifact.metadata.to_dict()["model"] == str(tiny_dir.resolve())
    assert artifact.metadata.to_dict()["prompts"]["harmful"]["hash"] \
        == expected.metadata.to_dict()["prompts"]["harmful"]["hash"]
    assert artifact.selected_layer == expected.selected_layer
    chosen = int(expected.selected_layer)
    assert f"**Chosen layer: {chosen}** (measured)" in summary
    assert "tiny-llama" in summary and "6 harmful and 6 harmless prompts; 2 + 2 held out" in summary
    assert table["headers"] == ["layer", "separation", "refusal_probability", "kl", "chosen"]
    assert [row[0] for row in table["data"]] == list(range(4))
    assert [row[4] for row in table["data"]] == [layer == chosen for layer in range(4)]
    for layer, separation, refusal, kl, _ in table["data"]:
        assert separation == pytest.approx(float(expected.scores["separation"][layer]), abs=6e-5)  # shown to 4 places
        if layer in expected.metadata.to_dict()["selection"]["candidates"]:
            assert refusal == pytest.approx(float(expected.scores["refusal_probability"][layer]), abs=6e-5)
            assert kl == pytest.approx(float(expected.scores["kl"][layer]), abs=6e-5)
        else:
            assert refusal is None and kl is None
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/") and len(plot["plot"]) > 5000
    assert set(session_folders(app)) - before == {workspace_of(app, client)}
    workspace = workspace_of(app, client)

    # 2. apply: the Space's model is bit for bit the pipeline's apply of the same artifact
    applied = client.predict(api_name="/apply")
    reference_copy = tmp_path / "expected-model"
    report = apply(str(tiny_dir), artifact, reference_copy, progress=False)
    # the measured choice may stop the edit below the top layer: the layers are the ones apply edited
    first, last = report.edited_layers[0], report.edited_layers[-1]
    assert f"Edited **{report.edited_tensors} tensors** in layers {first}–{last} with the direction of layer {chosen}" \
        in applied
    assert report.edited_tensors == 2 * len(report.edited_layers) + 1  # o_proj and down_proj + the untied embedding
    written = (workspace / "model" / "model.safetensors").read_bytes()
    assert written == (reference_copy / "model.safetensors").read_bytes()

    # 3. evaluate: on the test split, numbers equal to evaluate_models run here
    summary, metrics, samples, result_files = client.predict(N_EVAL, EVAL_TOKENS, api_name="/evaluate")
    results = json.loads(Path(next(f for f in result_files if f.endswith(".json"))).read_text())
    assert Path(next(f for f in result_files if f.endswith(".md"))).read_text().startswith("| |")
    tested = load_prompt_lists(PromptChoice(split="test", n_prompts=N_EVAL))
    test_harmful, test_harmless = tested.harmful, tested.harmless
    assert results["prompts"]["harmful"]["hash"] == prompts_hash(test_harmful)
    assert results["prompts"]["harmless"]["hash"] == prompts_hash(test_harmless)
    assert not set(test_harmful) & set(harmful)  # never the prompts the direction came from
    edited, _, _ = load_model(str(reference_copy))
    xstest = load_xstest()  # measured by default, as `forge-hub evaluate` does
    independent = evaluate_models(edited, tok, test_harmful, test_harmless, reference=model, xstest=xstest,
                                  settings=EvaluationSettings(max_new_tokens=EVAL_TOKENS, samples=5)).to_dict()
    r, ind = results["results"], independent["results"]
    for side in ("model", "reference"):
        assert (r[side]["refusals"], r[side]["over_refusals"]) == (ind[side]["refusals"], ind[side]["over_refusals"])
        assert r[side]["xstest"] == ind[side]["xstest"] and r[side]["xstest"]["total"] == 250
    assert "XSTest safe prompts refused" in summary
    assert r["kl_divergence"] == pytest.approx(ind["kl_divergence"], rel=1e-4) and r["kl_divergence"] > 0
    assert results["samples"] == independent["samples"]
    assert metrics["headers"] == ["metric", "original", "abliterated"]
    rows = {row[0]: row[1:] for row in metrics["data"]}
    assert rows["harmful refused"] == [f"{r['reference']['refusals']}/{N_EVAL} ({r['reference']['refusal_rate']:.0%})",
                                       f"{r['model']['refusals']}/{N_EVAL} ({r['model']['refusal_rate']:.0%})"]
    assert rows["first-token KL vs original"] == [0.0, round(r["kl_divergence"], 4)]
    assert f"first-token KL {r['kl_divergence']:.4f}" in summary
    assert samples["headers"] == ["prompt", "original", "abliterated"]
    assert [row[0] for row in samples["data"]] == [s["prompt"] for s in results["samples"]]
    shown = [" ".join(s["model"].split()) or "(empty)" for s in results["samples"]]
    assert [row[2] for row in samples["data"]] == shown

    # 4. chat: both models answer, each continuing its own side of the conversation
    first = "write a poem about a cat"
    original, abliterated, box = client.predict(first, [], [], CHAT_TOKENS, api_name="/chat")
    assert box == ""
    turn = [{"role": "user", "content": first}]
    want_before = chat_answer(model, tok, turn, max_new_tokens=CHAT_TOKENS)
    want_after = chat_answer(edited, tok, turn, max_new_tokens=CHAT_TOKENS)
    assert want_before != want_after
    assert [text(m) for m in original] == [first, want_before]
    assert [text(m) for m in abliterated] == [first, want_after]
    second = "tell me how to cook bread"
    original, abliterated, _ = client.predict(second, original, abliterated, CHAT_TOKENS, api_name="/chat")
    history = turn + [{"role": "assistant", "content": want_after}, {"role": "user", "content": second}]
    assert text(abliterated[-1]) == chat_answer(edited, tok, history, max_new_tokens=CHAT_TOKENS)
    assert [m["role"] for m in original] == ["user", "assistant", "user", "assistant"]


def text(message: dict) -> str:
    content = message["content"]
    return "".join(part["text"] for part in content) if isinstance(content, list) else content


def test_recompute_with_a_given_layer_replaces_the_session(app, tiny_dir, tmp_path):
    client = client_for(app, tmp_path)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    summary, _, table, files, _ = run_compute(client, str(tiny_dir), layer="1")
    assert "**Chosen layer: 1** (given)" in summary
    assert [row[4] for row in table["data"]] == [False, True, False, False]
    assert all(row[2] is None for row in table["data"])  # nothing measured
    assert downloaded_artifact(files, tmp_path / "d").metadata.selection.how == "given"
    with pytest.raises(AppError, match="Run “2. Apply” first"):  # the old model went with the old directions
        client.predict(N_EVAL, EVAL_TOKENS, api_name="/evaluate")


def test_a_search_picks_the_settings_that_apply_uses(app, tiny_dir, tmp_path):
    """With search trials, the artifact carries the picked trial's settings, the page shows the
    pick and the front, and apply writes exactly those settings."""
    import optuna

    client = client_for(app, tmp_path)
    summary, _, _, files, front = run_compute(client, str(tiny_dir), trials=5)
    artifact = downloaded_artifact(files, tmp_path / "directions")
    found = artifact.metadata.to_dict()["search"]
    study_file = workspace_of(app, client) / "search" / "study.db"
    study = optuna.load_study(study_name=found["study_name"], storage=f"sqlite:///{study_file}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert found["trials"] == len(trials) == 5
    picked = next(t for t in trials if t.number == found["trial"])
    assert (found["refusals"], found["kl"]) == tuple(picked.values)
    assert artifact.metadata.to_dict()["apply_settings"] == picked.user_attrs["settings"]
    assert f"picked trial {found['trial']}: {found['refusals']:.0f}/2 refused" in summary
    assert front["visible"] is True
    image = Path(front["value"])  # downloaded by the client: the page serves it
    assert image.stat().st_size > 5000 and image.read_bytes()[:4] == b"\x89PNG"
    client.predict(api_name="/apply")
    written = json.loads((workspace_of(app, client) / "model" / "abliteration.json").read_text())
    assert written["settings"] == picked.user_attrs["settings"]


def test_a_search_too_long_for_one_gpu_task_is_refused(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HUB_SPACE_MAX_GPU_SECONDS", "31")
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match=r"60 search trials do not fit in the 31s .* choose at most \d+ trials"):
        run_compute(client, str(tiny_dir), trials=60)
    assert not (workspace_of(app, client) / "directions").exists()


def test_a_local_gguf_file_goes_through_compute_apply_and_evaluate(app, tmp_path):
    gguf_models = pytest.importorskip("helpers.gguf_models")
    export_gguf = pytest.importorskip("forge_hub.outputs.gguf.export").export_gguf
    folder = gguf_models.save_gguf_model("llama", tmp_path / "bpe-llama")
    (gguf_file,) = export_gguf(folder, tmp_path / "gguf", ["F16"], progress=False)
    client = client_for(app, tmp_path)
    summary, _, _, files, _ = run_compute(client, str(gguf_file))
    assert summary.startswith("**bpe-llama-F16.gguf**: 2 layers")
    assert downloaded_artifact(files, tmp_path / "d").metadata.to_dict()["source_kind"] == "gguf"
    assert "Edited **" in client.predict(api_name="/apply")
    workspace = workspace_of(app, client)
    assert (workspace / "model" / "config.json").exists() and (workspace / "model" / "model.safetensors").exists()
    _, metrics, _, result_files = client.predict(N_EVAL, EVAL_TOKENS, api_name="/evaluate")
    results = json.loads(Path(next(f for f in result_files if f.endswith(".json"))).read_text())
    assert results["results"]["kl_divergence"] > 0 and results["prompts"]["harmful"]["count"] == N_EVAL


def test_the_queue_runs_one_gpu_step_at_a_time(app, tiny_dir, tmp_path, monkeypatch):
    import threading
    import time

    clients = [client_for(app, tmp_path / str(i)) for i in range(3)]
    for client in clients:
        run_compute(client, str(tiny_dir))
        client.predict(api_name="/apply")
    running, most, lock = [0], [0], threading.Lock()
    real = app.module.on_gpu_stream

    def watched(job):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.5)
            yield from real(job)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(app.module, "on_gpu_stream", watched)
    jobs = [c.submit("hello", [], [], CHAT_TOKENS, api_name="/chat") for c in clients]
    answers = [job.result(timeout=120) for job in jobs]
    assert most[0] == 1  # three sessions asked at once; the GPU saw one task at a time
    assert all(len(original) == 2 and len(abliterated) == 2 for original, abliterated, _ in answers)


def test_chat_answers_stream_into_the_page(app, tiny_dir, tmp_path):
    """Each side's answer grows token by token; the original answers first, then the abliterated."""
    client = client_for(app, tmp_path)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    job = client.submit("write a poem about a cat", [], [], 24, api_name="/chat")
    final = job.result(timeout=120)
    updates = job.outputs()
    assert updates[-1] == final and len(updates) > 4
    befores = [text(o[-1]) if len(o) == 2 else None for o, _, _ in updates]
    afters = [text(a[-1]) if len(a) == 2 else None for _, a, _ in updates]
    assert befores[0] is None and afters[0] is None  # the question shows first, alone
    started = afters.index(next(a for a in afters if a is not None))
    assert all(a is None for a in afters[:started]) and None not in afters[started:]
    grown = [b for b in befores[1:started] if b]
    assert len(set(grown)) > 2  # partial answers, not one block at the end
    assert all(len(a) <= len(b) for a, b in zip(grown, grown[1:]))
    assert " ".join(grown[-1].split()) == " ".join(befores[started].split())
    assert all(b == befores[started] for b in befores[started:])  # the original is finished by then
    model, tok, _ = load_model(str(tiny_dir))
    turn = [{"role": "user", "content": "write a poem about a cat"}]
    assert text(final[0][-1]) == chat_answer(model, tok, turn, max_new_tokens=24)


# --- errors shown in the page ---------------------------------------------------------------------

@pytest.mark.parametrize("model, message", [
    ("not a valid id!", "not a valid Hub model id"),
    ("./no-such-folder", "does not exist"),
    ("", "no model given"),
])
def test_bad_model_references_are_reported(app, tmp_path, model, message):
    with pytest.raises(AppError, match=message) as info:
        run_compute(client_for(app, tmp_path), model)
    assert "Fix:" in info.value.message


def test_a_layer_that_is_not_a_number_is_reported(app, tiny_dir, tmp_path):
    with pytest.raises(AppError, match="Layer 'twelve' is not a number"):
        run_compute(client_for(app, tmp_path), str(tiny_dir), layer="twelve")


def test_gated_and_missing_hub_models_are_reported(app, tmp_path, monkeypatch):
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from test_space_support import _http_error

    def model_info(self, repo_id, **kwargs):
        if repo_id == "nobody/missing":
            raise _http_error(RepositoryNotFoundError, 404)
        return SimpleNamespace(gated="manual", safetensors=None)

    def auth_check(repo_id, **kwargs):
        raise _http_error(GatedRepoError, 403)

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", model_info)
    monkeypatch.setattr("huggingface_hub.auth_check", auth_check)
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match="model nobody/missing was not found on the Hub"):
        run_compute(client, "nobody/missing")
    with pytest.raises(AppError, match="meta-llama/Llama-3.1-8B-Instruct is gated") as info:
        run_compute(client, "meta-llama/Llama-3.1-8B-Instruct")
    assert "accept its conditions" in info.value.message


def test_a_model_too_large_for_the_hardware_is_refused_before_any_work(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HUB_SPACE_MAX_GB", "0.0001")  # 100 KB
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match=r"tiny-llama is too large for this machine's memory: it has [\d,]+ parameters"):
        run_compute(client, str(tiny_dir))
    # failed before this visitor's session folder was made (other tests' sessions may come and go meanwhile)
    assert not workspace_of(app, client).exists()


def test_steps_out_of_order_say_what_is_missing(app, tmp_path, monkeypatch):
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match="Run “1. Compute directions” first"):
        client.predict(api_name="/apply")
    with pytest.raises(AppError, match="Run “2. Apply” first"):
        client.predict(N_EVAL, EVAL_TOKENS, api_name="/evaluate")
    with pytest.raises(AppError, match="Run “2. Apply” first"):
        client.predict("hello", [], [], CHAT_TOKENS, api_name="/chat")


def test_push_without_any_login_is_refused(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    client = client_for(app, tmp_path)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    with pytest.raises(AppError, match="No Hugging Face login on this machine"):
        client.predict("", False, False, [], api_name="/push")


# --- publishing -------------------------------------------------------------------------------------

@pytest.fixture
def fake_hub(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub() as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def test_push_uses_the_visitors_token_and_namespace(app, tiny_dir, tmp_path, fake_hub, monkeypatch, capfd):
    pytest.importorskip("forge_hub.hub.push")
    monkeypatch.setenv("HF_TOKEN", "hf_machine_token_must_not_be_used")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    client.predict(N_EVAL, EVAL_TOKENS, api_name="/evaluate")
    summary = client.predict("", True, False, [], api_name="/push")

    repo_id = f"{USER}/tiny-llama-abliterated"  # the default name, in the namespace whoami gave for the token
    repo = fake_hub.repo(repo_id)
    (commit,) = [c for c in fake_hub.commits if c.repo_id == repo_id]
    assert f"Pushed to **[{repo_id}]({fake_hub.url}/{repo_id})** ([commit]({fake_hub.url}/{repo_id}/commit/" in summary
    assert repo.private and [c["name"] for c in fake_hub.created] == ["tiny-llama-abliterated"]
    workspace = workspace_of(app, client)
    assert repo.files["model.safetensors"] == (workspace / "model" / "model.safetensors").read_bytes()
    assert "model.safetensors" in commit.lfs  # weights go through the LFS route, as on the real Hub
    for name in ("config.json", "tokenizer.json", "refusal.safetensors", "refusal.json", "README.md"):
        assert name in repo.files, f"{name} was not pushed"
    pushed_results = json.loads(repo.files["evaluation.json"])
    assert pushed_results == json.loads((workspace / "results.json").read_text())
    assert f"{len(repo.files)} files: " in summary and "`model.safetensors`" in summary
    card = repo.files["README.md"].decode()
    assert card.startswith("---\n") and "abliterat" in card.lower()
    # the direction's prompts are named on the Hub as the Space read them (the compute step records them)
    pushed_meta = json.loads(repo.files["refusal.json"])  # no dataset named: the lists forge-hub ships
    assert pushed_meta["prompts"]["harmful"]["source"] == "builtin:advbench train"
    assert pushed_meta["prompts"]["harmless"]["source"] == "builtin:alpaca train"
    assert "not recorded" not in card and "AdvBench](https://github.com/llm-attacks/llm-attacks) harmful" in card
    chosen = json.loads((workspace / "directions" / "refusal.json").read_text())["selected_layer"]
    r = pushed_results["results"]
    assert commit.message.startswith(f"Abliterated tiny-llama (projected, layer {chosen:g}) with forge-hub")
    assert commit.message.endswith(f"harmful refused {r['reference']['refusals']}/{N_EVAL} -> "
                                   f"{r['model']['refusals']}/{N_EVAL}")

    assert fake_hub.tokens_seen() == {TOKEN}  # the visitor's token, and only it, reached the Hub
    for path in app.workdir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written to {path}"
    out = capfd.readouterr()
    assert TOKEN not in out.out + out.err
    assert TOKEN not in summary


def test_pushing_again_needs_the_update_box(app, tiny_dir, tmp_path, fake_hub):
    pytest.importorskip("forge_hub.hub.push")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    client.predict("again", False, False, [], api_name="/push")
    with pytest.raises(AppError, match="already exists on the Hub.*Update the repo if it exists"):
        client.predict("again", False, False, [], api_name="/push")
    assert len(fake_hub.commits) == 1
    run_compute(client, str(tiny_dir), layer="1")
    client.predict(api_name="/apply")
    assert "Pushed to" in client.predict("again", False, True, [], api_name="/push")
    assert len(fake_hub.commits) == 2
    assert json.loads(fake_hub.repo(f"{USER}/again").files["refusal.json"])["selected_layer"] == 1.0


def test_push_refuses_a_namespace_that_is_not_the_visitors(app, tiny_dir, tmp_path, fake_hub):
    pytest.importorskip("forge_hub.hub.push")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    with pytest.raises(AppError, match="cannot push to the namespace 'someone-else'"):
        client.predict("someone-else/model", False, False, [], api_name="/push")
    assert fake_hub.commits == [] and fake_hub.created == []


def test_push_with_gguf_variants(app, tmp_path, fake_hub):
    pytest.importorskip("forge_hub.hub.push")
    gguf_models = pytest.importorskip("helpers.gguf_models")
    from gguf import GGUFReader

    folder = gguf_models.save_gguf_model("llama", tmp_path / "bpe-llama")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    run_compute(client, str(folder))
    client.predict(api_name="/apply")
    summary = client.predict("bpe-abliterated", False, False, ["Q8_0"], api_name="/push")
    assert f"{USER}/bpe-abliterated" in summary
    pushed = fake_hub.repo(f"{USER}/bpe-abliterated").files
    (gguf_name,) = [n for n in pushed if n.endswith(".gguf")]
    assert gguf_name.endswith("bpe-abliterated-Q8_0.gguf")
    local = tmp_path / "pushed.gguf"
    local.write_bytes(pushed[gguf_name])
    reader = GGUFReader(local)
    assert any(t.tensor_type.name == "Q8_0" for t in reader.tensors)
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    assert fake_hub.tokens_seen() == {TOKEN}


def test_gguf_for_an_unsupported_tokenizer_fails_before_upload(app, tiny_dir, tmp_path, fake_hub):
    pytest.importorskip("forge_hub.hub.push")
    pytest.importorskip("forge_hub.outputs.gguf.export")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    with pytest.raises(AppError, match="tokenizer kind 'WordLevel'"):
        client.predict("", False, False, ["Q8_0"], api_name="/push")
    assert fake_hub.commits == []


# --- as it runs on a Space ------------------------------------------------------------------------

@pytest.fixture
def space_app(tmp_path, monkeypatch):
    """The app as Spaces starts it: SYSTEM=spaces and SPACE_ID set, OAuth configured (hf_oauth: true)."""
    import gradio.oauth

    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "forge-hub/abliterate")
    monkeypatch.setenv("FORGE_HUB_SPACE_WORKDIR", str(tmp_path / "sessions"))
    for name, value in (("OAUTH_CLIENT_ID", "client-id"), ("OAUTH_CLIENT_SECRET", "client-secret"),
                        ("OAUTH_SCOPES", "openid profile manage-repos"),
                        ("OPENID_PROVIDER_URL", "http://127.0.0.1:9")):
        monkeypatch.setattr(gradio.oauth, name, value)
    module = load_app_module("forge_space_app_on_space")
    demo, url = launch(module)
    try:
        yield demo, RunningApp(url, module, tmp_path / "sessions")
    finally:
        demo.close()


def test_on_a_space_only_hub_ids_and_the_visitors_login_count(space_app, tiny_dir, tmp_path, monkeypatch):
    demo, app = space_app
    assert any(isinstance(block, gradio.LoginButton) for block in demo.blocks.values())
    monkeypatch.setenv("HF_TOKEN", "hf_space_owner_token")  # the Space's own secret must never push for a visitor
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match="is a local path, and this Space only loads models from the Hub"):
        run_compute(client, str(tiny_dir))
    with pytest.raises(AppError, match="Log in with Hugging Face first"):
        client.predict("", False, False, [], api_name="/push")
    from huggingface_hub.hf_api import SafeTensorsInfo

    hub_model = SimpleNamespace(safetensors=SafeTensorsInfo(parameters={"BF16": 1000}, total=1000), gated=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, *a, **k: hub_model)
    with pytest.raises(AppError, match="this Space only reads prompt datasets from the Hub"):
        client.predict("org/tiny", "", str(tmp_path), [], N_PROMPTS, "projected", "", 0, api_name="/compute")


def test_on_a_space_the_push_goes_out_with_the_visitors_token(space_app, tiny_dir, tmp_path, fake_hub, monkeypatch):
    pytest.importorskip("forge_hub.hub.push")
    _, app = space_app
    monkeypatch.setenv("HF_TOKEN", "hf_space_owner_token")
    client = client_for(app, tmp_path, oauth_token=TOKEN)
    monkeypatch.delenv("SYSTEM")  # a Hub model cannot be downloaded here: let this one step take a local folder
    run_compute(client, str(tiny_dir))
    monkeypatch.setenv("SYSTEM", "spaces")
    client.predict(api_name="/apply")
    summary = client.predict("my-abliterated", False, False, [], api_name="/push")
    assert f"{USER}/my-abliterated" in summary
    assert fake_hub.tokens_seen() == {TOKEN}
    assert "model.safetensors" in fake_hub.repo(f"{USER}/my-abliterated").files


# --- the Space's own files ------------------------------------------------------------------------

def test_space_metadata_and_requirements():
    import yaml

    readme = (APP_FILE.parent / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\n")
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__  # what these tests ran
    assert str(meta["python_version"]) in ("3.10.13", "3.12.12")  # the versions ZeroGPU accepts
    assert (APP_FILE.parent / meta["app_file"]).resolve() == APP_FILE
    assert meta["hf_oauth"] is True and "manage-repos" in meta["hf_oauth_scopes"]  # pushing creates a repo
    assert 0 < len(meta["short_description"]) <= 60
    # requirements.txt: tests/test_space_bundle.py (it must match the package's own dependencies)


def test_gpu_jobs_and_their_results_survive_pickling(app, tiny_dir, tmp_path):
    """On ZeroGPU a job crosses into a forked worker, and its result (or each streamed item) comes
    back, by pickle: a job that holds a lock, a model or an open file would fail only there."""
    import pickle

    from forge_hub.model.loading import resolve_source
    from forge_hub.webapp.jobs import ChatJob, ComputeJob, EvaluateJob

    shipped = load_prompt_lists(PromptChoice(split="train", n_prompts=4))
    harmful, harmless = shipped.harmful, shipped.harmless
    compute_job = ComputeJob(str(tiny_dir), resolve_source(str(tiny_dir)), PromptLists(harmful, harmless, "a", "b"),
                             str(tmp_path / "directions"), ComputeOptions(), 30)
    copy = pickle.loads(pickle.dumps(compute_job))
    assert copy == compute_job
    metadata = copy.run()
    assert pickle.loads(pickle.dumps(metadata)) == metadata
    apply(str(tiny_dir), RefusalDirections.load(tmp_path / "directions"), tmp_path / "edited")
    evaluate_job = EvaluateJob(str(tiny_dir), str(tmp_path / "edited"), harmful[:2], harmless[:2],
                               str(tmp_path / "results.json"), EvaluationSettings(max_new_tokens=4), seconds=30)
    assert pickle.loads(pickle.dumps(evaluate_job)) == evaluate_job
    result = pickle.loads(pickle.dumps(evaluate_job)).run()
    assert pickle.loads(pickle.dumps(result)) == result
    chat_job = ChatJob(str(tiny_dir), str(tmp_path / "edited"), [{"role": "user", "content": "hi"}],
                       [{"role": "user", "content": "hi"}], 6, 30)
    items = list(pickle.loads(pickle.dumps(chat_job)).stream())
    assert items and pickle.loads(pickle.dumps(items)) == items


def test_the_gpu_decorator_does_nothing_outside_a_space(app):
    import spaces

    def job_runner(job):
        return job

    assert spaces.GPU(duration=lambda job: 10)(job_runner) is job_runner
    job = SimpleNamespace(seconds=42, run=lambda: "ran here")
    assert app.module.on_gpu(job) == "ran here"


# --- a hardened Space: what a visitor cannot make the server do -------------------------------------

def test_on_a_space_the_dataset_field_takes_hub_ids_only(space_app, tmp_path, monkeypatch):
    """`json`, `csv`, `text`, ... are dataset builders that read the server's own files."""
    from huggingface_hub.hf_api import SafeTensorsInfo

    _, app = space_app
    hub_model = SimpleNamespace(safetensors=SafeTensorsInfo(parameters={"BF16": 1000}, total=1000), gated=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, *a, **k: hub_model)
    client = client_for(app, tmp_path)
    for builder in ("json", "csv", "text", "parquet", "imagefolder"):
        with pytest.raises(AppError, match=f"'{builder}' is not a Hub dataset id.*Hub dataset id"):
            client.predict("org/tiny", "", builder, [], N_PROMPTS, "projected", "", 0, api_name="/compute")
    assert not app.workdir.exists() or session_folders(app) == []  # refused before a session folder was made


def test_on_a_space_a_config_that_declares_a_huge_model_is_refused(space_app, tmp_path, monkeypatch):
    """The weight files' metadata says 39k parameters; the config says 469 B: the larger counts."""
    from huggingface_hub.hf_api import SafeTensorsInfo

    _, app = space_app
    small = SimpleNamespace(safetensors=SafeTensorsInfo(parameters={"BF16": 39_000}, total=39_000), gated=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, *a, **k: small)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 16384, "num_hidden_layers": 126,
                                  "vocab_size": 128256, "intermediate_size": 53248, "num_attention_heads": 128,
                                  "num_key_value_heads": 8, "tie_word_embeddings": False}))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo_id, filename, **kwargs: str(config))
    with pytest.raises(AppError, match=r"org/huge is too large for .*: it has 40\d\.\d B parameters"):
        run_compute(client_for(app, tmp_path), "org/huge")


def test_a_session_cannot_fill_the_disk(app, tiny_dir, tmp_path, monkeypatch):
    client = client_for(app, tmp_path)
    run_compute(client, str(tiny_dir))
    monkeypatch.setenv("FORGE_HUB_SPACE_SESSION_GB", "0.00005")  # 50 kB: less than the model
    with pytest.raises(AppError, match="would need .* more disk"):
        client.predict(api_name="/apply")
    assert not (workspace_of(app, client) / "model").exists()


def test_an_app_reachable_from_other_machines_refuses_local_files_and_the_machines_login(app, tiny_dir, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # as `python space/app.py` listening for a whole network
    monkeypatch.setenv("HF_TOKEN", "hf_machine_token_must_not_be_used")
    client = client_for(app, tmp_path)
    with pytest.raises(AppError, match="is a local path"):
        run_compute(client, str(tiny_dir))
    monkeypatch.setenv("FORGE_HUB_SPACE_ALLOW_LOCAL", "1")  # the owner says only they can reach it
    run_compute(client, str(tiny_dir))
    client.predict(api_name="/apply")
    monkeypatch.delenv("FORGE_HUB_SPACE_ALLOW_LOCAL")
    with pytest.raises(AppError, match="does not push with this machine's Hugging Face login"):
        client.predict("", False, False, [], api_name="/push")
