"""Transport: PSK key files, connect with bounded retry (real loopback sockets)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from appliance.config.psk import choose_psk, read_keys
from appliance.errors import TransportError, UsageError
from appliance.nbd.uri import parse_uri
from appliance.transport import ConnectPolicy, open_socket
from appliance.transport.tls import client_context

KEY = "0123456789abcdef0123456789abcdef"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_psk_file_parsed_and_key_never_in_repr(tmp_path: Path) -> None:
    p = write(tmp_path / "k", f"# comment\n\nalice:{KEY}\nbob:{'ff' * 16}\n")
    keys = read_keys(str(p))
    assert [k.identity for k in keys] == ["alice", "bob"]
    assert keys[0].key == bytes.fromhex(KEY)
    assert KEY not in repr(keys[0])
    assert choose_psk(keys, "bob", str(p)).key == b"\xff" * 16


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_psk_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    p = write(tmp_path / "k", f"alice:{KEY}\n", mode)
    with pytest.raises(UsageError, match="chmod 600"):
        read_keys(str(p))


@pytest.mark.parametrize(("text", "fragment"), [
    ("alice\n", "IDENTITY:HEXKEY"),
    (":00\n", "IDENTITY:HEXKEY"),
    ("alice:zz\n", "not hexadecimal"),
    ("alice:\n", "empty key"),
    ("# only a comment\n", "no IDENTITY:HEXKEY"),
])
def test_bad_psk_files(tmp_path: Path, text: str, fragment: str) -> None:
    p = write(tmp_path / "k", text)
    with pytest.raises(UsageError, match=fragment) as info:
        read_keys(str(p))
    assert KEY not in str(info.value)


def test_missing_psk_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read PSK file"):
        read_keys(str(tmp_path / "nope"))


def test_identity_choice(tmp_path: Path) -> None:
    p = write(tmp_path / "k", f"alice:{KEY}\nbob:{KEY}\n")
    keys = read_keys(str(p))
    with pytest.raises(UsageError, match="no key for identity 'carol'"):
        choose_psk(keys, "carol", str(p))
    single = read_keys(str(write(tmp_path / "one", f"solo:{KEY}\n")))
    assert choose_psk(single, None, "one").identity == "solo"


def test_psk_context_built_from_uri(tmp_path: Path) -> None:
    p = write(tmp_path / "k", f"alice:{KEY}\n")
    ctx = client_context(parse_uri(f"nbds://alice@127.0.0.1/?tls-psk-file={p}"))
    assert not ctx.check_hostname


def test_refused_connect_retries_then_one_line_error() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = parse_uri(f"nbd://127.0.0.1:{port}/")
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        open_socket(uri, ConnectPolicy(timeout=2, attempts=3, backoff=0.05))
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "after 3 attempts" in msg and "refused" in msg
    assert time.monotonic() - start >= 0.05 + 0.1  # slept the two backoffs


def test_unix_socket_appearing_late_is_reached(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    server = socket.socket(socket.AF_UNIX)
    accepted: list[socket.socket] = []

    def listen_later() -> None:
        time.sleep(0.3)
        server.bind(str(path))
        server.listen(1)
        accepted.append(server.accept()[0])

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        sock = open_socket(parse_uri(f"nbd+unix:///?socket={path}"),
                           ConnectPolicy(timeout=2, attempts=8, backoff=0.1))
        sock.close()
    finally:
        t.join(5)
        server.close()
        for a in accepted:
            a.close()
    assert accepted


def test_policy_backoff_is_capped() -> None:
    p = ConnectPolicy(backoff=1, max_backoff=3)
    assert [p.delay(i) for i in range(4)] == [1, 2, 3, 3]
    with pytest.raises(ValueError):
        ConnectPolicy(attempts=0)
