"""``appliance nbd copy`` between local files (no server): sparseness, sizes, arguments."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli.nbd import parse_size
from appliance.copy.endpoints import file_extents


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "appliance", "nbd", "copy", *argv],
                          capture_output=True, timeout=120)


def sparse_file(path: Path) -> bytes:
    with open(path, "wb") as f:
        f.truncate(32 << 20)
        f.seek(1 << 20)
        f.write(b"A" * 100_000)
        f.seek(20 << 20)
        f.write(os.urandom(3 << 20))
    return path.read_bytes()


def test_file_extents_follow_seek_data(tmp_path: Path) -> None:
    p = tmp_path / "s.img"
    sparse_file(p)
    fd = os.open(p, os.O_RDONLY)
    try:
        runs = list(file_extents(fd, 0, 32 << 20))
    finally:
        os.close(fd)
    assert sum(n for _, n, _ in runs) == 32 << 20
    data = [(o, n) for o, n, d in runs if d]
    assert any(o <= 1 << 20 < o + n for o, n in data)
    assert sum(n for _, n in data) < 8 << 20  # the big holes were seen as holes


@pytest.mark.parametrize("extra", [(), ("--connections", "1", "--request-size", "4K")])
def test_sparse_file_to_file(tmp_path: Path, extra: tuple[str, ...]) -> None:
    content = sparse_file(tmp_path / "in.img")
    (tmp_path / "out.img").write_bytes(b"old contents that must go away" * 1000000)
    r = run(*extra, str(tmp_path / "in.img"), str(tmp_path / "out.img"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.img"
    assert out.read_bytes() == content
    assert out.stat().st_blocks * 512 < 8 << 20  # holes not written


def test_file_to_stdout_pipe(tmp_path: Path) -> None:
    content = sparse_file(tmp_path / "in.img")
    r = run(str(tmp_path / "in.img"), "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout == content


@pytest.mark.parametrize(("argv", "fragment"), [
    (("/nonexistent", "/dev/null"), b"cannot open source /nonexistent"),
    (("-", "/dev/null"), b"stdin"),
    (("--connections", "0", "a", "b"), b"from 1 to 1024"),
    (("--request-size", "lots", "a", "b"), b"bad size"),
])
def test_bad_arguments(argv: tuple[str, ...], fragment: bytes) -> None:
    r = run(*argv)
    assert r.returncode == 2
    assert fragment in r.stderr and b"Traceback" not in r.stderr


def test_parse_size() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("256K") == 256 << 10
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("2g") == 2 << 30
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("0")
