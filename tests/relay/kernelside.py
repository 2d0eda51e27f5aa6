"""The kernel's half of the relay's socketpair, played the way drivers/block/nbd.c plays it.

Simple requests with 64-bit handles (the kernel packs a per-request cookie in the high 32
bits and the blk-mq tag in the low 32), simple replies only, no negotiation, no TLS,
many requests in flight.  Built on the core's ClientTransmission with structured replies
off, which is exactly the kernel's view of the protocol.
"""

from __future__ import annotations

import itertools
import socket
from dataclasses import dataclass

from appliance.kernel.attach import KernelExport
from appliance.nbd import (
    NBD_CMD_DISC,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NEED_DATA,
    ClientTransmission,
    ExportInfo,
    ReadData,
    ReplyDone,
    Request,
)
from appliance.nbd.pieces import MAX_SIMPLE_LENGTH


@dataclass
class Reply:
    cookie: int
    error: int
    data: bytes


class KernelSide:
    """Blocking driver of the kernel end of a socketpair."""

    def __init__(self, sock: socket.socket, size: int, flags: int) -> None:
        self.sock = sock
        self.sock.settimeout(20.0)
        kflags = KernelExport(size=size, flags=flags).kernel_flags()
        # The kernel knows no maximum block size: any length its header can carry.
        self.tx = ClientTransmission(ExportInfo(name="", size=size, flags=kflags,
                                                structured_replies=False,
                                                max_block_size=MAX_SIMPLE_LENGTH))
        self._tags = itertools.count(1)
        self._reads: dict[int, bytes] = {}
        self.requests: dict[int, Request] = {}

    def _handle(self) -> int:
        tag = next(self._tags)
        return ((tag * 7 + 1) << 32) | (tag % 128)  # cookie << 32 | tag, like nbd_cmd_handle

    def submit(self, command: int, offset: int = 0, length: int = 0, data: bytes | None = None,
               flags: int = 0) -> int:
        req = Request(command, offset=offset, length=length if data is None else len(data),
                      flags=flags, cookie=self._handle(), data=data)
        cookie = self.tx.send(req)
        self.requests[cookie] = req
        self.sock.sendall(self.tx.data_to_send())
        return cookie

    def read(self, offset: int, length: int) -> int:
        return self.submit(NBD_CMD_READ, offset, length)

    def write(self, offset: int, data: bytes, flags: int = 0) -> int:
        return self.submit(NBD_CMD_WRITE, offset, data=data, flags=flags)

    def flush(self) -> int:
        return self.submit(NBD_CMD_FLUSH)

    def disconnect(self) -> None:
        self.tx.send(Request(NBD_CMD_DISC))
        self.sock.sendall(self.tx.data_to_send())

    def wait(self) -> list[Reply]:
        """Block until at least one reply is complete; return every complete one."""
        done: list[Reply] = []
        while not done:
            while True:
                ev = self.tx.next_event()
                if ev is NEED_DATA:
                    break
                if isinstance(ev, ReadData):
                    prev = self._reads.get(ev.cookie)
                    self._reads[ev.cookie] = ev.data if prev is None else prev + ev.data
                elif isinstance(ev, ReplyDone):
                    self.requests.pop(ev.cookie, None)
                    done.append(Reply(ev.cookie, ev.error, self._reads.pop(ev.cookie, b"")))
            if done:
                break
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the relay closed the kernel socket")
            self.tx.receive_data(data)
        return done

    def call(self, command: int, offset: int = 0, length: int = 0,
             data: bytes | None = None) -> Reply:
        cookie = self.submit(command, offset, length, data)
        while True:
            for r in self.wait():
                if r.cookie == cookie:
                    return r
