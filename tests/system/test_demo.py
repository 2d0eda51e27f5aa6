"""``appliance demo`` as a person uses it: typed into, closed, killed, and what it leaves.

* The board's console takes command after command typed at a person's speed (QEMU 10:
  7.2's i.MX UART dropped everything after the first line).
* Whatever ends the demo (the terminal closing, SIGTERM, Ctrl-C's SIGINT, kill -9), its
  qemu-nbd and QEMU end too.
* Every file the demo writes that holds the board's key is private (0600, in a
  directory no one else may write), compressed archives included.

The demo runs on a real pty (``tests/system/demo_terminal.py``) with ``--out`` the test
session's built image, so it builds nothing, and ``--root minimal`` (the busybox root:
the demo's own behaviour does not depend on the root, and the systemd root has its own
tests in test_debian_root.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.agent_boot import BOOT_TIMEOUT
from tests.system.demo_terminal import BOOTING, SERVING, DemoTerminal, alive, wait_gone

# One worker: every demo run uses the image directory's demo/ (the board's key files).
pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.xdist_group("demo")]

SHELL_PROMPT = rb"# "
GZIP_MAGIC = b"\x1f\x8b\x08"
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # bash's bracketed-paste switches
START_TIMEOUT = 180.0  # the build check, the overlay, qemu-nbd and QEMU starting


@pytest.fixture
def demo_log(tmp_path: Path) -> Path:
    return tmp_path / "terminal.log"


@pytest.fixture
def terminal(image_dir: Path, demo_log: Path) -> Iterator[DemoTerminal]:
    term = DemoTerminal(["--out", str(image_dir), "--root", "minimal"], demo_log)
    try:
        yield term
    finally:
        term.close()


def started(term: DemoTerminal) -> tuple[int, list[int]]:
    """Wait until the demo boots the board; (qemu-nbd's pid, the demo's children)."""
    server = int(term.io.expect(SERVING, START_TIMEOUT).group(1))
    term.io.expect(BOOTING, START_TIMEOUT)
    term.io.expect(rb"Booting Linux on physical CPU", START_TIMEOUT)  # QEMU runs
    kids = term.children()
    assert server in kids, (server, kids)
    assert len(kids) >= 2, kids  # qemu-nbd and QEMU
    return server, kids


def command(term: DemoTerminal, line: str) -> str:
    """Type ``line`` at the shell's prompt (already shown); what it printed up to the next."""
    term.type(line + "\r")
    echo = term.io.expect(re.escape(line.encode()) + rb"\r*\n", 60)
    prompt = term.io.expect_prompt(SHELL_PROMPT, 60)
    text = term.io.output[echo.end():prompt.start()].decode(errors="replace")
    text = TERMINAL_CONTROL.sub("", text).replace("\r", "")
    return text.rpartition("\n")[0]  # the last line is the prompt's "root@nbdroot:~"


def test_the_demo_board_takes_every_command_typed(terminal: DemoTerminal) -> None:
    started(terminal)
    terminal.io.expect(rb"nbdroot-status: root=/dev/nbd0 relay=alive pid=\d+", BOOT_TIMEOUT)
    terminal.io.expect_prompt(SHELL_PROMPT, 120)  # autologin on the console
    assert re.search(r"^\d+\.\d+\.\d+\S*-armmp\r*$", command(terminal, "uname -r"), re.M)
    cmdline = command(terminal, "cat /proc/cmdline")
    assert "console=ttymxc1,115200" in cmdline and "appliance.init=boot" in cmdline
    assert {"bin", "etc", "proc", "root", "usr"} <= set(command(terminal, "ls /").split())
    status = command(terminal, "appliance status")
    assert re.search(r"nbdroot-status: root=/dev/nbd0 relay=alive pid=\d+ argv0=@", status)
    # the initramfs's timeline, kept in the /run the root sees
    assert re.search(r"^\s+root\s+\d+\.\d+ s  /dev/nbd0 on /\r?$", status, re.M), status
    written = command(terminal, "echo typed by a person > /root/note; cat /root/note")
    assert written.splitlines()[-1].strip() == "typed by a person"
    assert b"password changed in future" not in terminal.io.output


@pytest.mark.parametrize("how", ["hang-up", "SIGTERM", "SIGINT", "SIGKILL"])
def test_ending_the_demo_ends_its_children(terminal: DemoTerminal, how: str) -> None:
    server, kids = started(terminal)
    if how == "hang-up":
        terminal.hang_up()
    else:
        os.kill(terminal.pid, getattr(signal, how))
    status = terminal.wait(60)
    assert status != 0
    left = wait_gone(kids, 30)
    assert left == [], f"{how}: children still running: {left}"
    assert not alive(server)


def gzip_streams(data: bytes, limit: int = 64) -> list[bytes]:
    """What the gzip streams in ``data`` unpack to (each one capped at 4 MiB): a whole
    .gz file, concatenated archives, or an archive stored inside a disk image."""
    found, at = [], data.find(GZIP_MAGIC)
    while at >= 0 and len(found) < limit:
        unpack = zlib.decompressobj(wbits=31)
        with contextlib.suppress(zlib.error):
            found.append(unpack.decompress(data[at:at + (64 << 20)], 4 << 20))
        at = data.find(GZIP_MAGIC, at + 1)
    return found


def holds_key(data: bytes, key_hex: bytes) -> bool:
    """``data``, or anything gzip-compressed inside it, contains the key."""
    key = bytes.fromhex(key_hex.decode())
    return any(key_hex in t or key in t for t in [data, *gzip_streams(data)])


@pytest.mark.parametrize(("boot", "expected"), [
    ("kernel", {"keys.psk", "config.cpio.gz", "initrd.gz"}),
    ("uboot", {"keys.psk", "config.cpio.gz", "sdcard.img"}),
])
def test_files_holding_the_key_are_private(image_dir: Path, demo_log: Path, boot: str,
                                           expected: set[str]) -> None:
    term = DemoTerminal(["--out", str(image_dir), "--root", "minimal", "--boot", boot],
                        demo_log)
    try:
        started(term)
        holders, public = key_holders(image_dir / "demo")
    finally:
        term.close()
    assert expected <= set(holders), holders
    assert public == []


def key_holders(work: Path) -> tuple[list[str], list[str]]:
    """(names of files holding the demo's key, those of them others may read)."""
    key_hex = (work / "tls" / "keys.psk").read_bytes().strip().split(b":", 1)[1]
    holders, public = [], []
    for path in [work, *sorted(work.rglob("*"))]:
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            assert not mode & stat.S_IWOTH, f"{path} is world-writable"
            continue
        if not stat.S_ISREG(mode) or path.suffix == ".qcow2":
            continue
        if holds_key(path.read_bytes(), key_hex):
            holders.append(path.name)
            if mode & 0o077:
                public.append(f"{path} ({stat.filemode(mode)})")
    return holders, public
