"""The Space as the Hub receives it: a folder that runs without forge-hub installed, and its push.

The bundle's app must import the forge-hub copy beside it (a Space installs requirements.txt
only, and forge-hub is not on PyPI), its requirements must be the package's own dependencies,
satisfied by the versions these tests run with, and the push must create a Gradio Space repo
with the requested hardware and replace the packages whole on an update.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers.hub_server import USER, FakeHub, point_client_at
from packaging.requirements import Requirement

from forge_hub.cli import flag_name, main
from forge_hub.errors import HubError
from forge_hub.webapp.bundle import build_space, push_space, requirements_text, source_root, space_metadata

ROOT = source_root()
TOKEN = "hf_space_test"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_space(tmp_path_factory.mktemp("space") / "build")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub(token=TOKEN) as server:
        point_client_at(server, monkeypatch, tmp_path)
        yield server


def test_checked_in_requirements_are_the_packages_own():
    sdk = space_metadata(ROOT / "space" / "README.md")["sdk_version"]
    text = (ROOT / "space" / "requirements.txt").read_text(encoding="utf-8")
    assert text == requirements_text(str(sdk)), "space/requirements.txt is stale: run `forge-hub space` and copy it"
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = {Requirement(line).name.lower().replace("_", "-") for line in lines}
    assert {"torch", "transformers", "safetensors", "huggingface-hub", "gradio", "spaces"} <= names
    assert not any(n in names for n in ("pytest", "playwright", "forge-hub"))  # no test tools, no PyPI forge-hub
    assert f"gradio[oauth]=={sdk}" in lines  # the login button needs the extra; the pin matches the SDK


def test_tested_versions_satisfy_the_space_requirements(bundle):
    for line in (bundle.folder / "requirements.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f"{req} but the tests run {installed}"


def test_bundle_holds_the_app_and_forge_hubs_source(bundle):
    files = set(bundle.files)
    assert {"app.py", "README.md", "requirements.txt", "forge_hub/__init__.py", "forge_hub/webapp/jobs.py",
            "forge_hub/hub/templates/model_card.md", "datasets_builders/forge_prompts.py",
            "datasets_builders/data/curated-harmful.txt"} <= files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert (bundle.folder / "app.py").read_bytes() == (ROOT / "space" / "app.py").read_bytes()
    meta = space_metadata(bundle.folder / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["hf_oauth"] is True
    assert "manage-repos" in meta["hf_oauth_scopes"]
    for module in (ROOT / "forge_hub").glob("*.py"):
        assert (bundle.folder / "forge_hub" / module.name).read_bytes() == module.read_bytes()


def test_bundle_app_runs_on_the_forge_hub_beside_it(bundle):
    """As on a Space: started from its own folder, the app builds on the bundled packages."""
    code = ("import app, forge_hub, datasets_builders, gradio as gr\n"
            "print(forge_hub.__file__); print(datasets_builders.__file__)\n"
            "demo = app.build_app(); assert isinstance(demo, gr.Blocks)\n"
            "print(sorted(d.api_name for d in demo.fns.values() if d.api_name))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SYSTEM", "SPACE_ID")}
    out = subprocess.run([sys.executable, "-c", code], cwd=bundle.folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert Path(lines[0]).resolve().is_relative_to(bundle.folder)
    assert Path(lines[1]).resolve().is_relative_to(bundle.folder)
    for name in ("compute", "apply", "evaluate", "chat", "push"):
        assert f"'{name}'" in lines[2]


def test_push_creates_a_gradio_space_with_the_hardware_asked_for(bundle, hub):
    commit = push_space(bundle, f"{USER}/forge-hub", token=TOKEN, hardware="zero-a10g")
    (created,) = hub.created
    assert (created["type"], created["sdk"], created["hardware"], created["name"]) == (
        "space", "gradio", "zero-a10g", "forge-hub")
    assert "/spaces/" in commit
    (sent,) = hub.commits
    assert sent.repo_type == "space" and sent.repo_id == f"{USER}/forge-hub"
    assert set(sent.files) == set(bundle.files)
    for path, data in sent.files.items():
        assert data == (bundle.folder / path).read_bytes()
    assert TOKEN not in commit


def test_update_replaces_the_packages_whole(bundle, hub):
    hub.add_repo(f"{USER}/forge-hub", {"README.md": b"---\nsdk: gradio\n---\n", "forge_hub/removed_module.py": b"x",
                                       "notes.txt": b"kept"}, repo_type="space")
    with pytest.raises(HubError, match="already exists") as err:
        push_space(bundle, f"{USER}/forge-hub", token=TOKEN)
    assert "--exist-ok" in err.value.render(flag_name)[1] and not hub.commits
    push_space(bundle, f"{USER}/forge-hub", token=TOKEN, exist_ok=True)
    (sent,) = hub.commits
    assert sent.deleted == ["forge_hub/removed_module.py"]
    repo = hub.repo(f"{USER}/forge-hub", "space")
    assert "forge_hub/removed_module.py" not in repo.files and repo.files["notes.txt"] == b"kept"
    assert repo.files["app.py"] == (bundle.folder / "app.py").read_bytes()


def test_cli_checks_the_push_target_before_writing_anything(tmp_path, hub, capsys, monkeypatch):
    out = tmp_path / "build"
    assert main(["space", "--out", str(out), "--push-to", "no-owner"]) == 2
    assert "names no owner" in capsys.readouterr().err and not out.exists()
    assert main(["space", "--out", str(out), "--push-to", f"{USER}/fh", "--hardware", "zero-h100"]) == 2
    assert "unknown Space hardware 'zero-h100'" in capsys.readouterr().err and not out.exists()
    assert main(["space", "--out", str(out), "--push-to", f"{USER}/fh"]) == 2  # no token anywhere
    assert "no Hugging Face token" in capsys.readouterr().err and not out.exists()
    monkeypatch.setenv("SPACE_PUSH_TOKEN", TOKEN)
    assert main(["space", "--out", str(out), "--push-to", f"{USER}/fh", "--token-env", "SPACE_PUSH_TOKEN"]) == 0
    assert "pushed:" in capsys.readouterr().out
    assert (out / "app.py").exists() and hub.commits[0].repo_id == f"{USER}/fh"
    assert hub.tokens_seen() == {TOKEN}


def test_build_refuses_a_tree_without_the_space(tmp_path):
    with pytest.raises(Exception, match="space") as err:
        build_space(tmp_path / "out", root=tmp_path)
    assert "clone" in err.value.hint and not (tmp_path / "out").exists()


def test_a_card_the_hub_refuses_is_reported_with_the_space_fix(bundle, hub):
    hub.fail["validate-yaml"] = (400, "Invalid metadata in README.md")
    with pytest.raises(HubError, match="rejected the README's metadata") as err:
        push_space(bundle, f"{USER}/forge-hub", token=TOKEN)
    assert "space/README.md" in err.value.hint and hub.commits == []
