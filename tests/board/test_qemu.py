"""The REAL kernel on QEMU -M sabrelite: the patched DTB, and the real MDIO sysfs layout.

Boots Debian trixie's armmp kernel with a tiny initramfs (static busybox + the profile's
modules, decompressed, in kmod's dependency order).  Its /init loads the modules, dumps
the MDIO part of sysfs and the kernel's PHY messages, and the test stops QEMU by PID.
Checks: the unpatched DTB makes the kernel scan ("invalid PHY address"); after
``set_phy_address(6)`` the kernel takes the PHY at 6 from the DT directly; the real sysfs
layout, rebuilt under a temp dir, is read by :func:`board.mdio.scan` as expected.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appliance.errors import BoardError
from board.dtb import set_phy_address
from board.mdio import scan
from board.modules import ModuleLoader
from board.phy import choose
from board.profile import get_profile
from image import debfetch
from tests.board.conftest import KernelTree, fetch_or_skip
from tests.board.fakesys import SMSC_LAN911X, replica

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT_S = 240
FEC = "/soc/bus@2100000/ethernet@2188000"
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in {modules}; do insmod /lib/modules/$m || echo "INSMOD-FAILED $m"; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up 2>/dev/null
sleep 1
echo "=== BEGIN"
for d in /sys/bus/mdio_bus/devices/*; do
  [ -e "$d" ] || continue
  echo "PHY $(basename "$d")|$(readlink "$d")|$(cat "$d/phy_id")|$(readlink "$d/driver")|\
$(readlink "$d/attached_dev")"
done
for b in /sys/class/mdio_bus/*; do echo "BUS $(basename "$b")|$(readlink "$b")|\
$(readlink "$b/device")"; done
echo "CARRIER $(cat /sys/class/net/eth0/carrier 2>/dev/null)"
dmesg | grep -i -e phy -e fec -e mdio | sed 's/^/DMESG /'
echo "=== END"
while true; do sleep 10; done
"""


@pytest.fixture(scope="session")
def initrd(armmp: KernelTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed")
    work = tmp_path_factory.mktemp("initrd")
    tree = work / "tree"
    for sub in ("bin", "lib/modules", "proc", "sys", "dev"):
        (tree / sub).mkdir(parents=True)
    bb = debfetch.extract(fetch_or_skip("busybox-static"), work / "bb")
    shutil.copy(bb / "usr/bin/busybox", tree / "bin/busybox")
    loader = ModuleLoader(root=work, moddir=armmp.usr, kernel=armmp.release, dry_run=True)
    kos: list[str] = []
    for done in loader.load(get_profile("sabrelite").load_order):
        for line in done.detail.splitlines():  # "insmod /path/x.ko.xz", dependencies first
            path = Path(line.split()[1])
            name = path.name.removesuffix(".xz")
            if name not in kos:
                data = subprocess.run(["xz", "-dc", str(path)], capture_output=True,
                                      check=True).stdout
                (tree / "lib/modules" / name).write_bytes(data)
                kos.append(name)
    (tree / "init").write_text(INIT.format(modules=" ".join(kos)))
    (tree / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=files,
                          capture_output=True, check=True).stdout
    out = work / "initrd.gz"
    out.write_bytes(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True,
                                   check=True).stdout)
    return out


def boot(armmp: KernelTree, initrd: Path, dtb: Path) -> list[str]:
    """Boot QEMU sabrelite, return the lines between the markers; QEMU is killed by PID."""
    argv = ["qemu-system-arm", "-M", "sabrelite", "-m", "512M", "-no-reboot", "-display", "none",
            "-monitor", "none", "-serial", "null", "-serial", "stdio",
            "-kernel", str(armmp.vmlinuz), "-dtb", str(dtb), "-initrd", str(initrd),
            "-append", "console=ttymxc1,115200 rdinit=/init quiet",
            "-nic", "user,model=imx.enet"]
    lines: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        fd, buf = proc.stdout.fileno(), b""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while b"=== END" not in buf:
            if time.monotonic() > deadline or proc.poll() is not None:
                tail = buf[-3000:].decode(errors="replace")
                pytest.fail(f"no dump from the guest; console tail:\n{tail}")
            if select.select([fd], [], [], 0.5)[0]:
                buf += os.read(fd, 65536)
        text = buf.decode(errors="replace").replace("\r", "")
        lines = text.split("=== BEGIN", 1)[1].split("=== END", 1)[0].strip().splitlines()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return [line.strip() for line in lines]


def test_kernel_scans_without_reg_and_takes_the_patched_address(
        armmp: KernelTree, initrd: Path, tmp_path: Path) -> None:
    stock = boot(armmp, initrd, armmp.dtb("imx6q-sabrelite.dtb"))
    assert any("ethernet-phy has invalid PHY address" in line for line in stock)
    assert "CARRIER 1" in stock

    patched = tmp_path / "sabrelite-phy6.dtb"
    patched.write_bytes(set_phy_address(armmp.dtb("imx6q-sabrelite.dtb").read_bytes(), 6,
                                        FEC).dtb)
    dump = boot(armmp, initrd, patched)
    assert not any("invalid PHY address" in line or "scan phy" in line for line in dump)
    assert any("2188000.ethernet-1:06: attached PHY driver" in line for line in dump)
    assert "CARRIER 1" in dump

    replica(tmp_path / "real", dump)
    phys = scan(tmp_path / "real")
    assert [(p.name, p.owner, p.address, p.phy_id, p.iface) for p in phys] == [
        ("2188000.ethernet-1:06", "2188000.ethernet", 6, SMSC_LAN911X, "eth0")]
    assert phys[0].driver == "SMSC LAN911x Internal PHY"
    assert choose(phys, get_profile("sabrelite").port().mdio_owner, 6).phy.address == 6


def test_wrong_patched_address_leaves_no_phy(armmp: KernelTree, initrd: Path,
                                             tmp_path: Path) -> None:
    # With reg = <4> the kernel looks only at 4, where QEMU has nothing: the policy must say so.
    patched = tmp_path / "sabrelite-phy4.dtb"
    patched.write_bytes(set_phy_address(armmp.dtb("imx6q-sabrelite.dtb").read_bytes(), 4,
                                        FEC).dtb)
    dump = boot(armmp, initrd, patched)
    assert not [line for line in dump if line.startswith("PHY ")]
    replica(tmp_path / "real", dump)
    with pytest.raises(BoardError, match=r"no PHY answers on 2188000\.ethernet"):
        choose(scan(tmp_path / "real"), "2188000.ethernet", 4)
