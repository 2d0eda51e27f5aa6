"""The board's configuration prompt: the boot-time countdown and the command dialogue.

The dialogue is made for a dumb serial terminal and for scripts alike: a stable
prompt ``nbdroot> ``, plain lines, and every command's answer ends with a line that
is exactly ``ok`` or starts with ``error: `` (one line).  Commands:

  show [KEY]          settings, secrets masked
  set KEY VALUE       change a setting (in memory until save)
  unset KEY           back to the default
  psk generate [N]    a new random N-byte PSK (default 32)
  test                try the NBD connection with the current settings
  save                store the settings (power-cut safe)
  boot                leave the prompt and boot
  help [KEY|COMMAND]  this list, or one key's help

The boot sequence calls :func:`configure_at_boot`.  The ``test`` command calls a
function given by the caller (the NBD client lives elsewhere): ``tester(BootConfig)``
returns a one-line report or raises an ApplianceError.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config.model import BootConfig, Config
from appliance.config.psk import DEFAULT_KEY_BYTES, generate_key
from appliance.config.settings import SETTINGS, lookup
from appliance.config.store import ConfigStore
from appliance.console.terminal import Terminal
from appliance.errors import ApplianceError, ConfigError, ConsoleError

log = logging.getLogger(__name__)

PROMPT = "nbdroot> "
OK = "ok"
ERROR_PREFIX = "error: "
BANNER = "nbdroot: press any key to configure"
DEFAULT_IDLE_TIMEOUT = 300.0

Tester = Callable[[BootConfig], str]

# A line whose rest is a secret value: echoed as '*' while typed, never logged.
_SECRET_LINE = re.compile(r"\s*set\s+(" + "|".join(
    re.escape(s.key) for s in SETTINGS if s.secret) + r")\s+(?P<value>.*)")

COMMANDS: dict[str, tuple[str, str]] = {
    "show": ("show [KEY]", "print the settings (secrets masked)"),
    "set": ("set KEY VALUE", "change a setting (kept in memory until save)"),
    "unset": ("unset KEY", "put a setting back to its default"),
    "psk": ("psk generate [BYTES]", f"set psk.key to a new random key ({DEFAULT_KEY_BYTES} bytes)"),
    "test": ("test", "try to reach the NBD server with these settings"),
    "save": ("save", "store the settings so they survive a reboot or power cut"),
    "boot": ("boot", "leave this prompt and boot"),
    "help": ("help [KEY|COMMAND]", "list commands and keys, or explain one"),
}


def secret_typed(prefix: str) -> bool:
    """True if the next character typed after *prefix* belongs to a secret value."""
    return _SECRET_LINE.match(prefix) is not None


def redact(line: str) -> str:
    """*line* with any secret value replaced by '***' (for logs)."""
    m = _SECRET_LINE.match(line)
    return line[:m.start("value")] + "***" if m else line


@dataclass
class _Answer:
    """What a command answers: lines to print, and whether the board boots now."""

    lines: list[str]
    boot: bool = False


class Session:
    """One dialogue on a terminal: holds the edited config until save or boot."""

    def __init__(self, term: Terminal, store: ConfigStore, config: Config,
                 tester: Tester | None = None) -> None:
        self.term = term
        self.store = store
        self.config = config
        self.saved = config
        self.tester = tester

    def run(self, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> Config:
        """Serve commands until ``boot``; return the config to boot with.

        With no input for *idle_timeout* seconds a bootable configuration boots (a
        stray byte on the line must not hold the board forever); an unbootable one
        keeps waiting for the operator.
        """
        self.term.write("nbdroot configuration; type help for the commands\n")
        while True:
            line = self.term.read_line(PROMPT, idle_timeout, secret_typed)
            if line is None:
                if self._bootable():
                    reason = "end of input" if self.term.eof else "no input"
                    self.term.write(f"{reason}: booting with the current settings\n")
                    return self.config
                if self.term.eof:
                    raise ConsoleError("console closed and the configuration cannot boot")
                continue
            if line.strip() and self.execute(line):
                return self.config

    def execute(self, line: str) -> bool:
        """Run one command line, print its answer and status; True if it asked to boot."""
        log.debug("command: %s", redact(line))
        try:
            answer = self._dispatch(line.split(None, 1)[0], line)
        except ApplianceError as exc:
            self._status(f"{ERROR_PREFIX}{_one_line(str(exc))}")
            return False
        except Exception as exc:  # the prompt must survive a bug in a hook
            log.exception("command failed")
            self._status(f"{ERROR_PREFIX}internal: {type(exc).__name__}: {_one_line(str(exc))}")
            return False
        for text in answer.lines:
            self.term.write(text + "\n")
        self._status(OK)
        return answer.boot

    def _status(self, text: str) -> None:
        self.term.write(text + "\n")

    def _dispatch(self, name: str, line: str) -> _Answer:
        args = line.split()[1:]
        handler = {
            "show": self._show, "set": self._set, "unset": self._unset, "psk": self._psk,
            "test": self._test, "save": self._save, "boot": self._boot, "help": self._help,
        }.get(name)
        if handler is None:
            raise ConsoleError(f"unknown command '{name}' (help lists the commands)")
        if name == "set":
            parts = line.split(None, 2)
            args = parts[1:]
        return handler(args)

    def _show(self, args: list[str]) -> _Answer:
        _max_args(args, 1, "show [KEY]")
        if args:
            lookup(args[0])
            return _Answer([f"{args[0]} = {self.config.display(args[0])}"])
        lines = list(self.config.show_lines())
        if self.config != self.saved:
            lines.append("(unsaved changes)")
        return _Answer(lines)

    def _set(self, args: list[str]) -> _Answer:
        if len(args) != 2:
            raise ConsoleError("usage: set KEY VALUE")
        self.config = self.config.set(args[0], args[1])
        return _Answer([f"{args[0]} = {self.config.display(args[0])}"])

    def _unset(self, args: list[str]) -> _Answer:
        if len(args) != 1:
            raise ConsoleError("usage: unset KEY")
        self.config = self.config.unset(args[0])
        return _Answer([f"{args[0]} = {self.config.display(args[0])}"])

    def _psk(self, args: list[str]) -> _Answer:
        if not args or args[0] != "generate" or len(args) > 2:
            raise ConsoleError("usage: psk generate [BYTES]")
        try:
            nbytes = int(args[1]) if len(args) > 1 else DEFAULT_KEY_BYTES
        except ValueError:
            raise ConsoleError("psk generate: BYTES must be a number") from None
        self.config = self.config.set("psk.key", generate_key(nbytes).hex())
        return _Answer([f"psk.key = {self.config.display('psk.key')}"])

    def _test(self, args: list[str]) -> _Answer:
        _max_args(args, 0, "test")
        boot = self.config.boot_config()
        if self.tester is None:
            raise ConsoleError("test is not available in this build")
        return _Answer([_one_line(self.tester(boot))])

    def _save(self, args: list[str]) -> _Answer:
        _max_args(args, 0, "save")
        self.config.boot_config()  # refuse to store something that cannot boot
        slot = self.store.save(self.config)
        self.saved = self.config
        return _Answer([f"saved (slot {slot.name}, sequence {slot.seq})"])

    def _boot(self, args: list[str]) -> _Answer:
        _max_args(args, 0, "boot")
        self.config.boot_config()
        lines = ["booting"] if self.config == self.saved else [
            "booting with unsaved changes (they are lost at the next reboot)"]
        return _Answer(lines, boot=True)

    def _help(self, args: list[str]) -> _Answer:
        _max_args(args, 1, "help [KEY|COMMAND]")
        if args and args[0] in COMMANDS:
            usage, text = COMMANDS[args[0]]
            return _Answer([f"{usage}: {text}"])
        if args:
            s = lookup(args[0])
            default = s.default if s.default is not None else "(unset)"
            return _Answer([f"{s.key} ({s.kind}, default {default}): {s.help}"])
        lines = ["commands:"] + [f"  {u:<20} {t}" for u, t in COMMANDS.values()]
        lines += ["keys:"] + [f"  {s.key:<22} {s.kind:<16} {s.help}" for s in SETTINGS]
        return _Answer(lines)

    def _bootable(self) -> bool:
        try:
            self.config.boot_config()
        except ConfigError:
            return False
        return True


def configure_at_boot(store: ConfigStore, fd_in: int = 0, fd_out: int = 1, *,
                      tester: Tester | None = None, countdown: int | None = None,
                      idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
                      early: Callable[[BootConfig], None] | None = None,
                      before_prompt: Callable[[], None] | None = None) -> BootConfig:
    """Load the stored config, offer the prompt, and return the checked config to boot.

    The prompt opens after a key press during the countdown (``console.countdown``
    seconds unless *countdown* is given), or at once if the stored configuration is
    damaged or incomplete.  ``early`` gets the stored config, if it can boot, before the
    countdown (what it starts may run meanwhile); ``before_prompt`` runs before the prompt
    opens (to let that work finish, so that the kernel's messages do not interleave with
    the session).  Raises ConsoleError only if the console closes while the configuration
    still cannot boot.
    """
    term = Terminal(fd_in, fd_out)
    config, boot, problem = _load(store)
    if boot is not None and early is not None:
        early(boot)
    with term.raw():
        if boot is not None:
            seconds = boot.console_countdown if countdown is None else countdown
            if not term.wait_for_key(seconds, BANNER):
                return boot
        else:
            term.write(f"nbdroot: cannot boot: {_one_line(problem or '')}\n")
        if before_prompt is not None:
            before_prompt()
        config = Session(term, store, config, tester).run(idle_timeout)
    return config.boot_config()


def _load(store: ConfigStore) -> tuple[Config, BootConfig | None, str | None]:
    """The stored config, its checked typed view (None if it cannot boot) and why not."""
    try:
        config = store.load()
    except ConfigError as exc:
        return Config(), None, str(exc)
    try:
        return config, config.boot_config(), None
    except ConfigError as exc:
        return config, None, str(exc)


def _max_args(args: list[str], most: int, usage: str) -> None:
    if len(args) > most:
        raise ConsoleError(f"usage: {usage}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
