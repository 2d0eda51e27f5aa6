"""The lease keeper's RFC 2131 states, driven by hand: no sockets, no sleeps.

A server is played by building its replies with :mod:`appliance.net.dhcpwire`; the clock
is a number passed in.
"""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

from appliance.net import dhcpwire as w
from appliance.net.lease import MIN_RETRY_S, Keeper, Lease, Send, State

MAC = bytes.fromhex("525400123456")
ADDR = ipaddress.IPv4Interface("10.0.2.15/24")
SERVER = ipaddress.IPv4Address("10.0.2.2")
LEASE_S = 120


def keeper() -> Keeper:
    xids = itertools.count(0x1000)
    return Keeper("eth0", Lease.granted(ADDR, SERVER, LEASE_S, now=0.0), MAC,
                  lambda: next(xids))


def reply(request: Send, kind: int, yiaddr: ipaddress.IPv4Address = ADDR.ip,
          **times: int) -> bytes:
    msg = w.decode(request.data)
    assert msg is not None
    options = {w.OPT_MESSAGE_TYPE: bytes([kind]), w.OPT_SERVER_ID: SERVER.packed}
    codes = {"lease": w.OPT_LEASE_TIME, "t1": w.OPT_RENEWAL_TIME, "t2": w.OPT_REBINDING_TIME}
    for name, value in times.items():
        options[codes[name]] = value.to_bytes(4, "big")
    return w.encode(w.Message(op=w.OP_BOOTREPLY, xid=msg.xid, chaddr=MAC, yiaddr=yiaddr,
                              options=options))


def sent(sends: list[Send]) -> tuple[w.Message, Send]:
    assert len(sends) == 1
    msg = w.decode(sends[0].data)
    assert msg is not None and msg.op == w.OP_BOOTREQUEST and msg.chaddr == MAC
    assert msg.options[w.OPT_CLIENT_ID] == b"\x01" + MAC  # as udhcpc sent it at boot
    return msg, sends[0]


def sent_init(sends: list[Send]) -> tuple[w.Message, Send]:
    """INIT's pair: INIT-REBOOT's request for the address, then a discover asking for it."""
    assert len(sends) == 2
    request, send = sent(sends[:1])
    discover, _ = sent(sends[1:])
    for msg in (request, discover):
        assert msg.flags == w.FLAG_BROADCAST and msg.ciaddr == w.ZERO
        assert msg.options[w.OPT_REQUESTED_IP] == ADDR.ip.packed
    assert request.type == w.DHCPREQUEST and w.OPT_SERVER_ID not in request.options
    assert discover.type == w.DHCPDISCOVER and sends[1].to is None and send.to is None
    return discover, sends[1]


def test_nothing_is_sent_before_t1_then_a_unicast_renewal_extends_the_lease() -> None:
    k = keeper()
    assert k.wake_at() == LEASE_S / 2
    assert k.timer(59.9) == []
    msg, send = sent(k.timer(60.0))
    assert k.state is State.RENEWING and send.to == SERVER
    assert msg.type == w.DHCPREQUEST and msg.ciaddr == ADDR.ip and msg.flags == 0
    assert w.OPT_REQUESTED_IP not in msg.options and w.OPT_SERVER_ID not in msg.options
    assert k.receive(reply(send, w.DHCPACK, lease=LEASE_S, t1=50, t2=100), 61.0) == []
    assert k.state is State.BOUND and k.renewals == 1 and k.last_renewal == 61.0
    assert k.wake_at() == 61.0 + 50 and k.lease.expires_at == 61.0 + LEASE_S
    assert k.take_reports() == ["eth0: lease of 10.0.2.15/24 renewed for 120 s (renewing, "
                                "server 10.0.2.2); next renewal in 50 s"]


def test_silence_goes_renewing_then_rebinding_broadcast_then_rediscovers_the_address() -> None:
    k = keeper()
    first, send = sent(k.timer(60.0))
    times = [60.0]
    while k.state is State.RENEWING:
        times.append(k.wake_at())
        again, send = sent(k.timer(k.wake_at()))
    assert times[1] - times[0] == (105 - 60) / 2  # half the time left until T2 (7/8)
    assert all(b - a >= MIN_RETRY_S or b == 105 for a, b in itertools.pairwise(times))
    assert k.state is State.REBINDING and send.to is None and k.wake_at() <= LEASE_S
    assert again.ciaddr == ADDR.ip and again.xid != first.xid
    while k.state is State.REBINDING:
        sends = k.timer(k.wake_at())
        if k.state is State.REBINDING:
            sent(sends)
    assert k.state is State.INIT and k.wake_at() >= LEASE_S
    _, send = sent_init(sends)
    assert any("expired unrenewed" in r and "stays on eth0" in r for r in k.take_reports())
    assert k.warning and "expired" in k.warning
    req, send = sent(k.receive(reply(send, w.DHCPOFFER), 121.0))
    assert k.state is State.REQUESTING and send.to is None
    assert req.type == w.DHCPREQUEST and req.options[w.OPT_SERVER_ID] == SERVER.packed
    assert req.options[w.OPT_REQUESTED_IP] == ADDR.ip.packed and req.ciaddr == w.ZERO
    k.receive(reply(send, w.DHCPACK, lease=3600), 122.0)
    assert k.state is State.BOUND and k.lease.lease_s == 3600 and k.wake_at() == 1922.0


