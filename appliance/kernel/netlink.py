"""The kernel's ``nbd`` generic-netlink family, through pyroute2.

Numbers and semantics from include/uapi/linux/nbd-netlink.h and
drivers/block/nbd.c (``nbd_genl_connect`` and friends):

* NBD_CMD_CONNECT needs NBD_ATTR_SIZE_BYTES and NBD_ATTR_SOCKETS; without
  NBD_ATTR_INDEX the kernel picks (or creates) a free device.  It answers with a
  message carrying NBD_ATTR_INDEX.  Each socket is ``[NBD_SOCK_ITEM [NBD_SOCK_FD]]``;
  an item of another type is refused with EINVAL.
* NBD_ATTR_TIMEOUT and NBD_ATTR_DEAD_CONN_TIMEOUT are seconds (u64).  A request
  timeout of 0 means "never fail a request for slowness" on current kernels,
  which is what a relay that does its own reconnecting wants.
* NBD_CMD_DISCONNECT and NBD_CMD_RECONFIGURE need NBD_ATTR_INDEX; RECONFIGURE
  may hand over new sockets for dead ones (within DEAD_CONN_TIMEOUT).
* NBD_CMD_STATUS answers NBD_ATTR_DEVICE_LIST of
  ``[NBD_DEVICE_ITEM [NBD_DEVICE_INDEX u32, NBD_DEVICE_CONNECTED u8]]``.
* The multicast group ``nbd_mc_group`` carries NBD_CMD_LINK_DEAD with the index
  of a device whose socket died.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from appliance.errors import KernelError

log = logging.getLogger(__name__)

NBD_GENL_FAMILY_NAME = "nbd"
NBD_GENL_VERSION = 0x1
NBD_GENL_MCAST_GROUP_NAME = "nbd_mc_group"

# enum nbd commands (nbd-netlink.h)
NBD_CMD_UNSPEC = 0
NBD_CMD_CONNECT = 1
NBD_CMD_DISCONNECT = 2
NBD_CMD_RECONFIGURE = 3
NBD_CMD_LINK_DEAD = 4
NBD_CMD_STATUS = 5

# NBD_ATTR_CLIENT_FLAGS bits
NBD_CFLAG_DESTROY_ON_DISCONNECT = 1 << 0
NBD_CFLAG_DISCONNECT_ON_CLOSE = 1 << 1


class nbdmsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """One message of the nbd family; attribute numbers are the tuple positions."""

    prefix = "NBD_ATTR_"
    nla_map = (
        ("NBD_ATTR_UNSPEC", "none"),
        ("NBD_ATTR_INDEX", "uint32"),
        ("NBD_ATTR_SIZE_BYTES", "uint64"),
        ("NBD_ATTR_BLOCK_SIZE_BYTES", "uint64"),
        ("NBD_ATTR_TIMEOUT", "uint64"),
        ("NBD_ATTR_SERVER_FLAGS", "uint64"),
        ("NBD_ATTR_CLIENT_FLAGS", "uint64"),
        ("NBD_ATTR_SOCKETS", "sockets"),
        ("NBD_ATTR_DEAD_CONN_TIMEOUT", "uint64"),
        ("NBD_ATTR_DEVICE_LIST", "device_list"),
        ("NBD_ATTR_BACKEND_IDENTIFIER", "asciiz"),
    )

    class sockets(nla):  # type: ignore[misc]
        prefix = "NBD_SOCK_"
        nla_flags = NLA_F_NESTED
        nla_map = (
            ("NBD_SOCK_ITEM_UNSPEC", "none"),
            ("NBD_SOCK_ITEM", "sock_item"),
        )

        class sock_item(nla):  # type: ignore[misc]
            prefix = "NBD_SOCK_"
            nla_flags = NLA_F_NESTED
            nla_map = (
                ("NBD_SOCK_UNSPEC", "none"),
                ("NBD_SOCK_FD", "uint32"),
            )

    class device_list(nla):  # type: ignore[misc]
        prefix = "NBD_DEVICE_"
        nla_flags = NLA_F_NESTED
        nla_map = (
            ("NBD_DEVICE_ITEM_UNSPEC", "none"),
            ("NBD_DEVICE_ITEM", "device_item"),
        )

        class device_item(nla):  # type: ignore[misc]
            prefix = "NBD_DEVICE_"
            nla_flags = NLA_F_NESTED
            nla_map = (
                ("NBD_DEVICE_UNSPEC", "none"),
                ("NBD_DEVICE_INDEX", "uint32"),
                ("NBD_DEVICE_CONNECTED", "uint8"),
            )


@dataclass(frozen=True)
class ConnectRequest:
    """What NBD_CMD_CONNECT tells the kernel."""

    fds: tuple[int, ...]
    size_bytes: int
    block_size: int
    server_flags: int
    index: int | None = None
    timeout: int | None = None
    dead_conn_timeout: int | None = None
    client_flags: int = 0


class NetlinkRequestError(KernelError):
    """The kernel refused a request; ``code`` is its errno (ENOSPC from RECONFIGURE: no
    socket of the device is dead)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class FamilyMissing(KernelError):
    """The kernel has no ``nbd`` generic-netlink family (old kernel or no driver)."""


