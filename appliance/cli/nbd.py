"""``appliance nbd info|list|copy``: look at and copy NBD exports, like nbdinfo and nbdcopy.

Owns the command line and the human/JSON output; the work is done by
:mod:`appliance.client` and :mod:`appliance.copy`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from typing import Any

from appliance.errors import ApplianceError, UsageError

URI_HELP = ("NBD URI: nbd://HOST[:PORT]/EXPORT, nbds://USER@HOST/EXPORT?tls-psk-file=FILE, "
            "nbd+unix:///EXPORT?socket=PATH (TLS: nbds+unix://)")

_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``256K`` / ``1M`` / ``4096`` to bytes (argparse type)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if not m or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (examples: 4096, 256K, 1M)")
    return int(m.group(1)) * _SUFFIX[m.group(2)]


DEFAULT_MAP = "base:allocation"
MIN_REQUEST, MAX_REQUEST = 4096, 32 << 20


def request_size(text: str) -> int:
    """``--request-size``: a power of two from 4096 to 32M, as nbdcopy requires."""
    n = parse_size(text)
    if n & (n - 1) or not MIN_REQUEST <= n <= MAX_REQUEST:
        raise argparse.ArgumentTypeError(f"request size {text!r} must be a power of two from "
                                         "4096 to 32M")
    return n


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 1024, not {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add ``appliance nbd`` and its subcommands."""
    p = subparsers.add_parser("nbd", help="inspect and copy NBD exports (nbdinfo/nbdcopy-like)",
                              description="Talk to an NBD server (qemu-nbd, nbdkit), with "
                              "TLS-PSK: show an export, list exports, copy data.")
    sub = p.add_subparsers(dest="nbd_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="show an export's size, flags, block sizes, contexts",
                          description="Show what the server says about an export (like nbdinfo).")
    info.add_argument("uri", metavar="URI", nargs="?", help=URI_HELP)
    info.add_argument("--json", action="store_true", help="print JSON (nbdinfo --json layout)")
    info.add_argument("--map", nargs="?", const=DEFAULT_MAP, metavar="CONTEXT",
                      help="print the export's extents for CONTEXT (default base:allocation)")
    info.add_argument("--list", action="store_true", help="show every export on the server")
    info.set_defaults(func=cmd_info)

    lst = sub.add_parser("list", help="list the server's exports and descriptions",
                         description="List the exports a server offers (NBD_OPT_LIST).")
    lst.add_argument("uri", metavar="URI", help=URI_HELP)
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_list)

    cp = sub.add_parser("copy", help="copy between NBD exports and local files",
                        description="Copy SRC to DST (like nbdcopy).  Each side is an NBD URI or "
                        "a local file; DST may be '-' (stdout) or /dev/null.  Holes and blocks of "
                        "zeroes are not written as data (they become holes or WRITE_ZEROES); "
                        "several requests are kept in flight.")
    cp.add_argument("src", metavar="SRC", help="source: NBD URI or file")
    cp.add_argument("dst", metavar="DST", help="destination: NBD URI, file, '-' or /dev/null")
    cp.add_argument("-C", "--connections", type=_positive, default=None,
                    help="connections per NBD side, if the server allows multi-conn (default 4)")
    cp.add_argument("-R", "--requests", type=_positive, default=64,
                    help="requests in flight per connection (default 64)")
    cp.add_argument("--request-size", type=request_size, default=256 << 10, metavar="SIZE",
                    help="bytes per request, a power of two from 4K to 32M (default 256K); "
                    "requests are split further to each server's maximum block size")
    cp.add_argument("--destination-is-zero", action="store_true",
                    help="the NBD destination already reads as zeroes: skip writing zeroes")
    cp.add_argument("-p", "--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")
    cp.set_defaults(func=cmd_copy)

    from appliance.cli.nbd_attach import add_attach_commands  # attach | detach | status

    add_attach_commands(sub)


# ----------------------------------------------------------------------------- info


