"""Outputs appear whole or not at all, with the permissions of any other new file."""

from __future__ import annotations

import os

import pytest

from forge_hub.errors import OutputError
from forge_hub.outputs.staging import staged_output


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_finished_output_gets_the_usual_modes(tmp_path, umask_022):
    dest = tmp_path / "out"
    with staged_output(dest) as tmp:
        (tmp / "private.bin").write_bytes(b"x")
        (tmp / "private.bin").chmod(0o600)  # as safetensors' save_file leaves its files
        (tmp / "script.sh").write_text("#!/bin/sh\n")
        (tmp / "script.sh").chmod(0o755)
        (tmp / "sub").mkdir(mode=0o700)
        assert not dest.exists()  # nothing at the destination until the block succeeds
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    assert oct((dest / "private.bin").stat().st_mode & 0o777) == "0o644"
    assert oct((dest / "script.sh").stat().st_mode & 0o777) == "0o755"  # a mode chosen on purpose is kept
    assert oct((dest / "sub").stat().st_mode & 0o777) == "0o755"


def test_a_failed_write_leaves_nothing_and_an_existing_output_needs_overwrite(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(dest) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash half way")
    assert list(tmp_path.iterdir()) == []
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already exists") as err, staged_output(dest):
        pass
    assert "{overwrite}" in err.value.hint and err.value.input == "out" and (dest / "old.txt").read_text() == "old"
    with pytest.raises(OutputError, match="not a forge-hub output"), staged_output(dest, overwrite=True):
        pass  # --overwrite never takes a folder forge-hub did not write
    assert (dest / "old.txt").read_text() == "old"
    (dest / "old.txt").unlink()
    with staged_output(dest, overwrite=True) as tmp:  # an empty folder can be taken
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in dest.iterdir()) == [".forge-hub-output.json", "new.txt"]
    with staged_output(dest, overwrite=True) as tmp:  # and so can a previous output of the same kind
        (tmp / "newer.txt").write_text("newer")
    assert sorted(p.name for p in dest.iterdir()) == [".forge-hub-output.json", "newer.txt"]
    with pytest.raises(OutputError, match="a forge-hub model output"), staged_output(dest, overwrite=True,
                                                                                      kind="directions"):
        pass
