"""`forge-hub push` / `run --push-to`: the real huggingface_hub client against a local fake Hub
(tests/helpers/hub_server.py), asserting on what the server received: files and bytes, the card's YAML,
the commit message, the token's whereabouts, and what happens on a wrong token, an existing repo,
a dropped connection, and bad input (which must fail before the first request)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.abliterated_models import BASE, BASE_CARD, make_abliterated, write_results
from helpers.hub_server import USER, FakeHub, point_client_at
from helpers.tiny import make_model, save_model
from huggingface_hub.repocard_data import model_index_to_eval_results

from forge_hub import __version__
from forge_hub.cli import flag_name, main
from forge_hub.errors import HubError
from forge_hub.hub.push import push_model
from forge_hub.outputs.staging import OUTPUT_MARKER
from forge_hub.provenance import source_wheel
from forge_hub.schema import load_toml
from forge_hub.units import human_size

TOKEN = "hf_fake_token_for_push_tests_0123456789"
REPO = f"{USER}/tiny-abliterated"
# The client fetches its agent-harness registry from the endpoint once a day: not part of a push.
NOISE = ("/api/agent-harnesses",)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    folder = make_abliterated(root)
    results = write_results(folder, root / "results.json", reference=root / "source")
    return folder, results


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub that knows the base model, with the client pointed at it (in-process)."""
    with FakeHub(token=TOKEN, orgs=["test-org"]) as server:
        point_client_at(server, monkeypatch, tmp_path)
        server.add_repo(BASE, {"README.md": BASE_CARD, "config.json": b"{}"})
        yield server


def routes(hub: FakeHub) -> list[str]:
    return [f"{r.method} {r.path.split('?')[0]}" for r in hub.requests if not r.path.startswith(NOISE)]


def expected_files(folder: Path, results: Path) -> dict[str, bytes]:
    """What a push sends besides the card: every file's bytes, but the JSON files without local paths."""
    kept = [p for p in folder.iterdir() if p.name != OUTPUT_MARKER]  # forge-hub's own marker stays home
    assert "README.md" not in [p.name for p in kept]  # the card is written by the push
    files = {p.name: p.read_bytes() for p in kept} | {"evaluation.json": results.read_bytes()}
    wheel = source_wheel()  # the forge-hub that made the model travels with it (running from a checkout)
    files |= {wheel.name: wheel.read_bytes()} if wheel else {}
    return {name: public_json(data) if name.endswith(".json") and name in PATH_FREE else data
            for name, data in files.items()}


PATH_FREE = ("refusal.json", "abliteration.json", "evaluation.json")


def public_json(data: bytes) -> bytes:
    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return Path(value).name if isinstance(value, str) and value.startswith("/") else value

    return (json.dumps(walk(json.loads(data)), indent=2, ensure_ascii=False) + "\n").encode()


def card_meta(readme: bytes) -> dict:
    return yaml.safe_load(readme.decode().split("---\n")[1])