def _flags(info: Any) -> dict[str, Any]:
    return {
        "is_rotational": info.rotational, "is_read_only": info.read_only,
        "can_cache": info.can_cache, "can_df": info.can_df,
        "can_fast_zero": info.can_fast_zero, "can_flush": info.can_flush,
        "can_fua": info.can_fua, "can_multi_conn": info.can_multi_conn,
        "can_trim": info.can_trim, "can_zero": info.can_write_zeroes,
    } | _block_sizes(info)


def _block_sizes(info: Any) -> dict[str, int]:
    """The block sizes the server sent (NBD_INFO_BLOCK_SIZE); none when it sent none, as
    nbdinfo does (the client still uses proto.md's defaults internally)."""
    if not info.block_size_sent:
        return {}
    return {"block_size_minimum": info.min_block_size,
            "block_size_preferred": info.preferred_block_size,
            "block_size_maximum": info.max_block_size}


def _export_facts(uri: Any) -> dict[str, Any]:
    from appliance.client import connect, list_meta_contexts
    from appliance.errors import OptionError

    # NBD_OPT_GO (NBD_OPT_EXPORT_NAME on a plain newstyle server) learns the same facts as
    # NBD_OPT_INFO and works on every newstyle server.
    with connect(uri) as conn:
        info = conn.info
    contexts: list[str] = []
    if info.structured_replies:  # without structured replies there are no contexts
        try:
            contexts = list(list_meta_contexts(uri))
        except OptionError:  # a server without NBD_OPT_LIST_META_CONTEXT
            contexts = []
    facts: dict[str, Any] = {"export-name": info.name or uri.export, "uri": str(uri)}
    if info.description:
        facts["description"] = info.description
    facts["export-size"] = info.size
    facts["contexts"] = contexts
    facts.update(_flags(info))
    facts["_structured"] = info.structured_replies
    facts["_extended"] = info.extended_headers
    facts["_protocol"] = "newstyle-fixed" if info.fixed_newstyle else "newstyle"
    return facts


def _print_export(e: dict[str, Any]) -> None:
    print(f"export={json.dumps(e['export-name'], ensure_ascii=False)}:")
    if "description" in e:
        print(f"\tdescription: {e['description']}")
    print(f"\texport-size: {e['export-size']} ({_human(e['export-size'])})")
    print(f"\turi: {e['uri']}")
    if e["contexts"]:
        print("\tcontexts:")
        for c in e["contexts"]:
            print(f"\t\t{c}")
    for key, value in e.items():
        if key.startswith(("is_", "can_", "block_size")):
            print(f"\t{key}: {str(value).lower() if isinstance(value, bool) else value}")


def _human(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}"


def cmd_info(args: argparse.Namespace) -> int:
    """Handler of ``appliance nbd info``."""
    from dataclasses import replace

    from appliance.client import list_exports
    from appliance.nbd.uri import parse_uri

    uri = parse_uri(_info_uri(args))
    if args.map:
        return _print_map(uri, args.map, args.json)
    uris = [uri]
    if args.list:
        uris = [replace(uri, export=e.name, uri=_with_export(uri.uri, e.name))
                for e in list_exports(uri)]
    exports = [_export_facts(u) for u in uris]
    first = exports[0] if exports else {}
    structured = first.get("_structured", True)
    extended = first.get("_extended", False)
    protocol = first.get("_protocol", "newstyle-fixed")
    for e in exports:
        for key in ("_structured", "_extended", "_protocol"):
            e.pop(key, None)
    if args.json:
        print(json.dumps({"protocol": protocol, "TLS": uri.tls,
                          "structured": structured, "extended": extended,
                          "exports": exports}, indent=2, ensure_ascii=False))
        return 0
    tls = "with TLS" if uri.tls else "without TLS"
    packets = "extended headers" if extended else (
        "structured packets" if structured else "simple packets")
    print(f"protocol: {protocol} {tls}, using {packets}")
    for e in exports:
        _print_export(e)
    return 0


def _info_uri(args: argparse.Namespace) -> str:
    """The URI, also when given after a bare ``--map`` (``info --map URI``, as nbdinfo
    accepts): a --map value that is an NBD URI is the URI, the context the default."""
    from appliance.copy import is_uri

    if args.map and is_uri(args.map) and (args.uri is None or not is_uri(args.uri)):
        if args.uri is not None:  # info --map URI CONTEXT: not nbdinfo's syntax either
            raise UsageError(f"give the context as --map={args.uri}, then the URI")
        args.uri, args.map = args.map, DEFAULT_MAP
    if args.uri is None:
        raise UsageError("nbd info needs an NBD URI (" + URI_HELP + ")")
    return str(args.uri)


