"""The root image boots over NBD: initramfs -> plain NBD (busybox) -> switch_root.

A stand-in for the agent's TLS relay, to test ``rootfs.ext4`` itself: the initramfs's
``appliance.init=nbd`` mode attaches a real qemu-nbd export (on the host's 127.0.0.1,
reached as 10.0.2.2 through QEMU's user network) with busybox's nbd-client, mounts it
and switch_roots to its busybox init, which logs root in on the console.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from image.qemu import SABRELITE, QemuBoard

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 300.0


def test_rootfs_boots_from_a_qemu_nbd_export(image_dir: Path, tmp_path: Path,
                                             nbd_servers: Any) -> None:
    # -s: writes go to a throw-away overlay, the built image stays pristine
    server = nbd_servers.qemu_nbd(image_dir / "rootfs.ext4", export="root", extra=("-s",))
    append = f"appliance.init=nbd appliance.nbd=10.0.2.2:{server.port}:root"
    with QemuBoard.for_image(image_dir, tmp_path / "console.log", machine=SABRELITE,
                             append=append) as board:
        board.expect(r"eth0 10\.0\.2\.15/24", BOOT_TIMEOUT)
        m = board.expect(r"\[([\d.]+)\] root mounted from nbd://10\.0\.2\.2", BOOT_TIMEOUT)
        switched = time.monotonic()
        board.expect(r"nbdroot: root filesystem up", BOOT_TIMEOUT)
        board.expect(r"root@nbdroot:~# ", BOOT_TIMEOUT)
        print(f"root mounted at guest {float(m.group(1)):.1f} s; init to login prompt "
              f"{time.monotonic() - switched:.1f} s (host clock)")