def build_connect(req: ConnectRequest) -> nbdmsg:
    """The NBD_CMD_CONNECT message for ``req`` (not yet encoded)."""
    msg = nbdmsg()
    msg["cmd"] = NBD_CMD_CONNECT
    msg["version"] = NBD_GENL_VERSION
    attrs: list[list[Any]] = msg["attrs"]
    if req.index is not None:
        attrs.append(["NBD_ATTR_INDEX", req.index])
    attrs.append(["NBD_ATTR_SIZE_BYTES", req.size_bytes])
    attrs.append(["NBD_ATTR_BLOCK_SIZE_BYTES", req.block_size])
    attrs.append(["NBD_ATTR_SERVER_FLAGS", req.server_flags])
    if req.timeout is not None:
        attrs.append(["NBD_ATTR_TIMEOUT", req.timeout])
    if req.dead_conn_timeout is not None:
        attrs.append(["NBD_ATTR_DEAD_CONN_TIMEOUT", req.dead_conn_timeout])
    if req.client_flags:
        attrs.append(["NBD_ATTR_CLIENT_FLAGS", req.client_flags])
    items = [["NBD_SOCK_ITEM", {"attrs": [["NBD_SOCK_FD", fd]]}] for fd in req.fds]
    attrs.append(["NBD_ATTR_SOCKETS", {"attrs": items}])
    return msg


def build_index_command(cmd: int, index: int | None) -> nbdmsg:
    """A DISCONNECT / STATUS / RECONFIGURE message naming one device (or all: None)."""
    msg = nbdmsg()
    msg["cmd"] = cmd
    msg["version"] = NBD_GENL_VERSION
    if index is not None:
        msg["attrs"].append(["NBD_ATTR_INDEX", index])
    return msg


def parse_status(msg: nbdmsg) -> dict[int, bool]:
    """Index -> connected, from an NBD_CMD_STATUS answer."""
    result: dict[int, bool] = {}
    dev_list = msg.get_attr("NBD_ATTR_DEVICE_LIST")
    if dev_list is None:
        return result
    for item in dev_list.get_attrs("NBD_DEVICE_ITEM"):
        index = item.get_attr("NBD_DEVICE_INDEX")
        if index is not None:
            result[int(index)] = bool(item.get_attr("NBD_DEVICE_CONNECTED"))
    return result


class NBDNetlink:
    """A bound socket of the nbd family; use as a context manager."""

    def __init__(self) -> None:
        self._sock = GenericNetlinkSocket()
        try:
            self._sock.bind(NBD_GENL_FAMILY_NAME, nbdmsg)
        except NetlinkError as exc:
            self._sock.close()
            if exc.code == errno.ENOENT:
                raise FamilyMissing("the kernel has no 'nbd' netlink family") from exc
            raise KernelError(f"cannot open the nbd netlink family: {exc}") from exc

    def __enter__(self) -> NBDNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _request(self, msg: nbdmsg, what: str) -> tuple[nbdmsg, ...]:
        try:
            replies: tuple[nbdmsg, ...] = self._sock.nlm_request(
                msg, msg_type=self._sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as exc:
            raise NetlinkRequestError(f"nbd netlink {what} failed: {exc.args[-1]} "
                                      f"(errno {exc.code}); see dmesg", exc.code) from exc
        return replies

    def connect(self, req: ConnectRequest) -> int:
        """NBD_CMD_CONNECT; the index of the device the kernel attached."""
        for reply in self._request(build_connect(req), "connect"):
            if reply.get("cmd") == NBD_CMD_CONNECT:
                index = reply.get_attr("NBD_ATTR_INDEX")
                if index is not None:
                    return int(index)
        if req.index is not None:
            return req.index
        raise KernelError("the kernel accepted NBD_CMD_CONNECT but named no device")

    def disconnect(self, index: int) -> None:
        """NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC on the socket and lets go."""
        self._request(build_index_command(NBD_CMD_DISCONNECT, index), "disconnect")

    def reconfigure(self, index: int, fds: tuple[int, ...] = (),
                    timeout: int | None = None) -> None:
        """NBD_CMD_RECONFIGURE: replace dead sockets and/or change the timeout."""
        msg = build_index_command(NBD_CMD_RECONFIGURE, index)
        if timeout is not None:
            msg["attrs"].append(["NBD_ATTR_TIMEOUT", timeout])
        if fds:
            items = [["NBD_SOCK_ITEM", {"attrs": [["NBD_SOCK_FD", fd]]}] for fd in fds]
            msg["attrs"].append(["NBD_ATTR_SOCKETS", {"attrs": items}])
        self._request(msg, "reconfigure")

    def status(self, index: int | None = None) -> dict[int, bool]:
        """NBD_CMD_STATUS: index -> connected, for one device or all."""
        result: dict[int, bool] = {}
        for reply in self._request(build_index_command(NBD_CMD_STATUS, index), "status"):
            if reply.get("cmd") == NBD_CMD_STATUS:
                result.update(parse_status(reply))
        return result

    def watch_link_dead(self) -> None:
        """Join the multicast group that carries NBD_CMD_LINK_DEAD."""
        self._sock.add_membership(NBD_GENL_MCAST_GROUP_NAME)

    def fileno(self) -> int:
        """The netlink socket's descriptor, to poll for events."""
        fd: int = self._sock.fileno()
        return fd

    def link_dead_indexes(self) -> list[int]:
        """Read one batch of multicast messages (blocks until one arrives); the index of
        each device whose link died."""
        found = []
        for msg in self._sock.get():
            if msg.get("cmd") == NBD_CMD_LINK_DEAD:
                index = msg.get_attr("NBD_ATTR_INDEX")
                log.warning("kernel reports the link of nbd%s dead", index)
                if index is not None:
                    found.append(int(index))
        return found

    def link_dead_events(self) -> Iterator[int]:
        """Join the multicast group; yield the index of each device whose link died."""
        self.watch_link_dead()
        while True:
            yield from self.link_dead_indexes()
