"""Bad input never costs the user a file: every row of this table goes through the forge-hub command
as a user types it, and must end with exit code 2, a message naming the problem and a fix, no
traceback, no new or partial folder, and the source and its neighbours byte for byte unchanged.

Then the two ways a run can end badly that no check can prevent: killed mid-write (SIGKILL,
SIGTERM) and two runs writing the same output at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.tiny import HARMFUL, make_model, save_model, write_prompt_files

from forge_hub.cli import main


def snapshot(root: Path, *, markers: bool = True) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes (``markers``: with the finished-
    output markers, which hold the time they were written)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if not markers and path.name == ".forge-hub-output.json":
            continue
        rel = path.relative_to(root).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny model in three shards, a direction artifact for it, prompt files, and neighbours."""
    root = tmp_path_factory.mktemp("bad-inputs")
    model = save_model(make_model("llama"), root / "models" / "tiny", max_shard_size="60KB")
    assert len(list(model.glob("*.safetensors"))) >= 3
    (root / "models" / "neighbour.txt").write_text("a file beside the model\n")
    write_prompt_files(root / "prompts")
    (root / "prompts" / "long.txt").write_text("\n".join(HARMFUL[:4] + ["write a poem " * 200]) + "\n")
    assert main(["compute", str(model), "--harmful", str(root / "prompts" / "harmful.txt"), "--harmless",
                 str(root / "prompts" / "harmless.txt"), "--layer", "2", "--out", str(root / "directions")]) == 0
    other = save_model(make_model("qwen2", layers=3), root / "models" / "other")
    assert main(["compute", str(other), "--harmful", str(root / "prompts" / "harmful.txt"), "--harmless",
                 str(root / "prompts" / "harmless.txt"), "--layer", "1", "--out", str(root / "other-directions")]) == 0
    (root / "models" / "weights.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # the checks run before it is read
    (root / "a-file.txt").write_text("not a folder\n")
    broken = root / "broken"
    broken.mkdir()
    for name, damage in (("truncated", "truncate"), ("garbage", "header"), ("badconfig", "config"),
                         ("pickled", "pickle")):
        folder = broken / name
        shutil.copytree(model, folder)
        shard = sorted(folder.glob("model-*.safetensors"))[0]
        if damage == "truncate":
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        elif damage == "header":
            shard.write_bytes((2**62).to_bytes(8, "little") + b"{}")  # claims an exabyte of header
        elif damage == "config":
            (folder / "config.json").write_text("{not json")
        else:
            for p in folder.glob("*.safetensors*"):
                p.unlink()
            (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    return root


def _rows(root: Path) -> list[tuple[str, list[str], str, str]]:
    tiny, models, work = root / "models" / "tiny", root / "models", root / "work"
    harmful, harmless = str(root / "prompts" / "harmful.txt"), str(root / "prompts" / "harmless.txt")
    prompts = ["--harmful", harmful, "--harmless", harmless]
    d = str(root / "directions")
    return [
        ("apply into the source's parent", ["apply", str(tiny), "--directions", d, "--out", str(models),
                                            "--overwrite"], "is the source", "--out"),
        ("compute onto the source", ["compute", str(tiny), *prompts, "--out", str(tiny), "--overwrite"],
         "is the source", "--out"),
        ("apply a GGUF into its own folder", ["apply", str(models / "weights.gguf"), "--directions", d,
                                              "--to-safetensors", "--out", str(models), "--overwrite"],
         "is the source", "--out"),
        ("empty --out", ["apply", str(tiny), "--directions", d, "--out", "", "--overwrite"],
         "no output folder given", "--out"),
        ("--out the current directory", ["apply", str(tiny), "--directions", d, "--out", ".", "--overwrite"],
         "current directory", "--out"),
        ("--out a folder holding the working directory", ["apply", str(tiny), "--directions", d, "--out",
                                                          str(work.parent), "--overwrite"], "holds it", "--out"),
        ("--out inside the source", ["apply", str(tiny), "--directions", d, "--out", str(tiny / "sub")],
         "inside the source folder", "--out"),
        ("--overwrite of a folder forge-hub did not write", ["apply", str(tiny), "--directions", d, "--out",
                                                             str(root / "prompts"), "--overwrite"],
         "not a forge-hub output", "--out"),
        ("--overwrite of directions with a model", ["apply", str(tiny), "--directions", d, "--out",
                                                    str(root / "other-directions"), "--overwrite"],
         "a forge-hub directions output", "--out"),
        ("--out under a file", ["apply", str(tiny), "--directions", d, "--out", str(root / "a-file.txt" / "sub")],
         "is a file, not a folder", "--out"),
        ("--out in a folder no one can write", ["apply", str(tiny), "--directions", d, "--out",
                                                "/sys/forge-hub-test-output"], "cannot write in", "--out"),
        ("--layer past the last layer", ["compute", str(tiny), *prompts, "--layer", "99", "--out",
                                         str(work / "dirs")], "past the model's last layer", "--layer"),
        ("--strength nan", ["apply", str(tiny), "--directions", d, "--strength", "nan", "--out", str(work / "m")],
         "must be a finite number", "--strength"),
        ("--strength inf", ["run", str(tiny), *prompts, "--strength", "inf", "--out", str(work / "m")],
         "must be a finite number", "--strength"),
        ("a direction of another model", ["apply", str(tiny), "--directions", str(root / "other-directions"),
                                          "--out", str(work / "m")], "direction has 3 layers, the model has 4",
         "compute"),
        ("a truncated shard", ["apply", str(root / "broken" / "truncated"), "--directions", d, "--out",
                               str(work / "m")], "is not a valid safetensors file", "again"),
        ("a shard whose header claims an exabyte", ["apply", str(root / "broken" / "garbage"), "--directions", d,
                                                    "--out", str(work / "m")], "is not a valid safetensors file",
         "again"),
        ("config.json that is not JSON (apply)", ["apply", str(root / "broken" / "badconfig"), "--directions", d,
                                                  "--out", str(work / "m")], "config.json is not valid JSON",
         "config.json"),
        ("config.json that is not JSON (gguf)", ["gguf", str(root / "broken" / "badconfig"), "--types", "F16",
                                                 "--out", str(work / "g")], "config.json", "config.json"),
        ("only a pickle (compute)", ["compute", str(root / "broken" / "pickled"), *prompts, "--out",
                                     str(work / "dirs")], "no safetensors weights", "pickle"),
        ("only a pickle (evaluate)", ["evaluate", str(root / "broken" / "pickled"), *prompts],
         "no safetensors weights", "pickle"),
        ("only a pickle (chat)", ["chat", str(root / "broken" / "pickled")], "no safetensors weights", "pickle"),
        ("gguf --name with a folder in it", ["gguf", str(tiny), "--types", "F16", "--name", "../x", "--out",
                                             str(work / "g")], "cannot name a GGUF file", "--name"),
        ("a prompt longer than the model's context", ["compute", str(tiny), "--harmful",
                                                      str(root / "prompts" / "long.txt"), "--harmless", harmless,
                                                      "--out", str(work / "dirs")], "tokens long",
         "--max-prompt-tokens"),
        ("evaluate --out onto the model", ["evaluate", str(tiny), *prompts, "--out", str(tiny / "config.json")],
         "inside, the source", "--out"),
        ("a --choice-harmful file that does not exist", ["run", str(tiny), *prompts, "--choice-harmful",
                                                         str(root / "prompts" / "missing.txt"), "--out",
                                                         str(work / "m")], "missing.txt does not exist", "check"),
        ("a model name that is neither a folder nor a Hub id", ["compute", "no-such-model", *prompts, "--out",
                                                                str(work / "dirs")], "no-such-model",
         "no folder 'no-such-model' here"),
    ]


ROW_NAMES = [name for name, *_ in _rows(Path("/x"))]


@pytest.mark.parametrize("row", ROW_NAMES)
def test_bad_input_is_refused_with_a_fix_and_nothing_is_lost(row, models, tmp_path, monkeypatch, capsys):
    if row == "--out in a folder no one can write" and (not Path("/sys").is_dir() or _sys_writable()):
        pytest.skip("needs a folder nobody can write in: /sys is missing or writable here")
    name, argv, message, fix = next(r for r in _rows(models) if r[0] == row)
    work = models / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(models)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"{name}: exit {code}\n{err}"
    assert "Traceback" not in err + out
    assert message in err, err
    assert "fix:" in err and fix in err.split("fix:", 1)[1], err
    after = snapshot(models)
    assert after == before, f"{name} changed {sorted(set(after.items()) ^ set(before.items()))[:5]}"


def _sys_writable() -> bool:
    try:
        Path("/sys/.forge-hub-probe").touch()
    except OSError:
        return False
    Path("/sys/.forge-hub-probe").unlink()
    return True


# --- interrupted runs ------------------------------------------------------------------------------

SLOW_APPLY = textwrap.dedent("""
    # the forge-hub command, pausing after each shard until a go-ahead file exists (at most 300 s), so the
    # test can interrupt it mid-write or let it go on when it should
    import os, sys, time
    import forge_hub.outputs.checkpoint as checkpoint
    original = checkpoint.rewrite_shard
    def slow(*args, **kwargs):
        written = original(*args, **kwargs)
        print("shard written", flush=True)
        deadline = time.monotonic() + 300
        while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return written
    checkpoint.rewrite_shard = slow
    from forge_hub.cli import main
    raise SystemExit(main(sys.argv[2:]))
""")


def _start(go_ahead: Path, *argv: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_APPLY, str(go_ahead), *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _wait_for_a_shard(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    assert line.strip() == "shard written", process.stderr.read()


def _partials(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.partial-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_apply_leaves_no_output_and_the_next_run_cleans_up(sig, models, tmp_path):
    tiny, directions = models / "models" / "tiny", models / "directions"
    out = tmp_path / "edited"
    # never given the go-ahead: it is interrupted mid-write
    process = _start(tmp_path / "never", "apply", str(tiny), "--directions", str(directions), "--out", str(out),
                     cwd=tmp_path)
    _wait_for_a_shard(process)
    partial = _partials(tmp_path, "edited")
    assert len(partial) == 1 and any(partial[0].glob("model-*.safetensors"))  # mid-write, for real
    process.send_signal(sig)
    process.wait(timeout=60)
    assert not out.exists()
    if sig == signal.SIGTERM:  # handled like Ctrl-C: the partial folder goes at once
        assert process.returncode == 143 and "no output was left behind" in process.stderr.read()
        assert _partials(tmp_path, "edited") == []
    else:  # nothing runs on SIGKILL: the partial stays, marked with the dead process
        marker = json.loads((partial[0] / ".forge-hub-partial.json").read_text())
        assert marker["pid"] == process.pid and "apply" in marker["command"]
    done = subprocess.run([sys.executable, "-m", "forge_hub.cli", "apply", str(tiny), "--directions",
                           str(directions), "--out", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if sig == signal.SIGKILL:
        assert f"removed {partial[0]}" in done.stderr and "interrupted run" in done.stderr
    assert _partials(tmp_path, "edited") == []
    clean = tmp_path / "clean"
    assert main(["apply", str(tiny), "--directions", str(directions), "--out", str(clean)]) == 0
    written, uninterrupted = snapshot(out, markers=False), snapshot(clean, markers=False)
    assert written.pop("forge-hub.toml") != uninterrupted.pop("forge-hub.toml")  # each names its own --out
    assert written == uninterrupted  # the re-run wrote what an uninterrupted run writes


def test_two_runs_writing_the_same_output_never_replace_each_other(models, tmp_path):
    tiny, directions = models / "models" / "tiny", models / "directions"
    out = tmp_path / "edited"
    # each pauses after its shards until the test lets it go on (fixed pauses lost the race on a loaded
    # machine: the second run took longer to start than the first to finish, and found the output there)
    first_may_finish, second_may_finish = tmp_path / "first-may-finish", tmp_path / "second-may-finish"
    first = _start(first_may_finish, "apply", str(tiny), "--directions", str(directions), "--out", str(out),
                   cwd=tmp_path)
    _wait_for_a_shard(first)  # the first is writing; the second starts while the output does not exist yet
    second = _start(second_may_finish, "apply", str(tiny), "--directions", str(directions), "--out", str(out),
                    "--dtype", "fp32", cwd=tmp_path)
    _wait_for_a_shard(second)  # both are writing
    first_may_finish.touch()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    first_output = snapshot(out)
    second_may_finish.touch()  # the first's output appeared while the second was writing
    assert second.wait(timeout=120) == 2
    err = second.stderr.read()
    assert "appeared while this run was writing" in err and "fix:" in err and "Traceback" not in err
    assert snapshot(out) == first_output  # the first run's output is whole and untouched
    assert _partials(tmp_path, "edited") == []


def test_overwrite_replaces_a_previous_output_of_the_same_kind(models, tmp_path):
    tiny, directions = models / "models" / "tiny", models / "directions"
    out = tmp_path / "edited"
    assert main(["apply", str(tiny), "--directions", str(directions), "--out", str(out)]) == 0
    first = snapshot(out)
    assert main(["apply", str(tiny), "--directions", str(directions), "--out", str(out), "--strength", "0.5",
                 "--overwrite"]) == 0
    assert snapshot(out) != first and json.loads((out / "abliteration.json").read_text())["settings"]["strength"] == 0.5
    assert json.loads((out / ".forge-hub-output.json").read_text())["kind"] == "model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]  # nothing left beside it
