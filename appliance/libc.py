"""The C library through ctypes, for the few system calls Python's ``os`` lacks
(mlockall, prctl, mount): one handle, with errno kept for ``ctypes.get_errno()``."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's own C library (already loaded: no search, no subprocess)."""
    return ctypes.CDLL(None, use_errno=True)
