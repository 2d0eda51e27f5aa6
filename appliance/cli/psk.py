"""``appliance psk generate``: make a TLS-PSK key file for qemu-nbd, nbdkit and a board."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``psk`` subcommand."""
    p = subparsers.add_parser("psk", help="make TLS-PSK keys",
                              description="Make TLS-PSK keys in the identity:hexkey file "
                              "format that qemu-nbd (tls-creds-psk) and nbdkit (--tls-psk) read.")
    sub = p.add_subparsers(dest="psk_command", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write a new random key",
                         description="Write a new random key as one identity:hexkey line "
                         "(mode 0600). Give the board the same file with "
                         "'appliance console PORT --psk-file FILE --save'.")
    gen.add_argument("-o", "--output", metavar="FILE",
                     help="file to write (mode 0600); default: standard output")
    gen.add_argument("--identity", default="nbdroot",
                     help="PSK identity, the user in nbds://IDENTITY@host (default nbdroot)")
    gen.add_argument("--bytes", type=int, default=32, dest="nbytes",
                     help="key length in bytes, 16-64 (default 32)")
    gen.add_argument("--force", action="store_true", help="replace an existing FILE")
    gen.set_defaults(func=generate)


def generate(args: argparse.Namespace) -> int:
    """Write (or print) ``identity:hexkey``."""
    import sys
    from pathlib import Path

    from appliance.config.psk import format_psk_line, generate_key, write_psk_file

    key = generate_key(args.nbytes)
    if args.output is None:
        sys.stdout.write(format_psk_line(args.identity, key))
        return 0
    write_psk_file(Path(args.output), args.identity, key, overwrite=args.force)
    print(f"wrote {args.output} (identity {args.identity}, {len(key)}-byte key, mode 0600)",
          file=sys.stderr)
    return 0
