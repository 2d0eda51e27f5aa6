"""Booting the real agent (``appliance.init=boot``) on QEMU against a real TLS-PSK root.

Shared by the agent's system tests: a qemu-nbd server (TLS-PSK, on 127.0.0.1) serving a
qcow2 overlay of the built ``rootfs.ext4``, as ``appliance demo`` does, and a QEMU
command line whose console UART is a TCP server on 127.0.0.1 instead of stdio; or a
sparse raw copy of a built root (:func:`raw_root`) served by :func:`start_root_server`
and booted by :func:`boot`.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.host import demo
from appliance.host.demo import EXPORT, IDENTITY, board_initrd, boot_argv, guest_uri
from appliance.host.servers import NBDServer, make_psk, start_qemu_nbd
from image.qemu import QemuBoard
from tests.image_artefacts import debugfs

BOOT_TIMEOUT = 300.0  # TCG on a loaded 2-core runner


@dataclass(frozen=True)
class Root:
    """A running root server: its port, key, and the identity:hexkey file for the host tool."""

    port: int
    key: bytes
    psk_file: Path

    @property
    def guest_uri(self) -> str:
        return demo.guest_uri(self.port)


@contextlib.contextmanager
def served_root(image_dir: Path, work: Path) -> Iterator[Root]:
    """qemu-nbd (TLS-PSK) serving an overlay of the built root; stopped by PID afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    image = demo.overlay(image_dir / "rootfs.ext4", work / "root.qcow2")
    with demo.serve_root(image, work, lambda line: print(f"root: {line}")) as (port, key):
        yield Root(port, key, work / "tls" / "keys.psk")


def tcp_console_argv(argv: list[str], port: int, logfile: Path) -> list[str]:
    """``argv`` with its stdio console UART made a TCP server on 127.0.0.1:``port``.

    A ``-chardev socket`` (what ``-serial tcp:...,server=on,wait=off`` is) with a
    logfile: QEMU logs everything the UART sends, also while no client is connected.
    """
    argv = list(argv)
    i = argv.index("stdio")
    assert argv[i - 1] == "-serial"
    argv[i] = "chardev:console0"
    chardev = f"socket,id=console0,host=127.0.0.1,port={port},server=on,wait=off"
    return [*argv, "-chardev", f"{chardev},logfile={logfile}"]


def raw_root(image_dir: Path, tmp: Path, rc_local: str | None = None,
             image: str = "rootfs.ext4") -> Path:
    """A sparse raw copy of a built root (raw: a SIGKILLed qemu-nbd loses nothing)."""
    root = tmp / "root.raw"
    subprocess.run(["cp", "--sparse=always", str(image_dir / image), str(root)],
                   check=True, timeout=120)
    if rc_local is not None:
        script = tmp / "rc.local"
        script.write_text(rc_local)
        debugfs(root, f"write {script} /etc/rc.local", write=True)
        debugfs(root, "sif /etc/rc.local mode 0100755", write=True)
    return root


def start_root_server(root: Path, tmp: Path, key: bytes, fmt: str = "raw",
                      tls_priority: str | None = None) -> NBDServer:
    """qemu-nbd (TLS-PSK with ``key``, GnuTLS ``tls_priority``) serving ``root`` as the
    demo's export."""
    psk = make_psk(tmp / "tls", IDENTITY, key)
    return start_qemu_nbd(root, tmp / "qemu-nbd", fmt=fmt, export=EXPORT, psk_file=psk,
                          tls_priority=tls_priority)


def boot(image_dir: Path, tmp: Path, settings: dict[str, str], *,
         reboot: bool = False,
         qemu: Callable[[list[str]], list[str]] | None = None) -> QemuBoard:
    """Start QEMU booting the agent with ``settings``; ``reboot``: a guest reboot resets
    the board (it boots again) instead of ending QEMU; ``qemu`` edits QEMU's argv (a
    :class:`~tests.system.blackhole.Blackhole`'s filter)."""
    initrd = board_initrd(image_dir, tmp, {"console.countdown": "1", **settings})
    argv = boot_argv(image_dir, initrd)
    if reboot:
        argv.remove("-no-reboot")
    if qemu is not None:
        argv = qemu(argv)
    board = QemuBoard(argv, tmp / "console.log")
    board.start()
    return board


def psk_settings(port: int, key: bytes) -> dict[str, str]:
    """The board settings of a TLS-PSK root served on the host's ``port``."""
    return {"nbd.uri": guest_uri(port), "psk.identity": IDENTITY, "psk.key": key.hex()}
