"""Network namespaces + veth pairs and a dnsmasq DHCP server, made and removed by the test.

``veth`` gives two fresh namespaces joined by a veth pair: ``eth0`` in the client one
(where the code under test runs, via ``ip netns exec``) and ``srv0`` in the server one.
Addresses are 192.168.x.y and exist only inside these namespaces.  Everything is torn
down in ``finally`` blocks, dnsmasq is stopped by its PID.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_counter = itertools.count()


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30)


@dataclass
class Veth:
    client: str  # namespace holding eth0
    server: str  # namespace holding srv0
    subnet: str  # "192.168.N"
    root: Path  # --root for the code under test (etc/resolv.conf; sys -> /sys)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``appliance ARGV`` inside the client namespace."""
        return subprocess.run(["ip", "netns", "exec", self.client, sys.executable, "-m",
                               "appliance", *argv], capture_output=True, text=True,
                              timeout=timeout)

    def client_json(self, *args: str) -> Any:
        return json.loads(ip("-n", self.client, "-j", *args).stdout)

    def server_up(self) -> None:
        ip("-n", self.server, "link", "set", "srv0", "up")


@contextmanager
def namespaces(tmp_path: Path) -> Iterator[Veth]:
    """Two fresh namespaces joined by a veth pair, deleted on the way out."""
    n = next(_counter)
    tag = f"{os.getpid()}-{n}"
    env = Veth(client=f"appl-c-{tag}", server=f"appl-s-{tag}",
               subnet=f"192.168.{200 + n % 50}", root=tmp_path / "root")
    env.root.mkdir(parents=True)
    (env.root / "sys").symlink_to("/sys")
    made: list[str] = []
    try:
        for ns in (env.client, env.server):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", "eth0", "netns", env.client, "type", "veth",
           "peer", "name", "srv0", "netns", env.server)
        ip("-n", env.client, "link", "set", "lo", "up")
        ip("-n", env.server, "addr", "add", f"{env.subnet}.1/24", "dev", "srv0")
        yield env
    finally:
        for ns in made:  # deleting a namespace destroys its end of the veth pair, and the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def veth(tmp_path: Path) -> Iterator[Veth]:
    if os.geteuid() != 0:
        pytest.skip("netns tests need root (to create network namespaces)")
    with namespaces(tmp_path) as env:
        yield env


@dataclass
class Dnsmasq:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def dhcp_server(veth: Veth, tmp_path: Path, lease_time: str = "1h",
                authoritative: bool = False) -> Iterator[Dnsmasq]:
    """A DHCP-only dnsmasq on srv0 (DNS off: --port=0), stopped by PID on the way out.

    *authoritative* adds --dhcp-authoritative: the only DHCP server of its network, it
    answers requests for leases it does not know.
    """
    veth.server_up()
    log = tmp_path / "dnsmasq.log"
    s = veth.subnet
    argv = ["ip", "netns", "exec", veth.server, "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "--user=root",
            "--interface=srv0", "--bind-interfaces", "--log-dhcp", "--log-facility=-",
            f"--dhcp-range={s}.50,{s}.60,255.255.255.0,{lease_time}", f"--dhcp-option=3,{s}.1",
            f"--dhcp-option=6,{s}.1,{s}.2", f"--dhcp-leasefile={tmp_path / 'leases'}",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",  # not /run's: they run side by side
            *(["--dhcp-authoritative"] if authoritative else [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Dnsmasq(proc, log)
    try:
        deadline = time.monotonic() + 10
        while "DHCP, IP range" not in server.text():  # dnsmasq's ready line
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq did not start: {server.text()[-2000:]}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # ip netns exec execs dnsmasq: same PID
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def dnsmasq(veth: Veth, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dnsmasq]:
    """:func:`dhcp_server` with lease time 1h, or the test's indirect parameter (e.g.
    "2m"; "2m,authoritative" for an authoritative server)."""
    lease_time, _, flag = str(getattr(request, "param", "1h")).partition(",")
    with dhcp_server(veth, tmp_path, lease_time, flag == "authoritative") as server:
        yield server
