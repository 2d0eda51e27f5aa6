"""``appliance bench board``: our boot and root disk against Debian's classic nbdroot.

Boots the built image under ``qemu-system-arm -M sabrelite`` alternately with ours (the
agent, TLS-PSK through the relay, or the data path ``--path`` names) and the baseline
(``initramfs-baseline.cpio.gz``: busybox ``/init``, Debian's ``nbd-client`` attached
kernel-direct to a plaintext server), N times each, on the same kernel, modules and root.
Each boot serves a fresh sparse copy of ``rootfs.ext4`` with qemu-nbd on 127.0.0.1
(raw: both servers read the same bytes the same way), into which an ``/etc/rc.local``
was written (the root's rcS runs it once the root is up).  The script measures, on the
board, the same for both:

* the agent's RSS (processes whose argv[0] starts with ``@``, and ``nbd-client``): the
  data path's (relay or kTLS supervisor) and the lease keeper's apart, by their names;
* ``dd bs=1M`` from ``/dev/nbd0``, cold cache, then ``dd bs=4k iflag=direct`` (one
  request at a time), both on allocated data of the root image (found on the host
  with SEEK_DATA, so no read is answered as a hole);
* ``dd bs=1M oflag=direct`` and ``dd bs=4k oflag=direct`` into a scratch file on the root.

Boot stages come from the guest's own clock (the kernel's ``Run /init`` line, the agent's
``root`` step or the baseline's ``root mounted`` stamp) and the host's clock from QEMU's
start to the root's ``root filesystem up`` line.  :mod:`appliance.host.bench_figures`
turns the runs into the table.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.daemon import LEASE_COMM
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from image.qemu import QemuBoard

OURS, BASELINE = "ours", "baseline"
BASELINE_INITRD = "initramfs-baseline.cpio.gz"
ROOTFS = "rootfs.ext4"
EXPORT = "root"
MiB = 1 << 20
BLOCK = 4096
PATH_SETTING = "nbd.path"  # the board setting that picks the data path (when given)

RUN_INIT = rb"\[\s*([\d.]+)\] Run /init as init process"
ROOT_OURS = rb"nbdroot: \[\s*([\d.]+)s\] root \("
ROOT_BASELINE = rb"baseline-init: \[([\d.]+)\] root mounted"
FAILED = (rb"nbdroot: \[[ \d.]+s\] \S+ \([\d.]+s\) FAILED[^\r\n]*|baseline-init: \[[\d.]+\] "
          rb"FAILED[^\r\n]*|Kernel panic[^\r\n]*|nbdroot: boot failed[^\r\n]*")
ROOT_UP = rb"nbdroot: root filesystem up"
RESULT = re.compile(rb"bench: (\S+) ([^\r\n]*)\r?\n")
DD_LINE = re.compile(r"(\d+) bytes .* copied, ([\d.e+-]+) s")

Reporter = Callable[[str], None]


class BenchError(ApplianceError):
    """A benchmark boot failed (the message names the boot and the step)."""


@dataclass(frozen=True)
class BoardBenchOptions:
    """What ``appliance bench board`` was asked for (``out`` is made absolute)."""

    out: Path
    boots: int = 3
    read_mib: int = 32
    requests: int = 256  # 4 KiB requests, reads and writes each
    write_mib: int = 8
    path: str | None = None
    plain: bool = False  # ours over plaintext nbd:// (separates TLS's cost from the path's)
    qemu_nbd: str | None = None
    countdown: int = 1
    cpus: int = 1  # qemu -smp, both sides
    timeout: float = 420.0
    keep: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", self.out.absolute())


@dataclass
class BootRun:
    """The figures of one boot."""

    variant: str
    kernel_to_root: float = 0.0
    init_to_root: float = 0.0
    qemu_to_root_up: float = 0.0
    dd: dict[str, float] = field(default_factory=dict)  # name -> MB/s
    rss_kb: int = 0  # the data path: relay or kTLS supervisor (ours), nbd-client
    keeper_kb: int = 0  # ours: the DHCP lease keeper
    agents: list[str] = field(default_factory=list)


def data_extent(image: Path) -> tuple[int, int]:
    """The largest allocated (non-hole) range of ``image``, as (offset, length)."""
    best = (0, 0)
    fd = os.open(image, os.O_RDONLY)
    try:
        size, off = os.fstat(fd).st_size, 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after off
                break
            off = os.lseek(fd, start, os.SEEK_HOLE)
            if off - start > best[1]:
                best = (start, off - start)
    finally:
        os.close(fd)
    return best


def rc_local(opts: BoardBenchOptions, extent: tuple[int, int]) -> str:
    """The measuring script, the same for both variants."""
    first_mib = -(-extent[0] // MiB)
    usable = extent[0] + extent[1] - first_mib * MiB
    need = opts.read_mib * MiB + opts.requests * BLOCK
    if need > usable:
        raise BenchError(f"the root image's largest allocated range ({usable // MiB} MiB) is "
                         f"smaller than the {need / MiB:.0f} MiB the reads need")
    skip_4k = (first_mib + opts.read_mib) * (MiB // BLOCK)
    return f"""#!/bin/sh
