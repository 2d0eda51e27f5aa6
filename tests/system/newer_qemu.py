"""qemu-system-arm from Debian bookworm-backports (QEMU 10), for the serial-console tests.

QEMU 7.2's i.MX UART model drops console *input* after the first character (measured:
typing into the sabrelite console of 7.2 delivers one byte, QEMU 10 delivers all), so
tests that type at the board use QEMU 10.  The package is downloaded once into the
cache (image.debfetch, no root needed) and run from the unpacked tree; a private mount
namespace hides the host's QEMU 7.2 modules, which QEMU 10 would otherwise try to load.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

from image.debfetch import AptFetcher, cache_dir, extract

HOST_MODULES = "/usr/lib/x86_64-linux-gnu/qemu"


@functools.cache
def _binary() -> str:
    deb = AptFetcher(suite="bookworm-backports", arch="amd64").fetch(r"qemu-system-arm")
    tree = extract(deb, cache_dir() / f"unpacked-{deb.stem}", ["./usr/bin/qemu-system-arm"])
    return str(tree / "usr/bin/qemu-system-arm")


def qemu10_argv(argv: list[str]) -> list[str]:
    """``argv`` (a qemu-system-arm command line) run with QEMU 10 instead.

    Skips the test when not root (the mount namespace needs it) or unshare is missing.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("QEMU 10 runs in a private mount namespace: needs root and unshare")
    binary = _binary()
    empty = cache_dir() / "no-qemu-modules"
    empty.mkdir(exist_ok=True)
    version = subprocess.run(["unshare", "-m", "sh", "-c",
                              f"mount --bind {empty} {HOST_MODULES} 2>/dev/null; "
                              f"exec {binary} --version"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert "version 10." in version or "version 9." in version, version
    script = (f"mount --bind {empty} {HOST_MODULES} 2>/dev/null; "
              f'exec {binary} "$@"')
    return ["unshare", "-m", "sh", "-c", script, "qemu-system-arm", *argv[1:]]
