"""``appliance serve``: one qemu-nbd per board, each knowing only that board's key.

Why qemu-nbd, one per board: the server must refuse board A's key on board B's export.
QEMU 7.2's ``--tls-authz`` does not check PSK identities (its TLS session check is a
"nop" for PSK credentials: measured, a second identity in the same key file opened the
export with ``authz-simple,identity=`` naming only the first), and nbdkit's
``--tls-psk`` accepts every identity of its file for every export.  So each board's
server reads a key directory holding that board's identity alone; any other identity
fails the TLS handshake there.  qemu-nbd serves the qcow2 overlays of ``cow`` boards
(nbdkit 1.32 cannot write qcow2) and the golden raw image read-only (``-r``, which
advertises ``CAN_MULTI_CONN``) to ``overlay`` boards; several read-only qemu-nbd share
one golden file and the page cache.

Board ``slot`` listens on ``PORT + slot``.  Connection events come from qemu-nbd's own
trace points (``-T``), read from each server's log: one line per board connection or
refused handshake, and the time in ``boards/NAME/last-seen``.  The servers are ended by
PID when serve ends: on return, an error, SIGINT, SIGTERM or SIGHUP
(:func:`appliance.host.children.signals_raise`), and by the kernel on kill -9 (the
servers are started with PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.errors import ConfigError, Terminated
from appliance.host.children import signals_raise
from appliance.host.servers import NBDServer, ServerError, require

from . import boards, golden
from .state import Board, Fleet, Listen, write_json

log = logging.getLogger(__name__)

TRACE_EVENTS = ("nbd_negotiate_success", "qio_channel_tls_handshake_fail")
SHARED = 8  # connections at once per board (a relay reconnecting overlaps its old one)
POLL = 0.2

Reporter = Callable[[str], None]


@dataclass
class BoardServer:
    """The running server of one board and how far its log has been read."""

    board: Board
    server: NBDServer
    log_offset: int = 0
    connections: int = 0
    refused: int = 0


@dataclass
class FleetServer:
    """Start, watch and stop the servers of every board in ``fleet``."""

    fleet: Fleet
    report: Reporter
    running: list[BoardServer] = field(default_factory=list)

    def start(self, listen: Listen | None = None) -> None:
        fleet = self.fleet.require()
        fleet.refuse_while_serving("start another server on it")
        if listen is not None:
            fleet.set_listen(listen)
        listed = fleet.boards()
        if not listed:
            raise ConfigError(f"{fleet.root} has no boards: appliance fleet add NAME")
        for v in {b.golden for b in listed}:
            golden.check_unchanged(golden.version(fleet, v))
        write_json(fleet.root / "run" / "serve.json", {"pid": os.getpid()})
        (fleet.root / "run" / "serve.pid").write_text(f"{os.getpid()}\n")
        binary = require("qemu-nbd")
        for board in listed:
            self.running.append(BoardServer(board, self._start_one(binary, board)))
            self.report(self._started_line(board))

    def _start_one(self, binary: str, board: Board) -> NBDServer:
        fleet = self.fleet
        run = fleet.root / "run"
        image, fmt = boards.image_of(fleet, board)
        psk = fleet.psk_file(board.name)
        argv = [binary, "-f", fmt, "-t", "-e", str(SHARED), "-x", board.name,
                "-b", fleet.listen.host, "-p", str(fleet.port(board)),
                "--pid-file", str(run / f"{board.name}.pid"),
                "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={psk.parent}",
                "--tls-creds", "tls0"]
        argv += ["-r"] if board.mode == "overlay" else []
        for event in TRACE_EVENTS:
            argv += ["-T", event]
        argv.append(str(image))
        log_file = run / f"{board.name}.log"
        log_file.unlink(missing_ok=True)
        server = NBDServer("qemu-nbd", argv, run / f"{board.name}.pid", log_file,
                           port=fleet.port(board), export=board.name, psk_file=psk,
                           identity=board.name, host=fleet.listen.host)
        try:
            return server.start()
        except ServerError:
            lines = server.log_text().strip().splitlines()
            why = lines[-1] if lines else "qemu-nbd did not start"
            raise ConfigError(f"{board.name}: cannot serve on {fleet.listen.host}:"
                              f"{fleet.port(board)}: {why}") from None

    def _started_line(self, board: Board) -> str:
        server = self.running[-1].server
        what = "read-only golden" if board.mode == "overlay" else "qcow2 overlay on golden"
        return (f"{board.name}: qemu-nbd pid {server.pid} serves "
                f"'{board.name}' on {self.fleet.listen.host}:{self.fleet.port(board)} "
                f"({what} {board.golden}; TLS-PSK, identity '{board.name}' only)")

    @property
    def pids(self) -> list[int]:
        return [bs.server.pid for bs in self.running]

    def poll(self) -> None:
        """Report new connection events; an error if a server died."""
        for bs in self.running:
            self._read_events(bs)
            proc = bs.server.proc
            if proc is not None and proc.poll() is not None:
                tail = bs.server.log_text()[-300:].strip().splitlines()
                raise ConfigError(f"{bs.board.name}: qemu-nbd exited with {proc.returncode}"
                                  f"{': ' + tail[-1] if tail else ''}")

    def _read_events(self, bs: BoardServer) -> None:
        path = self.fleet.root / "run" / f"{bs.board.name}.log"
        try:
            with path.open("rb") as f:
                f.seek(bs.log_offset)
                data = f.read()
        except OSError:
            return
        complete = data[:data.rfind(b"\n") + 1]  # whole lines only
        bs.log_offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            self._event(bs, line)

    def _event(self, bs: BoardServer, line: str) -> None:
        name = bs.board.name
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if line.startswith("nbd_negotiate_success"):
            bs.connections += 1
            self.report(f"{name}: connected (export '{name}', golden {bs.board.golden}, "
                        f"connection {bs.connections})")
            with contextlib.suppress(OSError):
                (self.fleet.board_dir(name) / "last-seen").write_text(f"{stamp}\n")
        elif line.startswith("qio_channel_tls_handshake_fail"):
            bs.refused += 1
            self.report(f"{name}: refused a connection: TLS-PSK handshake failed "
                        f"(an identity other than '{name}' or a wrong key)")

    def stop(self) -> None:
        """End every server by PID (SIGTERM, then SIGKILL), and the serve marker."""
        for bs in reversed(self.running):
            with contextlib.suppress(Exception):
                self._read_events(bs)
            bs.server.stop()
        self.running.clear()
        for marker in ("serve.pid", "serve.json"):
            (self.fleet.root / "run" / marker).unlink(missing_ok=True)


def serve(fleet: Fleet, listen: Listen | None, report: Reporter,
          until: Callable[[], bool] = lambda: False) -> int:
    """Run the fleet's servers in the foreground until a signal (or ``until()``)."""
    fs = FleetServer(fleet, report)
    with signals_raise():
        try:
            fs.start(listen)
            report(f"serving {len(fs.running)} board(s) from {fleet.root}; Ctrl-C stops")
            while not until():
                fs.poll()
                time.sleep(POLL)
        except (Terminated, KeyboardInterrupt) as exc:
            report(f"{exc or 'interrupted'}: ending {len(fs.running)} server(s)")
        finally:
            fs.stop()
    return 0
