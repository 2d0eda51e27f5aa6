"""One simulated board of a boot storm: replay a trace over its own TLS-PSK connection.

Run as a process (``python -m appliance.host.fleet.replay URI TRACE RESULT DEPTH
WRITES PACED``) by :mod:`.storm`: it imports everything, prints ``ready``, waits for ``go`` on
stdin, then connects (TLS-PSK handshake included in its boot time) and sends the trace's
requests in order, as fast as replies allow, keeping at most DEPTH in flight; with
PACED=1 no request goes out before its time in the trace (the gaps of the real boot,
where the board computed; the requests before a gap complete first).  Reads,
flushes, block status and cache requests are replayed; writes, trims and zeroes only
with WRITES=1 (a read-only golden export refuses them).  RESULT gets a JSON summary with
each request's latency.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from appliance.client import Completion, connect
from appliance.errors import NBDError
from appliance.nbd import Request
from appliance.nbd.proto import Cmd

from .trace import Op, load

COMMAND = {"R": Cmd.NBD_CMD_READ, "W": Cmd.NBD_CMD_WRITE, "F": Cmd.NBD_CMD_FLUSH,
           "T": Cmd.NBD_CMD_TRIM, "Z": Cmd.NBD_CMD_WRITE_ZEROES, "C": Cmd.NBD_CMD_CACHE,
           "B": Cmd.NBD_CMD_BLOCK_STATUS}
WRITING = ("W", "T", "Z")
UNSUPPORTED = ("C", "B")  # need flags the export may not advertise: counted, not sent


def request(op: Op, payload: bytes) -> Request:
    if op.command == "W":
        return Request(COMMAND["W"], op.offset, data=payload[:op.length])
    if op.command == "F":
        return Request(COMMAND["F"])
    return Request(COMMAND[op.command], op.offset, op.length)


def replay(uri: str, ops: list[Op], depth: int, writes: bool,
           paced: bool = False) -> dict[str, object]:
    """Replay ``ops``; the summary the storm collects."""
    wanted = [op for op in ops if op.command not in UNSUPPORTED
              and (writes or op.command not in WRITING)]
    payload = os.urandom(max((op.length for op in wanted if op.command == "W"), default=0))
    latencies: list[float] = []
    errors, error_text = 0, ""
    started = time.monotonic()
    try:
        with connect(uri) as c:
            connected = time.monotonic() - started
            sent: dict[int, float] = {}
            for op in wanted:
                wait = started + op.t - time.monotonic() if paced else 0.0
                if wait > 0:
                    while c.in_flight:
                        errors += _complete(c.wait(), sent, latencies)
                    time.sleep(max(0.0, started + op.t - time.monotonic()))
                while c.in_flight >= depth:
                    errors += _complete(c.wait(), sent, latencies)
                sent[c.submit(request(op, payload))] = time.monotonic()
            while c.in_flight:
                errors += _complete(c.wait(), sent, latencies)
    except NBDError as exc:
        errors, error_text, connected = errors + len(wanted) - len(latencies), str(exc), -1.0
    return {"requests": len(latencies), "skipped": len(ops) - len(wanted), "errors": errors,
            "error": error_text, "connect_s": connected,
            "boot_s": time.monotonic() - started, "latencies": latencies}


def _complete(done: list[Completion], sent: dict[int, float], latencies: list[float]) -> int:
    now, errors = time.monotonic(), 0
    for c in done:
        reply = c.done
        latencies.append(now - sent.pop(reply.cookie))
        errors += reply.error != 0
    return errors


def main(argv: list[str]) -> int:
    uri, trace, result, depth, writes, paced = argv
    ops = load(Path(trace))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    summary = replay(uri, ops, int(depth), writes == "1", paced == "1")
    Path(result).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
