"""Running the real client against a hostile server: a deadline, a memory cap, a verdict.

:func:`run_case` calls the client in a worker thread under :mod:`tracemalloc` and returns an
:class:`Outcome`; :func:`check` turns a bad outcome (a hang, an exception that is not one of
the client's clean NBD errors, a memory peak over the cap) into a test failure.  Every case
is tallied in :data:`TALLY` for the suite's FIGURE line.

Mutations (:func:`mutate`) are the hypothesis-drawn edits applied to one frame the server
sends: overwrite a field with an interesting value, flip bits, truncate and close, send it
twice, drop it, put garbage before it.
"""

from __future__ import annotations

import collections
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from appliance.errors import OptionError, ProtocolError, RequestError, TransportError
from appliance.transport import ConnectPolicy

CLIENT_TIMEOUT = 0.3  # the socket timeout the client is given
CASE_DEADLINE = 10.0  # a case still running after this is a hang
MEMORY_CAP = 64 << 20  # peak Python allocations during one case
CLEAN = (ProtocolError, TransportError, OptionError, RequestError)

POLICY = ConnectPolicy(timeout=CLIENT_TIMEOUT, attempts=1)

TALLY: collections.Counter[str] = collections.Counter()
PEAK = [0]
CLI_RSS = [0]  # largest RSS of a CLI subprocess, bytes


@dataclass
class Outcome:
    error: BaseException | None
    elapsed: float
    peak: int
    hung: bool

    @property
    def kind(self) -> str:
        if self.hung:
            return "HANG"
        return "ok" if self.error is None else type(self.error).__name__


def run_case(client: Callable[[], object], deadline: float = CASE_DEADLINE,
             on_hang: Callable[[], None] | None = None) -> Outcome:
    """Run ``client()`` in a thread with a deadline; measure its peak allocations."""
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            client()
        except BaseException as exc:  # judged by check()
            result.append(exc)
        else:
            result.append(None)

    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.monotonic()
    worker = threading.Thread(target=target, name="client-under-test", daemon=True)
    worker.start()
    worker.join(deadline)
    hung = worker.is_alive()
    if hung and on_hang is not None:
        on_hang()  # e.g. close the server so the thread can end
        worker.join(5.0)
    elapsed = time.monotonic() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    if started_tracing:
        tracemalloc.stop()
    out = Outcome(result[0] if result else None, elapsed, peak, hung)
    TALLY[out.kind] += 1
    TALLY["cases"] += 1
    PEAK[0] = max(PEAK[0], peak)
    return out


def check(out: Outcome, what: str = "") -> None:
    """Fail unless the case ended cleanly: success or a clean NBDError, in time, in memory."""
    assert not out.hung, f"client hung for {out.elapsed:.1f}s {what}"
    if out.error is not None and not isinstance(out.error, CLEAN):
        raise AssertionError(f"client raised {type(out.error).__name__}: {out.error} "
                             f"{what}") from out.error
    if out.error is not None:
        msg = str(out.error)
        assert msg and "\n" not in msg, f"error message not one line: {msg!r}"
    assert out.peak < MEMORY_CAP, f"client allocated {out.peak >> 20} MiB {what}"


# ----------------------------------------------------------------------------- mutations

INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               1 << 32, 1 << 62, 1 << 63, (1 << 64) - 1]

overwrite = st.tuples(st.just("overwrite"), st.integers(0, 48), st.sampled_from([1, 2, 4, 8]),
                      st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1)))
flip = st.tuples(st.just("flip"), st.integers(0, 48), st.integers(1, 255))
truncate = st.tuples(st.just("truncate"), st.integers(0, 48))
garbage = st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=48))
MUTATION = st.one_of(overwrite, overwrite, flip, truncate, garbage,
                     st.just(("duplicate",)), st.just(("drop",)))


def mutate(frame: bytes, mutation: tuple[object, ...]) -> tuple[list[bytes], bool]:
    """Apply ``mutation`` to ``frame``: (frames to send, close afterwards)."""
    op = mutation[0]
    if op == "overwrite":
        _, pos, width, value = mutation
        assert isinstance(pos, int) and isinstance(width, int) and isinstance(value, int)
        if len(frame) < width:
            return [frame], False
        pos = min(pos, len(frame) - width)
        packed = struct.pack("!Q", value & ((1 << 64) - 1))[8 - width:]
        return [frame[:pos] + packed + frame[pos + width:]], False
    if op == "flip":
        _, pos, bits = mutation
        assert isinstance(pos, int) and isinstance(bits, int)
        if not frame:
            return [frame], False
        pos = min(pos, len(frame) - 1)
        return [frame[:pos] + bytes([frame[pos] ^ bits]) + frame[pos + 1:]], False
    if op == "truncate":
        n = mutation[1]
        assert isinstance(n, int)
        return [frame[:min(n, max(len(frame) - 1, 0))]], True
    if op == "garbage":
        junk = mutation[1]
        assert isinstance(junk, bytes)
        return [junk, frame], False
    if op == "duplicate":
        return [frame, frame], False
    if op == "drop":
        return [], False
    raise AssertionError(op)


def frame_filter(plan: dict[int, tuple[object, ...]]) -> Callable[[int, bytes], list[bytes]]:
    """A negotiate()/reply filter applying ``plan[index]`` to frame ``index``."""

    def flt(index: int, frame: bytes) -> list[bytes]:
        if index not in plan:
            return [frame]
        frames, close = mutate(frame, plan[index])
        if close:
            raise SendThenClose(frames)
        return frames

    return flt


class SendThenClose(Exception):
    """Raised by a frame filter: send ``frames`` (a truncated frame), then close."""

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__("truncated frame")
        self.frames = frames
