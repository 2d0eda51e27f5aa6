"""board.bringup on a FAKE sysfs tree, with the REAL modprobe on the REAL armmp modules."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.bringup import bring_up, load_modules, load_restart
from board.modules import ModuleLoader
from tests.board.conftest import KernelTree
from tests.board.fakesys import KSZ9021, FakeBoard, FakePhy, sabrelite_under_qemu


def dry(armmp: KernelTree, root: Path) -> ModuleLoader:
    return ModuleLoader(root=root, moddir=armmp.usr, kernel=armmp.release, dry_run=True)


def test_generic_board_accepts_a_phy_on_any_bus(armmp: KernelTree, tmp_path: Path) -> None:
    board = FakeBoard(tmp_path).compatible("acme,imx6q-thing", "fsl,imx6q")
    board.phy(FakePhy("2188000.ethernet-1", 4, KSZ9021, "Micrel KSZ9021 Gigabit PHY", "eth0"))
    done = bring_up(tmp_path, loader=dry(armmp, tmp_path), phy_timeout=0)
    assert done.profile.key == "imx6-generic"
    assert done.selection.phy.address == 4
    assert [m.name for m in done.modules][-1] == "fec"


def test_waits_for_the_phy_to_appear(armmp: KernelTree, tmp_path: Path) -> None:
    FakeBoard(tmp_path).compatible("fsl,imx6q-sabrelite", "fsl,imx6q")
    timer = threading.Timer(0.5, sabrelite_under_qemu, args=(tmp_path,))
    timer.start()
    try:
        start = time.monotonic()
        done = bring_up(tmp_path, loader=dry(armmp, tmp_path), phy_timeout=10)
    finally:
        timer.cancel()
    assert done.selection.phy.address == 6
    assert 0.4 < time.monotonic() - start < 10


def test_setting_overrides_the_profile(armmp: KernelTree, tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    with pytest.raises(BoardError, match="configured at MDIO address 5 but found one at 6"):
        bring_up(tmp_path, phy=5, loader=dry(armmp, tmp_path), phy_timeout=0)
    assert bring_up(tmp_path, phy="auto", loader=dry(armmp, tmp_path)).selection.phy.address == 6


def test_the_restart_handler_loads_after_the_fec_and_its_absence_does_not_stop_the_boot(
        armmp: KernelTree, tmp_path: Path) -> None:
    sabrelite_under_qemu(tmp_path)
    done = bring_up(tmp_path, loader=dry(armmp, tmp_path))
    assert done.restart_failed == ()  # imx2_wdt is in the armmp kernel's modules
    missing = ModuleLoader(root=tmp_path, moddir=tmp_path / "nowhere", kernel=armmp.release,
                           dry_run=True)
    profile = dataclasses.replace(done.profile, modules=(), phy_modules=(),
                                  fec_module="fec", restart_modules=("imx2_wdt",))
    with pytest.raises(BoardError):  # the FEC is required ...
        bring_up(tmp_path, profile=profile, loader=missing)
    kept = load_restart(missing, profile)  # ... the restart handler is not
    assert len(kept) == 1 and "imx2_wdt" in kept[0], kept


def test_modules_loaded_early_are_not_loaded_again(armmp: KernelTree, tmp_path: Path) -> None:
    """The boot loads the modules in the background during the countdown and hands the
    result to bring_up, which then only selects the PHY."""
    sabrelite_under_qemu(tmp_path)
    profile = bring_up(tmp_path, loader=dry(armmp, tmp_path)).profile
    early = load_modules(profile, dry(armmp, tmp_path))
    assert [m.name for m in early[0]][-1] == "fec"
    broken = ModuleLoader(root=tmp_path, modprobe=str(tmp_path / "no-modprobe"))
    with pytest.raises(BoardError):  # the reference: this loader cannot load anything
        bring_up(tmp_path, profile=profile, loader=broken)
    done = bring_up(tmp_path, profile=profile, loader=broken, loaded=early)
    assert done.modules == early[0] and done.selection.phy.address == 6