def test_push_uploads_the_model_card_results_and_artifact(made, hub, capfd):
    folder, results = made
    result = push_model(folder, REPO, token=TOKEN, private=True, results=results, progress=False)

    assert hub.created == [{"name": "tiny-abliterated", "organization": USER, "visibility": "private"}]
    (commit,) = hub.commits
    sent = dict(commit.files)
    readme = sent.pop("README.md")
    assert sent == expected_files(folder, results)  # every file, its bytes unchanged but for local paths
    source_paths = re.findall(rb'"(/[^"]+)"', (folder / "refusal.json").read_bytes() + results.read_bytes())
    assert source_paths and not any(p in data for p in source_paths for data in sent.values())
    assert json.loads(sent["evaluation.json"])["model"] == "abliterated"  # was the output folder's full path
    assert sorted(commit.paths) == sorted(set(commit.paths))  # each path once
    assert sorted(commit.lfs) == sorted(["model.safetensors", "refusal.safetensors", source_wheel().name])  # LFS + PUT
    assert {(oid, size) for oid, size, done in hub.puts if done} == {
        (hashlib.sha256(sent[p]).hexdigest(), len(sent[p])) for p in commit.lfs}
    assert readme.decode() == result.card
    wheel = source_wheel()
    assert wheel is not None  # the tests run from a checkout
    assert f"pip install {hub.url.replace(hub.url, 'https://huggingface.co')}/{REPO}/resolve/main/{wheel.name}" \
        in readme.decode()

    meta = json.loads((folder / "refusal.json").read_text())
    data = json.loads(results.read_text())
    r, n = data["results"], data["prompts"]["harmful"]["count"]
    assert commit.message == (f"Abliterated {BASE} (projected, layer {meta['selected_layer']:g}) with forge-hub "
                              f"{__version__}: harmful refused {r['reference']['refusals']}/{n} -> "
                              f"{r['model']['refusals']}/{n}")
    card = card_meta(readme)
    assert card["base_model"] == BASE and card["base_model_relation"] == "finetune"
    assert card["license"] == "apache-2.0"  # read from the base model's card on the (fake) Hub
    assert {"abliterated", "uncensored", "forge-hub", "not-for-all-audience"} <= set(card["tags"])
    _, evals = model_index_to_eval_results(card["model-index"])
    assert {e.metric_type: e.metric_value for e in evals} == {
        "refusal_rate": r["model"]["refusal_rate"], "over_refusal_rate": r["model"]["over_refusal_rate"],
        "kl_divergence": r["kl_divergence"]}

    puts = sorted(f"PUT /lfs-upload/{oid}" for oid, _, _ in hub.puts)
    order = routes(hub)
    assert order[:8] == [
        "GET /api/whoami-v2",  # the token first: a wrong one fails before anything is made
        f"GET /api/models/{BASE}/revision/main",  # the base model's card, for its licence
        "POST /api/validate-yaml",  # the card, before the repo exists
        "POST /api/repos/create", f"GET /api/models/{REPO}/tree/main",  # stale weights to delete
        "POST /api/validate-yaml", "POST /api/validate-yaml",  # upload_folder checks README.md again
        f"POST /api/models/{REPO}/preupload/main"]
    assert order[8] == f"POST /{REPO}.git/info/lfs/objects/batch" and sorted(order[9:-1]) == puts
    assert order[-1] == f"POST /api/models/{REPO}/commit/main"
    assert hub.validated[0] == result.card

    assert result.repo_url == f"{hub.url}/{REPO}"
    assert result.commit_url == f"{hub.url}/{REPO}/commit/{commit.oid}"
    assert [f.path for f in result.files] == sorted(commit.files)
    assert all(f.size == len(commit.files[f.path]) for f in result.files)
    assert hub.tokens_seen() == {TOKEN}
    assert all(TOKEN.encode() not in r.body for r in hub.requests)  # in no file, card or message sent
    out = capfd.readouterr()
    assert TOKEN not in out.out + out.err


