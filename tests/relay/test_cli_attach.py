"""``appliance nbd attach | detach | status`` from the command line: real processes, real
servers; on a host without the nbd driver the commands must fail with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.kernel import devices

HAVE_NBD = devices.have_driver()


def appliance(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("appliance: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


@pytest.mark.skipif(HAVE_NBD, reason="this host has the nbd driver")
def test_status_without_driver() -> None:
    proc = appliance("nbd", "status")
    assert proc.returncode == 1
    assert "no nbd driver" in one_line_error(proc)


@pytest.mark.skipif(HAVE_NBD, reason="this host has the nbd driver")
@pytest.mark.interop
@pytest.mark.parametrize("extra", [["--no-root-daemon"], ["--detach", "--no-root-daemon"]])
def test_attach_without_driver_fails_cleanly(nbd_servers, tmp_path: Path, psk_file: Path,
                                             extra: list[str]) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(b"\0" * (1 << 20))
    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    proc = appliance("nbd", "attach", srv.uri(), *extra)
    assert proc.returncode == 1
    assert "nbd driver" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_arguments_exit_2() -> None:
    proc = appliance("nbd", "attach", "nbd://127.0.0.1/x", "--reconnect-deadline", "soon")
    assert proc.returncode == 2
    assert "reconnect deadline" in one_line_error(proc)
    proc = appliance("nbd", "attach", "nbds://a@127.0.0.1/x?tls-psk-file=keys.psk")
    assert proc.returncode == 2
    assert "absolute path" in one_line_error(proc)
    proc = appliance("nbd", "detach", "/dev/sda")
    assert proc.returncode == 1
    assert "not an nbd device" in one_line_error(proc)
