"""Loopback TCP ports seen in the kernel's table, without connecting to them: waiting
until something listens, and whether a connection to a port is established.

The kernel's table (/proc/net/tcp) is read instead: a server that accepts one connection
only (QEMU's ``-chardev socket,server=on``, ``socat tcp-listen`` without ``fork``) would
otherwise spend it on the probe.  Bounded by a deadline.
"""

from __future__ import annotations

import time

from appliance.deadline import Deadline

TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"  # the state column of /proc/net/tcp
POLL_S = 0.05


def _rows() -> list[list[str]]:
    with open("/proc/net/tcp", encoding="ascii") as f:
        return [line.split() for line in f.readlines()[1:]]


def listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:``port`` now."""
    return any(r[1] == f"0100007F:{port:04X}" and r[3] == TCP_LISTEN for r in _rows())


def established(port: int) -> bool:
    """Whether a connection to 127.0.0.1:``port`` is established now (the remote column:
    QEMU's user networking connects to the host's servers from 127.0.0.1)."""
    return any(r[2] == f"0100007F:{port:04X}" and r[3] == TCP_ESTABLISHED for r in _rows())


def wait_for_listen(port: int, timeout: float = 30.0, what: str = "the server") -> None:
    """Until something listens on 127.0.0.1:``port``; TimeoutError after ``timeout``."""
    deadline = Deadline(timeout)
    while not listening(port):
        if deadline.expired:
            raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within "
                               f"{timeout:.0f} s")
        time.sleep(POLL_S)
