"""appliance.background: a job runs in its own thread from the start, and wait() hands
back its result, or raises its exception in the waiting thread (every time)."""

from __future__ import annotations

import threading

import pytest

from appliance.background import Background
from appliance.errors import BoardError


def test_the_job_runs_before_anyone_waits_and_wait_returns_its_result() -> None:
    started, release = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        release.wait(10)
        return threading.current_thread().name

    work = Background("board-modules", job)
    assert started.wait(10)  # running already, in its own thread
    release.set()
    assert work.wait() == "board-modules"
    assert work.wait() == "board-modules"


def test_the_jobs_error_is_raised_by_every_wait() -> None:
    def job() -> None:
        raise BoardError("modprobe fec failed: no such module")

    work = Background("board-modules", job)
    for _ in range(2):
        with pytest.raises(BoardError, match="modprobe fec failed"):
            work.wait()
