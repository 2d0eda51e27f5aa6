"""The lease keeper: a '@' process that renews the boot's DHCP lease for as long as the board runs.

The boot's DHCP is one exchange (``udhcpc -q``).  :func:`start` forks, from the
initramfs's PID 1 right after that exchange, a process marked like the relay (argv[0]
starting with '@', so systemd's killing sprees at switch_root and shutdown spare it)
that drives :class:`appliance.net.lease.Keeper` over a UDP socket on port 68.

It survives switch_root because it needs no file once forked: its modules are imported
before the fork, the interface's MAC is read before it, DHCP goes over a plain socket
(no udhcpc binary, which switch_root deletes with the rest of the initramfs), and the
state file is written through a directory descriptor of /run/nbdroot opened before the
fork: /run is a tmpfs that the boot moves into the new root, and the descriptor follows
it.  The socket is open only during an exchange, so port 68 is free in between.
SIGUSR1 makes it renew at once (udhcpc's convention).

``appliance status`` reads the state file (``/run/nbdroot/lease.json``).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance.errors import NetworkError
from appliance.net import dhcpwire
from appliance.net.lease import MIN_RETRY_S, Keeper, Lease, State
from appliance.net.static import IPv4Config

RUN_DIR = Path("/run/nbdroot")
STATE_FILE = "lease.json"
BROADCAST = "255.255.255.255"
RECV_SIZE = 4096

Report = Callable[[str], None]


def console_report(line: str) -> None:
    """A keeper line on the console (the boot's stderr), prefixed so it can be matched."""
    print(f"nbdroot-lease: {line}", file=sys.stderr, flush=True)


def read_mac(iface: str, sys_root: Path = Path("/sys")) -> bytes:
    """The interface's Ethernet address (the DHCP chaddr and client id)."""
    try:
        text = (sys_root / "class/net" / iface / "address").read_text().strip()
        mac = bytes.fromhex(text.replace(":", ""))
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{iface}: cannot read its MAC address: {exc}") from None
    if len(mac) != 6:
        raise NetworkError(f"{iface}: {text!r} is not an Ethernet address")
    return mac


class StateDir:
    """Writes the keeper's state atomically through a descriptor of its directory."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def write(self, state: dict[str, object]) -> None:
        tmp = f".{STATE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=self.fd)
        try:  # bytes, not a text file: no codec lookup once the initramfs is gone
            os.write(fd, json.dumps(state).encode("ascii"))
        finally:
            os.close(fd)
        os.replace(tmp, STATE_FILE, src_dir_fd=self.fd, dst_dir_fd=self.fd)


def snapshot(keeper: Keeper, pid: int) -> dict[str, object]:
    """The state file's content: wall-clock times (epoch seconds) for ``appliance status``."""
    mono, wall = time.monotonic(), time.time()
    lease = keeper.lease

    def at(t: float | None) -> float | None:
        return None if t is None else round(wall + (t - mono), 1)

    return {"iface": keeper.iface, "pid": pid, "state": keeper.state.value,
            "address": str(lease.address), "server": str(lease.server or ""),
            "lease_s": lease.lease_s, "renewals": keeper.renewals,
            "last_renewal": at(keeper.last_renewal), "renew_at": at(lease.renew_at),
            "expires": at(lease.expires_at), "warning": keeper.warning, "updated": wall}


def open_socket(iface: str) -> socket.socket:
    """A UDP socket on port 68 of ``iface`` that may broadcast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.bind(("", dhcpwire.CLIENT_PORT))
    except OSError:
        sock.close()
        raise
    return sock


class Runner:
    """Drives a :class:`Keeper` with the real clock and a socket opened per exchange."""

    def __init__(self, keeper: Keeper, state: StateDir, report: Report) -> None:
        self.keeper, self.state, self.report = keeper, state, report
        self.sock: socket.socket | None = None
        self._last_error = ""
        self._renew = False
        self._wake, wake_w = socket.socketpair()  # a signal ends the wait at once
        wake_w.setblocking(False)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, _sig: int, _frame: object) -> None:
        self._renew = True

    def run(self, rounds: int | None = None) -> None:
        """Forever, or until ``rounds`` renewals."""
        self.save()
        while rounds is None or self.keeper.renewals < rounds:
            try:
                self.step()
            except Exception as exc:  # the lease must outlive a keeper bug
                self._error(f"unexpected {type(exc).__name__}: {exc}; going on")
                self._close()
                time.sleep(MIN_RETRY_S)
        self._close()

    def step(self) -> None:
        """Wait for the next timer or datagram and act on it."""
        if self._renew:
            self._renew = False
            self.report(f"{self.keeper.iface}: renewing now (SIGUSR1)")
            self.keeper.renew_now(time.monotonic())
        wait = self.keeper.wake_at() - time.monotonic()
        sends = []
        if wait <= 0:
            sends = self.keeper.timer(time.monotonic())
        else:
            ready = select.select([self._wake, *([self.sock] if self.sock else [])], [], [],
                                  wait)[0]
            if self._wake in ready:
                self._wake.recv(64)
            if self.sock is not None and self.sock in ready:
                data = self._recv()
                sends = self.keeper.receive(data, time.monotonic()) if data else []
        for send in sends:
            self._send(send.data, str(send.to) if send.to else BROADCAST)
        for line in self.keeper.take_reports():
            self.report(line)
        if self.keeper.state is State.BOUND:
            self._close()
        self.save()

    def _send(self, data: bytes, to: str) -> None:
        try:
            if self.sock is None:
                self.sock = open_socket(self.keeper.iface)
            self.sock.sendto(data, (to, dhcpwire.SERVER_PORT))
        except OSError as exc:  # retransmitted at the keeper's next timer
            self._error(f"cannot send to {to}: {exc.strerror or exc}")

    def _recv(self) -> bytes:
        assert self.sock is not None
        try:
            return self.sock.recv(RECV_SIZE)
        except OSError as exc:
            self._error(f"receive failed: {exc.strerror or exc}")
            self._close()
            return b""

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def save(self) -> None:
        """Write the state file (a failure is reported, never fatal)."""
        try:
            self.state.write(snapshot(self.keeper, os.getpid()))
        except OSError as exc:
            self._error(f"cannot write {STATE_FILE}: {exc.strerror or exc}")

    def _error(self, text: str) -> None:
        if text != self._last_error:  # each new failure once, not at every retry
            self.report(f"{self.keeper.iface}: {text}")
            self._last_error = text


def start(iface: str, cfg: IPv4Config, *, run_dir: Path = RUN_DIR,
          report: Report = console_report, rounds: int | None = None) -> tuple[int, str]:
    """Fork the lease keeper for ``cfg`` (a DHCP lease just applied to ``iface``).

    Returns (pid, its ready line) once it runs.  ``rounds``: end after that many renewals
    (tests); by default it runs for as long as the board does.
    """
    from appliance.daemon import LEASE_COMM, fork_root_daemon, harden

    lease = Lease.granted(cfg.address, cfg.server, cfg.lease_s, time.monotonic())
    keeper = Keeper(iface, lease, read_mac(iface), lambda: secrets.randbits(32))
    try:
        state = StateDir(run_dir)
    except OSError as exc:
        raise NetworkError(f"lease keeper: cannot use {run_dir}: {exc.strerror}") from None

    def serve(ready: Callable[[str], None]) -> None:
        harden(lock=False)  # not in the root disk's I/O path: no need to lock memory
        runner = Runner(keeper, state, report)
        runner.save()
        ready(f"lease keeper for {cfg.address} ({lease.lease_s} s lease from "
              f"{cfg.server or 'unknown server'}), renewal in {lease.t1_s:.0f} s")
        runner.run(rounds)

    pid, line = fork_root_daemon(serve, what="lease keeper", failed="failed to start",
                                 comm=LEASE_COMM)
    os.close(state.fd)  # the child has its own copy
    return pid, f"{line} (pid {pid})"
