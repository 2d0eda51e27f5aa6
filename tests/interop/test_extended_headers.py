"""NBD_OPT_EXTENDED_HEADERS against a real server: qemu-nbd 10 (Debian bookworm-backports).

Debian 12's own qemu-nbd (7.2), nbdkit (1.32) and libnbd (1.14) predate extended headers,
so the client's fallback is tested against them elsewhere; here the backports qemu-utils
package is downloaded once (cached, no root needed: image.debfetch) and its qemu-nbd run
from the unpacked tree on 127.0.0.1, plain and with TLS-PSK.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.client import connect, export_info
from appliance.host.servers import NBDServer, make_image, make_psk, start_qemu_nbd
from image.debfetch import AptFetcher, extract

pytestmark = pytest.mark.interop

MiB = 1024 * 1024
DATA_AT = 3 * MiB


@pytest.fixture(scope="module")
def qemu_nbd_10(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a qemu-nbd that speaks extended headers (bookworm-backports; the .deb is
    cached, the binary unpacked for this module: another test worker may be running one)."""
    fetcher = AptFetcher(suite="bookworm-backports", arch="amd64")
    deb = fetcher.fetch(r"qemu-utils")
    tree = extract(deb, tmp_path_factory.mktemp("qemu-utils"), ["./usr/bin/qemu-nbd"])
    binary = tree / "usr/bin/qemu-nbd"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert int(version.split()[1].split(".")[0]) >= 9, version  # extended headers: 8.2+
    return str(binary)


@pytest.fixture(params=["plain", "tls-psk"])
def server(request: pytest.FixtureRequest, qemu_nbd_10: str,
           tmp_path: Path) -> Iterator[NBDServer]:
    image = make_image(tmp_path / "disk.raw", 16 * MiB,
                       writes=((DATA_AT, bytes(range(256)) * 4096),))
    psk = make_psk(tmp_path / "tls", "alice") if request.param == "tls-psk" else None
    srv = start_qemu_nbd(image, tmp_path / "srv", export="disk", psk_file=psk,
                         binary=qemu_nbd_10)
    try:
        yield srv
    finally:
        srv.stop()


def test_extended_headers_are_negotiated(server: NBDServer) -> None:
    info = export_info(server.uri())
    assert info.extended_headers and info.structured_replies
    assert info.size == 16 * MiB


def test_read_write_zero_and_block_status_with_extended_headers(server: NBDServer) -> None:
    conn = connect(server.uri(), meta_contexts=["base:allocation"])
    try:
        assert conn.info.extended_headers
        assert conn.pread(DATA_AT, 4096) == bytes(range(256)) * 16
        payload = hashlib.sha256(b"extended").digest() * 2048  # 64 KiB
        conn.pwrite(payload, 8 * MiB)
        conn.zero(DATA_AT, MiB)
        conn.flush()
        assert conn.pread(8 * MiB, len(payload)) == payload
        assert conn.pread(DATA_AT, MiB) == bytes(MiB)
        extents = conn.block_status(0, 16 * MiB)["base:allocation"]
        assert sum(e.length for e in extents) <= 16 * MiB
        offset, data_seen = 0, False
        for e in extents:  # the written 64 KiB is reported as data (flag bit 0 clear)
            if offset <= 8 * MiB < offset + e.length:
                data_seen = not e.flags & 1
            offset += e.length
        assert data_seen, extents
    finally:
        conn.close()


def test_copy_over_extended_headers_matches_the_image(server: NBDServer,
                                                      tmp_path: Path) -> None:
    dest = tmp_path / "copy.raw"
    done = subprocess.run([sys.executable, "-m", "appliance", "nbd", "copy", "--no-progress",
                           server.uri(), str(dest)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    expected = bytearray(16 * MiB)
    expected[DATA_AT:DATA_AT + MiB] = bytes(range(256)) * 4096
    assert dest.read_bytes() == bytes(expected)
