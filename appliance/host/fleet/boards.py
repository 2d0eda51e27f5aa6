"""Boards of a fleet: a PSK per board and the export it boots from.

``add`` makes ``boards/NAME/tls/keys.psk`` (``NAME:hexkey``, 0600 from the first byte, in
a 0700 directory that holds nothing else: the directory that board's server reads, so the
server knows no other identity) and, in mode ``cow``, a qcow2 overlay whose backing file
is the golden version (the board's writes stay in its overlay).  In mode ``overlay`` the
board is served its golden version read-only and keeps its writes in RAM (the board's
``root.mode=overlay``: read-only below an overlayfs with a tmpfs upper).

Replicas (``appliance fleet replicas ADDR[:PORT]...``) are other hosts running
``appliance serve`` on a copy of this fleet directory: an overlay board is given every
replica's URI too (``nbd.uri`` lists them, space-separated, and the board's relay fails
over between them).  A cow board is not: its writes live on one server only.
"""

from __future__ import annotations

import contextlib
import shlex
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from appliance.config.psk import generate_key, write_psk_file
from appliance.errors import UsageError

from . import golden
from .state import MODES, Board, Fleet, Listen, private_dir

# The guest side of QEMU user networking reaches the host's 127.0.0.1 here.
QEMU_GUEST_HOST = "10.0.2.2"
LOCAL = "127.0.0.1"
ANY = ("0.0.0.0", "::", "")  # noqa: S104 - a wildcard listen address, mapped to LOCAL


@dataclass(frozen=True)
class BoardView:
    """A board as ``fleet list`` shows it."""

    board: Board
    port: int
    export: str
    last_seen: str


def add(fleet: Fleet, name: str, *, golden_version: int | None = None,
        mode: str = "cow") -> Board:
    """Create board ``name`` on a golden version (default: the newest)."""
    if mode not in MODES:
        raise UsageError(f"--root-mode must be one of {', '.join(MODES)}")
    fleet.require()
    d = fleet.board_dir(name)
    if d.exists():
        raise UsageError(f"board '{name}' exists (appliance fleet reset {name} starts it again)")
    v = golden.check_unchanged(golden.version(fleet, golden_version) if golden_version
                               else golden.latest(fleet))
    board = Board(name, mode, v.number, fleet.free_slot())
    private_dir(d)
    try:
        private_dir(d / "tls")
        write_psk_file(fleet.psk_file(name), name, generate_key())
        if mode == "cow":
            make_overlay(v, d / "root.qcow2")
        fleet.save_board(board)
    except BaseException:
        golden.remove_tree(d)
        raise
    return board


def make_overlay(v: golden.Version, dest: Path) -> None:
    """A fresh qcow2 overlay on golden version ``v`` at ``dest`` (replaced atomically)."""
    from image.run import run

    tmp = dest.with_name(f".{dest.name}.new")
    tmp.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(v.image),
         str(tmp)], timeout=60)
    tmp.chmod(0o600)
    tmp.replace(dest)


def reset(fleet: Fleet, name: str, *, golden_version: int | None = None) -> Board:
    """Start board ``name`` again from its golden version (or version ``golden_version``)."""
    fleet.require().refuse_while_serving(f"reset '{name}'")
    board = fleet.board(name)
    v = golden.check_unchanged(golden.version(fleet, golden_version or board.golden))
    if board.mode == "cow":
        make_overlay(v, fleet.board_dir(name) / "root.qcow2")
    board = Board(board.name, board.mode, v.number, board.slot)
    fleet.save_board(board)
    return board


def remove(fleet: Fleet, name: str) -> None:
    """Delete board ``name``: its key and its overlay."""
    fleet.require().refuse_while_serving(f"remove '{name}'")
    fleet.board(name)
    golden.remove_tree(fleet.board_dir(name))


def image_of(fleet: Fleet, board: Board) -> tuple[Path, str]:
    """(file, format) the board's server serves."""
    if board.mode == "cow":
        return fleet.board_dir(board.name) / "root.qcow2", "qcow2"
    return golden.version(fleet, board.golden).image, "raw"


def uri(fleet: Fleet, board: Board, *, host: str | None = None, psk: bool = True,
        server: Listen | None = None) -> str:
    """The board's NBD URI on ``server`` (default: this fleet's); with ``psk``, naming its
    key file (for host-side tools)."""
    listen = server or fleet.listen
    h = host or (LOCAL if listen.host in ANY else listen.host)
    h = f"[{h}]" if ":" in h else h
    query = "?" + urllib.parse.urlencode({"tls-psk-file": str(fleet.psk_file(board.name))},
                                         safe="/") if psk else ""
    return f"nbds://{board.name}@{h}:{listen.port + board.slot}/{board.name}{query}"


def servers(fleet: Fleet, board: Board) -> list[Listen]:
    """Where ``board`` is served: this fleet's listen address, then (overlay boards) every
    replica's."""
    return [fleet.listen, *(fleet.replicas if board.mode == "overlay" else [])]


def uris(fleet: Fleet, board: Board, *, psk: bool = True) -> list[str]:
    """The board's URIs on every server of :func:`servers`, as a host-side tool uses them."""
    return [uri(fleet, board, psk=psk, server=s) for s in servers(fleet, board)]


def provisioning_line(fleet: Fleet, board: Board, *, console: str = "PORT",
                      host: str | None = None) -> str:
    """The ``appliance console`` command that configures the board for its export (all
    replicas' URIs, space-separated, for an overlay board)."""
    board_uri = " ".join(uri(fleet, board, host=host or board_host(s), psk=False, server=s)
                         for s in servers(fleet, board))
    argv = ["appliance", "console", console, "--set", f"nbd.uri={board_uri}"]
    if board.mode == "overlay":
        argv += ["--set", "root.mode=overlay"]
    argv += ["--psk-file", str(fleet.psk_file(board.name)), "--save", "--boot"]
    return shlex.join(argv)


def board_host(where: Fleet | Listen) -> str:
    """A server's address as a board sees it (QEMU's 10.0.2.2 for a loopback server)."""
    host = where.listen.host if isinstance(where, Fleet) else where.host
    return QEMU_GUEST_HOST if host.startswith("127.") or host == "::1" else host


def views(fleet: Fleet) -> list[BoardView]:
    rows = []
    for b in fleet.require().boards():
        seen = ""
        with contextlib.suppress(OSError):
            seen = (fleet.board_dir(b.name) / "last-seen").read_text().strip()
        rows.append(BoardView(b, fleet.port(b), b.name, seen or "never"))
    return rows
