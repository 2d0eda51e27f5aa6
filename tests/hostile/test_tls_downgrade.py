"""TLS downgrade attempts after ``nbds://``: the client must refuse, never go on in plaintext.

The hostile server refuses NBD_OPT_STARTTLS, skips it, pretends to accept it and then keeps
talking plaintext, or offers no fixed newstyle at all.  In every case the client must end
with a clean NBDError, and the bytes it sent must hold no option but NBD_OPT_STARTTLS (and
NBD_OPT_ABORT): no export name, no NBD_OPT_GO / INFO / LIST in the clear.  A subset runs
through the real CLI (``appliance nbd info``) as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.client import connect, export_info
from appliance.nbd import proto
from tests import servers
from tests.hostile import harness
from tests.hostile_server import Conn, HostileServer, greeting, option_reply

pytestmark = pytest.mark.xdist_group("hostile")  # one worker: one tally (conftest)

ALLOWED_IN_CLEAR = {int(proto.NBD_OPT_STARTTLS), int(proto.NBD_OPT_ABORT)}


def plaintext_options(received: bytes) -> list[int]:
    """Option numbers found after each IHAVEOPT the client sent."""
    magic = proto.IHAVEOPT.to_bytes(8, "big")
    out, pos = [], received.find(magic)
    while pos >= 0:
        out.append(int.from_bytes(received[pos + 8:pos + 12], "big"))
        pos = received.find(magic, pos + 8)
    return out


def _refuse(reply: int):
    def script(conn: Conn) -> None:
        conn.send(greeting())
        conn.recv_exact(4)
        for _ in range(4):
            option, _ = conn.read_option()
            conn.send(option_reply(option, reply))

    return script


def _ack_then_plaintext(conn: Conn) -> None:
    """Accept STARTTLS, then carry on in the clear as if TLS were up."""
    conn.send(greeting())
    conn.recv_exact(4)
    option, _ = conn.read_option()
    conn.send(option_reply(option, proto.NBD_REP_ACK))
    info = proto.INFO_EXPORT.pack(proto.NBD_INFO_EXPORT, 1 << 20, 1)
    conn.send(option_reply(proto.NBD_OPT_GO, proto.NBD_REP_INFO, info)
              + option_reply(proto.NBD_OPT_GO, proto.NBD_REP_ACK))
    conn.recv_exact(512)  # whatever the client sends (its TLS ClientHello), until it gives up


def _skip_starttls(conn: Conn) -> None:
    """Ignore STARTTLS and answer as if the client had asked for NBD_OPT_GO."""
    conn.send(greeting())
    conn.recv_exact(4)
    conn.read_option()
    info = proto.INFO_EXPORT.pack(proto.NBD_INFO_EXPORT, 1 << 20, 1)
    conn.send(option_reply(proto.NBD_OPT_GO, proto.NBD_REP_INFO, info)
              + option_reply(proto.NBD_OPT_GO, proto.NBD_REP_ACK))
    conn.recv_exact(512)


def _not_fixed_newstyle(conn: Conn) -> None:
    conn.send(greeting(flags=proto.NBD_FLAG_NO_ZEROES))
    conn.recv_exact(4)
    conn.read_option()  # a downgraded client would send NBD_OPT_EXPORT_NAME here
    conn.send(proto.EXPORT_NAME_REPLY.pack(1 << 20, 1))


def _ack_then_close(conn: Conn) -> None:
    conn.send(greeting())
    conn.recv_exact(4)
    option, _ = conn.read_option()
    conn.send(option_reply(option, proto.NBD_REP_ACK))


def _tls_reqd_loop(conn: Conn) -> None:
    """Answer STARTTLS with NBD_REP_ERR_TLS_REQD (nonsense) and wait for more options."""
    conn.send(greeting())
    conn.recv_exact(4)
    for _ in range(4):
        option, _ = conn.read_option()
        conn.send(option_reply(option, proto.NBD_REP_ERR_TLS_REQD))


SCRIPTS = {
    "STARTTLS refused (ERR_UNSUP)": _refuse(proto.NBD_REP_ERR_UNSUP),
    "STARTTLS refused (ERR_POLICY)": _refuse(proto.NBD_REP_ERR_POLICY),
    "STARTTLS refused (ERR_INVALID)": _refuse(proto.NBD_REP_ERR_INVALID),
    "STARTTLS answered with ERR_TLS_REQD": _tls_reqd_loop,
    "STARTTLS acked, then plaintext": _ack_then_plaintext,
    "STARTTLS skipped, GO replies sent": _skip_starttls,
    "no fixed newstyle (no STARTTLS possible)": _not_fixed_newstyle,
    "STARTTLS acked, then close": _ack_then_close,
}


@pytest.fixture(scope="module")
def psk(tmp_path_factory) -> Path:
    return servers.make_psk(tmp_path_factory.mktemp("psk"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("action", ["info", "go"])
def test_nbds_never_falls_back(name: str, action: str, psk: Path) -> None:
    srv = HostileServer(SCRIPTS[name])
    uri = srv.uri("disk", scheme="nbds", query=f"tls-psk-file={psk}").replace(
        "nbds://", "nbds://alice@")
    call = (lambda: export_info(uri, policy=harness.POLICY)) if action == "info" else (
        lambda: connect(uri, policy=harness.POLICY).close())
    try:
        out = harness.run_case(call, on_hang=srv.close)
    finally:
        srv.close()
    harness.check(out, name)
    assert out.error is not None, f"{name}: the client went on without TLS"
    sent = plaintext_options(srv.received)
    assert not sent or sent[0] == proto.NBD_OPT_STARTTLS, sent
    assert set(sent) <= ALLOWED_IN_CLEAR, f"{name}: options sent in the clear: {sent}"
    assert b"disk" not in srv.received, f"{name}: the export name went out in the clear"


@pytest.mark.parametrize("name", ["STARTTLS refused (ERR_UNSUP)", "STARTTLS acked, then plaintext",
                                  "no fixed newstyle (no STARTTLS possible)"])
def test_cli_refuses_downgrade(name: str, psk: Path) -> None:
    srv = HostileServer(SCRIPTS[name])
    uri = f"nbds://alice@127.0.0.1:{srv.port}/disk?tls-psk-file={psk}"
    try:
        r = subprocess.run([sys.executable, "-m", "appliance", "nbd", "info", uri],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        srv.close()
    harness.TALLY["cases"] += 1
    harness.TALLY["cli"] += 1
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("appliance: error: "), r.stderr
    assert "TLS" in lines[0] or "STARTTLS" in lines[0], lines[0]
    assert r.stdout == ""
    assert set(plaintext_options(srv.received)) <= ALLOWED_IN_CLEAR
