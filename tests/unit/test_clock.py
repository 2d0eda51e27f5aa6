"""appliance.boot.clock: the clock moves forward to the build time, never backward."""

from __future__ import annotations

import os
import time
from pathlib import Path

from appliance.boot.clock import advance_to_build_time


def stamp(tmp_path: Path, when: float) -> Path:
    epoch = tmp_path / "clock-epoch"
    epoch.touch()
    os.utime(epoch, (when, when))
    return epoch


def test_a_clock_before_the_build_time_is_set_to_it(tmp_path: Path) -> None:
    future = time.time() + 10 * 86400  # "the build" is later than this machine's clock
    set_to: list[float] = []
    assert advance_to_build_time(stamp(tmp_path, future), set_to.append) == future
    assert set_to == [future]


def test_a_later_clock_is_left_alone(tmp_path: Path) -> None:
    set_to: list[float] = []
    assert advance_to_build_time(stamp(tmp_path, 1735689600), set_to.append) is None
    assert set_to == []


def test_no_epoch_file_changes_nothing(tmp_path: Path) -> None:
    set_to: list[float] = []
    assert advance_to_build_time(tmp_path / "missing", set_to.append) is None
    assert set_to == []


def test_a_clock_that_cannot_be_set_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    def refuse(_: float) -> None:
        raise PermissionError(1, "Operation not permitted")
    assert advance_to_build_time(stamp(tmp_path, time.time() + 86400), refuse) is None
