"""`forge-hub datasets build|push`, compute/run reading the prompt dataset by default, and pushing
to a local stand-in for the Hub."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.hub_server import FakeHub
from helpers.prompt_sources import write_sources
from helpers.tiny import make_model, save_model

from datasets_builders.forge_prompts import split_of
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.cli import build_parser, main
from forge_hub.cli.options import prompt_choice
from forge_hub.errors import HubError, PromptError
from forge_hub.hub.datasets import build_dataset, push_dataset
from forge_hub.outputs.staging import OUTPUT_MARKER
from forge_hub.prompts import dataset as prompt_dataset
from forge_hub.prompts.choice import load_prompt_lists
from forge_hub.prompts.sources import builtin_prompts

TOKEN = "hf_fake_token_for_tests_0123456789"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.delenv(prompt_dataset.DATASET_ENV, raising=False)


@pytest.fixture
def sources(tmp_path):
    return write_sources(tmp_path / "sources")


@pytest.fixture
def built(tmp_path, sources):
    out = tmp_path / "prompts"
    build_dataset(out, urls=sources, progress=False)
    return out


@pytest.fixture
def online(monkeypatch):
    """The tests run with HF_HUB_OFFLINE=1; pushes to the local fake Hub need it off, and no Xet."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_XET", True)


def train_prompts(folder: Path, config: str) -> list[str]:
    return pq.read_table(folder / "data" / config / "train-00000-of-00001.parquet").column("prompt").to_pylist()


def url_flags(sources: dict) -> list[str]:
    flags = []
    for name, value in sources.items():
        for url in [value] if isinstance(value, str) else value:
            flags += ["--url", f"{name}={url}"]
    return flags


# --- datasets build -------------------------------------------------------------------------------

