"""Lease renewal against real dnsmasq on a 2-minute lease, in namespaces this test makes.

``appliance net up --dhcp`` configures eth0, then ``appliance net keep-lease --rounds 2``
renews at T1 (60 s) twice.  dnsmasq's log must show the renewals for the same address,
its lease file's expiry must move forward and always lie ahead, and eth0 must keep its
address throughout (sampled every second).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.net.conftest import Dnsmasq, Veth

pytestmark = pytest.mark.slow

LEASE_S = 120


def eth0_addresses(veth: Veth) -> list[str]:
    links = veth.client_json("addr", "show", "dev", "eth0")
    return [a["local"] for a in links[0]["addr_info"] if a["family"] == "inet"]


def lease_expiry(leases: Path) -> int | None:
    """The expiry (epoch seconds) of the one lease in dnsmasq's lease file."""
    text = leases.read_text() if leases.exists() else ""
    fields = text.split()
    return int(fields[0]) if fields else None


@pytest.mark.parametrize("dnsmasq", ["2m"], indirect=True)
def test_lease_is_renewed_before_expiry_and_never_lapses(
        veth: Veth, dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    up = veth.run("net", "up", "--dhcp", "--root", str(veth.root))
    assert up.returncode == 0, up.stderr
    address = re.search(r"eth0: ([\d.]+)/", up.stdout)
    assert address, up.stdout
    ip = address.group(1)
    leases = tmp_path / "leases"
    argv = ["ip", "netns", "exec", veth.client, sys.executable, "-m", "appliance", "net",
            "keep-lease", "--iface", "eth0", "--rounds", "2"]
    keeper = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    expiries: set[int] = set()
    try:
        deadline = time.monotonic() + 2 * LEASE_S / 2 + 60
        while keeper.poll() is None:
            assert time.monotonic() < deadline, "keep-lease did not finish two renewals"
            assert ip in eth0_addresses(veth)
            expiry = lease_expiry(leases)
            assert expiry is not None and expiry > time.time(), "the lease lapsed"
            expiries.add(expiry)
            time.sleep(1.0)
        out = keeper.communicate(timeout=10)[0]
        final = lease_expiry(leases)  # the last renewal, which ended keep-lease
        assert final is not None and final > time.time(), "the lease lapsed"
        expiries.add(final)
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait(10)
    assert keeper.returncode == 0, out
    assert len(re.findall(rf"lease of {re.escape(ip)}/\d+ renewed for {LEASE_S} s", out)) == 2, out
    acks = re.findall(rf"DHCPACK\(srv0\) {re.escape(ip)} ", dnsmasq.text())
    assert len(acks) >= 4, dnsmasq.text()[-3000:]  # net up, keep-lease's first, 2 renewals
    assert len(expiries) >= 3 and max(expiries) - min(expiries) >= LEASE_S // 2 - 10
    assert ip in eth0_addresses(veth)
