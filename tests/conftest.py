"""Shared fixtures; the helpers themselves live in the ``helpers`` package (``from helpers.tiny import ...``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# `evaluate` answers XSTest's 250 safe prompts by default: the CLI tests leave it out (as --no-xstest
# does) so each stays as fast as before; tests/test_xstest_default.py measures the default.
os.environ.setdefault("FORGE_HUB_NO_XSTEST", "1")
# Under pytest-xdist (the README's `-n auto`) each worker gets its share of the cores: torch's
# default of one thread per core in every worker would oversubscribe the CPU (OMP_NUM_THREADS: the
# same for the CLI subprocesses some tests start). An OMP_NUM_THREADS set by the caller wins, so the
# suite can be kept to one core beside a timed benchmark.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch

    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    _threads = int(os.environ.get("OMP_NUM_THREADS") or _share)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

from helpers.tiny import make_tokenizer, write_prompt_files  # noqa: E402


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def prompt_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_prompt_files(tmp_path, comment="test prompts")
