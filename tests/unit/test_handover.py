"""appliance.boot.handover: the runtime .network that keeps networkd off the root's link."""

from __future__ import annotations

import configparser
import ipaddress
from pathlib import Path

from appliance.boot.handover import link_file, network_file, write
from appliance.net.static import IPv4Config, Route


def parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep case
    parser.read_string(text)
    return parser


LEASE = IPv4Config(address=ipaddress.IPv4Interface("10.0.2.15/24"),
                   gateway=ipaddress.IPv4Address("10.0.2.2"),
                   dns=(ipaddress.IPv4Address("10.0.2.3"),))


def test_a_kept_lease_gets_no_second_dhcp_client_and_its_address_is_left_alone() -> None:
    net = parsed(network_file("eth0", LEASE, mode="kept"))
    assert net["Match"]["Name"] == "eth0"
    assert net["Network"]["DHCP"] == "no"  # the agent's lease keeper renews it
    assert net["Network"]["KeepConfiguration"] == "yes"
    assert net["Network"]["IgnoreCarrierLoss"] == "yes"
    assert "Address" not in net["Network"] and "DHCPv4" not in net


def test_without_a_keeper_networkd_takes_the_lease_over_asking_for_its_address() -> None:
    net = parsed(network_file("eth0", LEASE, mode="dhcp"))
    assert net["Match"]["Name"] == "eth0"
    assert net["Network"]["DHCP"] == "ipv4"
    assert net["Network"]["KeepConfiguration"] == "yes"
    assert net["Network"]["IgnoreCarrierLoss"] == "yes"
    assert net["DHCPv4"]["RequestAddress"] == "10.0.2.15"
    assert "Address" not in net["Network"]


def test_a_static_link_is_kept_with_its_address_gateway_dns_and_routes() -> None:
    cfg = IPv4Config(address=ipaddress.IPv4Interface("192.168.7.20/24"),
                     gateway=ipaddress.IPv4Address("192.168.7.1"),
                     routes=(Route(ipaddress.IPv4Network("10.1.0.0/16"),
                                   ipaddress.IPv4Address("192.168.7.254")),),
                     dns=(ipaddress.IPv4Address("192.168.7.1"),), search=("lab",))
    text = network_file("eth1", cfg, mode="static")
    net = parsed(text)
    assert net["Match"]["Name"] == "eth1"
    assert net["Network"]["Address"] == "192.168.7.20/24"
    assert net["Network"]["Gateway"] == "192.168.7.1"
    assert net["Network"]["DNS"] == "192.168.7.1"
    assert net["Network"]["Domains"] == "lab"
    assert net["Network"]["KeepConfiguration"] == "yes"
    assert "DHCP" not in net["Network"] and "DHCPv4" not in net
    assert net["Route"]["Destination"] == "10.1.0.0/16"
    assert net["Route"]["Gateway"] == "192.168.7.254"


def test_the_file_sorts_before_the_roots_own_and_is_replaced_whole(tmp_path: Path) -> None:
    directory = tmp_path / "run/systemd/network"
    path = write("eth0", LEASE, mode="kept", directory=directory)
    assert path == directory / "00-nbdroot-eth0.network"
    assert sorted([path.name, "10-eth0.network", "20-wired.network"])[0] == path.name
    write("eth0", LEASE, mode="kept", directory=directory)
    assert sorted(p.name for p in directory.iterdir()) == [  # no temporary left
        "00-nbdroot-eth0.link", path.name]


def test_udev_keeps_the_interfaces_name_and_mac_address() -> None:
    link = parsed(link_file("eth0"))
    assert link["Match"]["OriginalName"] == "eth0"
    assert link["Link"]["Name"] == "eth0"
    assert link["Link"]["NamePolicy"] == ""  # no predictable name (end0) while it is up
    assert link["Link"]["MACAddressPolicy"] == "none"
