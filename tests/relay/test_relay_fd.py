"""``python -m appliance.relay --fd N``: a descriptor that is not a stream socket is one
clear line and exit 2, before any connection is tried (the URI points nowhere)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def relay(fd: int, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.relay", "--fd", str(fd),
                           "nbd://127.0.0.1:1/x"], capture_output=True, text=True,
                          timeout=60, **kwargs)  # type: ignore[call-overload]


def assert_one_line(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("relay: error: --fd ")
    assert fragment in proc.stderr


def test_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_bytes(b"x")
    with path.open("rb") as f:
        proc = relay(f.fileno(), pass_fds=(f.fileno(),))
    assert_one_line(proc, "is not a socket")


def test_closed_descriptor_is_refused() -> None:
    proc = relay(987)
    assert_one_line(proc, "is not a socket")


def test_datagram_socket_is_refused() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        proc = relay(a.fileno(), pass_fds=(a.fileno(),))
    assert_one_line(proc, "is not a stream socket")
