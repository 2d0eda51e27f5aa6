"""What the boot's imports compile at run time, compiled at build time instead.

Three kinds of import-time work compile something of their own, beside the modules'
bytecode:

* each ``@dataclass`` writes the source of its ``__init__``, ``__repr__``, ``__eq__``
  (and more) as text, and compiles it with ``exec``: a call of CPython's compiler per
  class (about 60 on the boot's path);
* each ``collections.namedtuple`` compiles the text of its ``__new__`` with ``eval``;
* each ``re.compile`` at module level parses its pattern and assembles the regular
  expression engine's code in Python (``re._parser``, ``re._compiler``) before
  ``_sre.compile`` makes the pattern object of it.

Under qemu-user, on the image's own Python, the compiler took a third of the boot's
import time before the first kind was stored, and the last two were 8 % of what was left.
As a ``.pyc`` keeps a module's compiled code, the image builder keeps these in one file
beside this module: :func:`record` runs on the board's Python (qemu-user, at build time),
imports :data:`BOOT_MODULES` and keeps every text that ``dataclasses`` and
``namedtuple`` compile, with its code object, and every pattern compiled, with the
arguments ``re`` handed to ``_sre.compile`` for it (``marshal``, sorted, so the file is
reproducible).

At boot, :func:`install` (PID 1, before its first import of a dataclass) has
``dataclasses`` and ``namedtuple`` run the stored code object when the text is the same,
and ``re`` make a stored pattern from its stored engine code; anything else is compiled
as usual.  The code is what ``compile`` makes of that exact text, with the same flags, and
the pattern what ``_sre.compile`` makes of the same arguments, so only the compile time
changes.  Patterns are stored only when the recording made an equal pattern from the
stored arguments, and used only on a Python with the same ``_sre.MAGIC``.  Without the
file, or with a file that does not load, nothing changes.
"""

from __future__ import annotations

import builtins
import importlib
import marshal
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import CodeType
from typing import Any

CODE_FILE = Path(__file__).with_name("boot-code.marshal")  # written by image/initramfs.py
FILENAME = "<string>"  # what exec() and eval() name compiled text

# What PID 1 imports on its way to the root, on either data path (kTLS and the relay):
# the modules that define the boot's dataclasses are imported through these.
BOOT_MODULES = (
    "appliance.boot.pid1", "appliance.boot.sequence", "appliance.boot.mounts",
    "appliance.background", "appliance.config", "appliance.config.store",
    "appliance.config.psk", "appliance.console.prompt", "appliance.daemon",
    "appliance.modprobe", "appliance.ktls.offload", "appliance.ktls.session",
    "appliance.ktls.supervisor", "appliance.net.up", "appliance.net.keeper",
    "appliance.relay.serve", "appliance.relay.upstream", "appliance.client",
    "board.bringup", "board.modules", "board.profile",
)

# re's engine and its code assembler (private modules, so untyped here)
_sre: Any = importlib.import_module("_sre")
_re_compiler: Any = importlib.import_module("re._compiler")
_COMPILE_PATTERN = _re_compiler.compile  # re's own, restored by uninstall()

# The builtin each patched module compiles text with, by mode, and the module patched
RUNNERS = {"exec": builtins.exec, "eval": builtins.eval}
PATCHED = {"exec": "dataclasses", "eval": "collections"}

# (pattern, flags) -> the arguments after the pattern that re passed to _sre.compile
PatternKey = tuple[str | bytes, int]
SreArgs = tuple[Any, ...]


class Stats:
    """How much ran from the stored file: texts (dataclasses and namedtuple) and patterns
    used as stored (``hits``), compiled at boot (``misses``), and how many were stored."""

    hits = 0
    misses = 0
    stored = 0
    pattern_hits = 0
    pattern_misses = 0
    patterns_stored = 0


def load(path: Path = CODE_FILE) -> dict[str, Any] | None:
    """The stored file's table, or None when it is missing or not what :func:`record`
    writes."""
    try:
        with path.open("rb") as f:
            table = marshal.load(f)  # noqa: S302 - the image's own file, as its .pyc are
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(table, dict) or set(table) != {"exec", "eval", "patterns", "sre_magic"}:
        return None
    for mode in ("exec", "eval"):
        if not isinstance(table[mode], dict) or not all(
                isinstance(k, str) and isinstance(v, CodeType) for k, v in table[mode].items()):
            return None
    patterns = table["patterns"]
    if not isinstance(patterns, dict) or not all(
            isinstance(k, tuple) and isinstance(v, tuple) for k, v in patterns.items()):
        return None
    return table


def install(path: Path = CODE_FILE) -> int:
    """Have ``dataclasses``, ``namedtuple`` and ``re`` use what ``path`` stores; the number
    of texts stored (0: no file, or one that does not load, and nothing is changed)."""
    table = load(path)
    if table is None:
        return 0
    _patch_runners(lambda mode: _stored_runner(table[mode], mode))
    Stats.stored = len(table["exec"]) + len(table["eval"])
    if table["sre_magic"] == _sre.MAGIC:
        _install_patterns(table["patterns"])
    return Stats.stored


