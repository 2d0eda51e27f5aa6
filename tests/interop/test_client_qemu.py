"""The blocking client against real qemu-nbd: plain TCP, Unix socket, TLS-PSK; raw and
qcow2 images with holes; --allocation-depth; a dirty bitmap; block status vs nbdinfo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.client import connect, export_info, list_exports, list_meta_contexts
from appliance.errors import OptionError, TransportError
from appliance.nbd import Extent
from tests import servers
from tests.interop.util import nbdinfo_map

pytestmark = pytest.mark.interop

SIZE = 8 << 20
DATA1 = (1 << 20, os.urandom(65536))
DATA2 = (5 << 20, b"\xaa" * 4096)


def image(tmp_path: Path, fmt: str) -> Path:
    return servers.make_image(tmp_path / f"disk.{fmt}", SIZE, fmt=fmt, writes=(DATA1, DATA2))


def expected_bytes() -> bytearray:
    buf = bytearray(SIZE)
    for off, data in (DATA1, DATA2):
        buf[off:off + len(data)] = data
    return buf


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("transport", ["tcp", "unix", "tls"])
def test_read_whole_image(nbd_servers, psk_file, tmp_path, fmt, transport) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, fmt), fmt=fmt, unix=transport == "unix",
                               psk_file=psk_file if transport == "tls" else None)
    with connect(srv.uri()) as c:
        assert c.info.size == SIZE
        assert c.info.structured_replies
        assert not c.info.extended_headers  # qemu-nbd 7.2: clean fallback
        got = b"".join(c.pread(off, 1 << 20) for off in range(0, SIZE, 1 << 20))
    assert got == expected_bytes()


def test_write_zero_trim_flush_cache_roundtrip(nbd_servers, psk_file, tmp_path) -> None:
    img = image(tmp_path, "raw")
    srv = nbd_servers.qemu_nbd(img, psk_file=psk_file)
    payload = os.urandom(12345)
    with connect(srv.uri()) as c:
        c.pwrite(payload, 3 << 20)
        c.flush()
        assert c.pread(3 << 20, len(payload)) == payload
        c.zero(DATA1[0], 4096)
        assert c.pread(DATA1[0], 4096) == bytes(4096)
        c.trim(6 << 20, 1 << 20)
        c.cache(0, 1 << 20)
    with open(img, "rb") as f:
        f.seek(3 << 20)
        assert f.read(len(payload)) == payload


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_block_status_matches_nbdinfo(nbd_servers, psk_file, tmp_path, fmt) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, fmt), fmt=fmt, psk_file=psk_file)
    with connect(srv.uri(), meta_contexts=("base:allocation",)) as c:
        rows: list[tuple[int, int, int]] = []
        off = 0
        while off < SIZE:
            extents = c.block_status(off, SIZE - off)["base:allocation"]
            for e in extents:
                if rows and rows[-1][2] == e.flags:
                    rows[-1] = (rows[-1][0], rows[-1][1] + e.length, e.flags)
                else:
                    rows.append((off, e.length, e.flags))
                off += e.length
    assert rows == nbdinfo_map(srv.uri())
    assert any(t == 0 for _, _, t in rows) and any(t & 2 for _, _, t in rows)


def test_allocation_depth_and_dirty_bitmap(nbd_servers, psk_file, tmp_path) -> None:
    img = image(tmp_path, "qcow2")
    servers.add_bitmap(img, "b0")
    servers.qemu_io_write(img, "qcow2", 7 << 20, b"z" * 65536)  # dirties the bitmap
    srv = nbd_servers.qemu_nbd(img, fmt="qcow2", allocation_depth=True, bitmap="b0",
                               psk_file=psk_file)
    contexts = list_meta_contexts(srv.uri())
    assert {"base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"} <= set(contexts)
    wanted = ("qemu:allocation-depth", "qemu:dirty-bitmap:b0")
    with connect(srv.uri(), meta_contexts=wanted) as c:
        assert set(c.info.meta_contexts) == set(wanted)
        status = c.block_status(7 << 20, 1 << 20)
    assert status["qemu:dirty-bitmap:b0"][0].flags & 1  # NBD_STATE_DIRTY
    assert status["qemu:allocation-depth"][0].flags == 1  # allocated locally
    with connect(srv.uri(), meta_contexts=wanted) as c:
        clean = c.block_status(0, 1 << 20)
    assert clean["qemu:dirty-bitmap:b0"][0] == Extent(1 << 20, 0) or \
        not clean["qemu:dirty-bitmap:b0"][0].flags & 1


def test_info_and_list_with_description(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), export="disk0", description="root fs",
                               psk_file=psk_file, read_only=True)
    info = export_info(srv.uri())
    assert (info.size, info.read_only, info.description) == (SIZE, True, "root fs")
    exports = list_exports(srv.uri())
    assert [(e.name, e.description) for e in exports] == [("disk0", "root fs")]


def test_read_only_export_refuses_writes(nbd_servers, tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), read_only=True)
    with connect(srv.uri()) as c:
        assert c.info.read_only
        with pytest.raises(Exception, match="read-only"):
            c.pwrite(b"x", 0)
        assert c.pread(DATA2[0], 4) == b"\xaa" * 4  # the connection still works


def test_unknown_export_is_option_error(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), export="disk0", psk_file=psk_file)
    with pytest.raises(OptionError) as info:
        connect(srv.uri("nope"))
    assert srv.uri("nope") in str(info.value)


def test_wrong_psk_is_a_transport_error(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), psk_file=psk_file)
    other = servers.make_psk(tmp_path / "other", identity="alice")
    with pytest.raises(TransportError, match="wrong PSK or identity"):
        connect(srv.uri(psk_file=other))
    with pytest.raises(TransportError, match="wrong PSK or identity"):
        connect(srv.uri(identity="mallory", psk_file=servers.make_psk(tmp_path / "m", "mallory")))


def test_plaintext_to_tls_server_and_tls_to_plain_server(nbd_servers, psk_file, tmp_path) -> None:
    tls_srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), psk_file=psk_file)
    with pytest.raises(OptionError, match="TLS"):
        connect(tls_srv.uri(tls=False))
    plain = nbd_servers.qemu_nbd(tmp_path / "disk.raw")
    with pytest.raises(OptionError, match="TLS") as info:
        connect(plain.uri(tls=True, psk_file=psk_file))  # nbds:// never falls back
    assert "\n" not in str(info.value)


def test_out_of_range_read_fails_and_connection_survives(nbd_servers, tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"))
    with connect(srv.uri()) as c:
        with pytest.raises(Exception, match="past"):
            c.pread(SIZE - 10, 20)  # refused locally, before sending
        assert len(c.pread(0, 10)) == 10


def test_tls_x509_with_client_certificate(nbd_servers, tmp_path) -> None:
    server_dir, client_dir = servers.make_x509(tmp_path / "pki")
    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), x509_dir=server_dir)
    uri = f"nbds://127.0.0.1:{srv.port}/?tls-certificates={client_dir}"
    with connect(uri) as c:
        assert c.pread(*DATA1[:1], len(DATA1[1])) == DATA1[1]
    other, _ = servers.make_x509(tmp_path / "other")  # a CA that did not sign the server
    with pytest.raises(TransportError, match="not trusted"):
        connect(f"nbds://127.0.0.1:{srv.port}/?tls-certificates={other}")


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_tls_psk_versions_with_gnutls_server(nbd_servers, psk_file, tmp_path, version) -> None:
    import ssl

    from appliance.client import Connection, negotiate
    from appliance.config.psk import choose_psk, read_keys
    from appliance.nbd import Negotiated
    from appliance.nbd.uri import parse_uri
    from appliance.transport.tls import psk_context

    srv = nbd_servers.qemu_nbd(image(tmp_path, "raw"), psk_file=psk_file)
    uri = parse_uri(srv.uri())
    ctx = psk_context(choose_psk(read_keys(str(psk_file)), "alice", str(psk_file)))
    pinned = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = pinned
    n = negotiate(uri, context=ctx)
    assert isinstance(n.sock, ssl.SSLSocket) and n.sock.version() == version
    assert isinstance(n.event, Negotiated)
    with Connection(n.sock, n.event.info, uri, n.trailing) as c:
        assert c.pread(DATA2[0], 16) == b"\xaa" * 16
