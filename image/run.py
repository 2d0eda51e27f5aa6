"""Running external tools for the image builder: the board layer's :func:`appliance.run.run`
with the builder's settings -- a clean environment (fixed PATH, C locale,
SOURCE_DATE_EPOCH and what the caller adds), stderr merged into the quoted output, and
:class:`~appliance.errors.ImageError` for every failure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from appliance import run as _run
from appliance.errors import ImageError
from appliance.run import CLEAN_PATH, Completed, clean_env

__all__ = ["CLEAN_PATH", "Completed", "clean_env", "run", "which"]


def which(tool: str) -> str:
    """The full path of ``tool`` on the clean PATH, or an ImageError naming its package."""
    return _run.which(tool, error=ImageError, hint=" (./setup.sh test installs everything)")


def run(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 1800.0, capture: bool = True,
        pass_fds: Sequence[int] = (), started: Callable[[int], None] | None = None
        ) -> Completed:
    """Run ``argv`` to completion in a clean environment; ImageError unless it exits 0
    (``pass_fds``, ``started``: as for :func:`appliance.run.run`)."""
    args = [str(a) for a in argv]
    if "/" not in args[0]:
        args[0] = which(args[0])
    return _run.run(args, error=ImageError, env=env, clean=True, cwd=cwd, timeout=timeout,
                    capture=capture, merge_stderr=True, pass_fds=pass_fds, started=started)