# Written by appliance bench board: the same measurements for ours and the baseline.
for d in /proc/[0-9]*; do
    a=$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null); c=$(cat "$d/comm" 2>/dev/null)
    case "$a" in @*) ;; *) [ "$c" = nbd-client ] || continue ;; esac
    echo "bench: agent $(awk '/^VmRSS/ {{print $2}}' "$d/status") ${{d#/proc/}} $c $a"
done
sync; echo 3 > /proc/sys/vm/drop_caches
bdd() {{ name=$1; shift; echo "bench: dd-$name $(dd "$@" 2>&1 | tail -n 1)"; }}
bdd read-1M if=/dev/nbd0 of=/dev/null bs=1M skip={first_mib} count={opts.read_mib}
bdd read-4k if=/dev/nbd0 of=/dev/null bs=4k skip={skip_4k} count={opts.requests} iflag=direct
dd if=/dev/urandom of=/tmp/bench.src bs=1M count={opts.write_mib} 2>/dev/null
bdd write-1M if=/tmp/bench.src of=/root/bench.scratch bs=1M oflag=direct conv=fsync
bdd write-4k if=/tmp/bench.src of=/root/bench.scratch bs=4k count={opts.requests} \\
    oflag=direct conv=notrunc,fsync
rm -f /root/bench.scratch /tmp/bench.src; sync
echo "bench: done ok"
"""


def root_copy(out: Path, dest: Path, script: str) -> Path:
    """A sparse copy of the built root with ``script`` as its /etc/rc.local."""
    from image.run import run

    subprocess.run(["cp", "--sparse=always", str(out / ROOTFS), str(dest)], check=True,
                   timeout=120)
    rc = dest.with_name("rc.local")
    rc.write_text(script)
    run(["debugfs", "-w", "-R", f"write {rc} /etc/rc.local", dest])
    run(["debugfs", "-w", "-R", "sif /etc/rc.local mode 0100755", dest])
    return dest


def load_average() -> str:
    """The host's 1/5/15-minute load averages, as /proc/loadavg shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def server_version(binary: str | None) -> str:
    """The first line of ``qemu-nbd --version`` (the server of both variants)."""
    from appliance.host.servers import require

    try:
        r = subprocess.run([binary or require("qemu-nbd"), "--version"], capture_output=True,
                           text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError, ApplianceError) as exc:
        return f"qemu-nbd (version unknown: {exc})"
    return r.stdout.splitlines()[0] if r.stdout else "qemu-nbd"


def bench(opts: BoardBenchOptions, report: Reporter) -> list[BootRun]:
    """Build (cached), then boot ours and the baseline alternately ``opts.boots`` times."""
    from image.build import Options, build

    info = build(Options(out=opts.out), report)
    if not (opts.out / BASELINE_INITRD).exists():
        raise BenchError(f"{opts.out / BASELINE_INITRD} is missing: rebuild the image")
    epoch = int(str(info.get("source_date_epoch", 0)) or 0)
    script = rc_local(opts, data_extent(opts.out / ROOTFS))
    runs: list[BootRun] = []
    with _workdir(opts) as work:
        for i in range(opts.boots):
            for variant in (OURS, BASELINE):
                boot_dir = work / f"{i + 1}-{variant}"
                boot_dir.mkdir(mode=0o700)
                run = one_boot(opts, variant, boot_dir, script, epoch)
                report(f"boot {i + 1}/{opts.boots} {variant}: kernel->root "
                       f"{run.kernel_to_root:.2f} s, dd 1M {run.dd['read-1M']:.2f} MB/s, "
                       f"dd 4k {run.dd['read-4k']:.3f} MB/s, RSS {run.rss_kb} kB")
                runs.append(run)
    return runs


@contextmanager
def _workdir(opts: BoardBenchOptions) -> Iterator[Path]:
    if opts.keep is not None:
        opts.keep.mkdir(parents=True, exist_ok=True)
        yield opts.keep.absolute()
        return
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
        yield Path(tmp)


