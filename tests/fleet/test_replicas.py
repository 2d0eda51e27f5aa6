"""Replicas: a fleet hands its overlay boards every replica's URI, and each one serves.

A replica is another host running ``appliance serve`` on a copy of the fleet directory;
here, a copy served from another port of 127.0.0.1.  ``fleet replicas`` records it;
``fleet add --root-mode overlay`` then prints a provisioning line whose ``nbd.uri``
lists both servers (the relay fails over between them, tests/faults/test_failover.py); a
cow board gets only its own server.  ``fleet show --uri --replicas`` gives the host-side
URIs: ``appliance nbd info`` answers on both real qemu-nbd servers, and on the replica
still once the primary's ``appliance serve`` is stopped.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from appliance.host.fleet.storm import free_ports

from .conftest import Serve, appliance

pytestmark = pytest.mark.interop


def start_serve(fleet: Path, port: int) -> Serve:
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--fleet", str(fleet),
                             "--listen", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    s = Serve(proc, port)
    threading.Thread(target=s.reader, daemon=True).start()
    return s


def nbd_info(uri: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "nbd", "info", uri],
                          capture_output=True, text=True, timeout=60, check=False)


def test_overlay_boards_are_provisioned_with_every_replica(fleet: Path, tmp_path: Path) -> None:
    primary, replica = free_ports(16), free_ports(16)
    assert appliance("fleet", "listen", f"127.0.0.1:{primary}", fleet=fleet).returncode == 0
    r = appliance("fleet", "replicas", f"127.0.0.1:{replica}", fleet=fleet)
    assert r.returncode == 0 and f"replica 127.0.0.1:{replica}+N" in r.stdout, r.stdout
    own = appliance("fleet", "replicas", f"127.0.0.1:{primary}", fleet=fleet)
    assert own.returncode != 0 and "own address" in own.stderr
    added = appliance("fleet", "add", "a", "--root-mode", "overlay", fleet=fleet)
    cow = appliance("fleet", "add", "c", fleet=fleet)
    assert added.returncode == 0 and cow.returncode == 0, added.stderr + cow.stderr

    def nbd_uri(out: str) -> list[str]:
        argv = shlex.split(out.strip().splitlines()[1])
        setting = argv[argv.index("--set") + 1]
        assert setting.startswith("nbd.uri=")
        return setting.removeprefix("nbd.uri=").split(" ")

    assert nbd_uri(added.stdout) == [f"nbds://a@10.0.2.2:{primary}/a",
                                     f"nbds://a@10.0.2.2:{replica}/a"]
    assert nbd_uri(cow.stdout) == [f"nbds://c@10.0.2.2:{primary + 1}/c"]
    assert "given no replica" in cow.stdout
    shown = appliance("fleet", "show", "a", "--uri", "--replicas", fleet=fleet)
    uris = shown.stdout.split()
    assert shown.returncode == 0 and len(uris) == 2, shown.stdout
    assert appliance("fleet", "show", "a", "--uri", fleet=fleet).stdout.split() == uris[:1]

    copy = tmp_path / "replica-fleet"  # what the replica host holds
    shutil.copytree(fleet, copy)
    servers = [start_serve(fleet, primary), start_serve(copy, replica)]
    try:
        for s in servers:
            s.wait_line(lambda line: "board(s) from" in line)
        infos = [nbd_info(u) for u in uris]
        for info in infos:
            assert info.returncode == 0, info.stderr
        same = [[line for line in i.stdout.splitlines() if not line.strip().startswith("uri:")]
                for i in infos]
        assert same[0] == same[1], infos  # same export, size and flags; the URI differs
        assert "read_only" in infos[0].stdout.lower().replace("-", "_"), infos[0].stdout
        servers[0].stop()
        assert nbd_info(uris[0]).returncode != 0
        assert nbd_info(uris[1]).returncode == 0
    finally:
        for s in servers:
            s.stop()
    assert appliance("fleet", "replicas", "--none", fleet=fleet).stdout.startswith("no replicas")
    assert appliance("fleet", "show", "a", "--uri", "--replicas",
                     fleet=fleet).stdout.split() == uris[:1]
