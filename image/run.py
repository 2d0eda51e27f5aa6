"""Running external tools: the one place the image builder starts a subprocess.

Every tool (mmdebstrap, depmod, mke2fs, mkimage) runs through :func:`run`: an argv list,
never a shell string; a clean environment (a fixed PATH, C locale, SOURCE_DATE_EPOCH and
whatever the caller adds); stdin from /dev/null; a ``+ argv`` line at debug level; and
failures told apart -- the tool is missing, it was killed by a signal, or it exited
non-zero -- as one :class:`~appliance.errors.ImageError` with the tail of its output.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliance.errors import ImageError

log = logging.getLogger(__name__)

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Tools found here, with the Debian package that ships each (for the error hint).
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "depmod": "kmod",
    "mke2fs": "e2fsprogs",
    "mkimage": "u-boot-tools",
    "qemu-system-arm": "qemu-system-arm",
}
OUTPUT_TAIL = 2000


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, predictable environment for a child process."""
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    for key in ("SOURCE_DATE_EPOCH", "TMPDIR", "http_proxy", "https_proxy", "no_proxy"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def which(tool: str) -> str:
    """The full path of ``tool`` on the clean PATH, or an ImageError naming its package."""
    found = shutil.which(tool, path=CLEAN_PATH)
    if found is None:
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise ImageError(f"{tool} not found: install the Debian package {pkg} "
                         "(./setup.sh test installs everything)")
    return found


def run(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 1800.0,
        capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise ImageError unless it exits 0.

    ``capture`` keeps stdout+stderr (returned, and quoted in errors); otherwise they go to
    this process's stderr.  ``timeout`` bounds the run; the child is killed when it expires
    or when this process is interrupted.
    """
    args = [str(a) for a in argv]
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    log.debug("+ %s", shlex.join(args))
    out = subprocess.PIPE if capture else None
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if capture else None,
                                env=clean_env(env), cwd=cwd, text=True)
    except OSError as exc:
        raise ImageError(f"cannot start {args[0]}: {exc.strerror}") from exc
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ImageError(f"{Path(args[0]).name} did not finish in {timeout:.0f} s") from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    stdout = stdout or ""
    if proc.returncode != 0:
        tail = stdout[-OUTPUT_TAIL:].strip()
        if proc.returncode < 0:
            what = f"was killed by {signal.Signals(-proc.returncode).name}"
        else:
            what = f"failed with exit code {proc.returncode}"
        detail = f":\n{tail}" if tail else ""
        raise ImageError(f"{shlex.join(args[:4])}{' ...' if len(args) > 4 else ''} {what}{detail}")
    return subprocess.CompletedProcess(args, proc.returncode, stdout, "")
