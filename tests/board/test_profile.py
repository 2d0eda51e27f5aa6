"""Board profiles (the shipped TOML files) and detection from the devicetree's compatible."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.profile import (
    detect,
    device_name,
    get_profile,
    load_profile,
    load_profiles,
    match_profile,
    parse_phy,
    split_compatible,
)
from tests.board.conftest import KernelTree
from tests.board.fakesys import FakeBoard


def test_shipped_profiles_load_and_have_the_measured_module_order() -> None:
    profiles = {p.key: p for p in load_profiles()}
    assert {"sabrelite", "imx6ul-evk", "imx6-generic"} <= set(profiles)
    sabre = profiles["sabrelite"]
    assert sabre.console == "ttymxc1"
    order = sabre.load_order
    # Measured under QEMU: gpio-mxc, anatop-regulator, nvmem-imx-ocotp, libphy, smsc, fec.
    for before, after in [("gpio-mxc", "anatop-regulator"), ("anatop-regulator", "nvmem-imx-ocotp"),
                          ("nvmem-imx-ocotp", "libphy"), ("libphy", "smsc"), ("libphy", "micrel"),
                          ("smsc", "fec")]:
        assert order.index(before) < order.index(after)
    assert order[-1] == "fec"
    assert sabre.port().phy == 6
    assert sabre.port().mdio_owner == "2188000.ethernet"
    evk = profiles["imx6ul-evk"]
    assert evk.console == "ttymxc0"
    assert [(e.iface, e.phy, e.mdio_owner) for e in evk.ethernet] == [
        ("eth0", 1, "20b4000.ethernet"), ("eth1", 2, "20b4000.ethernet")]
    assert profiles["imx6-generic"].port().phy == "auto"


@pytest.mark.parametrize("dtb, key", [("imx6q-sabrelite.dtb", "sabrelite"),
                                      ("imx6ul-14x14-evk.dtb", "imx6ul-evk")])
def test_real_dtb_compatible_selects_its_profile(armmp: KernelTree, dtb: str, key: str) -> None:
    out = subprocess.run(["fdtget", str(armmp.dtb(dtb)), "/", "compatible"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert match_profile(out, load_profiles()).key == key


def test_profile_fec_paths_exist_in_the_real_dtbs(armmp: KernelTree) -> None:
    for key, dtb in [("sabrelite", "imx6q-sabrelite.dtb"), ("imx6ul-evk", "imx6ul-14x14-evk.dtb")]:
        for eth in get_profile(key).ethernet:
            r = subprocess.run(["fdtget", str(armmp.dtb(dtb)), eth.fec, "compatible"],
                               capture_output=True, text=True, check=False)
            assert r.returncode == 0, (key, eth.fec, r.stderr)
            assert "fec" in r.stdout


def test_detect_reads_nul_separated_compatible(tmp_path: Path) -> None:
    FakeBoard(tmp_path).compatible("boundary,imx6q-sabrelite", "fsl,imx6q")
    assert detect(tmp_path).key == "sabrelite"


def test_unknown_imx6_board_falls_back_to_generic(tmp_path: Path) -> None:
    FakeBoard(tmp_path).compatible("acme,imx6dl-widget", "fsl,imx6dl")
    assert detect(tmp_path).key == "imx6-generic"


def test_specific_profile_wins_over_generic_whatever_the_file_order() -> None:
    profiles = list(reversed(load_profiles()))
    assert match_profile(["fsl,imx6ul-14x14-evk", "fsl,imx6ul"], profiles).key == "imx6ul-evk"


def test_unsupported_board_is_a_clear_error(tmp_path: Path) -> None:
    FakeBoard(tmp_path).compatible("raspberrypi,4-model-b", "brcm,bcm2711")
    with pytest.raises(BoardError, match=r"unsupported board.*raspberrypi,4-model-b"):
        detect(tmp_path)


def test_missing_devicetree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="proc/device-tree/compatible"):
        detect(tmp_path)


def test_split_compatible() -> None:
    assert split_compatible(b"a,b\0c,d\0") == ["a,b", "c,d"]
    assert split_compatible(b"") == []


@pytest.mark.parametrize("value, expected", [("6", 6), (" 0x1f ", 31), (0, 0), ("AUTO", "auto")])
def test_parse_phy_accepts(value: object, expected: object) -> None:
    assert parse_phy(value) == expected


@pytest.mark.parametrize("value", ["32", "-1", "six", 40, True, 1.5, ""])
def test_parse_phy_rejects(value: object) -> None:
    with pytest.raises(BoardError, match="MDIO address"):
        parse_phy(value)


def test_device_name() -> None:
    assert device_name("/soc/bus@2100000/ethernet@2188000") == "2188000.ethernet"


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\n", "at least one"),
    ("name = 'x'\ncompatible = []\n[[ethernet]]\niface='eth0'\n", "'compatible' is empty"),
    ("name = 'x'\ncompatible = ['a']\nconsole='t'\n[[ethernet]]\niface='eth0'\nphy=99\n", "0-31"),
    ("name = \n", "cannot read board profile"),
])
def test_bad_profile_files_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BoardError, match=message):
        load_profile(path)
