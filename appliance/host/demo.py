"""``appliance demo``: the whole appliance on one machine.

Builds the image (cached), serves its root filesystem with qemu-nbd over TLS-PSK on
127.0.0.1 (through a qcow2 overlay, so the built image stays pristine), writes the
board's configuration into a small extra initramfs archive (the kernel unpacks
concatenated archives in order), and boots ``qemu-system-arm -M sabrelite``.  The
guest reaches the server at 10.0.2.2, QEMU's user-network alias of the host's
127.0.0.1.  QEMU and qemu-nbd are always ended by PID: on errors, Ctrl-C, SIGHUP (the
terminal closed), SIGTERM, and through PR_SET_PDEATHSIG even when the demo is killed
(:mod:`appliance.host.children`).  Files that hold the board's key (the config archive,
the initrd) are written 0600 from their first byte, in a 0700 directory.

Every path handed to qemu-nbd or QEMU is absolute: qemu-nbd resolves a relative
``tls-creds-psk dir=`` elsewhere than our working directory.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config.psk import write_private_file
from appliance.host import children

if TYPE_CHECKING:
    from image.qemu import QemuBoard

log = logging.getLogger(__name__)

IDENTITY = "demo"
EXPORT = "root"
GUEST_HOST = "10.0.2.2"  # QEMU user networking: the host's 127.0.0.1
# What the booted root prints once it runs from the NBD device with the relay alive.
ROOT_OK = re.compile(rb"nbdroot-status: root=(/dev/nbd\d+) relay=alive pid=(\d+)"
                     rb"(?: argv0=\S+ path=(\S+))?")
PATH_NAMES = {b"ktls": "the kTLS supervisor", b"relay": "the relay"}
FAILED_STEP = re.compile(rb"nbdroot: \[[ \d.]+s\] \S+ \([\d.]+s\) FAILED|Kernel panic[^\r\n]*")
BOOT_FAILED = re.compile(rb"nbdroot: boot failed: ([^\r\n]*)\r?\n")

QEMU_GRACE = 10.0  # seconds QEMU gets after SIGTERM before SIGKILL
# The roots ``appliance image build`` makes (image/rootfs.py), by ``--root`` name.
ROOTS = {"debian": "debian.ext4", "minimal": "rootfs.ext4"}
Reporter = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What ``appliance demo`` was asked for (``out`` is made absolute)."""

    out: Path
    check: bool = False
    timeout: float = 900.0
    countdown: int = 1
    machine: str = "sabrelite"
    boot: str = "kernel"  # "kernel": QEMU loads kernel/DTB/initramfs; "uboot": sdcard.img
    root: str = "debian"  # a key of ROOTS: Debian with systemd, or the busybox "minimal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", self.out.absolute())


def guest_uri(port: int) -> str:
    """The root's URI as the guest sees the host's loopback server."""
    return f"nbds://{IDENTITY}@{GUEST_HOST}:{port}/{EXPORT}"


def settings_for(uri: str, key: bytes, countdown: int) -> dict[str, str]:
    """The board settings of a TLS-PSK root at ``uri``."""
    return {"nbd.uri": uri, "psk.identity": IDENTITY, "psk.key": key.hex(),
            "console.countdown": str(countdown)}


def config_archive(dest: Path, settings: dict[str, str], epoch: int) -> Path:
    """An initramfs archive (mode 0600) holding a config store with ``settings``."""
    from appliance.config import Config, open_store
    from image import cpio

    with tempfile.TemporaryDirectory() as tmp:  # 0700: the store holds the key
        tree = Path(tmp) / "tree"
        store_dir = tree / "etc" / "nbdroot"
        store_dir.mkdir(parents=True, mode=0o700)
        config = Config()
        for k, v in settings.items():
            config = config.set(k, v)
        open_store(store_dir).save(config)
        archive = Path(tmp) / "config.cpio.gz"
        cpio.write_gz(tree, archive, mtime=epoch)
        write_private_file(dest, archive.read_bytes(), overwrite=True)
    return dest


def board_initrd(out: Path, work: Path, settings: dict[str, str], epoch: int = 0) -> Path:
    """The built initramfs followed by a config archive: what the board boots with."""
    config = config_archive(work / "config.cpio.gz", settings, epoch)
    return concatenate([out / "initramfs.cpio.gz", config], work / "initrd.gz")


def concatenate(parts: list[Path], dest: Path) -> Path:
    """``dest`` (mode 0600) = the archives one after another (the kernel unpacks each)."""
    write_private_file(dest, b"".join(part.read_bytes() for part in parts), overwrite=True)
    return dest


def work_dir(out: Path) -> Path:
    """``OUT/demo``, private to this user (it holds the board's key)."""
    work = out / "demo"
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    return work


def overlay(base: Path, dest: Path) -> Path:
    """A qcow2 overlay of ``base`` (raw): the guest's writes land in ``dest`` only."""
    dest.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", str(base.resolve()), str(dest.absolute())], check=True, timeout=60)
    return dest


