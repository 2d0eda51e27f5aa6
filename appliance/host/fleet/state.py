"""The fleet directory: what the fleet commands and ``appliance serve`` share, as files.

Layout (default ``./fleet``; created 0700, refused when group or others may write it)::

    fleet.json                 where the servers listen: {"listen": HOST, "port": FIRST_PORT,
                               "replicas": [{"listen": HOST, "port": FIRST_PORT}, ...]}
    golden/V/image.raw         golden version V, mode 0444, never modified (see .golden)
    golden/V/version.json      its size, SHA-256, mtime and source
    boards/NAME/board.json     {"name", "mode", "golden", "slot"}: port = FIRST_PORT + slot
    boards/NAME/tls/keys.psk   NAME:hexkey, 0600 in a 0700 directory: only this board's key
    boards/NAME/root.qcow2     mode "cow": the board's writes over its golden version
    boards/NAME/last-seen      the board's last connection, written by ``appliance serve``
    run/                       pid and log files of the running servers

JSON records are written to a temporary file, fsynced and renamed (a reader never sees
half a record).  The board's PSK identity and export name are its name.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.config.psk import write_private_file
from appliance.errors import ConfigError, UsageError

DEFAULT_DIR = Path("fleet")
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_PORT = 10809
MODES = ("cow", "overlay")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def check_name(name: str) -> str:
    """A board name (also its PSK identity and export): 1-32 of a-z 0-9 _ -."""
    if NAME.fullmatch(name) is None:
        raise UsageError(f"bad board name '{name}': use 1-32 characters a-z 0-9 _ - "
                         "(starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class Board:
    """One board's record (``boards/NAME/board.json``)."""

    name: str
    mode: str  # "cow": its own qcow2 overlay; "overlay": the shared read-only golden export
    golden: int
    slot: int


@dataclass(frozen=True)
class Listen:
    """Where the servers listen: board ``slot`` is served on ``port + slot``."""

    host: str = DEFAULT_LISTEN
    port: int = DEFAULT_PORT


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a one-line ConfigError if missing or corrupt."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (0600, temp + fsync + rename)."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_private_file(path, text.encode("utf-8"), overwrite=True)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may write (made 0700 if missing)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is not a directory")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} is writable by group or others: chmod go-w {path}")
    return path


class Fleet:
    """The fleet directory at ``root``."""

    def __init__(self, root: Path = DEFAULT_DIR) -> None:
        self.root = root.absolute()

    def ensure(self) -> Fleet:
        """Create the directory layout (0700) or check an existing one."""
        private_dir(self.root)
        for sub in ("golden", "boards", "run"):
            private_dir(self.root / sub)
        return self

    def exists(self) -> bool:
        return (self.root / "boards").is_dir()

    def require(self) -> Fleet:
        """The fleet, or a one-line error saying how to start one."""
        if not self.exists():
            raise ConfigError(f"no fleet at {self.root}: start one with "
                              "'appliance golden import IMAGE' (or pass --fleet DIR)")
        return self.ensure()

    # ------------------------------------------------------------------ listen address

    @property
    def listen(self) -> Listen:
        path = self.root / "fleet.json"
        if not path.exists():
            return Listen()
        data = read_json(path)
        return Listen(str(data.get("listen", DEFAULT_LISTEN)), int(data.get("port", DEFAULT_PORT)))

    def set_listen(self, listen: Listen) -> None:
        self._write_settings(listen, self.replicas)

    @property
    def replicas(self) -> list[Listen]:
        """Other hosts serving a copy of this fleet (``appliance fleet replicas``)."""
        path = self.root / "fleet.json"
        found = read_json(path).get("replicas", []) if path.exists() else []
        try:
            return [Listen(str(r["listen"]), int(r["port"])) for r in found]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad replicas ({exc})") from None

    def set_replicas(self, replicas: list[Listen]) -> None:
        self._write_settings(self.listen, replicas)

    def _write_settings(self, listen: Listen, replicas: list[Listen]) -> None:
        data: dict[str, Any] = {"listen": listen.host, "port": listen.port}
        if replicas:
            data["replicas"] = [{"listen": r.host, "port": r.port} for r in replicas]
        write_json(self.root / "fleet.json", data)

    # ------------------------------------------------------------------ boards

    def board_dir(self, name: str) -> Path:
        return self.root / "boards" / check_name(name)

    def board(self, name: str) -> Board:
        path = self.board_dir(name) / "board.json"
        if not path.exists():
            raise UsageError(f"no board '{name}' in {self.root} (appliance fleet list)")
        data = read_json(path)
        try:
            board = Board(str(data["name"]), str(data["mode"]), int(data["golden"]),
                          int(data["slot"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad board record ({exc})") from None
        if board.name != name or board.mode not in MODES:
            raise ConfigError(f"{path}: bad board record")
        return board

    def save_board(self, board: Board) -> None:
        write_json(self.board_dir(board.name) / "board.json", asdict(board))

    def boards(self) -> list[Board]:
        """Every board, in slot order."""
        names = sorted(p.name for p in (self.root / "boards").iterdir()
                       if (p / "board.json").exists())
        return sorted((self.board(n) for n in names), key=lambda b: b.slot)

    def free_slot(self) -> int:
        used = {b.slot for b in self.boards()}
        return next(i for i in range(len(used) + 1) if i not in used)

    def psk_file(self, name: str) -> Path:
        return self.board_dir(name) / "tls" / "keys.psk"

    def port(self, board: Board) -> int:
        return self.listen.port + board.slot

    # ------------------------------------------------------------------ serve marker

    def serving_pid(self) -> int | None:
        """The pid of a running ``appliance serve`` on this fleet, if any."""
        path = self.root / "run" / "serve.pid"
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def refuse_while_serving(self, what: str) -> None:
        pid = self.serving_pid()
        if pid is not None:
            raise UsageError(f"appliance serve (pid {pid}) is serving {self.root}: "
                             f"stop it before you {what}")