def test_dry_run_builds_the_same_folder_and_sends_nothing(made, hub, capsys):
    folder, results = made
    dry = push_model(folder, REPO, results=results, license="apache-2.0", dry_run=True, progress=False)
    assert hub.requests == [] and dry.repo_url is None and dry.commit_url is None  # no token needed either
    assert {f.path: f.size for f in dry.files} == {name: len(data) for name, data in
                                                   expected_files(folder, results).items()} \
        | {"README.md": len(dry.card.encode())}

    real = push_model(folder, REPO, token=TOKEN, results=results, license="apache-2.0", progress=False)
    assert hub.commits[0].files["README.md"].decode() == dry.card == real.card  # exactly what a push sends

    assert main(["push", str(folder), "--repo", REPO, "--results", str(results), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for name in list(expected_files(folder, results)) + ["README.md"]:
        assert f"  {name} " in printed
    assert f"would upload to {REPO}:" in printed and "dry run: nothing was sent to the Hub" in printed
    assert f"base_model: {BASE}" in printed and len(hub.commits) == 1


def test_wrong_token_is_refused_before_anything_is_made(made, hub):
    folder, results = made
    wrong = "hf_wrong_token_000000000000000000"
    with pytest.raises(HubError, match="HTTP 401") as info:
        push_model(folder, REPO, token=wrong, results=results, progress=False)
    assert "token was rejected" in info.value.hint and wrong not in str(info.value)
    assert routes(hub) == ["GET /api/whoami-v2"] and hub.created == [] and hub.commits == []


def test_a_namespace_the_token_cannot_use_is_refused(made, hub):
    folder, _ = made
    with pytest.raises(HubError, match="cannot create repos under 'someone-else'"):
        push_model(folder, "someone-else/model", token=TOKEN, progress=False)
    assert routes(hub) == ["GET /api/whoami-v2"] and hub.created == []
    push_model(folder, "test-org/model", token=TOKEN, progress=False)  # an organisation of the user
    assert hub.created[0]["organization"] == "test-org"


def test_existing_repo_needs_exist_ok_and_then_loses_stale_shards(made, hub):
    folder, results = made
    earlier = hub.add_repo(REPO, {"notes.txt": b"kept", "model-00001-of-00002.safetensors": b"stale shard",
                                  "model.safetensors.index.json": b"{}"})
    with pytest.raises(HubError, match=f"{REPO} already exists") as info:
        push_model(folder, REPO, token=TOKEN, results=results, progress=False)
    assert "--exist-ok" in info.value.render(flag_name)[1] and hub.commits == [] and hub.created == []

    push_model(folder, REPO, token=TOKEN, results=results, exist_ok=True, progress=False)
    (commit,) = hub.commits
    assert sorted(commit.deleted) == ["model-00001-of-00002.safetensors", "model.safetensors.index.json"]
    assert set(earlier.files) == set(expected_files(folder, results)) | {"README.md", "notes.txt"}


def test_dropped_upload_is_retried_with_nothing_lost_or_duplicated(made, hub):
    folder, results = made
    hub.drop["put"] = 1  # cut the connection half way through the first LFS upload
    push_model(folder, REPO, token=TOKEN, results=results, progress=False)
    dropped = [p for p in hub.puts if not p[2]]
    assert len(dropped) == 1 and dropped[0][1] > 0  # a partial body arrived, then the connection went
    assert [oid for oid, _, done in hub.puts if done].count(dropped[0][0]) == 1  # the client's retry completed it
    (commit,) = hub.commits
    assert len(commit.paths) == len(set(commit.paths))
    sent = dict(hub.repo(REPO).files)
    sent.pop("README.md")
    assert sent == expected_files(folder, results)


def test_interrupted_commit_completes_on_a_second_push(made, hub):
    folder, results = made
    hub.drop["commit"] = 1  # the connection goes after the commit is sent, before the Hub applies it
    with pytest.raises(HubError, match="interrupted") as info:
        push_model(folder, REPO, token=TOKEN, results=results, progress=False)
    assert "--exist-ok" in info.value.render(flag_name)[1] and hub.commits == []
    assert len(hub.lfs_objects) == 3  # the weights, the direction, the wheel
    uploads = len(hub.puts)

    again = push_model(folder, REPO, token=TOKEN, results=results, exist_ok=True, progress=False)
    assert len(hub.puts) == uploads  # the large files were already there: not sent again
    (commit,) = hub.commits
    assert len(commit.paths) == len(set(commit.paths))
    files = dict(hub.repo(REPO).files)
    assert files.pop("README.md").decode() == again.card and files == expected_files(folder, results)

    third = push_model(folder, REPO, token=TOKEN, results=results, exist_ok=True, progress=False)
    assert len(hub.commits) == 1 and third.commit_url == f"{hub.url}/{REPO}/commit/{commit.oid}"  # nothing to do


def test_card_refused_by_the_hub_stops_before_the_repo_is_made(made, hub):
    folder, _ = made
    hub.fail["validate-yaml"] = (400, "Invalid metadata")
    with pytest.raises(HubError, match="rejected the model card"):
        push_model(folder, REPO, token=TOKEN, progress=False)
    assert hub.created == [] and hub.commits == []


@pytest.mark.parametrize("case", ["empty folder", "no weights", "gguf output", "no artifact", "no owner",
                                  "double dash", "name too long", "unknown gguf type", "misnamed gguf file",
                                  "no token"])
def test_bad_input_fails_before_any_request(case, made, hub, tmp_path, monkeypatch, capsys):
    folder, _ = made
    monkeypatch.setenv("PUSH_TOKEN", TOKEN)
    args = ["push", str(folder), "--repo", REPO]
    if case == "empty folder":
        args[1] = str(tmp_path)
    elif case == "no weights":
        (tmp_path / "config.json").write_text("{}")
        args[1] = str(tmp_path)
    elif case == "gguf output":
        (tmp_path / "model.gguf").write_bytes(b"GGUF")
        args[1] = str(tmp_path)
    elif case == "no artifact":
        save_model(make_model("llama", layers=2), tmp_path / "plain")
        args[1] = str(tmp_path / "plain")
    elif case == "no owner":
        args[3] = "tiny-abliterated"
    elif case == "double dash":
        args[3] = f"{USER}/tiny--abliterated"
    elif case == "name too long":
        args[3] = f"{USER}/{'x' * 97}"
    elif case == "unknown gguf type":
        args += ["--gguf", "F16,Q9_9"]
    elif case == "misnamed gguf file":
        (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
        args += ["--gguf-file", str(tmp_path / "model.gguf")]
    assert main(args + ([] if case == "no token" else ["--token-env", "PUSH_TOKEN"])) == 2
    err = capsys.readouterr().err
    expected = {"empty folder": "not a Hugging Face model folder", "no weights": "no safetensors weights",
                "gguf output": "--to-safetensors", "no artifact": "has no refusal.json",
                "no owner": "names no owner", "double dash": "Cannot have -- or ..",
                "name too long": "invalid Hub repo id", "unknown gguf type": "unknown GGUF type 'Q9_9'",
                "misnamed gguf file": "cannot tell the GGUF type of model.gguf",
                "no token": "no Hugging Face token found"}[case]
    assert expected in err and "fix:" in err
    assert hub.requests == [] and hub.created == []


def test_command_line_push_in_a_child_process(made, tmp_path):
    """As a user runs it: HF_ENDPOINT and HF_TOKEN from the environment, the LFS route (no Xet)."""
    folder, results = made
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    with FakeHub(token=TOKEN) as hub:
        hub.add_repo(BASE, {"README.md": BASE_CARD})
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"))
        done = subprocess.run([sys.executable, "-m", "forge_hub.cli", "push", str(folder), "--repo", REPO,
                               "--results", str(results), "--message", "First upload of the tiny model"],
                              capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    (commit,) = hub.commits
    assert commit.message == "First upload of the tiny model"
    sent = dict(commit.files)
    assert card_meta(sent.pop("README.md"))["license"] == "apache-2.0"
    assert sent == expected_files(folder, results) and commit.lfs
    assert f"uploaded to {REPO}:" in done.stdout and f"commit: {hub.url}/{REPO}/commit/{commit.oid}" in done.stdout
    for p in (tmp_path / "hf-home").rglob("*"):
        assert not p.is_file() or TOKEN.encode() not in p.read_bytes()


@pytest.fixture(scope="module")
def gguf_ready(tmp_path_factory):
    """A model forge-hub can write as GGUF (byte-level BPE tokenizer), abliterated."""
    from helpers.gguf_models import save_gguf_model

    root = tmp_path_factory.mktemp("gguf-push")
    return make_abliterated(root, save_base=lambda p: save_gguf_model("llama", p), layer=1)


def test_gguf_files_in_their_own_repo(gguf_ready, hub, tmp_path, prompt_files, monkeypatch, capsys):
    from forge_hub.outputs.gguf.export import export_gguf

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    harmful, harmless = prompt_files
    assert main(["push", str(gguf_ready), "--repo", REPO, "--gguf", "F16,Q8_0", "--gguf-repo", "--evaluate-against",
                 str(gguf_ready.parent / "source"), "--harmful", str(harmful), "--harmless", str(harmless),
                 "--check-tokens", "3", "--backend", "transformers"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("GGUF check on 8 harmful") < printed.index("uploaded to")  # seen before it is sent
    main_commit, gguf_commit = hub.commits
    assert main_commit.repo_id == REPO and gguf_commit.repo_id == f"{REPO}-GGUF"
    assert not any(p.endswith(".gguf") for p in main_commit.files)
    names = ["tiny-abliterated-F16.gguf", "tiny-abliterated-Q8_0.gguf"]
    assert sorted(gguf_commit.files) == ["README.md", "gguf-evaluation.json"] + names
    assert sorted(gguf_commit.lfs) == names
    check = json.loads(gguf_commit.files["gguf-evaluation.json"])
    assert [f["file"] for f in check["files"]] == names and check["reference"] == "source"  # no local paths
    assert not any(str(tmp_path.parent).encode() in data for data in gguf_commit.files.values())
    q8 = check["files"][1]
    assert f"| `tiny-abliterated-Q8_0.gguf` | Q8_0 | {human_size(q8['size'])} | {q8['scores']['refusals']}/8 " \
        in gguf_commit.files["README.md"].decode()
    again = export_gguf(gguf_ready, tmp_path, ["F16", "Q8_0"], name="tiny-abliterated", progress=False)
    assert [gguf_commit.files[p.name] for p in again] == [p.read_bytes() for p in again]  # bytes as written

    card = card_meta(gguf_commit.files["README.md"])
    assert card["base_model"] == REPO and card["base_model_relation"] == "quantized" and "model-index" not in card
    text = gguf_commit.files["README.md"].decode()
    for p, kind in zip(again, ("F16", "Q8_0")):
        assert f"| `{p.name}` | {kind} | {human_size(p.stat().st_size)} |" in text  # each file with its size
    main_card = main_commit.files["README.md"].decode()
    assert f"GGUF files of this model are in [{REPO}-GGUF]" in main_card and "tiny-abliterated-Q8_0.gguf" in main_card
    assert gguf_commit.message.startswith(f"GGUF files of {REPO} (F16, Q8_0)")
    assert f"uploaded to {REPO}-GGUF:" in printed
    # --no-gguf-check publishes the files unmeasured
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(gguf_ready), "--repo", REPO, "--gguf", "F16", "--exist-ok", "--no-gguf-check"]) == 0
    assert len(hub.commits) == 3 and "GGUF check" not in capsys.readouterr().out


def test_gguf_files_in_the_same_repo(gguf_ready, hub, tmp_path):
    from forge_hub.outputs.gguf.export import export_gguf

    files = export_gguf(gguf_ready, tmp_path, ["Q8_0"], name="tiny-abliterated", progress=False)
    result = push_model(gguf_ready, REPO, token=TOKEN, gguf_files=files, progress=False)
    (commit,) = hub.commits
    assert commit.files["tiny-abliterated-Q8_0.gguf"] == files[0].read_bytes()
    assert "tiny-abliterated-Q8_0.gguf" in commit.lfs and result.gguf_repo_id is None
    card = commit.files["README.md"].decode()
    assert "gguf" in card_meta(commit.files["README.md"])["tags"]
    assert f"| `tiny-abliterated-Q8_0.gguf` | Q8_0 | {human_size(files[0].stat().st_size)} |" in card


def test_run_pushes_what_it_wrote(hub, tmp_path, prompt_files, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    model = save_model(make_model("llama"), tmp_path / "tiny")
    harmful, harmless = prompt_files
    base = ["run", str(model), "--harmful", str(harmful), "--harmless", str(harmless), "--layer", "2"]

    assert main(base + ["--out", str(tmp_path / "bad"), "--push-to", "no owner"]) == 2  # before the run
    assert "invalid Hub repo id" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--out", str(tmp_path / "bad"), "--gguf", "Q9_9", "--push-to", REPO]) == 2
    assert "unknown GGUF type" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    monkeypatch.setattr("forge_hub.outputs.gguf.llama_cpp.find_quantizer", lambda *a: None)  # whatever this machine has
    assert main(base + ["--out", str(tmp_path / "bad"), "--gguf", "F16,Q4_K_M", "--push-to", REPO]) == 2
    assert "Q4_K_M needs llama.cpp's quantizer" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--out", str(tmp_path / "bad"), "--gguf", "F16"]) == 2
    assert "only apply with --push-to" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert hub.requests == []

    out = tmp_path / "out"
    assert main(base + ["--out", str(out), "--push-to", REPO, "--private"]) == 0
    (commit,) = hub.commits
    assert hub.created[0]["visibility"] == "private"
    assert commit.files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    prompts = json.loads(commit.files["refusal.json"])["prompts"]
    assert (prompts["harmful"]["source"], prompts["harmless"]["source"]) == ("harmful.txt", "harmless.txt")
    assert json.loads((out / "refusal.json").read_text())["prompts"]["harmful"]["source"] == str(harmful)  # kept
    assert not any(str(tmp_path).encode() in data for data in commit.files.values())
    settings = load_toml(commit.files["forge-hub.toml"].decode())  # the run's own settings travel with it
    assert settings["harmful"] == "harmful.txt" and settings["layer"] == 2.0 and settings["model"] == "tiny"
    assert str(harmful) in (out / "forge-hub.toml").read_text()  # the local copy keeps its paths
    card = commit.files["README.md"].decode()
    assert "`harmful.txt` (local)" in card and str(tmp_path) not in card
    assert f"uploaded to {REPO}:" in capsys.readouterr().out


def test_compute_records_the_prompt_dataset_it_read(tmp_path, monkeypatch):
    import datasets

    from forge_hub.prompts import dataset as prompt_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.delenv(prompt_dataset.DATASET_ENV, raising=False)
    model = save_model(make_model("llama"), tmp_path / "tiny")
    assert main(["compute", str(model), "--out", str(tmp_path / "dirs"), "--layer", "2"]) == 0
    prompts = json.loads((tmp_path / "dirs" / "refusal.json").read_text())["prompts"]
    assert prompts["harmful"]["source"] == "builtin:advbench train"
    assert prompts["harmless"]["source"] == "builtin:alpaca train"


def test_an_unreachable_hub_is_reported_as_such_not_as_an_interrupted_push(made, monkeypatch, capsys):
    folder = made[0] if isinstance(made, tuple) else made
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("PUSH_TOKEN", TOKEN)
    assert main(["push", str(folder), "--repo", f"{USER}/tiny-abliterated", "--token-env", "PUSH_TOKEN"]) == 2
    err = capsys.readouterr().err
    assert "could not reach the Hub at http://127.0.0.1:9" in err and "interrupted" not in err
    assert "fix: check the network connection and HF_ENDPOINT" in err and TOKEN not in err
