"""The server fixtures other tests build on: readiness, PIDs, restart on the same port."""

from __future__ import annotations

import os

import pytest

from appliance.client import connect
from appliance.errors import TransportError
from appliance.transport import ConnectPolicy
from tests import servers

pytestmark = pytest.mark.interop


def test_restart_keeps_port_and_serves_again(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=1M", psk_file=psk_file)
    port, first_pid = srv.port, srv.pid
    with connect(srv.uri()) as c:
        assert len(c.pread(0, 8)) == 8
    srv.kill()
    with pytest.raises(TransportError, match="refused"):
        connect(srv.uri(), policy=ConnectPolicy(attempts=1))
    srv.start()
    assert srv.port == port and srv.pid != first_pid
    with connect(srv.uri()) as c:
        assert len(c.pread(0, 8)) == 8


def test_qemu_nbd_restart_and_stop_by_pid(nbd_servers, psk_file, tmp_path) -> None:
    img = servers.make_image(tmp_path / "d.img", 1 << 20, writes=((0, b"boot"),))
    srv = nbd_servers.qemu_nbd(img, psk_file=psk_file)
    srv.restart(down_for=0.1)
    with connect(srv.uri()) as c:
        assert c.pread(0, 4) == b"boot"
    pid = srv.pid
    srv.stop()
    assert srv.proc is not None and srv.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failed_start_reports_the_server_log(tmp_path) -> None:
    with pytest.raises(servers.ServerError, match="nbdkit exited"):
        servers.start_nbdkit("no-such-plugin-xyz", tmp=tmp_path)
