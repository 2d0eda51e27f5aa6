"""``appliance fleet`` + ``appliance serve`` against real qemu-nbd with real TLS-PSK.

The server, not the client, enforces per-board keys: board b's key is refused on board
a's export, an unknown identity and a wrong key are refused; each refusal is one serve
log line.  The golden image is never modified by a board's writes, a version in use
cannot be removed, and a modified golden image stops serve with a one-line error.
Every signal ends serve and its servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.client import connect
from appliance.config.psk import generate_key, write_psk_file
from appliance.errors import NBDError
from appliance.host.fleet.storm import free_ports
from appliance.nbd.proto import NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_READ_ONLY

from .conftest import GOLDEN_DATA, Serve, appliance, pid_alive

pytestmark = pytest.mark.interop


def add(fleet: Path, name: str, *extra: str) -> str:
    r = appliance("fleet", "add", name, *extra, fleet=fleet)
    assert r.returncode == 0, r.stderr
    return r.stdout


def uri(fleet: Path, name: str) -> str:
    r = appliance("fleet", "show", name, "--uri", fleet=fleet)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_add_prints_the_provisioning_line_and_keeps_keys_private(fleet: Path) -> None:
    out = add(fleet, "a")
    key = fleet / "boards" / "a" / "tls" / "keys.psk"
    assert (f"appliance console PORT --set nbd.uri=nbds://a@10.0.2.2:10809/a "
            f"--psk-file {key} --save --boot") in out
    assert key.read_text().startswith("a:")
    hexkey = key.read_text().split(":")[1].strip()
    for path in [fleet, *fleet.rglob("*")]:
        mode = path.lstat().st_mode
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), path
        if path.is_file():
            holds_key = hexkey.encode() in path.read_bytes()
            assert not (holds_key and mode & 0o077), f"{path} holds the key, mode {mode:o}"
    assert (fleet / "golden" / "1" / "image.raw").stat().st_mode & 0o777 == 0o444


def test_each_board_opens_only_its_own_export(fleet: Path, tmp_path: Path,
                                              serving: Callable[[], Serve]) -> None:
    add(fleet, "a")
    add(fleet, "b", "--root-mode", "overlay")
    s = serving()
    ua, ub = uri(fleet, "a"), uri(fleet, "b")
    assert f"127.0.0.1:{s.port}/a?" in ua and f"127.0.0.1:{s.port + 1}/b?" in ub
    with connect(ua) as c:  # a's key on a's export: served
        assert c.pread(0, len(GOLDEN_DATA)) == GOLDEN_DATA
    s.wait_line(lambda line: line.startswith("serve: a: connected"))

    b_key = fleet / "boards" / "b" / "tls" / "keys.psk"
    stranger = tmp_path / "mallory.psk"
    write_psk_file(stranger, "mallory", generate_key())
    wrong = tmp_path / "wrong.psk"
    write_psk_file(wrong, "a", generate_key())
    attempts = {
        "b's key on a's export": f"nbds://b@127.0.0.1:{s.port}/a?tls-psk-file={b_key}",
        "unknown identity": f"nbds://mallory@127.0.0.1:{s.port}/a?tls-psk-file={stranger}",
        "a's identity, wrong key": f"nbds://a@127.0.0.1:{s.port}/a?tls-psk-file={wrong}",
    }
    for what, attempt in attempts.items():
        with pytest.raises(NBDError, match="TLS handshake"):
            connect(attempt).close()
        r = subprocess.run(["nbdinfo", attempt], capture_output=True, text=True, timeout=30,
                           check=False)
        assert r.returncode != 0, f"{what}: nbdinfo was served"
    # one line per refused connection: ours and nbdinfo's, for each attempt
    s.wait_lines(lambda line: line.startswith("serve: a: refused"), 2 * len(attempts))

    with connect(ub) as c:  # b is served the golden image read-only, shareable
        assert c.pread(0, len(GOLDEN_DATA)) == GOLDEN_DATA
        assert c.info.flags & NBD_FLAG_READ_ONLY and c.info.flags & NBD_FLAG_CAN_MULTI_CONN
    listing = appliance("fleet", "list", fleet=fleet).stdout
    assert "never" not in listing.splitlines()[1], listing  # a: last connection recorded


def test_board_writes_stay_in_its_overlay_and_reset_drops_them(
        fleet: Path, serving: Callable[[], Serve]) -> None:
    add(fleet, "a")
    golden = fleet / "golden" / "1" / "image.raw"
    before = sha256(golden)
    s = serving()
    with connect(uri(fleet, "a")) as c:
        c.pwrite(b"board a was here" + bytes(496), 0)
        c.flush()
    assert appliance("fleet", "reset", "a", fleet=fleet).returncode == 2  # serving: refused
    assert s.stop() == 0
    assert sha256(golden) == before
    r = appliance("golden", "remove", "1", fleet=fleet)
    assert r.returncode == 2 and "in use by a" in r.stderr
    assert appliance("fleet", "reset", "a", fleet=fleet).returncode == 0
    s = serving()
    with connect(uri(fleet, "a")) as c:
        assert c.pread(0, len(GOLDEN_DATA)) == GOLDEN_DATA


def test_a_modified_golden_image_is_never_served(fleet: Path) -> None:
    add(fleet, "a")
    golden = fleet / "golden" / "1" / "image.raw"
    os.chmod(golden, 0o644)
    with golden.open("r+b") as f:
        f.write(b"changed behind the fleet's back")
    r = appliance("serve", fleet=fleet)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "modified after import" in r.stderr, r.stderr
    assert appliance("golden", "verify", "1", fleet=fleet).returncode == 1


def test_import_makes_a_new_version_and_boards_move_only_when_told(
        fleet: Path, tmp_path: Path) -> None:
    add(fleet, "a")
    v2 = tmp_path / "v2.raw"
    v2.write_bytes(b"version 2".ljust(1 << 20, b"\0"))
    assert appliance("golden", "import", str(v2), fleet=fleet).returncode == 0
    assert json.loads((fleet / "boards" / "a" / "board.json").read_text())["golden"] == 1
    assert appliance("fleet", "reset", "a", "--golden", "2", fleet=fleet).returncode == 0
    assert json.loads((fleet / "boards" / "a" / "board.json").read_text())["golden"] == 2
    assert appliance("golden", "remove", "1", fleet=fleet).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_every_signal_ends_serve_and_its_servers(fleet: Path, serving: Callable[[], Serve],
                                                 sig: signal.Signals) -> None:
    add(fleet, "a")
    add(fleet, "b", "--root-mode", "overlay")
    s = serving()
    pids = s.server_pids()
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert s.stop(sig) == 0
    assert not any(pid_alive(p) for p in pids)
    assert not (fleet / "run" / "serve.pid").exists()


@pytest.mark.parametrize("args, message", [
    (("fleet", "show", "nosuch"), "no board 'nosuch'"),
    (("fleet", "add", "Bad/Name"), "bad board name"),
    (("fleet", "add", "x", "--golden", "9"), "no golden version 9"),
    (("golden", "import", "/nonexistent"), "not a file"),
])
def test_bad_input_is_one_line(fleet: Path, args: tuple[str, ...], message: str) -> None:
    r = appliance(*args, fleet=fleet)
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_a_busy_port_is_a_one_line_error_and_leaves_no_server(fleet: Path) -> None:
    add(fleet, "a")
    add(fleet, "b")
    base = free_ports(2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))  # b's port
        busy.listen()
        r = subprocess.run([sys.executable, "-m", "appliance", "serve", "--fleet", str(fleet),
                            "--listen", f"127.0.0.1:{base}"], capture_output=True, text=True,
                           timeout=60, check=False)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("appliance: error")]
    assert errors == [f"appliance: error: b: cannot serve on 127.0.0.1:{base + 1}: "
                      "qemu-nbd: Failed to find an available port: Address already in use"]
    pids = [int(line.split(" pid ")[1].split()[0]) for line in r.stderr.splitlines()
            if "qemu-nbd pid" in line]
    assert len(pids) == 1 and not pid_alive(pids[0])  # a's server was ended


def test_kill_9_of_serve_still_ends_its_servers(fleet: Path,
                                                serving: Callable[[], Serve]) -> None:
    add(fleet, "a")
    s = serving()
    pids = s.server_pids()
    assert s.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + 10  # PR_SET_PDEATHSIG: the kernel sends them SIGTERM
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)
