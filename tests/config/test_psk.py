"""PSK generation, the identity:hexkey file format, and ``appliance psk generate``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config.psk import (
    PSKey,
    generate_key,
    parse_psk_file,
    read_keys,
    read_psk_file,
    write_psk_file,
)
from appliance.errors import ConfigError, PSKError, UsageError


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *argv],
                          capture_output=True, text=True, timeout=60)


def test_keys_are_random_and_sized() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert {len(k) for k in keys} == {32}
    assert len(generate_key(16)) == 16
    with pytest.raises(ConfigError, match="16-64 bytes, not 8"):
        generate_key(8)


def test_file_round_trip_is_private(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "b7.psk"
    write_psk_file(path, "board7", key)
    assert path.read_text() == f"board7:{key.hex()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_psk_file(path) == ("board7", key)
    with pytest.raises(ConfigError, match="exists"):
        write_psk_file(path, "board7", generate_key())
    assert read_psk_file(path) == ("board7", key)  # untouched


def test_parse_picks_identity_and_reports_bad_lines() -> None:
    text = f"alice:{'aa' * 16}\nbob:{'bb' * 16}\n"
    assert parse_psk_file(text, "bob") == ("bob", b"\xbb" * 16)
    with pytest.raises(ConfigError, match="no key for identity 'carol'"):
        parse_psk_file(text, "carol")
    with pytest.raises(ConfigError, match="line 1: psk key must be an even number"):
        parse_psk_file("alice:abc\n")
    with pytest.raises(ConfigError, match="line 1: expected identity:hexkey"):
        parse_psk_file("alice\n")


def test_cli_writes_a_file_qemu_nbd_format(tmp_path: Path) -> None:
    out = tmp_path / "keys.psk"
    r = run("psk", "generate", "-o", str(out), "--identity", "board9")
    assert r.returncode == 0, r.stderr
    identity, key = read_psk_file(out)
    assert identity == "board9" and len(key) == 32
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert key.hex() not in r.stderr + r.stdout
    again = run("psk", "generate", "-o", str(out))
    assert again.returncode == 1
    assert again.stderr.startswith("appliance: error: ") and "exists" in again.stderr
    assert read_psk_file(out) == (identity, key)


def test_cli_bad_input_is_one_line() -> None:
    r = run("psk", "generate", "--bytes", "7")
    assert r.returncode == 1
    assert r.stderr == "appliance: error: a psk key must be 16-64 bytes, not 7\n"
    r = run("psk", "generate", "--identity", "a:b")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "psk identity must be" in r.stderr


def test_strict_reader_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    """Was: ``appliance console --psk-file`` read a key file any user could read, although
    the connection's reader (and the README) refuse one."""
    path = tmp_path / "b7.psk"
    write_psk_file(path, "board7", generate_key())
    os.chmod(path, 0o644)
    with pytest.raises(PSKError, match="chmod 600"):
        read_psk_file(path)


def test_one_error_type_for_every_psk_file_failure(tmp_path: Path) -> None:
    assert issubclass(PSKError, ConfigError) and issubclass(PSKError, UsageError)
    with pytest.raises(PSKError, match="cannot read PSK file"):
        read_psk_file(tmp_path / "absent")
    with pytest.raises(PSKError, match="cannot read PSK file"):
        read_keys(str(tmp_path / "absent"))
    with pytest.raises(PSKError, match="16-64 bytes"):
        generate_key(8)


def test_test_servers_key_file_is_written_by_the_same_module(tmp_path: Path) -> None:
    from appliance.host.servers import make_psk

    key = generate_key()
    path = make_psk(tmp_path / "tls", "alice", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_psk_file(path) == ("alice", key)
    assert read_keys(str(path)) == [PSKey("alice", key)]
    make_psk(tmp_path / "tls", "alice")  # replaces it, as before
    assert read_psk_file(path)[1] != key