def _with_export(text: str, name: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(text)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(name, safe="")))


def _print_map(uri: Any, context: str, as_json: bool) -> int:
    from appliance.cli.nbd_map import MapWriter
    from appliance.client import connect
    from appliance.client.extents import walk

    if sys.stdout is None:  # Python found file descriptor 1 closed at start-up
        raise ApplianceError("cannot write to standard output: it is closed")
    with connect(uri, meta_contexts=(context,)) as conn:
        if not conn.info.structured_replies:
            raise UsageError(f"{uri.address}: the server does not do structured replies, so "
                             f"it has no metadata contexts ({uri})")
        if context not in conn.info.meta_contexts:
            raise UsageError(f"{uri.address}: the server does not offer metadata context "
                             f"{context!r} ({uri})")
        rows = MapWriter(sys.stdout, context, as_json=as_json)
        for offset, extents in walk(conn, context):  # in order, clipped, without gaps
            rows.add(offset, extents)
        rows.finish()
    return 0


# ----------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    """Handler of ``appliance nbd list``."""
    from appliance.client import list_exports

    exports = list_exports(args.uri)
    if args.json:
        print(json.dumps([{"export-name": e.name, "description": e.description}
                          for e in exports], indent=2, ensure_ascii=False))
        return 0
    for e in exports:
        name = e.name if e.name else '""'
        print(f"{name}\t{e.description}" if e.description else name)
    return 0


# ----------------------------------------------------------------------------- copy


def _warn(msg: str) -> None:
    print(f"appliance: warning: {msg}", file=sys.stderr)


def _connections(args: argparse.Namespace, src: Any, dst: Any) -> int:
    n: int = args.connections or 4
    if dst.kind == "stdout":
        return 1
    if n > 1:
        single = [e.name for e in (src, dst) if e.kind == "nbd" and not e.multi_conn]
        if single:
            if args.connections:  # asked for explicitly: say why it is ignored
                _warn(f"{single[0]} does not allow multiple connections (no CAN_MULTI_CONN); "
                      "using 1 connection")
            n = 1
    return n


def _progress_thread(progress: Any, stop: threading.Event) -> threading.Thread:
    def draw() -> None:
        start = time.monotonic()
        while not stop.wait(0.25):
            _draw(progress, start)
        _draw(progress, start)
        sys.stderr.write("\n")
        sys.stderr.flush()

    return threading.Thread(target=draw, name="progress", daemon=True)


def _draw(progress: Any, start: float) -> None:
    total = max(progress.total, 1)
    frac = min(1.0, progress.done / total)
    width = 40
    bar = "#" * int(frac * width)
    rate = progress.done / max(time.monotonic() - start, 1e-6) / 1e6
    sys.stderr.write(f"\r[{bar:<{width}}] {frac * 100:5.1f}%  {rate:8.1f} MB/s")
    sys.stderr.flush()


def cmd_copy(args: argparse.Namespace) -> int:
    """Handler of ``appliance nbd copy``."""
    from dataclasses import replace

    from appliance.copy import CopyOptions, Progress, open_destination, open_source, run_copy

    src = open_source(args.src)
    try:
        dst = open_destination(args.dst, src.size, destination_is_zero=args.destination_is_zero)
    except BaseException:
        src.close()
        raise
    try:
        opts = CopyOptions(connections=1, requests=args.requests, request_size=args.request_size)
        opts = replace(opts, connections=_connections(args, src, dst))
        progress = Progress(src.size)
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        stop = threading.Event()
        drawer = _progress_thread(progress, stop) if show else None
        if drawer is not None:
            drawer.start()
        try:
            run_copy(src, dst, opts, progress)
        finally:
            stop.set()
            if drawer is not None:
                drawer.join(5)
    finally:
        src.close()
        dst.close()
    return 0
