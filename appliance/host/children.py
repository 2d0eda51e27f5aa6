"""Child processes of host commands end with their parent, whatever ends it.

``appliance demo``, ``appliance serve`` and the benchmarks start servers and VMs (qemu-nbd,
nbdkit, QEMU).  Three ways out must all take those children down:

* an error or Ctrl-C: ``try/finally`` blocks stop each child by PID;
* SIGHUP (the terminal closed) and SIGTERM: :func:`signals_raise` turns them into
  :class:`~appliance.errors.Terminated`, so the same ``finally`` blocks run (Python's
  default for both is to die at once, running nothing);
* kill -9 of the parent, which runs nothing at all: :func:`popen` starts every child with
  ``PR_SET_PDEATHSIG``, so the kernel sends it SIGTERM when its parent dies.

The kernel ties PDEATHSIG to the *thread* that forked, so :func:`popen` sets it only when
called from the main thread (a worker thread's exit would otherwise kill the child).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

from appliance.errors import Terminated

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGTERM  # lets qemu-nbd and QEMU close their images cleanly
STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int) -> Callable[[], None]:
    prctl = _libc().prctl  # looked up before fork: the child only calls it

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)`` whose child is signalled when we die."""
    if threading.current_thread() is threading.main_thread():
        kwargs.setdefault("preexec_fn", _die_with(os.getpid()))
    return subprocess.Popen(argv, **kwargs)


def end(proc: subprocess.Popen[bytes], grace: float) -> int:
    """End ``proc`` by PID: SIGTERM, then SIGKILL after ``grace`` seconds; its status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    return proc.returncode


def _raise(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While inside, SIGHUP and SIGTERM raise :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
