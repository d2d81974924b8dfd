"""Where a search's trials live, so that several processes or machines can add to one study.

A study is an Optuna storage: a SQLite file (the default), a database URL (``postgresql://``,
``mysql://``, ``sqlite:///``) or a journal file (``*.journal``; one append-only log, safe on a
shared file system). Every process that searches it must score trials the same way, so the
process that creates the study stores in it what defines a trial: the refusal directions
(as safetensors bytes) and a fingerprint of the scoring setup. A process that joins reads the
directions from the study instead of computing its own, and refuses to join when its setup
differs.

Workers that die mid-trial are noticed through heartbeats: a running trial whose process has
not reported for two heartbeat intervals is marked failed by whichever process looks next, and
Optuna's retry callback queues the same parameters again, so the trial is re-run, not lost.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # noqa: PLC2701 - the interface a heartbeat storage implements
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.errors import MissingDependencyError, SettingsError
from forge_hub.schema import DirectionMetadata

log = logging.getLogger(__name__)

JOURNAL_SUFFIXES = (".journal", ".jsonl", ".log")
URL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
DIRECTIONS_KEY = "forge_hub.directions"  # followed by .0, .1, ...: a text column may hold 64 KB
SETUP_KEY = "forge_hub.setup"
READY_KEY = "forge_hub.ready"
CHUNK_CHARS = 60_000
MAX_RETRIES = 3


@dataclass(frozen=True)
class StudyLocation:
    """A parsed ``--study``: a SQLite file path, a journal file path or a database URL."""

    kind: str  # "sqlite", "journal" or "url"
    target: str  # the path, or the URL as given

    @classmethod
    def parse(cls, text: str | Path) -> StudyLocation:
        text = str(text)
        scheme = text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
        if scheme:
            if scheme not in URL_SCHEMES:
                raise SettingsError(f"{text.split('://', 1)[0]}:// is not a database Optuna can store a study in",
                                    "give {study} as a file (SQLite, or *.journal) or a URL such as "
                                    "postgresql://user@host/db", input="study")
            return cls("url", text)
        if text.endswith(JOURNAL_SUFFIXES):
            return cls("journal", text)
        return cls("sqlite", text)

    @property
    def path(self) -> Path | None:
        """The local file, when the study is one (what plots are written beside)."""
        if self.kind in ("sqlite", "journal"):
            return Path(self.target)
        if self.target.startswith("sqlite:///"):
            return Path(self.target[len("sqlite:///"):])
        return None

    def describe(self) -> str:
        """For messages and records: files as absolute paths, URLs without a password."""
        if self.path is not None:
            return str(self.path.resolve())
        scheme, rest = self.target.split("://", 1)
        if "@" in rest:
            credentials, host = rest.rsplit("@", 1)
            rest = f"{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else rest
        return f"{scheme}://{rest}"

    def storage(self, heartbeat: int) -> BaseStorage:
        """The Optuna storage, with heartbeats and retries of trials whose process died."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
            if self.kind == "journal":
                return HeartbeatJournalStorage(JournalFileBackend(self.target), heartbeat=heartbeat, on_stale=retry)
            url = f"sqlite:///{self.target}" if self.kind == "sqlite" else self.target
            # several processes write one SQLite file: wait for its lock instead of failing after 5 s
            engine = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else None
            for attempt in range(5):
                try:
                    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                      grace_period=2 * heartbeat, heartbeat_stale_trial_callback=retry)
                except ImportError as error:  # SQLAlchemy found no driver for the URL's database
                    fix = ("pip install 'forge-hub[postgres]'" if url.startswith("postgres") else
                           "pip install 'forge-hub[mysql]' and write the URL as mysql+pymysql://..."
                           if url.startswith("mysql") else "install the driver SQLAlchemy names for this database")
                    raise MissingDependencyError(f"no database driver for {self.describe()}: {error}", fix) from error
                except (OperationalError, IntegrityError, ProgrammingError):
                    # processes starting together race to create the tables of a new database (on
                    # PostgreSQL the loser's CREATE TYPE fails as a ProgrammingError: DuplicateObject)
                    if attempt == 4:
                        raise
                    time.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage that records heartbeats, which Optuna offers for databases only.

    The heartbeat is a trial system attribute holding the wall-clock time, so the machines that
    share the journal need roughly agreeing clocks (the grace period is two intervals)."""

    def __init__(self, backend: JournalFileBackend, *, heartbeat: int,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None) -> None:
        super().__init__(backend)
        self._heartbeat, self._on_stale = heartbeat, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, "forge_hub.heartbeat", time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process declared this trial dead; its retry is queued

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        deadline = time.time() - 2 * self._heartbeat
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get("forge_hub.heartbeat")
            started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
            if (beat if beat is not None else started) < deadline:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None:
        return self._on_stale


def setup_fingerprint(setup: Mapping[str, Any]) -> dict[str, str]:
    """What every process must share to score trials alike, each value hashed (prompts are long)."""
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for key, value in setup.items()}


def join_study(location: StudyLocation, name: str, *, heartbeat: int, setup: Mapping[str, Any],
               directions: Callable[[], RefusalDirections], start_trials: Callable[[RefusalDirections], list[dict]],
               sampler: Callable[[int | None], optuna.samplers.BaseSampler], seed: int,
               wait_seconds: float = 120.0) -> tuple[optuna.Study, RefusalDirections]:
    """Open the study, creating it when it does not exist yet.

    The creator computes the directions, stores them with the setup fingerprint and queues the
    start-up trials (the default edit first); a process that joins uses the stored directions (a
    process racing to create the same study drops its own) after checking its setup matches.
    A joiner's sampler gets its own seed: with the creator's, it would propose the same random
    start-up trials again.
    """
    storage = location.storage(heartbeat)
    fingerprint = setup_fingerprint(setup)
    study = _load(storage, name, sampler(_joiner_seed(seed)))
    if study is None:
        artifact = directions()
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "minimize"],
                                        sampler=sampler(seed))
        except optuna.exceptions.DuplicatedStudyError:
            log.info("another process created %s first; using its directions", location.describe())
            study = _load(storage, name, sampler(_joiner_seed(seed)))
        else:
            _store_directions(study, artifact)
            study.set_user_attr(SETUP_KEY, fingerprint)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["refusals", "kl"])
            for params in start_trials(artifact):
                study.enqueue_trial(params)
            study.set_user_attr(READY_KEY, True)  # last: joiners wait for it
            return study, artifact
    assert study is not None
    _wait_until_ready(study, location, wait_seconds)
    _check_setup(study.user_attrs.get(SETUP_KEY, {}), fingerprint, location)
    return study, load_directions(study)


def _load(storage: BaseStorage, name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        return None


def _joiner_seed(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
                                         .encode()).digest()[:4], "little")


def _wait_until_ready(study: optuna.Study, location: StudyLocation, wait_seconds: float) -> None:
    """The creator stores the directions right after creating the study: wait that long at most."""
    deadline = time.monotonic() + wait_seconds
    while not study.user_attrs.get(READY_KEY):
        if time.monotonic() > deadline:
            raise SettingsError(f"study {location.describe()} has no refusal directions: the process that created "
                                "it stopped before storing them, or an older forge-hub made it",
                                "start a new study (another {study} file or --study-name), or delete this one",
                                input="study")
        time.sleep(1.0)


def _check_setup(stored: Mapping[str, str], mine: Mapping[str, str], location: StudyLocation) -> None:
    differing = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    if differing:
        raise SettingsError(f"study {location.describe()} scores trials with another {', '.join(differing)} than "
                            "this command, so their scores could not be compared",
                            "give every process of one study the same model, prompts and search flags, or use "
                            "another {study}", input="study")


def _store_directions(study: optuna.Study, artifact: RefusalDirections) -> None:
    tensors = {"harmful_mean": artifact.harmful_mean.float().contiguous(),
               "harmless_mean": artifact.harmless_mean.float().contiguous(),
               "directions": artifact.directions.float().contiguous()}
    if artifact.subspaces is not None:
        tensors["subspaces"] = artifact.subspaces.float().contiguous()
    tensors.update({f"scores.{k}": v.float().contiguous() for k, v in artifact.scores.items()})
    text = base64.b64encode(save_tensors(tensors)).decode()
    chunks = [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
    for i, chunk in enumerate(chunks):
        study.set_user_attr(f"{DIRECTIONS_KEY}.{i}", chunk)
    study.set_user_attr(f"{DIRECTIONS_KEY}.metadata", artifact.metadata.to_json())
    study.set_user_attr(f"{DIRECTIONS_KEY}.chunks", len(chunks))


def load_directions(study: optuna.Study) -> RefusalDirections:
    attrs = study.user_attrs
    text = "".join(attrs[f"{DIRECTIONS_KEY}.{i}"] for i in range(int(attrs[f"{DIRECTIONS_KEY}.chunks"])))
    tensors = load_tensors(base64.b64decode(text))
    scores = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("scores.")}
    return RefusalDirections(tensors["harmful_mean"], tensors["harmless_mean"], tensors["directions"],
                             tensors.get("subspaces"), scores,
                             DirectionMetadata.from_json(attrs[f"{DIRECTIONS_KEY}.metadata"]))


@dataclass(frozen=True)
class TrialCounts:
    complete: int
    running: int
    waiting: int


def trial_counts(study: optuna.Study) -> TrialCounts:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
    return TrialCounts(*(sum(t.state == s for t in trials)
                         for s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)))


def is_surplus(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """Whether ``trial`` would take the study past ``target`` finished trials.

    Two processes may start a trial for the last free place at the same moment; the lower trial
    number keeps it. Counted: finished trials, and running ones numbered below this one."""
    taken = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                if t.state == TrialState.COMPLETE or t.number < trial.number)
    return taken >= target