def _patch_runners(make: Callable[[str], Callable[..., Any]]) -> None:
    """``dataclasses.exec`` = ``make("exec")``, ``collections.eval`` = ``make("eval")``:
    module globals that shadow the builtins for that module only."""
    for mode, module in PATCHED.items():
        setattr(importlib.import_module(module), mode, make(mode))


def _stored_runner(texts: Mapping[str, CodeType], mode: str) -> Callable[..., Any]:
    """The builtin ``mode`` (exec or eval), with the stored code for a stored text."""
    run = RUNNERS[mode]

    def run_stored(source: str, globals_: dict[str, Any] | None = None,
                   locals_: Mapping[str, object] | None = None) -> Any:
        code = texts.get(source)
        if code is None:
            Stats.misses += 1
            code = _compile(source, mode)
        else:
            Stats.hits += 1
        return run(code, globals_, locals_)

    return run_stored


def _install_patterns(patterns: Mapping[PatternKey, SreArgs]) -> None:
    def compile_stored(p: Any, flags: int = 0) -> Any:
        args = patterns.get((p, flags)) if isinstance(p, str | bytes) else None
        if args is None:
            Stats.pattern_misses += 1
            return _COMPILE_PATTERN(p, flags)
        Stats.pattern_hits += 1
        return _sre.compile(p, *args)

    _re_compiler.compile = compile_stored
    Stats.patterns_stored = len(patterns)


def _compile(source: str, mode: str = "exec") -> CodeType:
    """What ``exec(source)`` in ``dataclasses`` (or ``eval(source)`` in ``collections``)
    compiles: no future flags of ours."""
    return compile(source, FILENAME, mode, dont_inherit=True)


def uninstall() -> None:
    """``dataclasses``, ``namedtuple`` and ``re`` compile again."""
    for mode, module in PATCHED.items():
        vars(importlib.import_module(module)).pop(mode, None)
    _re_compiler.compile = _COMPILE_PATTERN


class _SreRecorder:
    """Stands in for ``_sre`` inside ``re._compiler`` while recording: keeps the arguments
    of the last ``compile``."""

    def __init__(self) -> None:
        self.last: SreArgs | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(_sre, name)

    def compile(self, pattern: Any, flags: int, code: list[int], *rest: Any) -> Any:
        # the engine's opcodes are int subclasses (named constants): plain ints marshal
        self.last = (int(flags), [int(op) for op in code], *rest)
        return _sre.compile(pattern, flags, code, *rest)


@contextmanager
def _recording(texts: dict[str, dict[str, CodeType]],
               patterns: dict[PatternKey, SreArgs]) -> Iterator[None]:
    def keeper(mode: str) -> Callable[..., Any]:
        run = RUNNERS[mode]

        def keep(source: str, globals_: dict[str, Any] | None = None,
                 locals_: Mapping[str, object] | None = None) -> Any:
            code = texts[mode][source] = _compile(source, mode)
            return run(code, globals_, locals_)
        return keep

    recorder = _SreRecorder()

    def keep_pattern(p: Any, flags: int = 0) -> Any:
        recorder.last = None
        compiled = _COMPILE_PATTERN(p, flags)
        args = recorder.last
        if isinstance(p, str | bytes) and args is not None and _sre.compile(p, *args) == compiled:
            patterns[(p, flags)] = args
        return compiled

    _patch_runners(keeper)
    _re_compiler._sre = recorder
    _re_compiler.compile = keep_pattern
    try:
        yield
    finally:
        _re_compiler._sre = _sre
        uninstall()


def record(modules: Iterable[str] = BOOT_MODULES) -> bytes:
    """Import ``modules`` (as the boot does: pyroute2 lean) and return the marshalled
    table of every text ``dataclasses`` and ``namedtuple`` compiled and every pattern
    ``re`` compiled meanwhile."""
    import re

    from appliance.boot.lean import lean_pyroute2

    texts: dict[str, dict[str, CodeType]] = {"exec": {}, "eval": {}}
    patterns: dict[PatternKey, SreArgs] = {}
    lean_pyroute2()
    re.purge()  # patterns compiled before are in re's cache, not seen by the recording
    with _recording(texts, patterns):
        for name in modules:
            importlib.import_module(name)
    return marshal.dumps({"exec": dict(sorted(texts["exec"].items())),
                          "eval": dict(sorted(texts["eval"].items())),
                          "patterns": dict(sorted(patterns.items(), key=_pattern_order)),
                          "sre_magic": _sre.MAGIC})


def _pattern_order(item: tuple[PatternKey, SreArgs]) -> tuple[bool, str | bytes, int]:
    (pattern, flags), _ = item
    return isinstance(pattern, bytes), pattern, flags
