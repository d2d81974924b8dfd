"""Settings from a TOML file (--config) and FORGE_HUB_* variables: the same run as from flags, bit for
bit; the settings an output was made with are written into it and run it again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers.tiny import make_model, save_model, write_prompt_files

from forge_hub.cli import main
from forge_hub.schema import load_toml


def files(folder: Path, *, skip: tuple[str, ...] = (".forge-hub-output.json",)) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name not in skip}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    model = save_model(make_model("llama"), root / "tiny")
    write_prompt_files(root)
    return root, model


def test_a_run_from_a_toml_file_equals_the_run_from_flags(setup, tmp_path, monkeypatch):
    root, model = setup
    monkeypatch.chdir(tmp_path)
    flags = ["--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt"), "--n-prompts", "6",
             "--seed", "3", "--method", "mean_diff", "--held-out", "0.34", "--kernel", "linear", "--kernel-center", "2",
             "--kernel-width", "1.5", "--mlp-strength", "0.75", "--positions=-1,-2"]
    assert main(["run", str(model), *flags, "--out", "from-flags"]) == 0
    (tmp_path / "settings.toml").write_text(f'''
model = "{model}"
out = "from-file"
harmful = "{root / 'harmful.txt'}"
harmless = "{root / 'harmless.txt'}"
n_prompts = 6
seed = 3
method = "mean_diff"
held_out = 0.34
kernel = "linear"
kernel-center = 2        # dashes work too
kernel_width = 1.5
mlp_strength = 0.75
positions = [-1, -2]
''')
    assert main(["run", "--config", "settings.toml"]) == 0
    by_flags, by_file = files(tmp_path / "from-flags"), files(tmp_path / "from-file")
    assert by_flags.pop("forge-hub.toml") != by_file.pop("forge-hub.toml")  # they name their own --out
    assert by_flags == by_file  # weights, directions, settings: bit for bit
    recorded = load_toml((tmp_path / "from-file" / "forge-hub.toml").read_text())
    assert recorded["model"] == str(model) and recorded["mlp_strength"] == 0.75 and recorded["kernel_center"] == 2.0
    assert recorded["positions"] == "-1,-2" and "overwrite" not in recorded


def test_the_written_settings_run_the_model_again(setup, tmp_path, monkeypatch):
    root, model = setup
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(model), "--harmful", str(root / "harmful.txt"), "--harmless", str(root / "harmless.txt"),
                 "--layer", "2", "--strength", "0.9", "--out", "first"]) == 0
    assert main(["run", "--config", "first/forge-hub.toml", "--out", "again"]) == 0  # the flag beats the file
    first, again = files(tmp_path / "first"), files(tmp_path / "again")
    first_toml, again_toml = first.pop("forge-hub.toml"), again.pop("forge-hub.toml")
    assert first == again and first_toml != again_toml
    assert load_toml((tmp_path / "again" / "forge-hub.toml").read_text())["out"] == "again"


def test_environment_beats_the_file_and_flags_beat_both(setup, tmp_path, monkeypatch, capsys):
    root, model = setup
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(f'model = "{model}"\nlayer = 1\nharmful = "{root / "harmful.txt"}"\n'
                                     f'harmless = "{root / "harmless.txt"}"\n')
    monkeypatch.setenv("FORGE_HUB_LAYER", "2")
    monkeypatch.setenv("FORGE_HUB_STRENGTH", "0.5")
    assert main(["compute", "--config", "c.toml", "--out", "env"]) == 0
    settings = load_toml((tmp_path / "env" / "forge-hub.toml").read_text())
    assert settings["layer"] == 2.0 and settings["strength"] == 0.5
    assert main(["compute", "--config", "c.toml", "--layer", "3", "--out", "flag"]) == 0
    assert load_toml((tmp_path / "flag" / "forge-hub.toml").read_text())["layer"] == 3.0


@pytest.mark.parametrize("content, message", [
    ("n_promts = 5\n", "'n_promts' is not a setting of this command"),
    ("n_prompts = 'many'\n", "n_prompts: 'many' is not a valid value"),
    ("method = 'pca'\n", "'pca' is not one of"),
    ("optimize = 'yes'\n", "optimize must be true or false"),
    ("[search]\ntrials = 5\n", "tables (search) are not settings"),
    ("model = \n", "is not valid TOML"),
])
def test_a_bad_config_file_is_refused_before_any_work(content, message, setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(content)
    assert main(["run", str(setup[1]), "--config", "bad.toml", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and "Traceback" not in err and not (tmp_path / "x").exists()


def test_a_list_in_the_file_is_the_flags_comma_list(capsys):
    """``search_without = [...]`` reaches the run as ``--search-without a,b`` would; a bad item fails the parse."""
    from forge_hub.cli import build_parser, command_parsers
    from forge_hub.cli.config import settings_from_file_and_environment, use_as_defaults

    parser = build_parser()
    run = command_parsers(parser)["run"]
    both = ["per-layer-directions", "start-up-ladder"]
    use_as_defaults(run, settings_from_file_and_environment(run, {"search_without": both}, "f.toml", environ={}))
    assert parser.parse_args(["run", "m", "--out", "o"]).search_without == ",".join(both)
    use_as_defaults(run, settings_from_file_and_environment(run, {"search_without": ["kernels"]}, "f.toml", environ={}))
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "m", "--out", "o"])
    assert "cannot switch off kernels" in capsys.readouterr().err
