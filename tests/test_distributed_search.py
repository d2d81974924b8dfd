"""Several processes adding trials to one study: SQLite file and journal file, as users run them.

Two `--worker` processes and the final command (which picks and applies) share one study and
end with exactly ``--trials`` finished trials, each scored once, and the same pick a single
process would make over those trials. A worker killed mid-trial loses nothing: its trial is
failed once its heartbeat stops and the same parameters are run again.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from helpers.tiny import HARMFUL, make_model, save_model, write_prompt_files
from optuna.trial import TrialState

from forge_hub.abliterate.search import pick_trial
from forge_hub.abliterate.study import StudyLocation

TRIALS = 10


def forge_hub(*argv: object, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "forge_hub.cli", *map(str, argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def load(study: str) -> optuna.Study:
    return optuna.load_study(study_name="forge-hub", storage=StudyLocation.parse(study).storage(60))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    src = save_model(make_model("llama"), root / "tiny")
    write_prompt_files(root)
    # slow trials for the kill test: more prompts, longer answers
    (root / "many.txt").write_text("\n".join(f"{p} (case {i})" for p in HARMFUL for i in range(4)) + "\n")
    return root, src


def search_args(src: Path, root: Path, study: str, *extra: object) -> list[object]:
    # the default run's final choice on the held-out prompts, not XSTest's 200: every process that finds
    # no study computes directions, and these tests are about sharing the trials, not about the choice
    return ["run", src, "--harmful", root / "harmful.txt", "--harmless", root / "harmless.txt", "--optimize",
            "--study", study, "--search-tokens", "6", "--batch-size", "4", "--choice-harmful", "held-out", *extra]


@pytest.fixture(scope="module")
def postgres() -> str:
    """A throw-away PostgreSQL server on loopback, as the two-machine recipe uses (skipped where
    the server or the driver is not installed)."""
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if found is None or importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL server or psycopg not installed")
    bin_dir = Path(found).parent
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="forge-hub-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root with no postgres user to start the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
        os.chown(folder, user.pw_uid, user.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "forge"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://forge@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["study.db", "study.journal", "postgresql"])
def test_two_workers_and_the_final_command_share_one_study(kind, setup, tmp_path, request):
    root, src = setup
    study = request.getfixturevalue("postgres") if kind == "postgresql" else str(tmp_path / kind)
    # a first machine scores a few trials alone, so the study is shared whichever racer below is fastest
    # (on a tiny model one process can finish all ten before the others have loaded)
    first = forge_hub(*search_args(src, root, study, "--trials", 3, "--worker"), cwd=tmp_path)
    assert "holds 3 finished trials" in finish(first)
    args = search_args(src, root, study, "--trials", TRIALS)
    workers = [forge_hub(*args, "--worker", cwd=tmp_path) for _ in range(2)]
    # the run's check after the apply is not what this test is about: a few tokens keep it short
    final = forge_hub(*args, "--out", tmp_path / "model", "--check-tokens", 4, cwd=tmp_path)
    for worker in workers:
        assert "holds 10 finished trials" in finish(worker)
    assert "Pareto front" in finish(final)

    trials = load(study).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS  # exactly --trials, however the three processes raced
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)  # pruned: a lost race
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.PRUNED)
    settings = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(settings)) == TRIALS  # no trial scored twice (the default is queued once)
    assert len({t.user_attrs["process"] for t in complete}) >= 2  # shared: the first 3 and the rest

    # the pick: the one a single process makes over the same finished trials
    single = optuna.create_study(directions=["minimize", "minimize"])
    single.add_trials(complete)
    record = json.loads((tmp_path / "model" / "refusal.json").read_text())["search"]
    alone, _ = pick_trial(single, record["eval_prompts"]["harmful"]["count"])
    picked = next(t for t in complete if t.number == record["trial"])
    assert (picked.params, picked.values) == (alone.params, alone.values)
    assert record["trials"] == TRIALS
    assert record["study"] == (study if kind == "postgresql" else str(Path(study).resolve()))


@pytest.mark.parametrize("kind", ["study.db", "study.journal"])
def test_a_killed_workers_trial_is_run_again(kind, setup, tmp_path):
    root, src = setup
    study = str(tmp_path / kind)
    # slow trials, so the kill lands mid-trial; no start-up ladder, whose eight queued trials would only
    # delay the kill (the queued default trial still goes first)
    slow = ("--eval-harmful", root / "many.txt", "--search-tokens", 32, "--heartbeat", 1,
            "--search-without", "start-up-ladder")
    worker = forge_hub(*search_args(src, root, study, "--trials", 100, "--worker", *slow), cwd=tmp_path)
    running = None
    deadline = time.monotonic() + 300
    while running is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        if Path(study).exists():
            try:
                trials = load(study).trials
            except KeyError:  # not created yet
                continue
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            # a trial being scored: every parameter chosen (the process is recorded then)
            busy = [t for t in trials if t.state == TrialState.RUNNING and "process" in t.user_attrs]
            # past the queued start-up trial, which would otherwise go before the re-queued one
            if done >= 2 and busy:
                worker.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
                worker.wait()
                running = busy[0]
    assert running is not None, "the worker never ran a trial"
    killed = next(t for t in load(study).trials if t.number == running.number)
    if killed.state != TrialState.RUNNING:
        pytest.skip("the worker finished that trial just before it was killed")
    target = sum(t.state == TrialState.COMPLETE for t in load(study).trials) + 2

    final = forge_hub(*search_args(src, root, study, "--trials", target, "--out", tmp_path / "model", *slow,
                                   "--check-tokens", 4), cwd=tmp_path)
    finish(final)
    trials = load(study).trials
    assert next(t for t in trials if t.number == running.number).state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == killed.params  # the same trial, run again
    assert sum(t.state == TrialState.COMPLETE for t in trials) == target


@pytest.mark.parametrize("error", ["ProgrammingError", "OperationalError", "IntegrityError"])
def test_a_process_that_loses_the_race_to_create_the_tables_tries_again(error, monkeypatch, tmp_path):
    """Workers started together on a new database race to create its tables; the loser's error
    (on PostgreSQL: CREATE TYPE ... DuplicateObject, a ProgrammingError) means the tables now
    exist, so it opens the storage again instead of failing."""
    import sqlalchemy.exc

    from forge_hub.abliterate import study as study_module

    real, calls = study_module.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise getattr(sqlalchemy.exc, error)("CREATE TYPE studydirection", {}, Exception("already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "RDBStorage", racing)
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    storage = StudyLocation.parse(str(tmp_path / "study.db")).storage(60)
    assert len(calls) == 2 and optuna.create_study(storage=storage, study_name="s").study_name == "s"
