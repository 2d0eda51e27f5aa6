"""Running external tools: the one place the agent and the image builder start a subprocess.

:func:`run` follows mkosi's rules: an argv list, never a shell string; the tool looked up
on PATH before it starts (a missing tool is an error naming its Debian package); stdin
from /dev/null unless input is given; a ``+ argv`` line at debug level; a timeout that
kills the child (so does an interrupt); and failures told apart -- the tool is missing,
it timed out, it was killed by a signal, or it exited non-zero -- as one
:class:`~appliance.errors.ApplianceError` of the caller's class, with the tail of its
output.  ``check=False`` hands a non-zero exit back to a caller that words it itself.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The Debian package that ships each tool (for the error hint).
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "depmod": "kmod",
    "modprobe": "kmod",
    "mke2fs": "e2fsprogs",
    "mkimage": "u-boot-tools",
    "dtc": "device-tree-compiler",
    "udhcpc": "busybox",
    "mount": "mount",
    "qemu-system-arm": "qemu-system-arm",
}
OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class Completed:
    """A finished tool: its argv (argv[0] resolved), exit status and decoded output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str  # empty when stderr was merged into stdout


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, predictable environment for a child process."""
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    for key in ("SOURCE_DATE_EPOCH", "TMPDIR", "http_proxy", "https_proxy", "no_proxy"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def which(tool: str, *, path: str | None = CLEAN_PATH,
          error: type[ApplianceError] = ApplianceError, hint: str = "") -> str:
    """The full path of ``tool`` on ``path`` (None: this process's PATH), or ``error``
    naming its Debian package (and ``hint``)."""
    found = shutil.which(tool, path=path)
    if found is None:
        pkg = TOOL_PACKAGES.get(Path(tool).name, Path(tool).name)
        raise error(f"{tool} not found: install the Debian package {pkg}{hint}")
    return found


def run(argv: Sequence[str | Path], *, error: type[ApplianceError] = ApplianceError,
        what: str = "", env: Mapping[str, str] | None = None, clean: bool = False,
        cwd: Path | None = None, timeout: float = 1800.0, capture: bool = True,
        merge_stderr: bool = False, input: bytes | None = None,
        check: bool = True, pass_fds: Sequence[int] = (),
        started: Callable[[int], None] | None = None) -> Completed:
    """Run ``argv`` to completion; raise ``error`` (its message prefixed with ``what: ``)
    if the tool is missing, cannot start, times out, or (``check``) does not exit 0.

    The child gets this process's environment plus ``env``, or with ``clean`` only
    :func:`clean_env` plus ``env``.  ``capture`` keeps its output (returned, and quoted in
    errors), stderr apart or, with ``merge_stderr``, in stdout; otherwise both go to this
    process's stderr.  ``pass_fds`` stay open in the child; ``started(pid)`` runs once the
    child is started, before its output is read (a hand-shake over those descriptors).
    """
    full_env = clean_env(env) if clean else {**os.environ, **(env or {})}
    args = [str(a) for a in argv]
    try:
        args[0] = which(args[0], path=full_env.get("PATH"), error=error)
    except ApplianceError as exc:
        raise error(_prefixed(what, str(exc))) from None
    log.debug("+ %s", shlex.join(args))
    out = subprocess.PIPE if capture else None
    err = (subprocess.STDOUT if merge_stderr else subprocess.PIPE) if capture else None
    stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
    try:
        proc = subprocess.Popen(args, stdin=stdin, stdout=out, stderr=err, env=full_env,
                                cwd=cwd, pass_fds=tuple(pass_fds))
    except OSError as exc:
        raise error(_prefixed(what, f"cannot start {args[0]}: {exc.strerror}")) from exc
    try:
        if started is not None:
            started(proc.pid)
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise error(_prefixed(what, f"{Path(args[0]).name} did not finish in {timeout:g} s")
                    ) from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    done = Completed(args, proc.returncode, _text(stdout), _text(stderr))
    if check and done.returncode != 0:
        raise error(_prefixed(what, failure(done)))
    return done


def failure(done: Completed) -> str:
    """One message for a tool that did not exit 0: how it ended and the tail of its output."""
    if done.returncode < 0:
        what = f"was killed by {signal.Signals(-done.returncode).name}"
    else:
        what = f"failed with exit code {done.returncode}"
    tail = (done.stderr or done.stdout)[-OUTPUT_TAIL:].strip()
    detail = f":\n{tail}" if tail else ""
    more = " ..." if len(done.argv) > 4 else ""
    return f"{shlex.join(done.argv[:4])}{more} {what}{detail}"


def _prefixed(what: str, message: str) -> str:
    return f"{what}: {message}" if what else message


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "replace")
