"""Unit tests of the image builder's parts that need no download: package list, cpio,
ELF reader, the run() helper, the MBR and the cache key."""

from __future__ import annotations

import gzip
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import ImageError
from image import build, cpio, elf, kmods, spec
from image.run import run
from image.sdcard import mbr
from tests.image import newc


def test_package_list_parses_and_names_the_fec_modules() -> None:
    s = spec.load()
    assert "python3.13-minimal" in s.initramfs_packages
    order = list(s.modules)
    assert order.index("gpio-mxc") < order.index("fec")
    assert order.index("libphy") < order.index("smsc") < order.index("fec")
    assert "imx6q-sabrelite.dtb" in s.dtbs


@pytest.mark.parametrize("text, message", [
    ("busybox\n", "outside any section"),
    ("[initramfs]\nbusy box\n", "one name per line"),
    ("[kernel]\nx\n", "unknown section"),
    ("[initramfs]\nbusybox\n[modules]\nfec\n", "[dtbs] is missing"),
])
def test_package_list_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec.parse(text)


def make_tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    (root / "b.txt").write_text("bee")
    (root / "a.txt").write_text("a")


def test_cpio_is_sorted_owned_by_root_dated_and_reproducible(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    nodes = (cpio.Node("dev/console", stat.S_IFCHR | 0o600, 5, 1),)
    cpio.write_gz(tmp_path / "t", tmp_path / "one.gz", mtime=1234, nodes=nodes)
    (tmp_path / "t/a.txt").touch()  # a new host mtime must not change the archive
    cpio.write_gz(tmp_path / "t", tmp_path / "two.gz", mtime=1234, nodes=nodes)
    assert (tmp_path / "one.gz").read_bytes() == (tmp_path / "two.gz").read_bytes()
    entries = newc.read_gz(tmp_path / "one.gz")
    names = [e.name for e in entries]
    assert names == sorted(names)
    assert {e.mtime for e in entries} == {1234}
    assert {(e.uid, e.gid) for e in entries} == {(0, 0)}
    by_name = {e.name: e for e in entries}
    assert by_name["b.txt"].data == b"bee"
    assert by_name["bin"].data == b"usr/bin" and stat.S_ISLNK(by_name["bin"].mode)
    assert stat.S_IMODE(by_name["usr/bin/tool"].mode) == 0o755
    assert stat.S_ISCHR(by_name["dev/console"].mode) and by_name["dev/console"].rdev == (5, 1)
    # gzip -n: no name, no timestamp
    raw = (tmp_path / "one.gz").read_bytes()
    assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"


def test_cpio_archive_is_readable_by_gnu_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed (it is in setup.sh's DEBS_COMMON)")
    make_tree(tmp_path / "t")
    cpio.write_gz(tmp_path / "t", tmp_path / "a.gz", mtime=0)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(
        (tmp_path / "a.gz").read_bytes()), capture_output=True, check=True).stdout.decode()
    assert listing.split() == ["a.txt", "b.txt", "bin", "usr", "usr/bin", "usr/bin/tool"]


def test_elf_needed_reads_the_host_python() -> None:
    needed = elf.needed(Path(sys.executable).resolve())
    # a dynamically linked CPython needs libc; the list comes from the file itself
    assert any(name.startswith("libc.so") for name in needed)
    assert elf.needed(Path(__file__)) == []


def test_module_closure_follows_modules_dep(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/net/fec.ko.xz: kernel/phy/libphy.ko.xz kernel/mdio/of_mdio.ko.xz\n"
        "kernel/phy/libphy.ko.xz:\nkernel/mdio/of_mdio.ko.xz: kernel/phy/libphy.ko.xz\n"
        "kernel/gpio/gpio-mxc.ko.xz:\n")
    deps = kmods.read_deps(tmp_path)
    assert kmods.closure(["fec", "gpio-mxc", "crc32"], deps, {"crc32"}) == [
        "kernel/gpio/gpio-mxc.ko.xz", "kernel/mdio/of_mdio.ko.xz", "kernel/net/fec.ko.xz",
        "kernel/phy/libphy.ko.xz"]
    with pytest.raises(ImageError, match="does not exist"):
        kmods.closure(["no-such-module"], deps, set())


def test_run_tells_missing_tool_and_exit_code_apart() -> None:
    with pytest.raises(ImageError, match="not found"):
        run(["no-such-tool-nbdroot"])
    with pytest.raises(ImageError, match="exit code 3:\nboom"):
        run(["sh", "-c", "echo boom; exit 3"])
    assert run(["sh", "-c", "echo $FOO; cat"], env={"FOO": "bar"}).stdout == "bar\n"


def test_mbr_has_one_bootable_linux_partition() -> None:
    sector = mbr(2048, 4096)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    boot, ptype, start, count = struct.unpack_from("<B3xB3xII", sector, 446)
    assert (boot, ptype, start, count) == (0x80, 0x83, 2048, 4096)
    assert sector[462:510] == bytes(48)


def test_cache_key_changes_with_suite_and_sources(tmp_path: Path) -> None:
    a = build.cache_key(build.Options(out=tmp_path, suite="stable", epoch=1))
    assert a == build.cache_key(build.Options(out=tmp_path, suite="stable", epoch=1))
    assert a != build.cache_key(build.Options(out=tmp_path, suite="trixie", epoch=1))
    assert a != build.cache_key(build.Options(out=tmp_path, suite="stable", epoch=2))
    sources = [p.relative_to(build.REPO).as_posix() for p in build._source_files()]
    assert "image/packages.txt" in sources and "appliance/__init__.py" in sources
