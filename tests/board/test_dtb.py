"""The DTB patcher on Debian trixie's REAL imx6q-sabrelite.dtb and imx6ul-14x14-evk.dtb.

Results are checked with the device-tree-compiler tools (fdtget, dtc), not with libfdt.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.dtb import dts_diff, set_phy_address

SABRE_FEC = "/soc/bus@2100000/ethernet@2188000"
SABRE_MDIO = SABRE_FEC + "/mdio"
EVK_ENET1 = "/soc/bus@2100000/ethernet@2188000"
EVK_ENET2 = "/soc/bus@2000000/ethernet@20b4000"
EVK_MDIO = EVK_ENET2 + "/mdio"


def fdtget(dtb: Path, *args: str) -> str:
    return subprocess.run(["fdtget", str(dtb), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def write(tmp: Path, blob: bytes) -> Path:
    out = tmp / "out.dtb"
    out.write_bytes(blob)
    return out


def test_sabrelite_phy_gets_reg_unit_address_and_handle(sabrelite_dtb: Path,
                                                        tmp_path: Path) -> None:
    assert fdtget(sabrelite_dtb, "-l", SABRE_MDIO) == "ethernet-phy"  # no address upstream
    patch = set_phy_address(sabrelite_dtb.read_bytes(), 6, SABRE_FEC)
    out = write(tmp_path, patch.dtb)
    assert fdtget(out, "-l", SABRE_MDIO) == "ethernet-phy@6"
    assert fdtget(out, SABRE_MDIO + "/ethernet-phy@6", "reg") == "6"
    phandle = fdtget(out, SABRE_MDIO + "/ethernet-phy@6", "phandle")
    assert fdtget(out, SABRE_FEC, "phy-handle") == phandle
    # The PHY's other properties survive.
    assert fdtget(out, SABRE_MDIO + "/ethernet-phy@6", "rxc-skew-ps") == "3000"
    assert patch.phy_after == SABRE_MDIO + "/ethernet-phy@6"
    subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", "/dev/null", str(out)],
                   check=True)


def test_two_digit_address_uses_hex_unit_address(sabrelite_dtb: Path, tmp_path: Path) -> None:
    out = write(tmp_path, set_phy_address(sabrelite_dtb.read_bytes(), 17, SABRE_FEC).dtb)
    assert fdtget(out, "-l", SABRE_MDIO) == "ethernet-phy@11"
    assert fdtget(out, SABRE_MDIO + "/ethernet-phy@11", "reg") == "17"


def test_patching_twice_changes_nothing_the_second_time(sabrelite_dtb: Path) -> None:
    once = set_phy_address(sabrelite_dtb.read_bytes(), 6, SABRE_FEC)
    twice = set_phy_address(once.dtb, 6, SABRE_FEC)
    assert once.changes and not twice.changes
    assert twice.dtb == once.dtb


def test_dry_run_diff_shows_the_dts_change(sabrelite_dtb: Path) -> None:
    before = sabrelite_dtb.read_bytes()
    diff = dts_diff(before, set_phy_address(before, 6, SABRE_FEC).dtb)
    changed = [line.replace("\t", "") for line in diff.splitlines()
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == ["+ethernet-phy@6 {", "+reg = <0x06>;", "-ethernet-phy {"]


def test_evk_enet1_phy_lives_on_enet2_bus(evk_dtb: Path, tmp_path: Path) -> None:
    patch = set_phy_address(evk_dtb.read_bytes(), 3, EVK_ENET1)
    out = write(tmp_path, patch.dtb)
    assert patch.phy_before == EVK_MDIO + "/ethernet-phy@2"
    assert sorted(fdtget(out, "-l", EVK_MDIO).split()) == ["ethernet-phy@1", "ethernet-phy@3"]
    assert fdtget(out, EVK_MDIO + "/ethernet-phy@3", "reg") == "3"
    assert fdtget(out, EVK_ENET1, "phy-handle") == fdtget(out, EVK_MDIO + "/ethernet-phy@3",
                                                          "phandle")
    # ENET2 still points at its own, untouched PHY.
    assert fdtget(out, EVK_ENET2, "phy-handle") == fdtget(out, EVK_MDIO + "/ethernet-phy@1",
                                                          "phandle")


def test_evk_refuses_the_address_of_the_other_phy(evk_dtb: Path) -> None:
    with pytest.raises(BoardError, match=r"address 1 is already taken by .*ethernet-phy@1"):
        set_phy_address(evk_dtb.read_bytes(), 1, EVK_ENET1)


def test_alias_finds_the_fec(evk_dtb: Path) -> None:
    patch = set_phy_address(evk_dtb.read_bytes(), 5, "", index=1)  # alias ethernet1
    assert patch.fec == EVK_ENET2
    assert patch.phy_after == EVK_MDIO + "/ethernet-phy@5"


def test_missing_phy_handle_is_added(sabrelite_dtb: Path, tmp_path: Path) -> None:
    subprocess.run(["fdtput", "-d", str(sabrelite_dtb), SABRE_FEC, "phy-handle"], check=True)
    subprocess.run(["fdtput", "-d", str(sabrelite_dtb), SABRE_MDIO + "/ethernet-phy", "phandle"],
                   check=True)
    out = write(tmp_path, set_phy_address(sabrelite_dtb.read_bytes(), 6, SABRE_FEC).dtb)
    phandle = fdtget(out, SABRE_MDIO + "/ethernet-phy@6", "phandle")
    assert int(phandle) > 0
    assert fdtget(out, SABRE_FEC, "phy-handle") == phandle


@pytest.mark.parametrize("address", [-1, 32, 40])
def test_out_of_range_address(sabrelite_dtb: Path, address: int) -> None:
    with pytest.raises(BoardError, match="out of range 0-31"):
        set_phy_address(sabrelite_dtb.read_bytes(), address, SABRE_FEC)


def test_unknown_fec_path_and_garbage_blob(sabrelite_dtb: Path) -> None:
    with pytest.raises(BoardError, match="no node /soc/nothing"):
        set_phy_address(sabrelite_dtb.read_bytes(), 6, "/soc/nothing")
    with pytest.raises(BoardError, match="not a valid DTB"):
        set_phy_address(b"not a devicetree", 6, SABRE_FEC)
