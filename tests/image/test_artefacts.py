"""Inspecting the built artefacts (no board here): initramfs, root image, SD card.

The image is built once per session by ``appliance image build`` (cached in ./out);
these tests read the files the build wrote, with our own cpio reader, debugfs
(e2fsprogs) and the documented U-Boot / MBR layouts.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from pathlib import Path

import pytest

from image import elf
from tests.image import newc
from tests.image_artefacts import debugfs

pytestmark = pytest.mark.slow

UIMAGE_MAGIC = 0x27051956
IH_TYPE_SCRIPT = 6
MAX_INITRAMFS = 40 * 2**20


@pytest.fixture(scope="module")
def manifest(image_dir: Path) -> dict[str, object]:
    info: dict[str, object] = json.loads((image_dir / "manifest.json").read_text())
    return info


@pytest.fixture(scope="module")
def initramfs(image_dir: Path) -> dict[str, newc.Entry]:
    return {e.name: e for e in newc.read_gz(image_dir / "initramfs.cpio.gz")}


def test_manifest_matches_the_files(image_dir: Path, manifest: dict[str, object]) -> None:
    artefacts = manifest["artefacts"]
    assert isinstance(artefacts, dict)
    for name in ("vmlinuz", "initramfs.cpio.gz", "imx6q-sabrelite.dtb",
                 "imx6ul-14x14-evk.dtb", "rootfs.ext4", "debian.ext4", "boot.scr",
                 "sdcard.img"):
        data = (image_dir / name).read_bytes()
        assert artefacts[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
    assert (image_dir / "vmlinuz").read_bytes()[0x24:0x28] == b"\x18\x28\x6f\x01"  # zImage


def test_initramfs_size_and_reproducible_metadata(image_dir: Path, manifest: dict[str, object],
                                                  initramfs: dict[str, newc.Entry]) -> None:
    size = (image_dir / "initramfs.cpio.gz").stat().st_size
    print(f"initramfs.cpio.gz: {size / 2**20:.1f} MiB, {len(initramfs)} entries")
    assert size <= MAX_INITRAMFS
    assert list(initramfs) == sorted(initramfs)
    assert {e.mtime for e in initramfs.values()} == {manifest["source_date_epoch"]}
    assert {(e.uid, e.gid) for e in initramfs.values()} == {(0, 0)}


def test_initramfs_has_init_tools_and_console(initramfs: dict[str, newc.Entry]) -> None:
    init = initramfs["init"]
    assert stat.S_IMODE(init.mode) & 0o111 and init.data.startswith(b"#!/bin/busybox sh")
    for name in ("usr/bin/busybox", "usr/bin/kmod", "usr/bin/python3.13",
                 "usr/share/udhcpc/default.script", "etc/appliance/modules.load"):
        assert stat.S_ISREG(initramfs[name].mode), name
    assert initramfs["usr/sbin/modprobe"].data == b"../bin/kmod"
    assert initramfs["dev/console"].rdev == (5, 1)


def test_initramfs_modules_and_their_dependencies(initramfs: dict[str, newc.Entry]) -> None:
    dep = next(e for n, e in initramfs.items() if n.endswith("/modules.dep")).data.decode()
    modules = {line.split(":")[0].rsplit("/", 1)[-1] for line in dep.splitlines()}
    for name in ("gpio-mxc.ko", "anatop-regulator.ko", "nvmem-imx-ocotp.ko", "libphy.ko",
                 "smsc.ko", "micrel.ko", "fec.ko", "nbd.ko", "ext4.ko", "jbd2.ko",
                 # nbd.path=ktls: the ULP and the AEADs, with their dependencies
                 "tls.ko", "chacha20poly1305.ko", "chacha-neon.ko", "poly1305-arm.ko",
                 "libchacha.ko", "libpoly1305.ko", "gcm.ko", "ghash-arm-ce.ko",
                 "aes-arm-bs.ko", "crypto_simd.ko", "cryptd.ko", "gf128mul.ko"):
        assert name in modules, name
    assert all(not n.endswith(".xz") for n in initramfs)  # decompressed for kmod/kernel
    assert len(modules) < 40  # only what the list asks for, not the whole kernel


def _unchecked_hash(pyc: bytes, path: str) -> None:
    flags = struct.unpack_from("<I", pyc, 4)[0]
    assert flags == 0b01, f"{path}: expected an unchecked-hash pyc, flags={flags}"


def test_initramfs_python_is_pruned_and_precompiled(initramfs: dict[str, newc.Entry]) -> None:
    names = set(initramfs)
    for pruned in ("usr/lib/python3.13/test", "usr/lib/python3.13/tkinter",
                   "usr/lib/python3.13/idlelib", "usr/lib/python3.13/ensurepip",
                   "usr/lib/python3.13/sitecustomize.py", "usr/lib/python3/dist-packages/psutil",
                   "usr/lib/python3/dist-packages/bcrypt"):
        assert pruned not in names
    for host_only in ("cryptography", "serial"):  # the host's; the board needs neither
        assert not [n for n in names if n.startswith(f"usr/lib/python3/dist-packages/{host_only}")]
    libraries = [f"usr/lib/python3.13/{m}" for m in ("ssl", "json/__init__", "socket")]
    libraries += [f"usr/lib/python3/dist-packages/{m}" for m in
                  ("pyroute2/__init__", "pyroute2/iproute/linux", "libfdt")]
    for stem in libraries:  # sourceless: the .pyc where the .py was
        assert f"{stem}.py" not in names, stem
        _unchecked_hash(initramfs[f"{stem}.pyc"].data, stem)
    assert not [n for n in names if n.startswith("usr/lib/python3.13/") and "__pycache__" in n]
    for stem in ("appliance/__init__", "appliance/cli/__init__", "board/__init__"):
        path = f"usr/lib/python3/dist-packages/{stem}.py"  # the agent keeps its sources
        assert path in names, path
        head, _, name = path.rpartition("/")
        _unchecked_hash(initramfs[f"{head}/__pycache__/{name[:-3]}.cpython-313.pyc"].data, path)


def test_initramfs_shared_libraries_are_all_there(initramfs: dict[str, newc.Entry],
                                                  tmp_path: Path) -> None:
    present = {n.rsplit("/", 1)[-1] for n in initramfs
               if n.startswith("usr/lib/arm-linux-gnueabihf/")}
    checked = 0
    for name, entry in initramfs.items():
        if stat.S_ISREG(entry.mode) and entry.data[:4] == elf.ELF_MAGIC:
            tmp = tmp_path / "elf"
            tmp.write_bytes(entry.data)
            missing = set(elf.needed(tmp)) - present
            assert not missing, f"{name} needs {missing}"
            checked += 1
    assert checked > 20
    assert initramfs["usr/lib/ld-linux-armhf.so.3"].data == \
        b"arm-linux-gnueabihf/ld-linux-armhf.so.3"


def test_boot_script_is_a_uboot_script_image(image_dir: Path) -> None:
    raw = (image_dir / "boot.scr").read_bytes()
    magic, = struct.unpack_from(">I", raw, 0)
    ih_type = raw[30]
    assert magic == UIMAGE_MAGIC and ih_type == IH_TYPE_SCRIPT
    body = raw[64:].decode(errors="replace")
    assert "bootz ${kernel_addr_r} ${nbdroot_rd}:${nbdroot_rdsize} ${fdt_addr_r}" in body
    assert "/nbdroot-config.cpio.gz" in body
    assert "console=ttymxc1,115200" in body and "imx6q-sabrelite.dtb" in body


def test_sdcard_boot_partition_holds_the_boot_files(image_dir: Path, tmp_path: Path) -> None:
    disk = (image_dir / "sdcard.img").read_bytes()
    assert len(disk) == 128 * 2**20  # a power of two, as QEMU's sd-card requires
    assert disk[510:512] == b"\x55\xaa"
    boot, ptype, start, count = struct.unpack_from("<B3xB3xII", disk, 446)
    assert (boot, ptype) == (0x80, 0x83) and start * 512 % 2**20 == 0
    part = tmp_path / "boot.ext4"
    part.write_bytes(disk[start * 512:(start + count) * 512])
    listing = debugfs(part, "ls -p /")
    for name in ("vmlinuz", "initramfs.cpio.gz", "boot.scr", "imx6q-sabrelite.dtb"):
        assert f"/{name}/" in listing, name
    initrd = debugfs(part, "stat /initramfs.cpio.gz")
    assert f"Size: {(image_dir / 'initramfs.cpio.gz').stat().st_size}" in initrd


def test_rootfs_is_debian_with_busybox_init_autologin_and_agent(image_dir: Path) -> None:
    rootfs = image_dir / "rootfs.ext4"
    assert rootfs.stat().st_size == 512 * 2**20
    assert "Fast link dest: \"/bin/busybox\"" in debugfs(rootfs, "stat /usr/sbin/init")
    inittab = debugfs(rootfs, "cat /etc/inittab")
    assert "agetty --autologin root" in inittab and "ttymxc1" in inittab
    assert "ID=debian" in debugfs(rootfs, "cat /usr/lib/os-release")
    for path in ("/usr/bin/python3.13", "/usr/lib/python3/dist-packages/appliance/__init__.py",
                 "/usr/local/bin/appliance", "/usr/sbin/agetty", "/etc/init.d/rcS"):
        assert "Type: regular" in debugfs(rootfs, f"stat {path}"), path


def test_debian_root_has_systemd_networkd_getty_autologin_and_agent(image_dir: Path) -> None:
    root = image_dir / "debian.ext4"
    assert root.stat().st_size == 1024 * 2**20
    assert "lib/systemd/systemd" in debugfs(root, "stat /usr/sbin/init")  # systemd-sysv
    assert "VERSION_CODENAME=trixie" in debugfs(root, "cat /usr/lib/os-release")
    wants = "/etc/systemd/system/multi-user.target.wants"
    enabled = debugfs(root, f"ls -l {wants}") + debugfs(
        root, "ls -l /etc/systemd/system/network-online.target.wants")
    for unit in ("systemd-networkd.service", "nbdroot-status.service",
                 "systemd-networkd-wait-online.service"):
        assert unit in enabled, unit
    network = debugfs(root, "cat /etc/systemd/network/20-eth0.network")
    assert "Name=eth0" in network and "DHCP=ipv4" in network
    assert "DefaultDeviceTimeoutSec=" in debugfs(
        root, "cat /etc/systemd/system.conf.d/50-nbdroot.conf")
    getty = debugfs(root, "cat /etc/systemd/system/serial-getty@.service.d/autologin.conf")
    assert "agetty --autologin root" in getty
    for path in ("/usr/bin/python3.13", "/usr/lib/python3/dist-packages/appliance/__init__.py",
                 "/usr/local/bin/appliance", "/usr/sbin/agetty", "/usr/bin/dbus-daemon",
                 "/usr/bin/ip", "/usr/bin/udevadm"):
        assert "Type: regular" in debugfs(root, f"stat {path}"), path
    # systemd's maintainer scripts ran in the tree: its system users exist.
    passwd = debugfs(root, "cat /etc/passwd")
    assert "systemd-network:" in passwd and "messagebus:" in passwd
    assert debugfs(root, "cat /etc/machine-id").strip() == ""  # each board makes its own
def test_baseline_initramfs_is_debian_nbd_client_with_the_reference_init(
        image_dir: Path, initramfs: dict[str, newc.Entry]) -> None:
    """The anchor of ``appliance bench board``: busybox, nbd-client, the same modules."""
    from image.baseline import BASELINE, INIT

    baseline = {e.name: e for e in newc.read_gz(image_dir / BASELINE)}
    assert baseline["init"].data == INIT.read_bytes()
    assert baseline["init"].mode & 0o111
    nbd_client = baseline["usr/sbin/nbd-client"].data
    assert nbd_client[:4] == b"\x7fELF"
    assert not any(name.startswith("usr/lib/python3") for name in baseline)
    assert baseline["etc/appliance/modules.load"].data == \
        initramfs["etc/appliance/modules.load"].data
    ours = {n for n in initramfs if n.startswith("usr/lib/modules/")}
    assert ours == {n for n in baseline if n.startswith("usr/lib/modules/")}
    assert (image_dir / BASELINE).stat().st_size < (image_dir / "initramfs.cpio.gz").stat().st_size
