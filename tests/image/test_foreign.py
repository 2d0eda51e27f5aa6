"""image.foreign: the user namespace with its own binfmt_misc that runs the armhf tree."""

from __future__ import annotations

import os
import shutil

import pytest

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
