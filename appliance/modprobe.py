"""Loading kernel modules with the system's ``modprobe``: the one helper the agent's boot
steps use (the kTLS ciphers, the nbd driver, the root's filesystem).

Nothing of kmod is reimplemented: ``modprobe -a`` resolves dependencies and skips what is
built in or loaded.  The board's ordered, verbose loader with dry runs and other roots is
:mod:`board.modules`; this one is for modules whose absence another step reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from appliance.errors import ApplianceError
from appliance.run import run

log = logging.getLogger(__name__)

MODPROBE_TIMEOUT_S = 120.0  # module init runs self-tests: seconds under emulation


def load(names: Sequence[str], timeout: float = MODPROBE_TIMEOUT_S) -> list[str]:
    """``modprobe`` the modules (one call; per module only if it fails, to say which);
    the ones that did not load, each with modprobe's words (``"tls (not found)"``)."""
    if not names or modprobe(*names, timeout=timeout) is None:
        return []
    failed = [f"{name} ({why})" for name in names
              if (why := modprobe(name, timeout=timeout)) is not None]
    if failed:
        log.info("kernel modules not loaded: %s", ", ".join(failed))
    return failed


def modprobe(*names: str, timeout: float = MODPROBE_TIMEOUT_S) -> str | None:
    """None when ``modprobe -a NAMES`` loaded them all, else what went wrong, in a line."""
    try:
        done = run(["modprobe", "-a", *names], check=False, timeout=timeout)
    except ApplianceError as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    words = done.stderr.strip().splitlines()
    return words[-1] if words else f"exit status {done.returncode}"
