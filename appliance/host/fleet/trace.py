"""Block-request traces of a real boot: record one, read one.

A trace is a gzipped text file: ``#`` comment lines, then one request per line,
``SECONDS COMMAND OFFSET LENGTH`` (seconds since the first request; command ``R`` read,
``W`` write, ``F`` flush, ``T`` trim, ``Z`` write-zeroes, ``C`` cache, ``B`` block status).

:func:`record` boots the built image under ``qemu-system-arm -M sabrelite`` with its
root served by nbdkit over TLS-PSK through nbdkit's own ``log`` filter (and the ``cow``
filter, so the image stays pristine), and turns the filter's log into a trace: the relay
is not touched, and the trace is what the server received.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.errors import ConfigError, ImageError

COMMANDS = {"Read": "R", "Write": "W", "Flush": "F", "Trim": "T", "Zero": "Z",
            "Cache": "C", "Extents": "B"}
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) connection=\d+ (\w+) id=\d+"
                      r"(?: offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+))?")

Reporter = Callable[[str], None]
DEFAULT_TRACE = Path(__file__).parent / "traces" / "boot-sabrelite.txt.gz"  # minimal root
DEBIAN_TRACE = DEFAULT_TRACE.with_name("boot-sabrelite-debian.txt.gz")  # systemd root


@dataclass(frozen=True, slots=True)
class Op:
    """One request of a trace."""

    t: float
    command: str
    offset: int
    length: int


def parse_nbdkit_log(text: str) -> list[Op]:
    """The requests an nbdkit ``log`` filter logged (not their replies), oldest first."""
    ops: list[Op] = []
    start: datetime | None = None
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m is None or m.group(2) not in COMMANDS:
            continue
        when = datetime.fromisoformat(m.group(1))
        start = start or when
        offset, length = (int(m.group(i), 16) if m.group(i) else 0 for i in (3, 4))
        ops.append(Op((when - start).total_seconds(), COMMANDS[m.group(2)], offset, length))
    return ops


def write(path: Path, ops: list[Op], comment: str) -> Path:
    with gzip.open(path, "wt", encoding="ascii", compresslevel=9) as f:
        for line in comment.splitlines():
            f.write(f"# {line}\n")
        for op in ops:
            f.write(f"{op.t:.6f} {op.command} {op.offset} {op.length}\n")
    return path


def load(path: Path) -> list[Op]:
    """A trace file's requests; a one-line error if it is not one."""
    ops = []
    number = 0
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            for number, line in enumerate(f, 1):  # noqa: B007 - named in the error
                if line.startswith("#") or not line.strip():
                    continue
                t, cmd, off, length = line.split()
                if cmd not in COMMANDS.values():
                    raise ValueError(f"unknown command {cmd!r}")
                ops.append(Op(float(t), cmd, int(off), int(length)))
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        where = f" line {number}" if number else ""
        raise ConfigError(f"{path}{where}: not a block-request trace ({exc})") from None
    if not ops:
        raise ConfigError(f"{path}: the trace has no requests")
    return ops


def extent(ops: list[Op]) -> int:
    """Bytes an export needs for every request of ``ops`` to be in range."""
    return max(op.offset + op.length for op in ops)


def record(out: Path, dest: Path, report: Reporter, timeout: float = 300.0,
           root: str = "minimal") -> list[Op]:
    """Boot the built image from nbdkit (log + cow filters) and write the trace to ``dest``.

    ``root``: a key of :data:`appliance.host.demo.ROOTS` (``debian``: systemd; give it a
    longer ``timeout``: its status line comes after systemd's start-up)."""
    from appliance.config.psk import generate_key
    from appliance.host.demo import (
        EXPORT,
        FAILED_STEP,
        IDENTITY,
        ROOT_OK,
        ROOTS,
        board_initrd,
        boot_argv,
        guest_uri,
        settings_for,
    )
    from appliance.host.servers import make_psk, start_nbdkit
    from image.build import Options, build
    from image.qemu import ConsoleTimeout, QemuBoard

    info = build(Options(out=out), report)
    work = out / "trace"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_key()
    psk = make_psk(work / "tls", IDENTITY, key)
    logfile = work / "requests.log"
    logfile.unlink(missing_ok=True)
    image = (out / ROOTS[root]).resolve()
    server = start_nbdkit("file", str(image), f"logfile={logfile}",
                          tmp=work / "nbdkit", psk_file=psk, filters=("log", "cow"),
                          export=EXPORT)
    try:
        assert server.port is not None
        settings = settings_for(guest_uri(server.port), key, 1)
        initrd = board_initrd(out, work, settings, int(str(info.get("epoch", 0)) or 0))
        board = QemuBoard(boot_argv(out, initrd), work / "console.log")
        board.start()
        try:
            match = board.expect(b"|".join(p.pattern for p in (ROOT_OK, FAILED_STEP)), timeout)
            if ROOT_OK.search(match.group(0)) is None:
                raise ImageError(f"the board's boot failed: "
                                 f"{match.group(0).decode(errors='replace').strip()}; "
                                 f"console log: {work / 'console.log'}")
        except ConsoleTimeout:
            raise ImageError(f"the board did not reach its root in {timeout:.0f} s; "
                             f"console log: {work / 'console.log'}") from None
        finally:
            board.stop()
    finally:
        server.stop()
    ops = parse_nbdkit_log(logfile.read_text(errors="replace"))
    report(f"{len(ops)} requests recorded, {ops[-1].t:.1f} s from the first to the last")
    write(dest, ops, f"boot of {IDENTITY} on -M sabrelite, {image.name} ({root} root)\n"
          "SECONDS COMMAND OFFSET LENGTH (nbdkit log filter)")
    return ops
