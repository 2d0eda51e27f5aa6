"""Keeping a DHCP lease for as long as the board runs: the client's states (RFC 2131 4.4.5).

Sans-IO: the :class:`Keeper` is told the time and handed the datagrams that arrive; it
returns the datagrams to send (:class:`Send`) and says when it next wants the time
(:meth:`Keeper.wake_at`).  :mod:`appliance.net.keeper` runs it over a UDP socket.

States and what each sends:

* ``BOUND``      -- nothing until T1 (option 58, else half the lease);
* ``RENEWING``   -- DHCPREQUEST unicast to the server that granted the lease (ciaddr set),
                    retransmitted at half the time left until T2 (option 59, else 7/8);
* ``REBINDING``  -- the same, broadcast, at half the time left until expiry;
* ``INIT``       -- the lease expired or a server said DHCPNAK: INIT-REBOOT's broadcast
                    DHCPREQUEST for the same address (option 50; a server that knows
                    the lease, or an authoritative one, ACKs it) and a DHCPDISCOVER
                    asking for it, backing off 4 s .. 64 s;
* ``REQUESTING`` -- an offer for that address came: DHCPREQUEST naming its server.

One deliberate departure from RFC 2131: on expiry or DHCPNAK the address is **not**
removed from the interface.  The root disk's TCP connection uses it; dropping it would
kill the board.  An offer or ACK for a different address is refused and reported loudly
(an ``ADDRESS CHANGE`` line) instead: that needs a fixed reservation on the DHCP server.
(A server that pings an address before offering it, as dnsmasq does, sees the held
address answer and offers another one: measured in tests/net/test_lease.py.)
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from appliance.backoff import Backoff
from appliance.net import dhcpwire as w

T1_FRACTION = 0.5
T2_FRACTION = 0.875
MIN_RETRY_S = 5.0  # never retransmit more often (RFC 2131 says 60 s; short leases need less)
DEFAULT_LEASE_S = 3600  # a lease without a time: renew hourly anyway
INIT_BACKOFF = Backoff(4.0, 64.0)  # RFC 2131 4.1: 4, 8, ... 64 s
PARAMETERS = bytes([w.OPT_SUBNET_MASK, w.OPT_ROUTER, w.OPT_DNS, w.OPT_LEASE_TIME,
                    w.OPT_RENEWAL_TIME, w.OPT_REBINDING_TIME])


class State(enum.Enum):
    """Where the client is in RFC 2131's state diagram."""

    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    INIT = "init"  # the lease is lost; the address stays on the interface
    REQUESTING = "requesting"


@dataclass(frozen=True)
class Lease:
    """A granted lease; times are seconds on a monotonic clock."""

    address: ipaddress.IPv4Interface
    server: ipaddress.IPv4Address | None
    lease_s: int
    t1_s: float
    t2_s: float
    bound_at: float

    @classmethod
    def granted(cls, address: ipaddress.IPv4Interface, server: ipaddress.IPv4Address | None,
                lease_s: int | None, now: float, t1_s: float | None = None,
                t2_s: float | None = None) -> Lease:
        """A lease granted at ``now``; T1/T2 default to 1/2 and 7/8 of it."""
        length = lease_s or DEFAULT_LEASE_S
        t1 = t1_s if t1_s is not None and 0 < t1_s < length else length * T1_FRACTION
        t2 = t2_s if t2_s is not None and t1 < t2_s < length else length * T2_FRACTION
        return cls(address, server, length, t1, max(t1, t2), now)

    @property
    def renew_at(self) -> float:
        return self.bound_at + self.t1_s

    @property
    def rebind_at(self) -> float:
        return self.bound_at + self.t2_s

    @property
    def expires_at(self) -> float:
        return self.bound_at + self.lease_s


@dataclass(frozen=True)
class Send:
    """A datagram for the server port: unicast to ``to``, or broadcast when it is None."""

    data: bytes
    to: ipaddress.IPv4Address | None