def test_a_nak_sends_the_keeper_back_to_discovering_its_address() -> None:
    k = keeper()
    _, send = sent(k.timer(60.0))
    _, send = sent_init(k.receive(reply(send, w.DHCPNAK), 60.5))
    assert k.state is State.INIT
    assert any("DHCPNAK" in r for r in k.take_reports())
    assert k.receive(reply(send, w.DHCPNAK), 61.0) == []  # INIT-REBOOT refused: discover on
    assert k.state is State.INIT and k.take_reports() == []  # (said once already)
    k.receive(reply(send, w.DHCPACK, lease=LEASE_S), 62.0)  # another server ACKs it
    assert k.state is State.BOUND and k.renewals == 1


def test_an_other_address_is_refused_and_reported_loudly() -> None:
    k = keeper()
    _, send = sent(k.timer(60.0))
    other = ipaddress.IPv4Address("10.0.2.16")
    assert k.receive(reply(send, w.DHCPACK, yiaddr=other, lease=LEASE_S), 60.5) == []
    assert k.state is State.RENEWING and k.renewals == 0
    assert k.warning == "ADDRESS CHANGE: server 10.0.2.2 offers 10.0.2.16 instead of 10.0.2.15"
    assert "10.0.2.15 stays" in k.take_reports()[0]


def test_replies_to_someone_else_or_an_old_exchange_are_ignored() -> None:
    k = keeper()
    _, send = sent(k.timer(60.0))
    ack = bytearray(reply(send, w.DHCPACK, lease=LEASE_S))
    stale = bytes(ack[:4]) + b"\0\0\0\0" + bytes(ack[8:])  # another xid
    foreign = bytes(ack[:28]) + bytes(6) + bytes(ack[34:])  # another chaddr
    for data in (stale, foreign, b"", b"\x02" * 300):
        assert k.receive(data, 61.0) == []
    assert k.state is State.RENEWING


def test_wire_round_trip_and_truncated_options() -> None:
    msg = w.Message(op=w.OP_BOOTREQUEST, xid=7, chaddr=MAC, ciaddr=ADDR.ip,
                    options={w.OPT_MESSAGE_TYPE: bytes([w.DHCPREQUEST])})
    data = w.encode(msg)
    assert w.decode(data) == msg
    assert w.decode(data[:-1] + bytes([w.OPT_LEASE_TIME, 4, 0])) is None


def test_renew_now_starts_a_renewal_only_when_bound() -> None:
    k = keeper()
    k.renew_now(10.0)
    assert k.wake_at() == 10.0
    _, send = sent(k.timer(10.0))
    assert k.state is State.RENEWING and send.to == SERVER
    retransmit = k.wake_at()
    k.renew_now(11.0)  # already renewing: its schedule stands
    assert k.wake_at() == retransmit


def test_status_shows_the_keepers_state_and_whether_it_lives(tmp_path: Path) -> None:
    import json
    import os

    from appliance.status import lease

    assert lease(tmp_path) is None  # a static address: no keeper, no line
    state = {"iface": "eth0", "pid": os.getpid(), "state": "bound", "address": str(ADDR),
             "server": str(SERVER), "lease_s": 86400, "renewals": 2, "last_renewal": 990.0,
             "expires": 87390.0, "warning": None}
    (tmp_path / "run/nbdroot").mkdir(parents=True)
    (tmp_path / "run/nbdroot/lease.json").write_text(json.dumps(state))
    (tmp_path / f"proc/{os.getpid()}").mkdir(parents=True)
    (tmp_path / f"proc/{os.getpid()}/cmdline").write_bytes(b"@usr/bin/python3\0-m\0")
    st = lease(tmp_path)
    assert st is not None and st.alive
    assert st.line(1000.0) == (f"nbdroot-lease: eth0 10.0.2.15/24 state=bound keeper=alive "
                               f"pid={os.getpid()} argv0=@usr/bin/python3 server=10.0.2.2 "
                               "lease=86400s renewals=2 last-renewal=10s-ago "
                               "expires-in=86390s")
    (tmp_path / f"proc/{os.getpid()}/cmdline").unlink()
    assert lease(tmp_path) is not None and "keeper=dead" in lease(tmp_path).line(0)  # type: ignore[union-attr]
