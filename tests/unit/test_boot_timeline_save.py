"""Where the boot saves its timeline: the /run the root sees, before and after /run moved.

The root step moves /run into /newroot; from then on the initramfs's /run is an empty
directory that switch_root deletes, so a timeline saved there is lost and
``appliance status`` on the root shows no steps.  Directories here stand in for / and
/newroot (plain files, no mounts).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from appliance.boot import sequence
from appliance.boot.timeline import Timeline


def _timeline() -> Timeline:
    tl = Timeline(out=io.StringIO())
    with tl.step("config") as step:
        step.detail = "nbds://10.0.2.2/"
    return tl


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    run_dir, newroot = tmp_path / "run" / "nbdroot", tmp_path / "newroot"
    monkeypatch.setattr(sequence, "RUN_DIR", run_dir)
    monkeypatch.setattr(sequence, "NEWROOT", str(newroot))
    return run_dir, newroot / run_dir.relative_to("/")


def test_after_run_moved_the_timeline_goes_into_the_new_root(dirs: tuple[Path, Path]) -> None:
    run_dir, moved = dirs
    moved.mkdir(parents=True)  # what mount --move /run /newroot/run leaves
    sequence._save(_timeline())
    steps = json.loads((moved / "timeline.json").read_text())
    assert [s["name"] for s in steps] == ["config"]
    assert not (run_dir / "timeline.json").exists()


def test_before_the_root_step_the_timeline_stays_in_run(dirs: tuple[Path, Path]) -> None:
    run_dir, moved = dirs
    sequence._save(_timeline())  # a boot that failed before the root was mounted
    assert json.loads((run_dir / "timeline.json").read_text())[0]["name"] == "config"
    assert not moved.exists()
