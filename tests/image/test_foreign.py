"""image.foreign: the user namespace with its own binfmt_misc that runs the armhf tree."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from appliance.errors import ApplianceError
from image.foreign import BINFMT, run_armhf

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not BINFMT.exists(),
                                reason="needs root and qemu-user-static")


def test_starts_from_a_process_with_descriptors_past_nine() -> None:
    """Was: the handshake used dash's '>&N', which takes one digit; inside a test run the
    pipes were past 9, so the build of the Debian root failed with 'unshare failed'."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(12)]
    try:
        busybox = shutil.which("busybox")
        assert busybox is not None, "busybox (Debian package busybox) is needed"
        done = run_armhf([busybox, "true"], timeout=60)
        assert done.returncode == 0, done.stdout
    finally:
        for fd in held:
            os.close(fd)


def _running(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_a_timeout_ends_everything_the_namespace_runs() -> None:
    """Was: an interrupted build left mmdebstrap running, re-parented to PID 1: run() kills
    unshare, the namespace's processes did not go with it, and run() then waited for them
    on the pipes they held (here: for the 60 s of the sleeps)."""
    marker = f"60.{os.getpid()}"  # in the sleeps' own argv
    began = time.monotonic()
    with pytest.raises(ApplianceError, match="did not finish"):
        run_armhf(["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout=3)
    waited = time.monotonic() - began
    left = _running(marker)
    for pid in left:  # the test's own processes, should the fix be gone
        os.kill(pid, 9)
    assert not left, "processes of the namespace outlived unshare"
    assert waited < 30, f"run() returned {waited:.0f} s after its 3 s timeout"
