"""Failures a user meets with ``appliance nbd``: one line naming problem and URI, a
non-zero exit, no traceback.  Servers are real; the corrupt-reply case puts a small
byte-flipping proxy (a fake, named so) between the client and a real nbdkit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.interop.util import appliance, one_line_error

pytestmark = pytest.mark.interop

REQUEST_MAGIC = bytes.fromhex("25609513")


def test_wrong_psk(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.nbdkit("memory", "size=1M", psk_file=psk_file)
    wrong = servers.make_psk(tmp_path / "wrong", identity="alice")
    line = one_line_error(appliance("nbd", "info", srv.uri(psk_file=wrong)))
    assert f"TLS handshake with 127.0.0.1:{srv.port} failed: wrong PSK or identity?" in line


def test_wrong_psk_qemu_nbd(nbd_servers, psk_file, tmp_path) -> None:
    img = servers.make_image(tmp_path / "d.img", 1 << 20)
    srv = nbd_servers.qemu_nbd(img, psk_file=psk_file)
    wrong = servers.make_psk(tmp_path / "wrong", identity="alice")
    line = one_line_error(appliance("nbd", "copy", srv.uri(psk_file=wrong), "/dev/null"))
    assert "wrong PSK or identity?" in line


def test_unknown_export(nbd_servers, psk_file, tmp_path) -> None:
    img = servers.make_image(tmp_path / "d.img", 1 << 20)
    srv = nbd_servers.qemu_nbd(img, export="disk", psk_file=psk_file)
    uri = srv.uri("nosuch")
    line = one_line_error(appliance("nbd", "info", uri))
    assert uri in line and ("unknown" in line.lower() or "not" in line.lower())


def test_refused_connection() -> None:
    port = servers.free_port()
    line = one_line_error(appliance("nbd", "info", f"nbd://127.0.0.1:{port}/"))
    assert f"cannot connect to 127.0.0.1:{port}" in line and "refused" in line


def test_tls_uri_against_plaintext_server_never_falls_back(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("memory", "size=1M")
    line = one_line_error(appliance("nbd", "info", srv.uri(tls=True, psk_file=psk_file)))
    assert "TLS" in line and srv.uri(tls=True, psk_file=psk_file) in line


def test_plaintext_uri_against_tls_server(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("memory", "size=1M", psk_file=psk_file)
    line = one_line_error(appliance("nbd", "info", srv.uri(tls=False)))
    assert "TLS" in line and "nbds://" in line


def test_psk_file_readable_by_others(tmp_path) -> None:
    key = servers.make_psk(tmp_path / "k")
    os.chmod(key, 0o644)
    line = one_line_error(appliance("nbd", "info", f"nbds://alice@127.0.0.1/?tls-psk-file={key}"))
    assert "chmod 600" in line
    assert key.read_text().split(":")[1].strip() not in line


@pytest.mark.parametrize("uri", ["nbd+vsock://3/", "nbd://h:70000/", "http://x/"])
def test_bad_uri_is_usage_error(uri: str) -> None:
    r = appliance("nbd", "info", uri)
    one_line_error(r)
    assert r.returncode == 2


def test_server_killed_mid_copy(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=1G", "delay-read=20ms", filters=("delay",),
                             psk_file=psk_file)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "nbd", "copy", srv.uri(),
                             str(tmp_path / "out.img")], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        srv.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    line = one_line_error(r)
    assert f"127.0.0.1:{srv.port}" in line and srv.uri() in line
    assert "closed the connection" in line or "connection lost" in line


class CorruptingProxy:
    """A fake middlebox: forwards bytes to a real server, but flips the first reply magic
    the server sends after the client's first transmission request."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.corrupted = threading.Event()
        self.request_seen = threading.Event()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        self.listener.settimeout(30)
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        self.socks += [client, server]
        for a, b, up in ((client, server, True), (server, client, False)):
            t = threading.Thread(target=self._pump, args=(a, b, up), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        for _ in range(100_000):  # bounded
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if upstream and data.startswith(REQUEST_MAGIC):
                self.request_seen.set()
            elif not upstream and self.request_seen.is_set() and not self.corrupted.is_set():
                data = b"\xde\xad\xbe\xef" + data[4:]
                self.corrupted.set()
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def corrupting_proxy(nbd_servers) -> Iterator[CorruptingProxy]:
    srv = nbd_servers.nbdkit("pattern", "size=4M")
    proxy = CorruptingProxy(srv.port)
    try:
        yield proxy
    finally:
        proxy.close()


def test_corrupt_reply(corrupting_proxy, tmp_path: Path) -> None:
    uri = f"nbd://127.0.0.1:{corrupting_proxy.port}/"
    line = one_line_error(appliance("nbd", "copy", "--connections", "1", uri,
                                    str(tmp_path / "o.img")))
    assert corrupting_proxy.corrupted.is_set()
    assert "magic" in line and uri in line
