"""After switch_root the boot's DHCP lease keeper runs on, marked '@', and renews the lease.

Real QEMU (-M sabrelite), the minimal root served by real qemu-nbd over TLS-PSK, QEMU user
networking's DHCP server.  Its leases last a day, so T1 is 12 h away: the root's
``/etc/rc.local`` sends the keeper SIGUSR1 (renew now, as for udhcpc) and the renewal
goes over the keeper's own socket after the initramfs it came from is gone.  The
renewal under a 2-minute lease is tests/net/test_lease.py (dnsmasq in namespaces), which
starts the same keeper (:func:`appliance.net.keeper.start`).
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest

from appliance.host.demo import ROOT_OK
from appliance.host.servers import NBDServer
from tests.figures import figure
from tests.system.agent_boot import boot, psk_settings, raw_root, start_root_server

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 420.0
RC_LOCAL = """#!/bin/sh
# Written by tests/system/test_lease_boot.py: renew the lease now, after switch_root.
pid=$(sed -n 's/.*"pid": \\([0-9]*\\).*/\\1/p' /run/nbdroot/lease.json)
echo "lease-test: renew keeper $pid"
kill -USR1 "$pid"
i=0
while [ "$i" -lt 90 ] && ! grep -q '"renewals": 1' /run/nbdroot/lease.json; do
    sleep 1; i=$((i + 1))
done
/usr/local/bin/appliance status >/dev/null 2>&1  # (first run warms the page cache)
/usr/local/bin/appliance status | grep nbdroot-lease
echo "lease-test: keeper $(grep VmRSS /proc/$pid/status)"
echo "lease-test: done"
"""
LEASE = (r"nbdroot-lease: eth0 10\.0\.2\.15/24 state=bound keeper=alive pid=(\d+) "
         r"argv0=(@\S+) server=10\.0\.2\.2 lease=(\d+)s renewals=(\d+) "
         r"last-renewal=(never|\d+s-ago) expires-in=(\d+)s\r?\n")
RENEWED = (r"nbdroot-lease: eth0: lease of 10\.0\.2\.15/24 renewed for (\d+) s \(renewing, "
           r"server 10\.0\.2\.2\); next renewal in (\d+) s\r?\n")


def test_the_lease_keeper_survives_switch_root_marked_and_renews(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    root = raw_root(image_dir, tmp_path, RC_LOCAL)
    key = secrets.token_bytes(32)
    server = start_root_server(root, tmp_path, key)
    serve.append(server)
    assert server.port is not None
    board = boot(image_dir, tmp_path, psk_settings(server.port, key))  # net.mode dhcp
    try:
        ok = board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
        booted = time.monotonic() - board.started
        relay_pid = int(ok.group(2))
        before = board.expect(LEASE, 60)
        pid, argv0, lease_s = int(before.group(1)), before.group(2), int(before.group(3))
        assert argv0.startswith(b"@") and pid != relay_pid
        assert before.group(4) == b"0" and before.group(5) == b"never"
        assert lease_s >= 3600 and 0 < int(before.group(6)) <= lease_s
        board.expect(rf"lease-test: renew keeper {pid}\r?\n", 120)
        signalled = time.monotonic()
        board.expect(r"nbdroot-lease: eth0: renewing now \(SIGUSR1\)\r?\n", 60)
        renewed = board.expect(RENEWED, 60)
        renewal_s = time.monotonic() - signalled
        assert int(renewed.group(1)) == lease_s
        assert int(renewed.group(2)) == lease_s // 2  # T1 again
        after = board.expect(LEASE, 180)
        rss = board.expect(r"lease-test: keeper VmRSS:\s+(\d+) kB\r?\n", 60)
        board.expect(r"lease-test: done\r?\n", 60)
    finally:
        board.stop()
        server.stop()
    assert int(after.group(1)) == pid and after.group(4) == b"1", after.group(0)
    assert re.fullmatch(rb"\d+s-ago", after.group(5))
    assert "LEASE NOT KEPT" not in board.output and "I/O error" not in board.output
    started = re.search(r"lease keeper for .*, started in ([\d.]+) s", board.output)
    assert started, board.tail()
    figure(f"boot to NBD root with the lease keeper (QEMU start to status line): {booted:.1f} s;"
           f" keeper started in {started.group(1)} s, RSS {int(rss.group(1)) // 1024} MiB; "
           f"SIGUSR1 to renewed lease on QEMU's DHCP after switch_root: {renewal_s:.1f} s")
