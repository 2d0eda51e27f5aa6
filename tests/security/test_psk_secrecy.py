"""The TLS pre-shared key is never logged or shown in full.

Real servers (nbdkit, qemu-nbd) with a key we know; the CLI and the relay run at ``-vv``
(debug logging) through success and failure paths (wrong key, refused downgrade,
``--debug`` tracebacks); stdout and stderr must not hold the key -- not in hex (either
case), not as any 12-digit stretch of its hex, not as bytes, not in base64.  The board's
settings (``show``, ``repr``, logged console lines) mask it too.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.client import export_info
from appliance.config.model import Config
from appliance.config.psk import PSKey
from appliance.console.prompt import redact
from appliance.nbd import NBD_CMD_READ
from tests import servers
from tests.hostile.test_tls_downgrade import SCRIPTS
from tests.hostile_server import HostileServer
from tests.relay.kernelside import KernelSide

KEY = bytes.fromhex("5ec2e7a11c0ffee0badc0de1d15ea5e5" "0123456789abcdeffedcba9876543210")
WRONG = bytes.fromhex("7a7a7a7a1234123412341234abcdabcd" "99999999888888887777777766666666")


def leaks(text: str, key: bytes = KEY) -> list[str]:
    """Every form of ``key`` found in ``text``."""
    h = key.hex()
    found = []
    low = text.lower()
    for i in range(0, len(h) - 12 + 1, 2):
        if h[i:i + 12] in low:
            found.append(f"hex stretch {h[i:i + 12]}")
            break
    if repr(key)[2:18] in text:
        found.append("bytes repr")
    if base64.b64encode(key).decode()[:16] in text:
        found.append("base64")
    return found


def appliance(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *argv], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_clean(r: subprocess.CompletedProcess[str], *keys: bytes) -> None:
    for key in keys or (KEY,):
        out = r.stdout + r.stderr
        assert not leaks(out, key), f"key leaked ({leaks(out, key)}): {out[-2000:]}"


@pytest.fixture
def known_psk(tmp_path: Path) -> Path:
    return servers.make_psk(tmp_path / "psk", identity="alice", key=KEY)


@pytest.fixture
def wrong_psk(tmp_path: Path) -> Path:
    return servers.make_psk(tmp_path / "wrong", identity="alice", key=WRONG)


@pytest.mark.interop
def test_cli_at_debug_level_never_shows_the_key(nbd_servers, known_psk: Path, wrong_psk: Path,
                                                tmp_path: Path) -> None:
    image = servers.make_image(tmp_path / "d.img", 1 << 20, writes=((0, b"data"),))
    kit = nbd_servers.nbdkit("file", str(image), psk_file=known_psk)
    qemu = nbd_servers.qemu_nbd(tmp_path / "d.img", psk_file=known_psk, read_only=True)
    runs = []
    for srv in (kit, qemu):
        uri = srv.uri()
        runs += [appliance("-vv", "nbd", "info", uri),
                 appliance("-vv", "nbd", "info", "--json", uri),
                 appliance("-vv", "nbd", "list", uri),
                 appliance("-vv", "nbd", "copy", "--no-progress", uri, "/dev/null")]
        for r in runs[-4:]:
            assert r.returncode == 0, r.stderr
        assert "DEBUG" in runs[-4].stderr, "-vv did not turn on debug logging"
        bad = srv.uri(psk_file=wrong_psk)
        for argv in (("-vv", "nbd", "info", bad), ("-vv", "--debug", "nbd", "info", bad)):
            r = appliance(*argv)
            assert r.returncode != 0
            runs.append(r)
    for r in runs:
        check_clean(r, KEY, WRONG)


@pytest.mark.interop
def test_relay_at_debug_level_never_shows_the_key(nbd_servers, known_psk: Path,
                                                  tmp_path: Path) -> None:
    image = servers.make_image(tmp_path / "d.img", 1 << 20)
    srv = nbd_servers.qemu_nbd(image, psk_file=known_psk)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-m", "appliance.relay", "-vv", "--fd",
                             str(theirs.fileno()), srv.uri()], pass_fds=[theirs.fileno()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        info = export_info(srv.uri())
        ks = KernelSide(mine, info.size, info.flags)
        assert ks.call(NBD_CMD_READ, 0, 4096).error == 0
        srv.restart(down_for=0.2)  # a reconnect: TLS set up again, logged at debug
        assert ks.call(NBD_CMD_READ, 4096, 4096).error == 0
        ks.disconnect()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        mine.close()
    assert "DEBUG" in err
    text = out + err
    assert not leaks(text), f"relay log leaked the key: {leaks(text)}"


def test_hostile_downgrade_errors_never_show_the_key(known_psk: Path) -> None:
    srv = HostileServer(SCRIPTS["STARTTLS acked, then plaintext"])
    try:
        r = appliance("-vv", "--debug", "nbd", "info",
                      f"nbds://alice@127.0.0.1:{srv.port}/?tls-psk-file={known_psk}",
                      timeout=60)
    finally:
        srv.close()
    assert r.returncode != 0
    check_clean(r)


def test_psk_generate_to_a_file_prints_no_key(tmp_path: Path) -> None:
    out = tmp_path / "new.psk"
    r = appliance("-vv", "psk", "generate", "-o", str(out))
    assert r.returncode == 0, r.stderr
    key = bytes.fromhex(out.read_text().strip().split(":", 1)[1])
    assert os.stat(out).st_mode & 0o777 == 0o600
    check_clean(r, key)


def test_board_settings_mask_the_key() -> None:
    hexkey = KEY.hex()
    cfg = Config().set("psk.key", hexkey)
    assert cfg.raw("psk.key") == hexkey  # it is stored ...
    shown = "\n".join([repr(cfg), cfg.display("psk.key"), *cfg.show_lines()])
    assert not leaks(shown), shown  # ... but never shown in full
    assert not leaks(redact(f"set psk.key {hexkey}"))
    assert not leaks(repr(PSKey("alice", KEY)))
