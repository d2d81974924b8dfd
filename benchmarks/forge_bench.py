"""Shared pieces of the benchmarks: the refusing fixture and the public prompt sets in ../shared."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FORGE_HUB_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "refusal_direction"
FIXTURE_BUILD = SHARED / "fixtures" / "refusing-smollm2" / "build.py"
CACHE = Path(os.environ.get("FORGE_HUB_CACHE", Path.home() / ".cache" / "forge-hub"))
FORGE_HUB = [sys.executable, "-m", "forge_hub.cli"]  # the forge-hub command of this interpreter's install


def shared_available() -> bool:
    return DATA.is_dir() and FIXTURE_BUILD.exists()


def refusing_fixture() -> Path:
    """Build the safety-tuned SmolLM2 once per machine (about a minute) and return its folder."""
    out = CACHE / "fixtures" / "refusing-smollm2"
    if not (out / "config.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(FIXTURE_BUILD), "--out", str(out)], check=True)
    return out


def second_refusing_model() -> Path:
    """The second refusing model (another safety tuning of the same base, see
    second_refusing_model.py), built once per machine (about 15 minutes on 2 cores)."""
    out = CACHE / "fixtures" / "refusing-smollm2-b"
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("second_refusing_model.py")), "--out", str(out)],
                       check=True)
    return out


def refusing_model(name: str) -> Path:
    """``fixture`` (../shared's refusing-smollm2) or ``second`` (refusing-smollm2-b), built on first use."""
    return {"fixture": refusing_fixture, "second": second_refusing_model}[name]()


def direction_prompts(n: int = 128, seed: int = 1) -> tuple[list[str], list[str]]:
    """Harmful: AdvBench goals; harmless: Alpaca (Arditi et al.'s train split)."""
    harmful = [r["goal"] for r in csv.DictReader((DATA / "raw" / "advbench.csv").open())]
    harmless = [x["instruction"] for x in json.loads((DATA / "splits" / "harmless_train.json").read_text())]
    return random.Random(seed).sample(harmful, n), random.Random(seed).sample(harmless, n)


def evaluation_prompts(n: int = 100) -> tuple[list[str], list[str]]:
    """Held out from both the directions and the fixture's safety tuning (AdvBench, MaliciousInstruct):
    HarmBench validation (standard behaviours) and TDC 2023 for harmful, Alpaca validation for harmless."""
    rows = [r["Behavior"] for r in csv.DictReader((DATA / "raw" / "harmbench_val.csv").open())
            if r["FunctionalCategory"] == "standard"]
    for name in ("tdc2023_dev_behaviors.json", "tdc2023_test_behaviors.json"):
        rows += json.loads((DATA / "raw" / name).read_text())
    unique = list(dict.fromkeys(rows))
    harmless = [x["instruction"] for x in json.loads((DATA / "splits" / "harmless_val.json").read_text())][:n]
    return random.Random(0).sample(unique, n), harmless


def write_lines(path: Path, lines: list[str]) -> Path:
    """One prompt per line; a file that already holds exactly these lines is left untouched, so a
    tool still reading it from an earlier run of the same benchmark never sees it half-written."""
    text = "\n".join(" ".join(line.split()) for line in lines) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path
