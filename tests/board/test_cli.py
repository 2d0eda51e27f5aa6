"""``appliance board``: its subcommands end to end, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.board.conftest import KernelTree
from tests.board.fakesys import sabrelite_under_qemu


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "board", *argv],
                          capture_output=True, text=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("appliance: error: ")
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("argv", [["--help"], ["phy", "--help"], ["phy", "set", "--help"],
                                  ["phy", "scan", "--help"], ["modules", "--help"]])
def test_help(argv: list[str]) -> None:
    r = run(*argv)
    assert r.returncode == 0 and "usage: appliance board" in r.stdout


def test_phy_set_out_of_range(sabrelite_dtb: Path) -> None:
    before = digest(sabrelite_dtb)
    line = one_line_error(run("phy", "set", "40", "--dtb", str(sabrelite_dtb)))
    assert "0-31" in line
    assert digest(sabrelite_dtb) == before


def test_phy_set_without_dtb() -> None:
    assert "--dtb" in one_line_error(run("phy", "set", "6"))


def test_phy_set_missing_dtb_file(tmp_path: Path) -> None:
    line = one_line_error(run("phy", "set", "6", "--dtb", str(tmp_path / "nope.dtb")))
    assert "nope.dtb" in line and "No such file" in line


def test_phy_set_not_a_dtb(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"\0" * 64)
    one_line_error(run("phy", "set", "6", "--dtb", str(bad)))


def test_phy_set_dry_run_writes_nothing(sabrelite_dtb: Path) -> None:
    before = digest(sabrelite_dtb)
    r = run("phy", "set", "6", "--dtb", str(sabrelite_dtb), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "+\t\t\t\t\tethernet-phy@6 {" in r.stdout
    assert digest(sabrelite_dtb) == before


def test_phy_set_output_file(sabrelite_dtb: Path, tmp_path: Path) -> None:
    out = tmp_path / "patched.dtb"
    before = digest(sabrelite_dtb)
    r = run("phy", "set", "6", "--dtb", str(sabrelite_dtb), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert digest(sabrelite_dtb) == before
    reg = subprocess.run(["fdtget", str(out), "/soc/bus@2100000/ethernet@2188000/mdio/"
                          "ethernet-phy@6", "reg"], capture_output=True, text=True, check=True)
    assert reg.stdout.strip() == "6"


def test_phy_set_in_place_for_evk_eth1(evk_dtb: Path) -> None:
    r = run("phy", "set", "4", "--dtb", str(evk_dtb), "--iface", "eth1")
    assert r.returncode == 0, r.stderr
    names = subprocess.run(["fdtget", "-l", str(evk_dtb), "/soc/bus@2000000/ethernet@20b4000/mdio"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sorted(names) == ["ethernet-phy@1", "ethernet-phy@4"]


def test_detect_and_scan_on_fake_tree(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    r = run("detect", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "SABRE Lite" in r.stdout and "ttymxc1" in r.stdout
    r = run("phy", "scan", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "eth0: using PHY at MDIO address 6 on 2188000.ethernet-1" in r.stdout


def test_scan_mismatch_is_one_line(tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    line = one_line_error(run("phy", "scan", "--root", str(tmp_path), "--phy", "4"))
    assert line.endswith("found one at 6 on 2188000.ethernet; set phy=6 or phy=auto")
    one_line_error(run("phy", "scan", "--root", str(tmp_path), "--phy", "40"))


def test_detect_without_devicetree(tmp_path: Path) -> None:
    assert "device-tree" in one_line_error(run("detect", "--root", str(tmp_path)))


def test_modules_dry_run_against_the_real_module_tree(armmp: KernelTree, tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path).module("gpio-mxc")
    r = run("modules", "--root", str(tmp_path), "--dry-run", "--moddir", str(armmp.usr),
            "--kernel", armmp.release)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert lines == ["gpio-mxc: already loaded", "anatop-regulator: would load",
                     "nvmem-imx-ocotp: would load", "libphy: would load", "micrel: would load",
                     "smsc: would load", "fec: would load"]
    assert "/fec.ko.xz" in r.stdout


def test_up_detects_loads_and_selects(armmp: KernelTree, tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path).module("libphy")
    common = ["--root", str(tmp_path), "--dry-run", "--moddir", str(armmp.usr),
              "--kernel", armmp.release]
    r = run("up", *common)
    assert r.returncode == 0, r.stderr
    assert "libphy (already loaded)" in r.stdout and "fec (would load)" in r.stdout
    assert "eth0: PHY 2188000.ethernet address 6: phy_id 0x0007c0d1" in r.stdout
    line = one_line_error(run("up", *common, "--phy", "4", "--phy-timeout", "0"))
    assert line.endswith("set phy=6 or phy=auto")