@contextlib.contextmanager
def serve_root(image: Path, work: Path, report: Reporter) -> Iterator[tuple[int, bytes]]:
    """qemu-nbd on 127.0.0.1 with TLS-PSK serving ``image``; yields (port, key)."""
    from appliance.config.psk import generate_key
    from appliance.host.servers import make_psk, start_qemu_nbd

    key = generate_key()
    psk = make_psk(work / "tls", IDENTITY, key)  # start_qemu_nbd makes every path absolute
    server = start_qemu_nbd(image, work / "qemu-nbd", fmt="qcow2", export=EXPORT, psk_file=psk)
    report(f"qemu-nbd (pid {server.pid}) serves {image.name} on 127.0.0.1:{server.port} "
           f"as '{EXPORT}' (TLS-PSK, identity '{IDENTITY}')")
    try:
        assert server.port is not None
        yield server.port, key
    finally:
        server.stop()


def run(opts: DemoOptions, report: Reporter) -> int:
    """Build, serve, boot; with ``check``, 0 once the root runs from NBD, else 1."""
    from image.build import Options, build

    info = build(Options(out=opts.out), report)
    work = work_dir(opts.out)
    root = overlay(opts.out / ROOTS[opts.root], work / "root.qcow2")
    epoch = int(str(info.get("source_date_epoch", 0)) or 0)
    with serve_root(root, work, report) as (port, key):
        uri = guest_uri(port)
        settings = settings_for(uri, key, opts.countdown)
        if opts.boot == "uboot":
            argv = uboot_boot_argv(opts.out, work, settings, epoch)
        else:
            argv = boot_argv(opts.out, board_initrd(opts.out, work, settings, epoch),
                             opts.machine)
        report(f"booting -M {opts.machine} ({opts.boot}, {opts.root} root); the board's "
               f"config: nbd.uri={uri}")
        if opts.check:
            return _check(opts, argv, work, report)
        return _interactive(argv)


def boot_argv(out: Path, initrd: Path, machine: str = "sabrelite") -> list[str]:
    """qemu-system-arm booting ``initrd`` with the agent as PID 1."""
    from image.qemu import MACHINES, qemu_argv

    return qemu_argv(MACHINES[machine], out, append="appliance.init=boot",
                     initrd=str(initrd.resolve()))


def uboot_boot_argv(out: Path, work: Path, settings: dict[str, str], epoch: int = 0) -> list[str]:
    """qemu-system-arm -M sabrelite booting a copy of sdcard.img through Debian's U-Boot.

    The copy's boot partition also holds the board's settings as
    ``nbdroot-config.cpio.gz``, which boot.scr appends to the initramfs.
    """
    from image import sdcard, uboot
    from image.qemu import SABRELITE

    config = config_archive(work / "config.cpio.gz", settings, epoch)
    card = sdcard.write_sdcard(out, work / sdcard.SDCARD, [SABRELITE.dtb], epoch=epoch,
                               extra={sdcard.CONFIG_ARCHIVE: config})
    return uboot.uboot_argv(card, uboot.fetch_uboot(), work)


def _interactive(argv: list[str]) -> int:
    """QEMU in the foreground on this terminal (Ctrl-A X quits)."""
    argv = list(argv)
    argv[argv.index("stdio")] = "mon:stdio"
    with contextlib.suppress(ValueError):
        i = argv.index("-monitor")
        del argv[i:i + 2]
    proc = children.popen(argv)
    try:
        return proc.wait()
    finally:
        children.end(proc, QEMU_GRACE)


def _check(opts: DemoOptions, argv: list[str], work: Path, report: Reporter) -> int:
    """Boot headless; succeed when the root reports NBD + relay, fail naming the step."""
    from image.qemu import ConsoleTimeout, QemuBoard

    board = QemuBoard(argv, work / "console.log")
    board.start()
    try:
        pattern = b"|".join(p.pattern for p in (ROOT_OK, FAILED_STEP))
        try:
            match = board.expect(pattern, opts.timeout)
        except ConsoleTimeout:
            report(f"no root after {opts.timeout:.0f} s; console log: {work / 'console.log'}")
            report(board.tail())
            return 1
        ok = ROOT_OK.search(match.group(0))
        took = time.monotonic() - board.started
        if ok is None:
            report(_failure(board, match.group(0)))
            return 1
        daemon = PATH_NAMES.get(ok.group(3) or b"relay", "its data path")
        report(f"ok: the board runs from {ok.group(1).decode()} through {daemon} "
               f"(pid {ok.group(2).decode()}), {took:.1f} s after QEMU started")
        return 0
    finally:
        board.stop()


def _failure(board: QemuBoard, first: bytes) -> str:
    """The board's own one-line reason, once it has printed the whole line."""
    from image.qemu import ConsoleTimeout

    try:
        why = board.expect(BOOT_FAILED.pattern, 30.0).group(1)
    except ConsoleTimeout:
        why = first
    return f"boot failed: {why.decode(errors='replace').strip()}"