def one_boot(opts: BoardBenchOptions, variant: str, work: Path, script: str,
             epoch: int) -> BootRun:
    """Serve a fresh root, boot ``variant`` on it, collect its figures."""
    from appliance.config.psk import generate_key
    from appliance.host.demo import IDENTITY
    from appliance.host.servers import ServerError, make_psk, start_qemu_nbd
    from image.qemu import QemuBoard

    root = root_copy(opts.out, work / "root.raw", script)
    key = generate_key()
    tls = variant == OURS and not opts.plain
    psk = make_psk(work / "tls", IDENTITY, key) if tls else None
    try:
        server = start_qemu_nbd(root, work / "qemu-nbd", export=EXPORT, psk_file=psk,
                                binary=opts.qemu_nbd)
    except ServerError as exc:
        raise BenchError(str(exc)) from None
    try:
        assert server.port is not None
        argv = _argv(opts, variant, work, server.port, key, epoch)
        with QemuBoard(argv, work / "console.log") as board:
            return _measure(board, variant, opts.timeout, work / "console.log")
    finally:
        server.stop()


def _argv(opts: BoardBenchOptions, variant: str, work: Path, port: int, key: bytes,
          epoch: int) -> list[str]:
    """Ours: the agent with a TLS-PSK root; the baseline: nbdroot=SERVER:PORT/EXPORT; both
    with ``opts.cpus`` emulated cores."""
    smp = ["-smp", str(opts.cpus)] if opts.cpus > 1 else []
    return [*_board_argv(opts, variant, work, port, key, epoch), *smp]


def _board_argv(opts: BoardBenchOptions, variant: str, work: Path, port: int, key: bytes,
                epoch: int) -> list[str]:
    from appliance.host.demo import GUEST_HOST, board_initrd, boot_argv, guest_uri, settings_for
    from image.qemu import SABRELITE, qemu_argv

    if variant == BASELINE:
        return qemu_argv(SABRELITE, opts.out, append=f"nbdroot={GUEST_HOST}:{port}/{EXPORT}",
                         initrd=str(opts.out / BASELINE_INITRD))
    uri = f"nbd://{GUEST_HOST}:{port}/{EXPORT}" if opts.plain else guest_uri(port)
    settings = settings_for(uri, key, opts.countdown)
    if opts.plain:  # a key makes the agent ask for TLS
        del settings["psk.identity"], settings["psk.key"]
    if opts.path is not None:
        settings[PATH_SETTING] = opts.path
    return boot_argv(opts.out, board_initrd(opts.out, work, settings, epoch))


def _measure(board: QemuBoard, variant: str, timeout: float, log: Path) -> BootRun:
    """Read the boot stages and the script's figures off the console."""
    from image.qemu import ConsoleTimeout

    run = BootRun(variant)

    def wait(pattern: bytes, what: str) -> re.Match[bytes]:
        try:
            m = board.expect(pattern + b"|" + FAILED, timeout)
        except ConsoleTimeout:
            raise BenchError(f"{variant}: no '{what}' within {timeout:.0f} s "
                             f"(console log: {log})") from None
        if m.group(1) is None:
            raise BenchError(f"{variant}: {m.group(0).decode(errors='replace')} "
                             f"(console log: {log})")
        return m

    run_init = float(wait(RUN_INIT, "Run /init").group(1))
    root = float(wait(ROOT_OURS if variant == OURS else ROOT_BASELINE, "root mounted").group(1))
    run.kernel_to_root, run.init_to_root = root, root - run_init
    wait(rb"(" + ROOT_UP + rb")", "root filesystem up")
    run.qemu_to_root_up = time.monotonic() - board.started
    while True:
        m = wait(RESULT.pattern, "bench: done")
        key, value = m.group(1).decode(), m.group(2).decode(errors="replace")
        if key == "done":
            break
        record_result(run, key, value)
    for name in ("read-1M", "read-4k", "write-1M", "write-4k"):
        if name not in run.dd:
            raise BenchError(f"{variant}: dd {name} printed no figure (console log: {log})")
    return run


def record_result(run: BootRun, key: str, value: str) -> None:
    """One ``bench: KEY VALUE`` line of the script into ``run``."""
    if key == "agent":  # RSS_KB PID COMM ARGV...
        rss, rest = value.split(" ", 1)
        kb = int(rss) if rss.isdigit() else 0
        if rest.split()[1:2] == [LEASE_COMM]:
            run.keeper_kb += kb
        else:
            run.rss_kb += kb
        run.agents.append(rest)
    elif key.startswith("dd-"):
        m = DD_LINE.search(value)
        if m is None:
            raise BenchError(f"{run.variant}: dd {key[3:]} failed: {value}")
        run.dd[key[3:]] = int(m.group(1)) / float(m.group(2)) / 1e6