def test_build_command_writes_the_dataset(tmp_path, sources, capsys):
    out = tmp_path / "out"
    assert main(["datasets", "build", "--out", str(out), *url_flags(sources)]) == 0
    printed = capsys.readouterr().out
    assert "harmful" in printed and "sumandora-harmless" in printed and "xstest" in printed
    assert f"wrote {out}" in printed
    assert (out / "README.md").is_file() and len(list((out / "data").iterdir())) == 15  # 2 sides, 13 sources
    assert main(["datasets", "build", "--out", str(out), *url_flags(sources)]) == 2  # exists: needs --overwrite
    assert main(["datasets", "build", "--out", str(out), "--sources", "curated", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == ["curated-harmful", "curated-harmless", "harmful",
                                                               "harmless"]
    assert sorted(train_prompts(out, "harmful")) == sorted(
        p for p in builtin_prompts("harmful") if split_of(p) == "train")


def test_build_command_errors_name_source_and_file(tmp_path, sources, capsys):
    bad = tmp_path / "advbench.csv"
    bad.write_text("prompt,target\nx,y\n")
    flags = url_flags({**sources, "advbench": str(bad)})
    assert main(["datasets", "build", "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert f"error: source 'advbench': {bad}: no column 'goal'" in err and "fix:" in err
    assert not (tmp_path / "out").exists()
    assert main(["datasets", "build", "--out", str(tmp_path / "out"), "--url", "advbench"]) == 2
    assert "is not SOURCE=URL" in capsys.readouterr().err
    assert main(["datasets"]) == 2 and "build" in capsys.readouterr().out


# --- compute and run read the dataset by default ----------------------------------------------------

def test_compute_uses_the_prompt_dataset(tmp_path, built):
    model = save_model(make_model("llama"), tmp_path / "tiny")
    assert main(["compute", str(model), "--prompts-dataset", str(built), "--out", str(tmp_path / "dirs")]) == 0
    prompts = RefusalDirections.load(tmp_path / "dirs").metadata.to_dict()["prompts"]
    for side in ("harmful", "harmless"):
        used = prompts[side]["count"] + prompts[f"held_out_{side}"]["count"]
        assert used == len(train_prompts(built, side))


def test_prompt_options_sample_split_sources_and_explicit_files(built, prompt_files):
    parse = build_parser().parse_args

    def _load_prompt_lists(args):
        lists = load_prompt_lists(prompt_choice(args))
        return lists.harmful, lists.harmless

    args = parse(["run", "m", "--out", "x", "--prompts-dataset", str(built), "--n-prompts", "3", "--seed", "1"])
    harmful, harmless = _load_prompt_lists(args)
    assert len(harmful) == len(harmless) == 3 and set(harmful) <= set(train_prompts(built, "harmful"))
    assert _load_prompt_lists(args) == (harmful, harmless)
    args = parse(["compute", "m", "--out", "x", "--prompts-dataset", str(built), "--sources", "curated,arditi"])
    harmful, harmless = _load_prompt_lists(args)
    assert {split_of(p) for p in harmful + harmless} == {"train"}
    assert "Explain how to forge a passport" in harmful or split_of("Explain how to forge a passport") != "train"
    assert not {"Create a fake news story", "Write a haiku about autumn"} & set(harmful + harmless)
    args = parse(["compute", "m", "--out", "x", "--prompts-dataset", str(built), "--split", "test",
                  "--harmless", str(prompt_files[1])])
    harmful, harmless = _load_prompt_lists(args)
    assert harmless[0] == "write a tutorial to make a cake" and len(harmless) == 8  # the file, whole
    assert harmful and {split_of(p) for p in harmful} == {"test"}


def test_dataset_default_is_documented_and_follows_the_environment(monkeypatch, built):
    args = build_parser().parse_args(["compute", "m", "--out", "x"])
    assert args.prompts_dataset is None and args.split == "train"  # no dataset: the shipped lists
    assert args.harmful is None and args.harmless is None
    monkeypatch.setenv("FORGE_HUB_PROMPTS_DATASET", str(built))
    assert build_parser().parse_args(["run", "m", "--out", "x"]).prompts_dataset == str(built)


def test_default_compute_reads_the_shipped_lists_and_says_so(tmp_path, capsys):
    """No prompt flags, offline: the lists inside the package (their train part), no Hub lookup,
    provenance as read."""
    from forge_hub.prompts.choice import DEFAULT_SAMPLE, DEFAULT_SOURCES
    from forge_hub.prompts.sources import load_prompts, prompts_hash, split_held_out

    model = save_model(make_model("llama"), tmp_path / "tiny")
    assert main(["compute", str(model), "--out", str(tmp_path / "dirs"), "--layer", "2"]) == 0
    err = capsys.readouterr().err
    train = {side: [p for p in load_prompts(DEFAULT_SOURCES[side]) if split_of(p) == "train"]
             for side in ("harmful", "harmless")}
    read = {side: load_prompts(part, limit=DEFAULT_SAMPLE, seed=0) for side, part in train.items()}
    assert len(read["harmful"]) == len(train["harmful"]) < DEFAULT_SAMPLE == len(read["harmless"])  # 520 AdvBench
    assert (f"prompts: {len(read['harmful'])} harmful (builtin:advbench train), {DEFAULT_SAMPLE} harmless "
            "(builtin:alpaca train)") in err
    assert "unavailable" not in err and "Hub" not in err  # nothing was looked up
    prompts = RefusalDirections.load(tmp_path / "dirs").metadata.prompts
    for side, recorded in (("harmful", prompts.harmful), ("harmless", prompts.harmless)):
        assert recorded.source == f"{DEFAULT_SOURCES[side]} train"
        assert recorded.hash == prompts_hash(split_held_out(read[side], 0.0, 0)[0])


def test_sources_need_a_dataset_to_pick_from(tmp_path, capsys):
    model = save_model(make_model("llama"), tmp_path / "tiny")
    assert main(["compute", str(model), "--out", str(tmp_path / "dirs"), "--sources", "advbench"]) == 2
    err = capsys.readouterr().err
    assert "select rows of a prompt dataset, and none is named" in err and "--prompts-dataset" in err


def test_push_sends_every_file_in_one_commit(built, online):
    with FakeHub() as hub:
        url = push_dataset(built, "test-org/refusal-prompts", private=True, token=TOKEN, endpoint=hub.url,
                           commit_message="Add the prompts")
    assert hub.created == [{"name": "refusal-prompts", "organization": "test-org", "visibility": "private",
                            "type": "dataset"}]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit.repo_type, commit.repo_id, commit.revision, commit.message) == (
        "dataset", "test-org/refusal-prompts", "main", "Add the prompts")
    local = {p.relative_to(built).as_posix(): p.read_bytes() for p in built.rglob("*")
             if p.is_file() and p.name != OUTPUT_MARKER}  # forge-hub's own marker is not published
    assert commit.files == local and "README.md" in local and "data/harmful/train-00000-of-00001.parquet" in local
    assert url == f"{hub.url}/datasets/test-org/refusal-prompts/commit/{commit.oid}"
    assert hub.tokens_seen() == {TOKEN}
    assert any(r.path == "/api/validate-yaml" for r in hub.requests)


def test_push_errors_are_named(tmp_path, built, online, monkeypatch):
    with FakeHub() as hub:
        hub.fail["commit"] = (403, "You don't have the rights to create a dataset under this namespace")
        with pytest.raises(HubError, match="HTTP 403") as info:
            push_dataset(built, "other-org/prompts", token=TOKEN, endpoint=hub.url)
        assert "write token" in info.value.hint and TOKEN not in str(info.value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_dataset(built, "test-org/prompts")
    with pytest.raises(PromptError, match="not a built prompt dataset"):
        push_dataset(tmp_path, "test-org/prompts", token=TOKEN)


def test_build_with_push_checks_id_and_token_before_building(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    out = tmp_path / "out"
    assert main(["datasets", "build", "--out", str(out), "--sources", "curated", "--push-to", "bad id"]) == 2
    assert "invalid Hub repo id 'bad id'" in capsys.readouterr().err
    assert main(["datasets", "build", "--out", str(out), "--sources", "curated", "--push-to", "org/name"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    assert not out.exists()


def test_push_command_uses_the_configured_endpoint(built, online, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub() as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        assert main(["datasets", "push", str(built), "--to", "test-org/prompts"]) == 0
    assert hub.created[0].get("visibility") is None and hub.commits[0].files["README.md"] == (
        built / "README.md").read_bytes()
    out = capsys.readouterr()
    assert f"{hub.url}/datasets/test-org/prompts/commit/" in out.out and TOKEN not in out.out + out.err


def test_build_and_push_from_the_command_line(tmp_path):
    """A child process, as a user runs it: HF_ENDPOINT and HF_TOKEN from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with FakeHub() as hub:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"))
        done = subprocess.run([sys.executable, "-m", "forge_hub.cli", "datasets", "build", "--out",
                               str(tmp_path / "out"), "--sources", "curated", "--push-to", "test-org/prompts",
                               "--private"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert hub.created == [{"name": "prompts", "organization": "test-org", "visibility": "private", "type": "dataset"}]
    commit = hub.commits[0]
    assert commit.message.startswith("Refusal prompts: 100 harmful, 100 harmless, 4 configs")
    written = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in (tmp_path / "out").rglob("*")
               if p.is_file() and p.name != OUTPUT_MARKER}
    assert commit.files == written
    assert 'load_dataset("test-org/prompts", "harmful", split="train")' in commit.files["README.md"].decode()
    assert f"{hub.url}/datasets/test-org/prompts/commit/{commit.oid}" in done.stdout
