"""TLS policy: key file permissions, no plaintext fallback, identity mismatch, static checks.

* a PSK file that group or others can read is refused -- by ``appliance nbd`` and by the
  relay -- before any connection is made (a listening socket counts the attempts);
* ``nbds://`` against real servers that offer no TLS (qemu-nbd, nbdkit) fails, never
  falls back to plaintext (the hostile-server variants are in tests/hostile);
* a PSK identity the server does not know is rejected by the server (qemu-nbd and nbdkit)
  and reported as one clear line; an identity missing from the local key file is a usage
  error naming the identities the file has;
* ruff's ``S`` (flake8-bandit) rules are enabled in pyproject.toml and clean on
  appliance/ and board/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)


def appliance(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *argv], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("appliance: error: "), r.stderr
    return lines[0]


class Listener:
    """A TCP listener on 127.0.0.1 that only counts connection attempts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def attempts(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_key_file_readable_by_others_is_refused(mode: int, tmp_path: Path) -> None:
    psk = servers.make_psk(tmp_path / "psk", key=KEY)
    os.chmod(psk, mode)
    lst = Listener()
    try:
        uri = f"nbds://alice@127.0.0.1:{lst.port}/?tls-psk-file={psk}"
        line = one_line_error(appliance("nbd", "info", uri))
        assert "readable by group or others" in line and "chmod 600" in line, line
        assert str(psk) in line
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            relay = subprocess.run([sys.executable, "-m", "appliance.relay", "--fd",
                                    str(theirs.fileno()), uri], pass_fds=[theirs.fileno()],
                                   capture_output=True, text=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
        finally:
            mine.close()
            theirs.close()
        assert relay.returncode != 0
        assert "readable by group or others" in relay.stderr, relay.stderr
        assert "Traceback" not in relay.stderr
        assert lst.attempts() == 0, "a connection was made with an unsafe key file"
    finally:
        lst.close()


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_is_used(mode: int, tmp_path: Path, nbd_servers) -> None:
    psk = servers.make_psk(tmp_path / "psk", key=KEY)
    os.chmod(psk, mode)
    srv = nbd_servers.nbdkit("memory", "1M", psk_file=psk)
    r = appliance("nbd", "info", "--json", srv.uri())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["TLS"] is True


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit"])
def test_nbds_against_plaintext_server_never_falls_back(kind: str, nbd_servers,
                                                        psk_file: Path, tmp_path: Path) -> None:
    if kind == "qemu-nbd":
        srv = nbd_servers.qemu_nbd(servers.make_image(tmp_path / "d.img", 1 << 20))
    else:
        srv = nbd_servers.nbdkit("memory", "1M")
    uri = srv.uri(tls=True, psk_file=psk_file)
    assert uri.startswith("nbds://")
    for argv in (("nbd", "info", uri), ("nbd", "copy", uri, "/dev/null")):
        line = one_line_error(appliance(*argv))
        assert "TLS" in line, line


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit"])
def test_identity_unknown_to_the_server_is_rejected_clearly(kind: str, nbd_servers,
                                                            tmp_path: Path) -> None:
    server_psk = servers.make_psk(tmp_path / "server", identity="alice", key=KEY)
    client_psk = servers.make_psk(tmp_path / "client", identity="mallory", key=KEY)
    if kind == "qemu-nbd":
        srv = nbd_servers.qemu_nbd(servers.make_image(tmp_path / "d.img", 1 << 20),
                                   psk_file=server_psk)
    else:
        srv = nbd_servers.nbdkit("memory", "1M", psk_file=server_psk)
    uri = srv.uri(psk_file=client_psk, identity="mallory")
    line = one_line_error(appliance("nbd", "info", uri))
    assert f"TLS handshake with 127.0.0.1:{srv.port} failed" in line, line
    assert "identity" in line, line


def test_identity_missing_from_the_key_file_names_what_it_has(tmp_path: Path) -> None:
    psk = servers.make_psk(tmp_path / "psk", identity="alice", key=KEY)
    lst = Listener()
    try:
        line = one_line_error(appliance(
            "nbd", "info", f"nbds://bob@127.0.0.1:{lst.port}/?tls-psk-file={psk}"))
        assert "'bob'" in line and "alice" in line, line
        assert lst.attempts() == 0
    finally:
        lst.close()


# Rules that guard what this product handles (secrets, TLS, subprocesses, temp files):
# hard-coded passwords, /tmp paths, pickle/marshal, eval, weak hashes and ciphers, ssl
# without verification or with old versions, shell=True, paramiko, os.system...
MUST_KEEP = {"S105", "S106", "S107", "S108", "S301", "S302", "S307", "S324", "S501",
             "S502", "S503", "S504", "S505", "S506", "S602", "S604", "S605", "S608",
             "S701"}


def test_ruff_bandit_rules_enabled_and_clean() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lint = config["tool"]["ruff"]["lint"]
    assert "S" in lint["select"], "ruff's S (bandit) rules are not selected"
    ignored = set(lint.get("ignore", []))
    assert not ignored & MUST_KEEP, f"security rules switched off: {ignored & MUST_KEEP}"
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "json",
                        "appliance", "board"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    found = [f"{d['filename']}:{d['location']['row']} {d['code']} {d['message']}"
             for d in json.loads(r.stdout or "[]") if (d.get("code") or "").startswith("S")]
    assert found == [], "\n".join(found)
