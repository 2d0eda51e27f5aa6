"""A golden image behind HTTP, served to a board by nbdkit's curl plugin over TLS-PSK.

What the README says a fleet grows into: the golden image on object/HTTP storage, served
read-only by an existing engine.  Real busybox httpd (Range requests) on 127.0.0.1 serves
the fleet's golden version; real nbdkit's curl plugin exports it with the board's key
file; our client reads the whole export: the same SHA-256 as recorded at import.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.client import connect
from appliance.host.fleet import golden
from appliance.host.fleet.state import Fleet
from appliance.host.servers import free_port, start_nbdkit
from tests.listening import wait_for_listen

from .conftest import appliance

pytestmark = pytest.mark.interop
CHUNK = 1 << 20


def test_nbdkit_curl_serves_the_golden_image_from_http(fleet: Path, tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox (Debian package busybox) is needed"
    assert appliance("fleet", "add", "a", "--root-mode", "overlay", fleet=fleet).returncode == 0
    f = Fleet(fleet)
    v = golden.version(f, 1)
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(v.image, www / "golden-1.raw")
    port = free_port()
    httpd = subprocess.Popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)])
    try:
        wait_for_listen(port, 10, 'busybox httpd')
        server = start_nbdkit("curl", f"url=http://127.0.0.1:{port}/golden-1.raw",
                              tmp=tmp_path / "nbdkit", psk_file=f.psk_file("a"),
                              read_only=True, export="a")
        try:
            h = hashlib.sha256()
            with connect(server.uri()) as c:
                assert c.info.size == v.size
                for off in range(0, v.size, CHUNK):
                    h.update(c.pread(off, min(CHUNK, v.size - off)))
            assert h.hexdigest() == v.sha256
        finally:
            server.stop()
    finally:
        httpd.terminate()
        httpd.wait(10)