class Keeper:
    """The renewal state machine for one lease on one interface."""

    def __init__(self, iface: str, lease: Lease, mac: bytes, xid: Callable[[], int]) -> None:
        self.iface, self.lease, self.mac = iface, lease, mac
        self.state = State.BOUND
        self.renewals = 0
        self.last_renewal: float | None = None
        self.warning: str | None = None  # the last refusal or address change
        self._new_xid = xid
        self._xid = 0
        self._next = lease.renew_at
        self._attempt = 0
        self._offer_server: ipaddress.IPv4Address | None = None
        self._reports: list[str] = []

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.lease.address.ip

    def wake_at(self) -> float:
        """When :meth:`timer` next has something to do."""
        return self._next

    def renew_now(self, now: float) -> None:
        """Start a renewal at once (SIGUSR1, as udhcpc does) if bound."""
        if self.state is State.BOUND:
            self._next = min(self._next, now)

    def take_reports(self) -> list[str]:
        """Lines for the console/log since the last call."""
        out, self._reports = self._reports, []
        return out

    def timer(self, now: float) -> list[Send]:
        """Advance the states that time drives; the datagrams to send now."""
        if now < self._next:
            return []
        if self.state is State.BOUND or (self.state is State.RENEWING
                                         and self.lease.server is None):
            self._enter(State.RENEWING if self.lease.server else State.REBINDING)
        if self.state is State.RENEWING and now >= self.lease.rebind_at:
            self._enter(State.REBINDING)
        if self.state is State.REBINDING and now >= self.lease.expires_at:
            self._lost(f"the lease of {self.lease.address} expired unrenewed")
        return self._transmit(now)

    def receive(self, data: bytes, now: float) -> list[Send]:
        """A datagram from the server port; what to send in reply (if anything)."""
        msg = w.decode(data)
        if (msg is None or msg.op != w.OP_BOOTREPLY or msg.xid != self._xid
                or msg.chaddr != self.mac or self.state is State.BOUND):
            return []
        server = msg.address_option(w.OPT_SERVER_ID)
        if msg.type == w.DHCPNAK:
            why = f"server {server or '?'} refused the lease of {self.ip} (DHCPNAK)"
            if self.state is not State.INIT:
                self._lost(why)
                return self._transmit(now)
            if why != self.warning:  # refused our INIT-REBOOT request: keep discovering
                self.warning = why
                self._report(f"{why}; still asking ({self.ip} stays on {self.iface})")
            return []
        if msg.yiaddr != self.ip and msg.type in (w.DHCPOFFER, w.DHCPACK):
            self._address_change(msg.yiaddr, server)
            return []
        if msg.type == w.DHCPOFFER and self.state is State.INIT:
            self._offer_server = server
            self._enter(State.REQUESTING, new_xid=False)
            return self._transmit(now)
        if msg.type == w.DHCPACK:
            self._bound(msg, server, now)
        return []

    def _bound(self, ack: w.Message, server: ipaddress.IPv4Address | None, now: float) -> None:
        was = self.state
        self.lease = Lease.granted(self.lease.address, server or self.lease.server,
                                   ack.seconds_option(w.OPT_LEASE_TIME) or self.lease.lease_s,
                                   now, ack.seconds_option(w.OPT_RENEWAL_TIME),
                                   ack.seconds_option(w.OPT_REBINDING_TIME))
        self.state, self.renewals, self.last_renewal = State.BOUND, self.renewals + 1, now
        self._next = self.lease.renew_at
        self._report(f"lease of {self.lease.address} renewed for {self.lease.lease_s} s "
                     f"({was.value}, server {self.lease.server}); next renewal in "
                     f"{self.lease.t1_s:.0f} s")

    def _lost(self, why: str) -> None:
        self.warning = why
        self._report(f"{why}; asking for it again ({self.ip} stays on {self.iface}: the root "
                     "disk's connection uses it)")
        self._enter(State.INIT)

    def _address_change(self, offered: ipaddress.IPv4Address,
                        server: ipaddress.IPv4Address | None) -> None:
        self.warning = (f"ADDRESS CHANGE: server {server or '?'} offers {offered} instead of "
                        f"{self.ip}")
        self._report(f"{self.warning}; refused, {self.ip} stays (the root disk's connection "
                     "uses it): give this board a fixed address on the DHCP server")

    def _enter(self, state: State, *, new_xid: bool = True) -> None:
        self.state, self._attempt = state, 0
        if state is State.INIT:
            self._offer_server = None
        if new_xid:
            self._xid = self._new_xid() & 0xFFFFFFFF

    def _transmit(self, now: float) -> list[Send]:
        """The current state's datagrams; schedules their retransmission."""
        if self.state is State.REQUESTING and self._attempt >= 3:
            self._enter(State.INIT)  # the offering server went quiet: discover again
        s, lease = self.state, self.lease
        if s is State.RENEWING:
            self._next = now + _half_until(lease.rebind_at - now)
        elif s is State.REBINDING:
            self._next = now + _half_until(lease.expires_at - now)
        else:
            self._next = now + INIT_BACKOFF.delay(self._attempt)
        self._attempt += 1
        if s is State.INIT:  # INIT-REBOOT's request, and a discover for the same address
            return [Send(self._message(w.DHCPREQUEST, requested=True), None),
                    Send(self._message(w.DHCPDISCOVER, requested=True), None)]
        if s is State.REQUESTING:
            return [Send(self._message(w.DHCPREQUEST, requested=True), None)]
        to = lease.server if s is State.RENEWING else None
        return [Send(self._message(w.DHCPREQUEST, ciaddr=self.ip), to)]

    def _message(self, kind: int, *, ciaddr: ipaddress.IPv4Address = w.ZERO,
                 requested: bool = False) -> bytes:
        options = {w.OPT_MESSAGE_TYPE: bytes([kind]), w.OPT_CLIENT_ID: b"\x01" + self.mac}
        if requested:
            options[w.OPT_REQUESTED_IP] = self.ip.packed
        if requested and kind == w.DHCPREQUEST and self._offer_server is not None:
            options[w.OPT_SERVER_ID] = self._offer_server.packed
        options[w.OPT_PARAMETERS] = PARAMETERS
        flags = w.FLAG_BROADCAST if ciaddr == w.ZERO else 0
        return w.encode(w.Message(op=w.OP_BOOTREQUEST, xid=self._xid, chaddr=self.mac,
                                  ciaddr=ciaddr, flags=flags, options=options))

    def _report(self, line: str) -> None:
        self._reports.append(f"{self.iface}: {line}")


def _half_until(remaining_s: float) -> float:
    """Retransmit at half the time left to the next transition, never in a busy loop and
    never past the transition itself (RFC 2131 4.4.5)."""
    if remaining_s <= MIN_RETRY_S:
        return max(remaining_s, 0.5)
    return max(MIN_RETRY_S, remaining_s / 2)
