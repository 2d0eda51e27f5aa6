"""``nbd copy`` against nbdkit's blocksize-policy filter, compared with nbdcopy (issue 12).

Every direction (file -> NBD, NBD -> file, NBD -> NBD) through servers whose maximum block
size is small (64 KiB, 1 MiB) or the default, with a source that has a hole and a written
zero run far larger than the maximum (and a hole larger than the 32 MiB default maximum),
served with extents, with ``--no-sr`` and through ``--filter=noextents``.  The
blocksize-policy filter runs with ``blocksize-error-policy=error``, so a request that
breaks a limit fails the copy.  The destination's bytes and allocation are compared with
nbdcopy's on the same input; nbdcopy 1.14 does not split requests to the server's
maximum, so its reference run goes through the same plugin without the policy filter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.interop.util import appliance, tool

pytestmark = pytest.mark.interop

MiB = 1 << 20
SIZE = 48 * MiB
DATA = os.urandom(MiB)
SMALL = os.urandom(4096)
LIMITS = {"64K": (4096, 64 << 10), "1M": (512, MiB), "default": None}
SOURCES = ("extents", "no-sr", "noextents")


@pytest.fixture(scope="module")
def source_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 MiB data, 3 MiB written zeroes, a 2 MiB hole, 4 KiB data, a 42 MiB hole."""
    path = tmp_path_factory.mktemp("matrix") / "src.img"
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.write(DATA)
        f.write(bytes(3 * MiB))
        f.seek(6 * MiB)
        f.write(SMALL)
    return path


def policy(limits: tuple[int, int] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(filters, plugin args) of nbdkit's blocksize-policy filter for ``limits``."""
    if limits is None:
        return (), ()
    return ("blocksize-policy",), (f"blocksize-minimum={limits[0]}",
                                   f"blocksize-maximum={limits[1]}",
                                   "blocksize-error-policy=error")


def serve_source(nbd_servers, image: Path, kind: str, limits: tuple[int, int] | None):
    filters, args = policy(limits)
    extra: tuple[str, ...] = ("--no-sr",) if kind == "no-sr" else ()
    if kind == "noextents":
        filters = ("noextents", *filters)
    return nbd_servers.nbdkit("file", str(image), *args, filters=filters, extra=extra,
                              read_only=True)


def serve_memory(nbd_servers, limits: tuple[int, int] | None):
    filters, args = policy(limits)
    return nbd_servers.nbdkit("memory", str(SIZE), *args, filters=filters)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def export_data_bytes(uri: str) -> int:
    """Bytes the export reports as data (not zero) in base:allocation."""
    rows = json.loads(tool("nbdinfo", "--json", "--map", uri).stdout)
    return sum(r["length"] for r in rows if not r["type"] & 2)


def export_bytes(uri: str, tmp: Path, name: str) -> bytes:
    out = tmp / name
    tool("nbdcopy", "--request-size=65536", uri, str(out))  # within every maximum here
    return out.read_bytes()


def ours(src: str, dst: str) -> None:
    r = appliance("nbd", "copy", src, dst)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("kind", SOURCES)
def test_nbd_to_file(nbd_servers, source_image: Path, tmp_path: Path, limit: str,
                     kind: str) -> None:
    ours(serve_source(nbd_servers, source_image, kind, LIMITS[limit]).uri(),
         str(tmp_path / "ours.img"))
    tool("nbdcopy", serve_source(nbd_servers, source_image, kind, None).uri(),
         str(tmp_path / "theirs.img"))
    a, b = tmp_path / "ours.img", tmp_path / "theirs.img"
    assert a.read_bytes() == b.read_bytes() == source_image.read_bytes()
    assert abs(allocated(a) - allocated(b)) <= 64 << 10, (allocated(a), allocated(b))
    assert allocated(a) < 2 * MiB  # the zero run and the holes are holes


@pytest.mark.parametrize("limit", LIMITS)
def test_file_to_nbd(nbd_servers, source_image: Path, tmp_path: Path, limit: str) -> None:
    mine, ref = serve_memory(nbd_servers, LIMITS[limit]), serve_memory(nbd_servers, None)
    ours(str(source_image), mine.uri())
    tool("nbdcopy", str(source_image), ref.uri())
    assert export_bytes(mine.uri(), tmp_path, "a") == source_image.read_bytes()
    assert export_bytes(ref.uri(), tmp_path, "b") == source_image.read_bytes()
    assert export_data_bytes(mine.uri()) == export_data_bytes(ref.uri())


@pytest.mark.parametrize(("limit", "kind"), [("64K", "extents"), ("64K", "no-sr"),
                                             ("1M", "noextents"), ("default", "no-sr")])
def test_nbd_to_nbd(nbd_servers, source_image: Path, tmp_path: Path, limit: str,
                    kind: str) -> None:
    mine, ref = serve_memory(nbd_servers, LIMITS[limit]), serve_memory(nbd_servers, None)
    ours(serve_source(nbd_servers, source_image, kind, LIMITS[limit]).uri(), mine.uri())
    tool("nbdcopy", serve_source(nbd_servers, source_image, kind, None).uri(), ref.uri())
    assert export_bytes(mine.uri(), tmp_path, "a") == source_image.read_bytes()
    assert export_data_bytes(mine.uri()) == export_data_bytes(ref.uri())
