"""One holder at a time per machine: an exclusive ``flock`` on a lock file, waited for
with a deadline and a line saying what is awaited.

Image builds share the download cache (and maybe the output directory); downloads and
unpacks of the same package share their cache files.  Two of them at once (a second
checkout, two test workers) take turns here instead of writing the same files.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.deadline import Deadline
from appliance.errors import ImageError

POLL_S = 1.0


@contextmanager
def held(path: Path, what: str, timeout: float,
         report: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock ``path`` (created if need be) for the ``with`` block.

    ``what`` names the work in the messages; ``report`` gets one line when another holder
    makes us wait; after ``timeout`` seconds of waiting, :class:`ImageError`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        deadline = Deadline(timeout)
        waiting = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting and report is not None:
                    report(f"waiting for another {what} to finish ...")
                waiting = True
                if deadline.expired:
                    raise ImageError(f"another {what} held {path} for {timeout:.0f} s; "
                                     "is one stuck?") from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
