"""The baseline initramfs: the anchor ``appliance bench board`` measures ours against.

What a user would compare with: Debian's classic nbdroot initramfs (initramfs-tools plus
``nbd-client``'s ``local-top/nbd``), reduced to one busybox ``/init``
(``image/files/baseline-init``, the reference script of issue 14).  Debian's armhf
``nbd-client`` attaches ``/dev/nbd0`` kernel-direct to a plaintext server (no Python, no
TLS, no relay).  It carries the same kernel modules, in the same order, as the
appliance's initramfs, and boots the same root filesystem.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from image import initramfs, kmods
from image.spec import ImageSpec

BASELINE = "initramfs-baseline.cpio.gz"
INIT = initramfs.FILES / "baseline-init"
PROGRAMS = ("usr/bin/busybox", "usr/bin/kmod", "usr/sbin/nbd-client")
DIRS = ("dev", "proc", "sys", "run", "tmp", "root", "newroot", "etc/appliance", "usr/sbin")


def assemble(src_tree: Path, dst_tree: Path, spec: ImageSpec) -> list[str]:
    """Build the baseline tree in ``dst_tree`` (emptied first); return its libraries."""
    if dst_tree.exists():
        shutil.rmtree(dst_tree)
    dst_tree.mkdir(parents=True)
    for rel in DIRS:
        (dst_tree / rel).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        (dst_tree / link).symlink_to(target)
    for rel in PROGRAMS:
        initramfs.copy_from_tree(src_tree, dst_tree, Path(rel))
    (dst_tree / "usr/bin/sh").symlink_to("busybox")
    for name in initramfs.KMOD_LINKS:
        (dst_tree / "usr/sbin" / name).symlink_to("../bin/kmod")
    shutil.copy2(INIT, dst_tree / "init")
    udhcpc = dst_tree / "usr/share/udhcpc/default.script"
    udhcpc.parent.mkdir(parents=True)
    shutil.copy2(initramfs.FILES / "udhcpc.script", udhcpc)
    (dst_tree / "etc/appliance/modules.load").write_text("\n".join(spec.modules) + "\n")
    (dst_tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dst_tree / "etc/group").write_text("root:x:0:\n")
    kmods.install(src_tree, dst_tree, spec.modules)
    return initramfs.add_libraries(src_tree, dst_tree)
