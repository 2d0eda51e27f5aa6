"""The agent boots the emulated SABRE Lite from a TLS-PSK NBD root, and keeps it.

Real QEMU (-M sabrelite), real qemu-nbd with TLS-PSK on 127.0.0.1 (the guest reaches it
as 10.0.2.2), the real initramfs with the agent as PID 1.  Console *input* is unreliable
on QEMU 7.2's i.MX UART, so what the booted system must do is put into the root image
beforehand as /etc/rc.local (the root's rcS runs it), written with debugfs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from appliance.host.demo import IDENTITY, ROOT_OK
from appliance.host.servers import NBDServer, make_psk
from tests.figures import figure
from tests.image_artefacts import debugfs
from tests.system.agent_boot import boot, psk_settings, raw_root, start_root_server

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 420.0

WRITER = """#!/bin/sh
# Written by tests/system/test_agent_boot.py: write while the server restarts, verify, power off.
echo "rc.local: WRITING"
dd if=/dev/urandom of=/root/blob bs=64k count=256 conv=fsync 2>/dev/null \
    || echo "rc.local: DD FAILED"
md5sum /root/blob > /root/blob.md5
sync
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /root/blob.md5 >/dev/null && echo "rc.local: VERIFIED" || echo "rc.local: MISMATCH"
echo "rc.local: IOERRORS=$(dmesg | grep -ci 'i/o error')"
/bin/busybox poweroff
"""


# nbd.path: the default (ktls: the kernel reads a kTLS socket, a supervisor reconnects
# it) and the relay, which stays the path for replicas and kernels without kTLS.
@pytest.mark.parametrize("path", ["ktls", "relay"])
def test_root_over_tls_psk_survives_a_server_kill_and_keeps_the_data(
        path: str, image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    root = raw_root(image_dir, tmp_path, WRITER)
    key = secrets.token_bytes(32)
    server = start_root_server(root, tmp_path, key)
    serve.append(server)
    assert server.port is not None
    settings = psk_settings(server.port, key)
    if path != "ktls":
        settings["nbd.path"] = path  # ktls is the default: the settings leave it out
    board = boot(image_dir, tmp_path, settings)
    try:
        ok = board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
        booted = time.monotonic() - board.started
        assert ok.group(1) == b"/dev/nbd0"
        served = {"ktls": r"relay \([\d.]+s\): [^\r\n]*kTLS[^\r\n]*\(supervisor pid \d+\)",
                  "relay": r"relay \([\d.]+s\): /dev/nbd0 \(relay pid \d+\)"}[path]
        assert re.search(served, board.output), board.tail()
        board.expect(r"rc\.local: WRITING", 120)
        time.sleep(2.0)
        server.restart(down_for=3.0, hard=True)  # SIGKILL mid-write, back on the same port
        result = board.expect(r"rc\.local: (VERIFIED|MISMATCH)", 600)
        assert result.group(1) == b"VERIFIED", board.tail()
        errors = board.expect(r"rc\.local: IOERRORS=(\d+)", 60)
        assert errors.group(1) == b"0", board.tail()
        board.expect(r"reboot: Power down|System halted", 180)
    finally:
        board.stop()
        server.stop()
    figure(f"boot to NBD root (QEMU start to status line, TLS-PSK, nbd.path={path}, "
           f"sabrelite): {booted:.1f} s")
    # What the guest wrote is on the server's image, and the filesystem was left clean.
    listing = debugfs(root, "cat /root/blob.md5")
    dumped = tmp_path / "blob"
    debugfs(root, f"dump /root/blob {dumped}")
    assert hashlib.md5(dumped.read_bytes()).hexdigest() in listing
    header = subprocess.run(["dumpe2fs", "-h", str(root)], capture_output=True, text=True,
                            timeout=60).stdout
    assert re.search(r"Filesystem state:\s+clean", header), header


def test_boot_waits_for_the_server_and_names_a_wrong_psk(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    root = raw_root(image_dir, tmp_path)
    board_key, wrong_key = secrets.token_bytes(32), secrets.token_bytes(32)
    server = start_root_server(root, tmp_path, wrong_key)
    serve.append(server)
    assert server.port is not None
    server.stop()  # the port is known; nothing listens yet
    board = boot(image_dir, tmp_path, psk_settings(server.port, board_key))
    try:
        board.expect(r"nbdroot: [^\r\n]*refused[^\r\n]*; retrying", BOOT_TIMEOUT)
        server.start()
        board.expect(r"nbdroot: [^\r\n]*wrong PSK or identity\?[^\r\n]*; retrying", 120)
        assert server.psk_file is not None
        make_psk(server.psk_file.parent, IDENTITY, board_key)
        server.restart(hard=False)
        ok = board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
        assert ok.group(1) == b"/dev/nbd0"
    finally:
        board.stop()
    assert board_key.hex() not in board.output  # the key is never shown on the console


def test_an_absent_phy_address_stops_the_boot_with_a_clear_error(
        image_dir: Path, tmp_path: Path) -> None:
    board = boot(image_dir, tmp_path, {"nbd.uri": "nbds://demo@10.0.2.2:1/root",
                                       "psk.identity": IDENTITY,
                                       "psk.key": secrets.token_hex(32), "board.phy": "4"})
    try:
        m = board.expect(r"nbdroot: boot failed: ([^\r\n]+)", BOOT_TIMEOUT)
        board.expect(r"rescue shell", 30)
    finally:
        board.stop()
    assert b"PHY configured at MDIO address 4 but found" in m.group(1)
    assert b" 6 " in m.group(1) or b"at 6" in m.group(1), m.group(1)

