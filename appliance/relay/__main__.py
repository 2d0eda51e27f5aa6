"""``python -m appliance.relay --fd N URI [URI...]``: relay socket N (the kernel side) to URI
(several: read-only replicas, see :mod:`appliance.relay.replicas`).

For tests and the benchmark, which play the kernel's part on the other end of a
socketpair; ``appliance nbd attach`` is the command for real use.
"""

from __future__ import annotations

import argparse
import logging
import sys

from appliance.errors import ApplianceError
from appliance.nbd.uri import parse_uri
from appliance.relay.policy import ReconnectPolicy, parse_deadline
from appliance.relay.serve import relay_fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.relay")
    parser.add_argument("--fd", type=int, required=True, help="the kernel-side socket")
    parser.add_argument("--reconnect-deadline", default="forever")
    parser.add_argument("--backoff", type=float, default=0.1)
    parser.add_argument("--max-backoff", type=float, default=2.0)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("uri", nargs="+", help="the server, or several read-only replicas")
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="relay %(levelname)s %(name)s: %(message)s")
    try:
        policy = ReconnectPolicy(initial=args.backoff, maximum=args.max_backoff,
                                 deadline=parse_deadline(args.reconnect_deadline))
        relay_fd(args.fd, [parse_uri(u) for u in args.uri], policy).run()
    except ApplianceError as exc:
        print(f"relay: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
