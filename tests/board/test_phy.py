"""The MDIO sysfs scan and the PHY address policy, on a FAKE sysfs tree (no MDIO hardware here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.mdio import scan
from board.phy import choose, select_phy
from tests.board.fakesys import (
    KSZ9021,
    SMSC_LAN911X,
    FakeBoard,
    FakePhy,
    imx6ul_evk,
    sabrelite_under_qemu,
)


def test_scan_reads_address_id_driver_and_interface(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    (phy,) = scan(tmp_path)
    assert (phy.bus, phy.owner, phy.address) == ("2188000.ethernet-1", "2188000.ethernet", 6)
    assert phy.phy_id == SMSC_LAN911X
    assert phy.driver == "SMSC LAN911x Internal PHY"
    assert phy.iface == "eth0"
    assert "address 6: phy_id 0x0007c0d1" in phy.describe()


def test_scan_parses_hex_addresses_and_unbound_phys(tmp_path: Path) -> None:
    FakeBoard(tmp_path).phy(FakePhy("2188000.ethernet-1", 0x1F, KSZ9021))
    (phy,) = scan(tmp_path)
    assert phy.address == 31
    assert phy.driver is None and phy.iface is None


def test_scan_without_mdio_bus_is_empty(tmp_path: Path) -> None:
    assert scan(tmp_path) == []


def test_configured_address_present_is_used(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    sel = select_phy("2188000.ethernet", 6, tmp_path)
    assert sel.phy.address == 6 and sel.others == ()


def test_configured_address_absent_names_the_one_found(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    with pytest.raises(BoardError) as err:
        select_phy("2188000.ethernet", 4, tmp_path)
    assert str(err.value) == ("PHY configured at MDIO address 4 but found one at 6 on "
                              "2188000.ethernet; set phy=6 or phy=auto")


def test_auto_follows_what_answers(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path, phy_address=3)
    assert select_phy("2188000.ethernet", "auto", tmp_path).phy.address == 3


def test_no_phy_on_the_bus_is_an_error_even_for_auto(tmp_path: Path) -> None:
    FakeBoard(tmp_path).phy(FakePhy("20b4000.ethernet-1", 1, KSZ9021))
    with pytest.raises(BoardError, match=r"no PHY answers on 2188000\.ethernet"):
        select_phy("2188000.ethernet", "auto", tmp_path)


def test_evk_shared_bus_reports_the_other_phy(tmp_path: Path) -> None:
    imx6ul_evk(tmp_path)
    phys = scan(tmp_path)
    sel = choose(phys, "20b4000.ethernet", 2)
    assert sel.phy.iface == "eth1"
    assert [p.address for p in sel.others] == [1]
    with pytest.raises(BoardError, match=r"found PHYs at 1, 2 on 20b4000\.ethernet; set phy=1"):
        choose(phys, "20b4000.ethernet", 5)
    assert choose(phys, "20b4000.ethernet", "auto").phy.address == 1
