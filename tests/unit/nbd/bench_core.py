"""Throughput of the sans-IO core alone: parse READ replies from memory, print MB/s.

Run: ``.venv/bin/python -m tests.unit.nbd.bench_core [--chunk KIB] [--total MIB]``.
Not collected by pytest (a benchmark prints figures; it asserts nothing).  The
server side builds one reply stream per format; the client parses it fed in
256 KiB pieces (``--recv``; 16 = one TLS record), as a socket would deliver it,
with and without assemble_reads.
"""

from __future__ import annotations

import argparse
import time

from appliance.nbd import NBD_CMD_READ, NEED_DATA, ClientTransmission, ReadData, Request
from tests.unit.nbd.wire import Pair, export

RECV = 256 * 1024
IN_FLIGHT = 64


def reply_stream(mode: str, chunk: int, total: int) -> tuple[list[int], bytes]:
    info = export(size=total, structured=mode != "simple", extended=mode == "extended")
    pair = Pair(info)
    cookies = [pair.client.send(Request(NBD_CMD_READ, i * chunk, chunk))
               for i in range(IN_FLIGHT)]
    pair.to_server()
    payload = bytes(range(256)) * (chunk // 256)
    for c in cookies:
        pair.server.reply(c, data=payload)
    return cookies, pair.server.data_to_send()


def measure(mode: str, assemble: bool, chunk: int, total: int, recv: int = RECV) -> float:
    info = export(size=total, structured=mode != "simple", extended=mode == "extended")
    cookies, stream = reply_stream(mode, chunk, total)
    view = memoryview(stream)
    got = 0
    start = time.perf_counter()
    for _ in range(max(1, total // (IN_FLIGHT * chunk))):
        tx = ClientTransmission(info, assemble_reads=assemble)
        for i, c in enumerate(cookies):
            tx.send(Request(NBD_CMD_READ, i * chunk, chunk, cookie=c))
        tx.data_to_send()
        for off in range(0, len(stream), recv):
            tx.receive_data(view[off : off + recv])
            while (ev := tx.next_event()) is not NEED_DATA:
                if type(ev) is ReadData:
                    got += len(ev.data)
    return got / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=256, help="READ size in KiB (256)")
    parser.add_argument("--total", type=int, default=512, help="MiB parsed per case (512)")
    parser.add_argument("--recv", type=int, default=RECV // 1024,
                        help="KiB fed per receive_data call (256; 16 = one TLS record)")
    args = parser.parse_args()
    chunk, total, recv = args.chunk * 1024, args.total * 1024 * 1024, args.recv * 1024
    for mode in ("simple", "structured", "extended"):
        for assemble in (False, True):
            rate = measure(mode, assemble, chunk, total, recv)
            print(f"core {mode:10s} reads of {args.chunk} KiB, fed {args.recv} KiB, "
                  f"assemble_reads={assemble!s:5s}: "
                  f"{rate:7.0f} MB/s")


if __name__ == "__main__":
    main()
