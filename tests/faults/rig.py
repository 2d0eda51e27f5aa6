"""The fault and load rig: a relay thread, the kernel's side of it, a model of the disk.

* :func:`relay_running` (from :mod:`tests.relay.harness`, shared with the relay tests)
  starts a :class:`~appliance.relay.Relay` in a thread on a socketpair with a connector of
  our choosing (the netns tests wrap it to connect from inside a namespace) and yields the
  kernel's end as a :class:`tests.relay.kernelside.KernelSide`.
* :class:`Model` is the disk as it must be: every successful write applied, a failed write
  marks its blocks unknown (an EIO write may or may not have landed) until rewritten.
* :func:`mixed_io` keeps ``depth`` random 4 KiB reads and writes in flight (never two
  overlapping while in flight, as the kernel guarantees), checks every successful read
  against the model, and records latencies and errors.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.nbd import NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_WRITE
from tests.relay.harness import relay_running as relay_running
from tests.relay.kernelside import KernelSide

BLOCK = 4096


class Model:
    """What the disk must hold; ``None`` blocks are unknown (a failed write)."""

    def __init__(self, initial: bytes) -> None:
        self.data = bytearray(initial)
        self.unknown: set[int] = set()

    @property
    def blocks(self) -> int:
        return len(self.data) // BLOCK

    def write(self, block: int, payload: bytes, ok: bool) -> None:
        if ok:
            self.data[block * BLOCK:(block + 1) * BLOCK] = payload
            self.unknown.discard(block)
        else:
            self.unknown.add(block)

    def matches(self, block: int, got: bytes) -> bool:
        return block in self.unknown or self.data[block * BLOCK:(block + 1) * BLOCK] == got

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class IOStats:
    ops: int = 0
    reads: int = 0
    writes: int = 0
    bytes: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    mismatches: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    started: float = 0.0  # time.monotonic() at the start; error_log times count from here
    error_log: list[tuple[float, str, int]] = field(default_factory=list)  # (t, op, errno)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(p / 100.0 * len(s)))]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def mixed_io(ks: KernelSide, model: Model, *, depth: int = 64, seconds: float | None = None,
             ops: int | None = None, write_share: float = 0.5, seed: int = 1,
             blocks: range | None = None, until: Callable[[], bool] | None = None,
             tick: Callable[[IOStats], None] | None = None) -> IOStats:
    """Random 4 KiB reads/writes, ``depth`` in flight, for ``seconds`` or ``ops`` requests
    (or until ``until()`` is true)."""
    assert seconds is not None or ops is not None
    rng = random.Random(seed)
    span = blocks or range(model.blocks)
    stats = IOStats()
    busy: dict[int, tuple[int, str, bytes, float]] = {}  # cookie -> (block, op, payload, t0)
    busy_blocks: set[int] = set()
    t_start = stats.started = time.monotonic()
    end = t_start + seconds if seconds is not None else float("inf")
    issued = 0

    def more() -> bool:
        if until is not None and until():
            return False
        return time.monotonic() < end and (ops is None or issued < ops)

    while busy or more():
        while len(busy) < depth and more():
            block = rng.choice(span)
            if block in busy_blocks:
                continue
            if rng.random() < write_share:
                payload = rng.randbytes(BLOCK)
                cookie = ks.write(block * BLOCK, payload)
                busy[cookie] = (block, "write", payload, time.monotonic())
            else:
                cookie = ks.read(block * BLOCK, BLOCK)
                busy[cookie] = (block, "read", b"", time.monotonic())
            busy_blocks.add(block)
            issued += 1
        if not busy:
            break
        for r in ks.wait():
            block, op, payload, t0 = busy.pop(r.cookie)
            busy_blocks.discard(block)
            now = time.monotonic()
            stats.latencies.append(now - t0)
            stats.ops += 1
            if r.error:
                stats.errors[r.error] += 1
                stats.error_log.append((now - t_start, op, r.error))
            if op == "write":
                stats.writes += 1
                model.write(block, payload, ok=not r.error)
            else:
                stats.reads += 1
                if not r.error and not model.matches(block, r.data):
                    stats.mismatches.append(block)
            if not r.error:
                stats.bytes += BLOCK
        if tick is not None:
            tick(stats)
    stats.elapsed = time.monotonic() - t_start
    return stats


def read_all(ks: KernelSide, size: int, *, chunk: int = 256 << 10, depth: int = 16,
             retries: int = 20) -> bytes:
    """The whole export through the relay; a failed read is retried (bounded)."""
    out = bytearray(size)
    todo = [(off, min(chunk, size - off)) for off in range(0, size, chunk)]
    for _ in range(retries):
        failed = []
        offsets: dict[int, tuple[int, int]] = {}
        it = iter(todo)
        left = len(todo)
        while left:
            while len(offsets) < depth:
                item = next(it, None)
                if item is None:
                    break
                offsets[ks.submit(NBD_CMD_READ, item[0], item[1])] = item
            for r in ks.wait():
                off, n = offsets.pop(r.cookie)
                left -= 1
                if r.error:
                    failed.append((off, n))
                else:
                    out[off:off + n] = r.data
        if not failed:
            return bytes(out)
        todo = failed
    raise AssertionError(f"reads still failing after {retries} rounds: {todo[:4]}")


def flush(ks: KernelSide) -> int:
    return ks.call(NBD_CMD_FLUSH).error


def write_all(ks: KernelSide, data: bytes, *, chunk: int = 256 << 10) -> None:
    """Write ``data`` at offset 0 (sequential, one request at a time is enough here)."""
    for off in range(0, len(data), chunk):
        r = ks.call(NBD_CMD_WRITE, off, data=data[off:off + chunk])
        assert r.error == 0, r


def random_image(path: os.PathLike[str] | str, size: int, seed: int = 3) -> bytes:
    data = random.Random(seed).randbytes(size)
    with open(path, "wb") as f:
        f.write(data)
    return data
