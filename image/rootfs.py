"""The root filesystems served as the NBD export: Debian trees in ext4 images.

Two roots, both Debian minbase trees plus ``image/packages.txt``'s lists:

* ``debian.ext4`` (``[debian]``, what ``appliance demo`` boots): systemd as init, udev,
  dbus, systemd-networkd with DHCP on eth0 (and systemd-networkd-wait-online), a serial
  getty logging root in, and ``nbdroot-status.service`` printing ``appliance status`` on
  the console.  systemd's maintainer scripts must run in the tree, so it is made by
  :func:`image.fetch.bootstrap_chroot` (qemu-user in a user namespace); the configuration
  is ``image/files/debian``, enabled by the tree's own systemctl.
* ``rootfs.ext4`` (``[rootfs]``, the fast tests' root): ``--mode=chrootless`` (maintainer
  scripts on the host), busybox init with the inittab and rcS of ``image/files/rootfs``.

The initramfs's Python, its libraries, kernel modules and the agent are copied into both,
so ``appliance status`` works after switch_root.  Each image is a sparse ext4 file made by
``mke2fs -d`` with a fixed UUID, hash seed and time.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from image import fetch
from image.run import run
from image.spec import ImageSpec

FILES = Path(__file__).with_name("files") / "rootfs"
DEBIAN_FILES = Path(__file__).with_name("files") / "debian"
WRAPPER = "usr/local/bin/appliance"  # the agent's command line, in both roots
ROOTFS = "rootfs.ext4"
DEBIAN = "debian.ext4"
SIZE = 512 * 2**20
DEBIAN_SIZE = 1024 * 2**20
FS_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "nbdroot-imx6/rootfs")
DEBIAN_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "nbdroot-imx6/debian")
# Enabled in the Debian root by its systemctl (the rest is the packages' own presets).
DEBIAN_UNITS = ("systemd-networkd.service", "systemd-networkd-wait-online.service",
                "nbdroot-status.service")
# From the initramfs tree: the parts a minbase tree lacks.
FROM_INITRAMFS = ("usr/bin/python3.13", "usr/bin/python3", "usr/lib/python3.13",
                  "usr/lib/python3", "usr/lib/arm-linux-gnueabihf", "usr/lib/modules")


def _merge(src: Path, dst: Path) -> None:
    """Copy ``src`` into ``dst``, never replacing what the Debian tree already has."""
    if src.is_symlink() or src.is_file():
        if not dst.exists() and not dst.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        return
    for child in sorted(src.iterdir()):
        _merge(child, dst / child.name)


def add_agent(initramfs_tree: Path, tree: Path) -> None:
    """Add Python, the agent, modules and the agent's command line to ``tree``."""
    for rel in FROM_INITRAMFS:
        _merge(initramfs_tree / rel, tree / rel)
    (tree / WRAPPER).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(FILES / WRAPPER, tree / WRAPPER)


def overlay(initramfs_tree: Path, tree: Path) -> None:
    """Add the agent and busybox init's configuration to the minimal ``tree``."""
    add_agent(initramfs_tree, tree)
    shutil.copytree(FILES, tree, dirs_exist_ok=True, symlinks=True)
    init = tree / "sbin/init"
    init.unlink(missing_ok=True)
    init.symlink_to("/bin/busybox")


def clamp_times(tree: Path, epoch: int) -> None:
    """Set every entry's atime and mtime to ``epoch`` (maintainer scripts leave 'now')."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def make_ext4(tree: Path, dest: Path, *, epoch: int, size: int = SIZE, label: str = "nbdroot",
              fs_uuid: uuid.UUID = FS_UUID) -> None:
    """A sparse ext4 image of ``tree`` (reproducible: fixed UUID, hash seed, times)."""
    clamp_times(tree, epoch)
    dest.unlink(missing_ok=True)
    with dest.open("wb") as f:
        f.truncate(size)
    fake_time = {"E2FSPROGS_FAKE_TIME": str(epoch)}
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-U", str(fs_uuid),
         "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", tree, dest], env=fake_time)
    # mke2fs -d copies each file's ctime (no tool can set it on the host) and atime
    # (reading the tree updates directories' atime): reset both in the image.
    script = dest.with_name(dest.name + ".debugfs")
    paths = ["/", *(f"/{p.relative_to(tree).as_posix()}" for p in sorted(tree.rglob("*"))
                    if '"' not in p.name)]
    script.write_text("".join(f'sif "{p}" ctime @{epoch}\nsif "{p}" atime @{epoch}\n'
                              for p in paths))
    run(["debugfs", "-w", "-f", script, dest], env=fake_time)
    script.unlink()


def build(image_spec: ImageSpec, work: Path, out: Path, *, suite: str, cache: Path,
          epoch: int) -> str:
    """Bootstrap, overlay and pack the minimal root; return its file name in ``out``."""
    tree = work / "rootfs"
    fetch.bootstrap(image_spec.rootfs_packages, tree, suite=suite, cache=cache, epoch=epoch)
    overlay(work / "initramfs", tree)
    make_ext4(tree, out / ROOTFS, epoch=epoch)
    shutil.rmtree(tree)
    return ROOTFS


def build_debian(image_spec: ImageSpec, work: Path, out: Path, *, suite: str, cache: Path,
                 epoch: int) -> str:
    """Bootstrap (systemd), add the agent and pack the Debian root; its file name."""
    tree = work / "debian"
    fetch.bootstrap_chroot(image_spec.debian_packages, tree, suite=suite, cache=cache,
                           epoch=epoch, files=DEBIAN_FILES, enable=DEBIAN_UNITS)
    add_agent(work / "initramfs", tree)
    make_ext4(tree, out / DEBIAN, epoch=epoch, size=DEBIAN_SIZE, label="nbdroot-debian",
              fs_uuid=DEBIAN_UUID)
    shutil.rmtree(tree)
    return DEBIAN
