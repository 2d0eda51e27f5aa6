"""``appliance nbd attach | detach | status``: the kernel's /dev/nbdN served through the relay.

Registered into the ``nbd`` command's subparsers by :func:`add_attach_commands` (called
from :mod:`appliance.cli.nbd`).  Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from appliance.errors import UsageError

ATTACH_HELP = """\
Connect to URI (nbd://, nbds:// with TLS-PSK, nbd+unix://), attach the export as a
/dev/nbdN and serve it through the relay until the device is detached.  The kernel
talks simple NBD to the relay over a socketpair; the relay talks TLS and structured
replies to the server, reconnects with backoff when the server goes away and replays
the requests in flight, so the kernel sees a pause instead of I/O errors.

Several URIs are replicas of one read-only export (same scheme; the first server must
say read-only): when the server in use goes away the relay tries the next one, accepts
it only if its size, flags and the SHA-256 of its first MiB match the first server's,
and replays the requests in flight there.  A replica that differs is refused (logged).

As root, the relay re-executes itself as '@appliance-relay' (systemd spares such
processes at switch_root and shutdown), locks its memory, sets oom_score_adj -1000
and PR_SET_IO_FLUSHER.  Needs the kernel's nbd driver (modprobe nbd is tried).
"""


def add_attach_commands(nbd_subparsers: Any) -> None:
    """Add ``attach``, ``detach`` and ``status`` to the ``nbd`` command's subparsers."""
    p = nbd_subparsers.add_parser(
        "attach", help="attach an export as /dev/nbdN and serve it (relay)",
        description=ATTACH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", metavar="URI", nargs="+", help="the export, e.g. nbds://alice@HOST/"
                   "disk?tls-psk-file=/etc/appliance/keys.psk; several: replicas of one "
                   "read-only export, tried in order (failover)")
    p.add_argument("--device", metavar="/dev/nbdN",
                   help="the device to use (default: the first free one)")
    p.add_argument("--detach", action="store_true",
                   help="serve in the background; return once the device is attached")
    p.add_argument("--reconnect-deadline", metavar="SECONDS|forever", default="forever",
                   help="fail requests with EIO after the server has been away this long "
                   "(default: forever, right for a root disk)")
    p.add_argument("--backoff", type=float, default=0.1, metavar="SECONDS",
                   help="first pause between reconnect attempts (doubles; default 0.1)")
    p.add_argument("--max-backoff", type=float, default=5.0, metavar="SECONDS",
                   help="longest pause between reconnect attempts (default 5)")
    p.add_argument("--block-size", type=int, default=None, metavar="BYTES",
                   help="logical block size for the kernel: 512..4096 (default 512, or the "
                   "server's minimum)")
    p.add_argument("--no-root-daemon", action="store_true",
                   help="skip the re-exec as '@appliance-relay' and the memory locking")
    p.set_defaults(func=cmd_attach)

    d = nbd_subparsers.add_parser("detach", help="disconnect a /dev/nbdN",
                                  description="Disconnect /dev/nbdN: the kernel sends "
                                  "NBD_CMD_DISC to its relay, which finishes and exits.")
    d.add_argument("device", metavar="/dev/nbdN")
    d.set_defaults(func=cmd_detach)

    s = nbd_subparsers.add_parser("status", help="list the kernel's nbd devices",
                                  description="List /dev/nbdN devices: attached or free, "
                                  "size, and the pid of the relay serving each.")
    s.set_defaults(func=cmd_status)


def _policy(args: argparse.Namespace) -> Any:
    from appliance.relay import ReconnectPolicy, parse_deadline

    return ReconnectPolicy(initial=args.backoff, maximum=args.max_backoff,
                           deadline=parse_deadline(args.reconnect_deadline))


def cmd_attach(args: argparse.Namespace) -> int:
    from appliance import daemon
    from appliance.config.validate import check_replicas
    from appliance.nbd.uri import parse_uri
    from appliance.relay.serve import AttachOptions, attach_and_serve

    uris = [parse_uri(u) for u in args.uri]
    for uri in uris:
        for path in (uri.tls_psk_file, uri.tls_certificates):
            if path is not None and not os.path.isabs(path):
                raise UsageError(f"{path!r}: give an absolute path (the relay runs in /)")
    try:
        check_replicas(uris)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    policy = _policy(args)
    if args.block_size is not None and args.block_size not in (512, 1024, 2048, 4096):
        raise UsageError("--block-size must be 512, 1024, 2048 or 4096")
    if args.detach:
        pid, line = daemon.spawn_detached([a for a in sys.argv[1:] if a != "--detach"])
        print(f"{line} (relay pid {pid})")
        return 0
    root = os.geteuid() == 0 and not args.no_root_daemon
    if root:
        daemon.reexec_with_at_argv0()  # returns only when argv[0] already starts with '@'
        daemon.harden()
    opts = AttachOptions(device=args.device, block_size=args.block_size)
    att, relay = attach_and_serve(uris, policy, opts)
    print(f"{att.path}: attached ({relay.export.size} bytes, {att.method}); serving",
          file=sys.stderr)
    daemon.tell_ready(att.path)
    relay.run()
    if att.ioctl is not None and not att.ioctl.wait(30.0):  # NBD_DO_IT still inside the kernel
        print(f"{att.path}: the kernel has not released the device yet", file=sys.stderr)
    s = relay.stats
    print(f"{att.path}: detached after {s.requests} requests, {s.outages} outages "
          f"({s.outage_seconds:.1f}s), {s.replayed} replayed", file=sys.stderr)
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from appliance.kernel import detach

    detach(args.device)
    print(f"{args.device}: disconnect requested")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from appliance.kernel import status

    states = status()
    if not states:
        print("no nbd devices")
        return 0
    print(f"{'DEVICE':<12} {'STATE':<9} {'SIZE':>14} PID")
    for st in states:
        state = "attached" if st.in_use else "free"
        pid = str(st.pid) if st.pid is not None else "-"
        print(f"{st.path:<12} {state:<9} {st.size_bytes:>14} {pid}")
    return 0
