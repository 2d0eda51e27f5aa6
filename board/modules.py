"""Loading the kernel modules a board needs, in order, with the system's real ``modprobe``.

Nothing of kmod is reimplemented: each module goes to ``modprobe`` (which resolves
dependencies and decompresses ``.ko.xz``).  A module is skipped when it is already
loaded (``<root>/sys/module/<name>/initstate``) or built in (listed in
``modules.builtin``).  ``moddir``/``kernel`` map to ``modprobe -d``/``-S`` so the same
code can run against an unpacked kernel package (with ``dry_run``, ``modprobe -n``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import BoardError
from appliance.run import run

log = logging.getLogger(__name__)

MODPROBE_TIMEOUT_S = 60


def module_key(name: str) -> str:
    """Kernel's name of a module: ``gpio-mxc`` and ``gpio_mxc.ko.xz`` are both ``gpio_mxc``."""
    base = os.path.basename(name).split(".ko", 1)[0]
    return base.replace("-", "_")


@dataclass
class Loaded:
    """What happened to one module."""

    name: str
    action: str  # "loaded", "already loaded", "built-in", "would load"
    detail: str = ""


@dataclass
class ModuleLoader:
    """Runs ``modprobe`` for modules under one system root."""

    root: Path = Path("/")
    moddir: Path | None = None  # modprobe -d; default: root
    kernel: str | None = None  # modprobe -S; default: the running kernel's release
    dry_run: bool = False  # modprobe -n: print what would be inserted
    modprobe: str = "modprobe"
    _builtin: frozenset[str] | None = field(default=None, repr=False)

    def release(self) -> str:
        """The kernel release whose modules are used."""
        if self.kernel:
            return self.kernel
        path = self.root / "proc/sys/kernel/osrelease"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise BoardError(f"cannot read {path}: {exc.strerror}") from exc

    def builtin(self) -> frozenset[str]:
        """Modules compiled into the kernel (from ``modules.builtin``)."""
        if self._builtin is None:
            base = self.moddir or self.root
            path = base / "lib/modules" / self.release() / "modules.builtin"
            try:
                lines = path.read_text().split()
            except OSError:
                log.debug("no %s: assuming nothing is built in", path)
                lines = []
            self._builtin = frozenset(module_key(line) for line in lines)
        return self._builtin

    def is_loaded(self, name: str) -> bool:
        """True when ``<root>/sys/module/<name>`` says the module is live or coming."""
        path = self.root / "sys/module" / module_key(name) / "initstate"
        try:
            return path.read_text().strip() in ("live", "coming")
        except OSError:
            return False

    def _argv(self, *names: str) -> list[str]:
        argv = [self.modprobe, "-v"]
        if self.moddir is not None:
            argv += ["-d", str(self.moddir)]
        if self.kernel:
            argv += ["-S", self.kernel]
        if self.dry_run:
            argv.append("-n")
        return [*argv, "-a", *names] if len(names) > 1 else [*argv, *names]

    def _skip(self, name: str) -> Loaded | None:
        """Already loaded or built in: nothing to do."""
        if self.is_loaded(name):
            return Loaded(name, "already loaded")
        if module_key(name) in self.builtin():
            return Loaded(name, "built-in")
        return None

    def load_one(self, name: str) -> Loaded:
        """Load ``name`` unless it is already there; :class:`BoardError` naming it on failure."""
        if (skipped := self._skip(name)) is not None:
            return skipped
        proc = run(self._argv(name), error=BoardError, what=f"cannot load module {name}",
                   timeout=MODPROBE_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()
            raise BoardError(f"cannot load module {name}: "
                             f"{why[-1] if why else f'modprobe exit {proc.returncode}'}")
        return Loaded(name, "would load" if self.dry_run else "loaded", proc.stdout.strip())

    def load(self, names: Iterable[str]) -> list[Loaded]:
        """Load ``names`` in order, stopping at the first failure.

        One ``modprobe -a`` for all that are missing (each exec of kmod costs a few tenths
        of a second under emulation); if it fails, one at a time, to name the module (kmod
        goes on past a failing module, so the ones after it may be loaded already).
        """
        names = list(names)
        skipped = {name: self._skip(name) for name in names}
        missing = [name for name in names if skipped[name] is None]
        done = self._load_all(missing) if len(missing) > 1 else None
        results = []
        for name in names:
            result = skipped[name] or (done[name] if done else self.load_one(name))
            log.info("module %s: %s", name, result.action)
            results.append(result)
        return results

    def _load_all(self, names: list[str]) -> dict[str, Loaded] | None:
        """``modprobe -a NAMES`` in order: what happened to each, or None if it failed."""
        proc = run(self._argv(*names), error=BoardError, what="cannot load modules",
                   timeout=MODPROBE_TIMEOUT_S * len(names), check=False)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()
            log.info("modprobe -a failed (%s); loading one at a time",
                     why[-1] if why else f"exit status {proc.returncode}")
            return None
        action = "would load" if self.dry_run else "loaded"
        return {name: Loaded(name, action, "\n".join(lines))
                for name, lines in _attribute(proc.stdout.splitlines(), names).items()}


def _attribute(lines: list[str], names: list[str]) -> dict[str, list[str]]:
    """Split ``modprobe -v -a`` output among ``names``: each module's ``insmod`` line, and
    the dependency lines just before it, go to the first name not yet seen that it is."""
    keys = [module_key(name) for name in names]
    out: dict[str, list[str]] = {name: [] for name in names}
    pending: list[str] = []
    at = 0
    for line in lines:
        pending.append(line)
        words = line.split()
        key = module_key(words[1]) if len(words) > 1 and words[0] == "insmod" else None
        if key in keys[at:]:
            at = keys.index(key, at)
            out[names[at]] = pending
            pending, at = [], at + 1
    if pending and at < len(names):
        out[names[at]] += pending
    return out
