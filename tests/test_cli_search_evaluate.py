"""`forge-hub run --optimize`, `forge-hub evaluate` and `forge-hub chat` on a tiny model."""

import json
import subprocess
import sys

import optuna
import torch
from helpers.tiny import make_model, save_model
from safetensors.torch import load_file

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.abliterate.study import load_directions
from forge_hub.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_optimize_resume_pick_and_reproduce(tmp_path, prompt_files, capsys):
    src = save_model(make_model("llama"), tmp_path / "tiny")
    h, s = prompt_files
    study = tmp_path / "study.db"
    common = ["run", src, "--harmful", h, "--harmless", s, "--optimize", "--study", study, "--search-tokens", "3",
              "--batch-size", "4"]
    assert run_cli(*common, "--trials", "3", "--out", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "(picked)" in out
    assert (tmp_path / "study.pareto.png").exists()
    stored = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{study}")
    assert len(stored.trials) == 3
    # the study carries the directions it searched, the ones written out with the model
    assert torch.equal(load_directions(stored).harmful_mean, RefusalDirections.load(tmp_path / "a").harmful_mean)

    # resume to 4 trials and pick trial 2 explicitly
    assert run_cli(*common, "--trials", "4", "--pick", "2", "--out", tmp_path / "b") == 0
    trials = optuna.load_study(study_name="forge-hub", storage=f"sqlite:///{study}").trials
    assert len(trials) == 4
    art = RefusalDirections.load(tmp_path / "b")
    assert art.metadata.to_dict()["search"]["trial"] == 2 \
        and art.metadata.to_dict()["method"] == trials[2].params["method"]
    assert art.metadata.to_dict()["apply_settings"] == trials[2].user_attrs["settings"]
    saved = json.loads((tmp_path / "b" / "abliteration.json").read_text())["settings"]
    assert saved == trials[2].user_attrs["settings"]

    # the artifact alone reproduces the model
    assert run_cli("apply", src, "--directions", tmp_path / "b", "--out", tmp_path / "c") == 0
    b, c = load_file(tmp_path / "b" / "model.safetensors"), load_file(tmp_path / "c" / "model.safetensors")
    assert b.keys() == c.keys() and all(torch.equal(b[k], c[k]) for k in b)


def test_evaluate_writes_json_and_markdown(tmp_path, prompt_files, capsys):
    src = save_model(make_model("qwen2"), tmp_path / "ref")
    h, s = prompt_files
    assert run_cli("run", src, "--harmful", h, "--harmless", s, "--layer", "2", "--out", tmp_path / "edited") == 0
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "edited", "--reference", src, "--harmful", h, "--harmless", s,
                   "--max-new-tokens", "4", "--out", tmp_path / "results.json") == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["schema"] == "forge-hub/evaluation/v2" and result["settings"]["max_new_tokens"] == 4
    assert result["model"] == str(tmp_path / "edited") and result["reference"] == str(src)
    assert result["prompts"]["harmful"]["count"] == 8 and result["settings"]["max_new_tokens"] == 4
    assert result["results"]["kl_divergence"] > 0
    md = (tmp_path / "results.md").read_text()
    assert "harmful refused" in md and md in capsys.readouterr().out


def test_chat_streams_and_resets(tmp_path):
    src = save_model(make_model("llama"), tmp_path / "tiny")
    done = subprocess.run([sys.executable, "-m", "forge_hub.cli", "chat", str(src), "--max-new-tokens", "5"],
                          input="write a poem\n/reset\ntell me a story\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("model> ") == 2 and "(conversation cleared)" in done.stdout
