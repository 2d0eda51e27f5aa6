"""Module loading with the REAL modprobe (kmod) against Debian's REAL armmp module tree.

The host cannot insert armhf modules, so modprobe runs with ``-d``/``-S`` on the
unpacked kernel package and ``-n`` (dry run): dependency resolution and "not found"
errors are kmod's own.  Already-loaded modules come from a FAKE /sys/module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.modules import ModuleLoader, module_key
from board.profile import get_profile
from tests.board.conftest import KernelTree
from tests.board.fakesys import FakeBoard


def loader(armmp: KernelTree, root: Path) -> ModuleLoader:
    return ModuleLoader(root=root, moddir=armmp.usr, kernel=armmp.release, dry_run=True)


def test_sabrelite_modules_resolve_in_order(armmp: KernelTree, tmp_path: Path) -> None:
    order = get_profile("sabrelite").load_order
    done = loader(armmp, tmp_path).load(order)
    assert [d.name for d in done] == list(order)
    assert all(d.action == "would load" for d in done)
    fec = done[-1].detail.splitlines()
    # kmod pulls fec's dependencies (libphy, of_mdio, ...) before fec.ko itself.
    assert fec[-1].startswith("insmod ") and fec[-1].split()[1].endswith("/fec.ko.xz")
    assert any("/libphy.ko" in line for line in done[order.index("smsc")].detail.splitlines())


def test_loaded_modules_are_skipped(armmp: KernelTree, tmp_path: Path) -> None:
    FakeBoard(tmp_path).module("gpio_mxc").module("libphy")
    done = loader(armmp, tmp_path).load(["gpio-mxc", "libphy", "smsc"])
    assert [d.action for d in done] == ["already loaded", "already loaded", "would load"]


def test_builtin_modules_are_skipped(armmp: KernelTree, tmp_path: Path) -> None:
    builtin = (armmp.usr / "lib/modules" / armmp.release / "modules.builtin").read_text().split()
    name = Path(builtin[0]).name.removesuffix(".ko")
    (done,) = loader(armmp, tmp_path).load([name])
    assert done.action == "built-in"


def test_missing_module_is_named(armmp: KernelTree, tmp_path: Path) -> None:
    with pytest.raises(BoardError, match=r"cannot load module no-such-phy: .*not found"):
        loader(armmp, tmp_path).load(["libphy", "no-such-phy", "fec"])


def test_missing_modprobe_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="modprobe-missing not found"):
        ModuleLoader(root=tmp_path, kernel="6.12", modprobe="modprobe-missing").load(["fec"])


def test_release_comes_from_procfs_under_root(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.12.99+deb13-armmp\n")
    assert ModuleLoader(root=tmp_path).release() == "6.12.99+deb13-armmp"
    with pytest.raises(BoardError, match="osrelease"):
        ModuleLoader(root=tmp_path / "nothing").release()


def test_module_key() -> None:
    assert module_key("gpio-mxc") == "gpio_mxc"
    assert module_key("kernel/drivers/net/phy/smsc.ko.xz") == "smsc"


def test_the_missing_modules_go_to_one_modprobe_call(armmp: KernelTree, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    shim = tmp_path / "modprobe-counting"  # the real modprobe, each call logged
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec modprobe "$@"\n')
    shim.chmod(0o755)
    FakeBoard(tmp_path).module("gpio_mxc")
    order = get_profile("sabrelite").load_order
    lm = ModuleLoader(root=tmp_path, moddir=armmp.usr, kernel=armmp.release, dry_run=True,
                      modprobe=str(shim))
    done = lm.load(order)
    (call,) = calls.read_text().splitlines()
    assert call.endswith(" -a " + " ".join(order[1:]))  # gpio-mxc is already loaded
    assert [d.action for d in done] == ["already loaded"] + ["would load"] * (len(order) - 1)
    assert done[-1].detail.splitlines()[-1].split()[1].endswith("/fec.ko.xz")
