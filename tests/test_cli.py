"""The forge-hub command line end to end on tiny models, and its errors."""

import json
import subprocess
import sys

import pytest
import torch
from helpers.tiny import make_model, make_tokenizer, random_artifact, save_model
from transformers import AutoModelForCausalLM

from forge_hub.abliterate.ablation import project_out
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.cli import main


@pytest.fixture
def tiny_model(tmp_path):
    return save_model(make_model("llama"), tmp_path / "tiny")


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_compute_then_apply(tmp_path, tiny_model, prompt_files, capsys):
    harmful, harmless = prompt_files
    assert run_cli("compute", tiny_model, "--harmful", harmful, "--harmless", harmless, "--out", tmp_path / "dirs",
                   "--dtype", "fp32") == 0
    art = RefusalDirections.load(tmp_path / "dirs")
    meta = art.metadata.to_dict()
    assert meta["model"] == str(tiny_model) and meta["hidden_size"] == 32 and meta["num_layers"] == 4
    assert meta["method"] == "projected" and meta["selection"]["how"] == "measured"
    assert meta["prompts"]["harmful"]["count"] + meta["prompts"]["held_out_harmful"]["count"] == 8
    assert meta["selected_layer"] in meta["selection"]["candidates"]
    assert art.directions.shape == (5, 32)
    # unit directions, except entering layer 0: every prompt ends in the same template token there
    assert torch.allclose(art.directions.norm(dim=1), torch.tensor([0.0, 1, 1, 1, 1]), atol=1e-5)
    out = capsys.readouterr().out
    assert "<- chosen" in out and "selected layer" in out

    assert run_cli("apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out",
                   "--strength", "1.0", "--skip-first", "0", "--layers", ":", "--attn-strength", "1",
                   "--mlp-strength", "1") == 0
    edited = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    original = AutoModelForCausalLM.from_pretrained(tiny_model)
    r = art.direction(art.metadata.selected_layer)
    # the default: row-normalized (magnitude-preserving) ablation, every row keeping its norm
    assert art.metadata.apply_settings.row_normalized
    for layer, before in zip(edited.model.layers, original.model.layers):
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            w, w0 = layer.get_submodule(name).weight, before.get_submodule(name).weight
            assert torch.allclose(w, project_out(w0, r, row_normalized=True), atol=1e-6)
            assert torch.allclose(w.norm(dim=1), w0.norm(dim=1), atol=1e-5)
    assert "edited" in capsys.readouterr().out
    # the plain projection on request: no output along the direction left at all
    assert run_cli("apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "plain",
                   "--no-row-normalized", "--strength", "1.0", "--skip-first", "0", "--layers", ":",
                   "--attn-strength", "1",
                   "--mlp-strength", "1") == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    for layer in plain.model.layers:
        assert (r @ layer.self_attn.o_proj.weight).abs().max() < 1e-4
        assert (r @ layer.mlp.down_proj.weight).abs().max() < 1e-4


def test_run_writes_a_complete_model(tmp_path, tiny_model, prompt_files):
    harmful, harmless = prompt_files
    assert run_cli("run", tiny_model, "--harmful", harmful, "--harmless", harmless, "--out", tmp_path / "out",
                   "--layer", "2", "--norm-preserving") == 0
    out = tmp_path / "out"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "refusal.safetensors", "refusal.json",
                 "abliteration.json"):
        assert (out / name).exists(), name
    settings = json.loads((out / "abliteration.json").read_text())["settings"]
    assert settings["norm_preserving"] is True and settings["direction_layer"] == 2.0
    assert RefusalDirections.load(out).metadata.selection.how == "given"


def test_every_command_has_help(capsys):
    # the module's entry point in a child process, as users start it; each command's help in this one
    # (the same parser, without a torch import per command)
    done = subprocess.run([sys.executable, "-m", "forge_hub.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage:" in done.stdout
    for cmd in (["compute", "--help"], ["apply", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(cmd)
        assert exit_.value.code in (0, None) and f"usage: forge-hub {cmd[0]}" in capsys.readouterr().out


def expect_error(capsys, tmp_path, argv, message):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err or message in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_missing_model(tmp_path, prompt_files, capsys):
    h, s = prompt_files
    expect_error(capsys, tmp_path, ["run", tmp_path / "missing", "--harmful", h, "--harmless", s, "--out",
                                    tmp_path / "out"], "does not exist")


def test_missing_model_fails_before_any_prompt_is_read(tmp_path, monkeypatch, capsys):
    def no_prompts(*args, **kwargs):
        raise AssertionError("prompts were read for a model that does not exist")

    monkeypatch.setattr("forge_hub.prompts.dataset.load_side", no_prompts)
    expect_error(capsys, tmp_path, ["compute", tmp_path / "missing", "--out", tmp_path / "out"], "does not exist")


def test_empty_prompt_list(tmp_path, tiny_model, prompt_files, capsys):
    _, s = prompt_files
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    expect_error(capsys, tmp_path, ["run", tiny_model, "--harmful", tmp_path / "empty.txt", "--harmless", s,
                                    "--out", tmp_path / "out"], "no prompts in")


def test_mismatched_direction(tmp_path, tiny_model, capsys):
    random_artifact(hidden=48).save(tmp_path / "dirs")
    expect_error(capsys, tmp_path, ["apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out"],
                 "direction hidden size 48 does not match the model's 32")


def test_missing_direction(tmp_path, tiny_model, capsys):
    expect_error(capsys, tmp_path, ["apply", tiny_model, "--directions", tmp_path / "nowhere", "--out",
                                    tmp_path / "out"], "no direction artifact")


def test_no_chat_template(tmp_path, prompt_files, capsys):
    folder = tmp_path / "plain"
    make_model("llama").save_pretrained(folder)
    tok = make_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    h, s = prompt_files
    expect_error(capsys, tmp_path, ["run", folder, "--harmful", h, "--harmless", s, "--out", tmp_path / "out"],
                 "no chat template")


def test_unknown_architecture(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=128)).save_pretrained(folder)
    random_artifact().save(tmp_path / "dirs")
    expect_error(capsys, tmp_path, ["apply", folder, "--directions", tmp_path / "dirs", "--out", tmp_path / "out"],
                 "found no residual-stream writers in this 'gpt2' model")


def test_existing_output(tmp_path, tiny_model, capsys):
    random_artifact().save(tmp_path / "dirs")
    (tmp_path / "out").mkdir()
    assert run_cli("apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out") == 2
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_disk_full(tmp_path, tiny_model, capsys, monkeypatch):
    random_artifact().save(tmp_path / "dirs")
    monkeypatch.setattr("forge_hub.outputs.staging.shutil.disk_usage", lambda p: type("U", (), {"free": 1000})())
    expect_error(capsys, tmp_path, ["apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out"],
                 "not enough disk space")


def test_bitsandbytes_missing_is_explained(tmp_path, tiny_model, prompt_files, capsys):
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    h, s = prompt_files
    expect_error(capsys, tmp_path, ["compute", tiny_model, "--load-in", "4bit", "--harmful", h, "--harmless", s,
                                    "--out", tmp_path / "out"], "needs bitsandbytes")


def test_direction_from_another_model_is_flagged(tmp_path, tiny_model, capsys):
    random_artifact().save(tmp_path / "dirs")  # computed on "tiny", same sizes
    assert run_cli("apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out") == 0
    assert "the direction was computed on tiny" in capsys.readouterr().err
    assert run_cli("apply", tiny_model, "--directions", tmp_path / "dirs", "--out", tmp_path / "out2",
                   "--allow-other-model") == 0
    assert "computed on" not in capsys.readouterr().err
