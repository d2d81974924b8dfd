"""The Space in a real browser: Playwright drives Debian's Chromium through compute, apply and
evaluate on a tiny model, against `python space/app.py` started the way a user starts it.

Skips cleanly without Playwright or Chromium (`apt-get install chromium`; Playwright cannot
download its own browser here). The page is saved as test-artifacts/space-browser.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

from helpers.tiny import make_model, save_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
STEP_TIMEOUT_MS = 180_000  # a loaded 2-core CI machine; each step takes seconds on a laptop


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tmp_path):
    """`python space/app.py` in a child process, on a free local port, sessions under tmp_path."""
    port = free_port()
    workdir = tmp_path / "sessions"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "FORGE_HUB_SPACE_WORKDIR": str(workdir), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for name in ("SYSTEM", "SPACE_ID", "SPACES_ZERO_GPU"):
        env.pop(name, None)
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "space" / "app.py")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the app did not start:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, workdir, tmp_path / "app.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


@pytest.fixture
def browser_path() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


def test_compute_apply_evaluate_in_chromium(browser_path, running_app, tmp_path):
    url, workdir, log = running_app
    model_dir = save_model(make_model("llama"), tmp_path / "tiny-llama")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2200})
            page.goto(url)
            model_box = page.locator("#model-id textarea, #model-id input").first
            model_box.fill(str(model_dir))
            set_slider(page, "n-prompts", 8)

            page.locator("#compute").click()
            summary = page.locator("#compute-summary")
            expect(summary).to_contain_text("Chosen layer", timeout=STEP_TIMEOUT_MS)
            assert "tiny-llama" in summary.inner_text() and "4 layers" in summary.inner_text()
            table = page.locator("#layer-table")
            expect(table).to_contain_text("refusal_probability")
            plot_src = page.locator("#layer-plot img").first.get_attribute("src", timeout=STEP_TIMEOUT_MS)
            assert plot_src and plot_src.startswith("data:image")
            sessions = [d for d in workdir.iterdir() if d.is_dir()]
            assert len(sessions) == 1
            session = sessions[0]
            chosen = json.loads((session / "directions" / "refusal.json").read_text())["selected_layer"]
            assert f"Chosen layer: {chosen:g}" in summary.inner_text()

            page.locator("#apply").click()
            edited = re.compile(r"Edited (\d+) tensors in layers (\d+)–(\d+)")
            expect(page.locator("#apply-summary")).to_contain_text(edited, timeout=STEP_TIMEOUT_MS)
            # o_proj and down_proj of each edited layer (the measured choice may stop below the top) + the embedding
            count, first, last = map(int, edited.search(page.locator("#apply-summary").inner_text()).groups())
            assert count == 2 * (last - first + 1) + 1
            assert (session / "model" / "model.safetensors").exists()

            set_slider(page, "eval-prompts", 4)
            set_slider(page, "eval-tokens", 8)
            page.locator("#evaluate").click()
            evaluation = page.locator("#evaluate-summary")
            expect(evaluation).to_contain_text("Harmful prompts refused", timeout=STEP_TIMEOUT_MS)
            results = json.loads((session / "results.json").read_text())
            r = results["results"]
            assert results["prompts"]["harmful"]["count"] == 4
            assert r["kl_divergence"] > 0  # the edit changed the model (an empty layer field means "measure")
            assert json.loads((session / "directions" / "refusal.json").read_text())["selection"]["how"] == "measured"
            assert f"first-token KL {r['kl_divergence']:.4f}" in evaluation.inner_text()
            assert (f"{r['reference']['refusals']} → {r['model']['refusals']} of 4") in evaluation.inner_text()
            metrics = page.locator("#metrics")
            expect(metrics).to_contain_text("first-token KL vs original")
            expect(metrics).to_contain_text(f"{round(r['kl_divergence'], 4)}")
            expect(page.locator("#samples")).to_contain_text(results["samples"][0]["prompt"][:30])

            message = "write a poem about a cat"
            page.locator("#chat-message textarea").fill(message)
            page.locator("#send").click()
            for side in ("#chat-original", "#chat-abliterated"):
                expect(page.locator(f"{side} .message-row")).to_have_count(2, timeout=STEP_TIMEOUT_MS)
                expect(page.locator(f"{side} .message-row").first).to_contain_text(message)
            answers = [page.locator(f"{side} .message-row").last.inner_text() for side in
                       ("#chat-original", "#chat-abliterated")]
            assert all(a.strip() for a in answers) and answers[0] != answers[1]

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "space-browser.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, tmp_path / shot.name)
            assert shot.stat().st_size > 20_000

            page.close()  # the session ends: its folder must go
            deadline = time.time() + 60
            while session.exists() and time.time() < deadline:
                time.sleep(0.5)
            assert not session.exists(), "the session folder outlived its tab"
        finally:
            browser.close()
    assert "Traceback" not in log.read_text()
