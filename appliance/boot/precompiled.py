"""The code that ``dataclasses`` generates for the boot's classes, compiled at build time.

Each ``@dataclass`` writes the source of its ``__init__``, ``__repr__``, ``__eq__`` (and
more) as text at import time, and compiles it with ``exec``: a call of CPython's compiler
per class.  The boot imports about 60 dataclasses, and under qemu-user, on the image's own
Python, the compiler took a third of the boot's import time.  As a ``.pyc`` keeps a
module's compiled code, the image builder keeps these classes' compiled code in one
file beside this module: :func:`record` runs on the board's Python (qemu-user, at
build time), imports :data:`BOOT_MODULES` and keeps every text that ``dataclasses``
compiles, with its code object (``marshal``, sorted, so the file is reproducible).

At boot, :func:`install` (PID 1, before its first import of a dataclass) has
``dataclasses`` run the stored code object when the text is the same, and compile
otherwise.  The code is what ``compile`` makes of that exact text, with the same flags,
so only the compile time changes.  Without the file, or with a file that does not load,
nothing changes.
"""

from __future__ import annotations

import builtins
import marshal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import CodeType
from typing import Any

CODE_FILE = Path(__file__).with_name("dataclass-code.marshal")  # written by image/initramfs.py
FILENAME = "<string>"  # what exec() names compiled text

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


class Stats:
    """How many dataclass texts ran from stored code (``hits``) and how many were compiled."""

    hits = 0
    misses = 0
    stored = 0


def install(path: Path = CODE_FILE) -> int:
    """Have ``dataclasses`` run the stored code of ``path``; the number of texts stored
    (0: no file, or one that does not load, and ``dataclasses`` is left as it is)."""
    try:
        with path.open("rb") as f:
            table = marshal.load(f)  # noqa: S302 - the image's own file, as its .pyc are
    except (OSError, EOFError, ValueError, TypeError):
        return 0
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, CodeType) for k, v in table.items()):
        return 0
    import dataclasses

    def run_stored(source: str, globals_: dict[str, Any] | None = None,
                   locals_: Mapping[str, object] | None = None) -> None:
        code = table.get(source)
        if code is None:
            Stats.misses += 1
            code = _compile(source)
        else:
            Stats.hits += 1
        builtins.exec(code, globals_, locals_)  # noqa: S102 - what dataclasses itself runs

    dataclasses.exec = run_stored  # type: ignore[attr-defined]
    Stats.stored = len(table)
    return len(table)


def _compile(source: str) -> CodeType:
    """What ``exec(source)`` in ``dataclasses`` compiles: no future flags of ours."""
    return compile(source, FILENAME, "exec", dont_inherit=True)


def uninstall() -> None:
    """``dataclasses`` compiles again (the builtin ``exec``)."""
    import dataclasses

    dataclasses.__dict__.pop("exec", None)


def record(modules: Iterable[str] = BOOT_MODULES) -> bytes:
    """Import ``modules`` (as the boot does: pyroute2 lean) and return the marshalled
    table of every text ``dataclasses`` compiled meanwhile."""
    import dataclasses
    import importlib

    from appliance.boot.lean import lean_pyroute2

    table: dict[str, CodeType] = {}

    def keep(source: str, globals_: dict[str, Any] | None = None,
             locals_: Mapping[str, object] | None = None) -> None:
        code = table[source] = _compile(source)
        builtins.exec(code, globals_, locals_)  # noqa: S102 - what dataclasses itself runs

    lean_pyroute2()
    dataclasses.exec = keep  # type: ignore[attr-defined]
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        uninstall()
    return marshal.dumps(dict(sorted(table.items())))


def main(argv: list[str]) -> int:
    """``python3 -m appliance.boot.precompiled OUT``: :func:`record` into the file OUT."""
    if len(argv) != 1:
        print("usage: python3 -m appliance.boot.precompiled OUT", file=sys.stderr)
        return 2
    Path(argv[0]).write_bytes(record())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
