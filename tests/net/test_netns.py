"""``appliance net`` with real pyroute2, a real kernel and real veth pairs in network namespaces."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.net.conftest import Dnsmasq, Veth, ip

pytestmark = pytest.mark.netns


def addresses(veth: Veth) -> list[str]:
    (link,) = veth.client_json("addr", "show", "dev", "eth0")
    return [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]


def routes(veth: Veth) -> dict[str, str]:
    return {r["dst"]: r.get("gateway", "") for r in veth.client_json("route", "show")}


def test_static_address_routes_and_dns(veth: Veth) -> None:
    veth.server_up()
    s = veth.subnet
    mac_before = veth.client_json("link", "show", "eth0")[0]["address"]
    r = veth.run("net", "up", "--address", f"{s}.2/24", "--gateway", f"{s}.1",
                 "--route", f"10.77.0.0/16,{s}.254", "--dns", f"{s}.1", "--dns", f"{s}.3",
                 "--root", str(veth.root))
    assert r.returncode == 0, r.stderr
    assert addresses(veth) == [f"{s}.2/24"]
    assert routes(veth)["default"] == f"{s}.1"
    assert routes(veth)["10.77.0.0/16"] == f"{s}.254"
    resolv = (veth.root / "etc/resolv.conf").read_text().splitlines()
    assert [line for line in resolv if line.startswith("nameserver")] == [
        f"nameserver {s}.1", f"nameserver {s}.3"]
    link = veth.client_json("link", "show", "eth0")[0]
    assert link["address"] == mac_before  # the MAC is kept
    assert "UP" in link["flags"]


def test_static_again_replaces_the_address(veth: Veth) -> None:
    veth.server_up()
    s = veth.subnet
    for host in (2, 9):
        r = veth.run("net", "up", "--address", f"{s}.{host}/24", "--root", str(veth.root))
        assert r.returncode == 0, r.stderr
    assert addresses(veth) == [f"{s}.9/24"]
    assert not (veth.root / "etc/resolv.conf").exists()  # no --dns: left alone


def test_dhcp_lease_from_dnsmasq(veth: Veth, dnsmasq: Dnsmasq) -> None:
    s = veth.subnet
    r = veth.run("-v", "net", "up", "--dhcp", "--root", str(veth.root))
    assert r.returncode == 0, r.stderr + dnsmasq.text()
    (addr,) = addresses(veth)
    host = int(addr.split("/")[0].rsplit(".", 1)[1])
    assert addr.startswith(f"{s}.") and addr.endswith("/24") and 50 <= host <= 60
    assert routes(veth)["default"] == f"{s}.1"
    assert (veth.root / "etc/resolv.conf").read_text().count("nameserver") == 2
    assert "lease 3600 s" in r.stdout
    mac = veth.client_json("link", "show", "eth0")[0]["address"]
    assert f"DHCPACK(srv0) {addr.split('/')[0]} {mac}" in dnsmasq.text()


def test_dhcp_without_server_fails_clearly(veth: Veth) -> None:
    veth.server_up()
    r = veth.run("net", "up", "--dhcp", "--dhcp-timeout", "2", "--root", str(veth.root))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "appliance: error: eth0: no DHCP lease after 1 tries in about 2 s "
        "(is a DHCP server on this network?)"]


def test_link_without_carrier_times_out(veth: Veth) -> None:
    # srv0 stays down: eth0 goes up but never gets carrier.
    start = time.monotonic()
    r = veth.run("net", "up", "--address", f"{veth.subnet}.2/24", "--carrier-timeout", "1.5",
                 "--root", str(veth.root))
    elapsed = time.monotonic() - start
    assert r.returncode == 1
    assert r.stderr.strip() == "appliance: error: eth0: no carrier after 1.5 s — cable?"
    assert elapsed >= 1.5
    assert addresses(veth) == []


def test_missing_interface(veth: Veth) -> None:
    start = time.monotonic()
    r = veth.run("net", "up", "--iface", "eth7", "--address", "192.168.5.5/24",
                 "--iface-timeout", "0.5")
    assert time.monotonic() - start >= 0.5
    assert r.returncode == 1
    assert "no network interface 'eth7' (have: eth0, lo)" in r.stderr


def test_waits_for_the_interface_to_appear(veth: Veth) -> None:
    # Like the FEC finishing its (deferred) probe after modprobe returned.
    cmd = ["ip", "netns", "exec", veth.client, sys.executable, "-m", "appliance", "net", "up",
           "--iface", "eth1", "--address", f"{veth.subnet}.2/24", "--iface-timeout", "20",
           "--root", str(veth.root)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            time.sleep(1.0)
            assert p.poll() is None  # still waiting
            ip("link", "add", "eth1", "netns", veth.client, "type", "veth",
               "peer", "name", "srv1", "netns", veth.server)
            ip("-n", veth.server, "link", "set", "srv1", "up")
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, err
    assert f"eth1: {veth.subnet}.2/24 (static)" in out


def test_status_shows_address_gateway_and_dns(veth: Veth) -> None:
    veth.server_up()
    s = veth.subnet
    r = veth.run("net", "up", "--address", f"{s}.2/24", "--gateway", f"{s}.1", "--dns", f"{s}.1",
                 "--root", str(veth.root))
    assert r.returncode == 0, r.stderr
    mac = veth.client_json("link", "show", "eth0")[0]["address"]
    st = veth.run("net", "status", "--root", str(veth.root))
    assert st.returncode == 0, st.stderr
    eth0 = next(line for line in st.stdout.splitlines() if line.startswith("eth0"))
    assert f"{s}.2/24" in eth0 and mac in eth0
    assert eth0.split()[1:3] == ["up", "carrier"]
    assert f"default gateway: {s}.1 dev eth0" in st.stdout
    assert f"DNS: {s}.1" in st.stdout
