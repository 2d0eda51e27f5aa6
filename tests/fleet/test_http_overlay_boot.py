"""A board boots read-only from a golden image on HTTP: nbdkit curl, TLS-PSK, the relay.

What the README's "beyond one machine" section says a fleet's golden root grows into,
booted for real: busybox httpd (Range requests) on 127.0.0.1 serves the built root with
an ``/etc/rc.local`` hook; nbdkit's curl plugin exports it read-only with TLS-PSK; a
QEMU sabrelite board with ``root.mode=overlay`` attaches it through the relay, mounts it
read-only under an overlayfs with a tmpfs upper and writes a file there.  The file is
in the board's overlay; the golden image's SHA-256 is unchanged.
"""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

import pytest

from appliance.host import children
from appliance.host.demo import EXPORT, IDENTITY, ROOT_OK
from appliance.host.servers import free_port, make_psk, start_nbdkit
from tests.figures import figure
from tests.image_artefacts import built_image_dir
from tests.listening import wait_for_listen
from tests.system.agent_boot import boot, psk_settings

from .conftest import sha256
from .test_overlay_boot import golden_with_hook

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.interop]

BOOT_TIMEOUT = 480.0  # every read is an HTTP range request through nbdkit
RC_LOCAL = """#!/bin/sh
# Written by tests/fleet/test_http_overlay_boot.py: write into the overlay, report.
mark=/http-overlay-$(cat /proc/sys/kernel/random/uuid)
echo written-on-the-board > "$mark" && sync
echo "http-root: $(grep -c '^overlay / overlay' /proc/mounts) overlay, $(cat "$mark") in $mark"
"""


def test_a_board_boots_read_only_from_nbdkit_curl_over_http(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox (Debian package busybox) is needed"
    out = built_image_dir()
    www = tmp_path / "www"
    www.mkdir()
    golden = golden_with_hook(out, www / "golden.img", tmp_path, RC_LOCAL)
    before = sha256(golden)
    key = secrets.token_bytes(32)
    psk = make_psk(tmp_path / "tls", IDENTITY, key)
    port = free_port()
    httpd = children.popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)])
    try:
        wait_for_listen(port, 10, 'busybox httpd')
        server = start_nbdkit("curl", f"url=http://127.0.0.1:{port}/golden.img",
                              tmp=tmp_path / "nbdkit", psk_file=psk, read_only=True,
                              export=EXPORT)
        try:
            assert server.port is not None
            board = boot(out, tmp_path, {**psk_settings(server.port, key),
                                                   "root.mode": "overlay",
                                                   "root.overlay-size": "64M"})
            try:
                ok = board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
                booted = time.monotonic() - board.started
                seen = board.expect(rb"http-root: (\d+) overlay, (\S+) in (/\S+)\r?\n", 180)
            finally:
                board.stop()
        finally:
            server.stop()
    finally:
        children.end(httpd, 10)
    assert ok.group(1) == b"/dev/nbd0"
    assert seen.group(1) == b"1" and seen.group(2) == b"written-on-the-board", seen.group(0)
    assert "I/O error" not in board.output, board.tail()
    assert sha256(golden) == before
    figure(f"overlay boot from nbdkit curl over HTTP (QEMU start to status line): "
           f"{booted:.1f} s")
