"""A boot-time job in a background thread: started early, waited for where the boot
needs its result.

Loading kernel modules is what it is for: ``modprobe`` runs module init code (driver
probes, the crypto self-tests), seconds under emulation, which can overlap the console
countdown and the bring-up instead of delaying the root.  The job's exception, if it
raises one, is raised again by :meth:`Background.wait`, in the waiting thread.

The thread has a small stack: glibc keeps an ended thread's stack for reuse, and a root
daemon forked from PID 1 later locks every page it has (8 MiB by default).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from appliance.daemon import THREAD_STACK


class Background[T]:
    """``job()`` running in a daemon thread named ``name`` from construction on, once
    ``after`` (another job, if given) is done, whatever its outcome: that is its own
    waiter's to report."""

    def __init__(self, name: str, job: Callable[[], T],
                 after: Background[object] | None = None) -> None:
        self._job = job
        self._after = after
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        default = threading.stack_size(THREAD_STACK)
        try:
            self._thread.start()
        finally:
            threading.stack_size(default)

    def _run(self) -> None:
        if self._after is not None:
            finish([self._after])
        try:
            self._result = self._job()
        except BaseException as exc:  # handed to the waiter, which decides
            self._error = exc

    def wait(self) -> T:
        """Until the job is done (it bounds itself); its result, or its exception raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set when no error


def finish(jobs: Iterable[Background[object]]) -> None:
    """Wait until every job is done, ignoring their errors: each is reported by the step
    that needs that job's result."""
    for job in jobs:
        with contextlib.suppress(Exception):
            job.wait()
