"""Parsing static settings and DHCP leases, resolv.conf, and ``net`` CLI input errors."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import NetworkError
from appliance.net import resolv
from appliance.net.dhcp import SCRIPT, parse_lease
from appliance.net.static import IPv4Config, check, parse_interface, parse_route

A = ipaddress.IPv4Address


def test_lease_from_udhcpc_variables() -> None:
    cfg = parse_lease("ip=10.0.2.15\nmask=24\nsubnet=255.255.255.0\nrouter=10.0.2.2 10.0.2.3\n"
                      "dns=10.0.2.3\ndomain=lan example\nlease=86400\nserverid=10.0.2.2\n")
    assert cfg.address == ipaddress.IPv4Interface("10.0.2.15/24")
    assert cfg.gateway == A("10.0.2.2")
    assert cfg.dns == (A("10.0.2.3"),)
    assert cfg.search == ("lan", "example")
    assert cfg.lease_s == 86400


def test_lease_with_dotted_subnet_only_and_off_link_router() -> None:
    cfg = parse_lease("ip=172.16.5.9\nmask=\nsubnet=255.255.0.0\nrouter=10.0.0.1\ndns=\n")
    assert cfg.address.network.prefixlen == 16
    assert cfg.gateway is None
    assert cfg.dns == () and cfg.lease_s is None


def test_lease_without_address_is_an_error() -> None:
    with pytest.raises(NetworkError, match="without an address"):
        parse_lease("ip=\nrouter=10.0.0.1\n")


def test_event_script_is_a_shell_script_that_records_bound() -> None:
    assert SCRIPT.startswith("#!/bin/sh\n")
    assert "bound|renew)" in SCRIPT


def test_udhcpc_script_writes_the_lease(tmp_path: Path) -> None:
    script = tmp_path / "s"
    script.write_text(SCRIPT)
    script.chmod(0o700)
    lease = tmp_path / "lease"
    env = {"APPLIANCE_DHCP_LEASE": str(lease), "ip": "192.168.9.7", "mask": "24",
           "router": "192.168.9.1", "dns": "192.168.9.1", "lease": "60", "PATH": "/usr/bin:/bin"}
    subprocess.run([str(script), "deconfig"], env=env, check=True)
    assert not lease.exists()
    subprocess.run([str(script), "bound"], env=env, check=True)
    cfg = parse_lease(lease.read_text())
    assert (str(cfg.address), cfg.gateway, cfg.lease_s) == ("192.168.9.7/24", A("192.168.9.1"), 60)


@pytest.mark.parametrize("text, message", [("10.0.0.5", "needs a prefix length"),
                                           ("10.0.0.300/24", "bad IPv4 address"),
                                           ("10.0.0.5/33", "bad IPv4 address")])
def test_bad_interface_address(text: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        parse_interface(text)


def test_routes() -> None:
    r = parse_route("10.1.0.0/16,192.168.1.254")
    assert (str(r.dst), str(r.via)) == ("10.1.0.0/16", "192.168.1.254")
    for bad in ("10.1.0.0/16", "10.1.0.1/16,192.168.1.1", "10.1.0.0/16,nope"):
        with pytest.raises(NetworkError):
            parse_route(bad)


def test_check_rejects_what_the_kernel_would() -> None:
    with pytest.raises(NetworkError, match=r"not on 192\.168\.1\.0/24"):
        check(IPv4Config(parse_interface("192.168.1.2/24"), gateway=A("192.168.2.1")))
    with pytest.raises(NetworkError, match="network or broadcast"):
        check(IPv4Config(parse_interface("192.168.1.255/24")))
    check(IPv4Config(parse_interface("192.168.1.2/24"), gateway=A("192.168.1.1")))


def test_resolv_conf_is_replaced_whole(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("nameserver 9.9.9.9\n" * 50)
    path = resolv.write(tmp_path, [A("192.168.1.1"), A("192.168.1.2")], ["lan"])
    assert path.read_text() == ("# written by appliance net up\nsearch lan\n"
                                "nameserver 192.168.1.1\nnameserver 192.168.1.2\n")
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["resolv.conf"]  # no temp left


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "net", *argv],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv, message", [
    (["up", "--gateway", "192.168.1.1"], "need --address"),
    (["up", "--address", "192.168.1.5"], "needs a prefix length"),
    (["up", "--address", "192.168.1.5/24", "--gateway", "10.0.0.1"], "not on 192.168.1.0/24"),
    (["up", "--address", "192.168.1.5/24", "--dns", "dns.example"], "bad IPv4 DNS server"),
    (["up", "--carrier-timeout", "0"], "--carrier-timeout must be 0.1-3600"),
    (["up", "--dhcp-timeout", "nan"], "--dhcp-timeout must be 1-3600"),
    (["status", "--iface", "no-such-if0"], "no network interface"),
])
def test_bad_input_is_one_line(argv: list[str], message: str) -> None:
    r = run(*argv)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: error: "), r.stderr
    assert message in lines[0]


def test_help() -> None:
    r = run("up", "--help")
    assert r.returncode == 0 and "--dhcp" in r.stdout and "udhcpc" in r.stdout
