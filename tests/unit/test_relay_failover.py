"""The relay core's failover decisions (several replicas), without sockets or sleeps.

With a reference fingerprint (the first connection's first MiB) the core accepts an
offered connection only when size, transmission flags and fingerprint match; a replica
that does not is refused, named in the log, and the next is tried after the shared
backoff while the waiting requests keep waiting.  Without one, the single-server rules
are unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import logging

import pytest

from appliance.nbd import ExportInfo
from appliance.nbd.proto import NBD_FLAG_READ_ONLY
from appliance.relay.core import (
    AcceptServer,
    Answer,
    Reconnect,
    Reconnected,
    RefuseServer,
    RelayCore,
    RelayState,
    Tick,
    replica_mismatch,
)
from appliance.relay.policy import ReconnectPolicy
from tests.unit.test_relay_core import INFO, SIZE, Server, answers, lose, read

RO = ExportInfo(name="", size=SIZE, flags=INFO.flags | NBD_FLAG_READ_ONLY)
GOOD = hashlib.sha256(b"golden").digest()
BAD = hashlib.sha256(b"other").digest()
A, B, C = "nbds://board@127.0.0.1:1/golden", "nbds://board@127.0.0.2:1/golden", \
    "nbds://board@127.0.0.3:1/golden"


def replica_core(**policy: float | None) -> RelayCore:
    pol = ReconnectPolicy(**{"initial": 0.5, "maximum": 4.0, **policy})  # type: ignore[arg-type]
    return RelayCore(RO, pol, now=0.0, fingerprint=GOOD)


def offer(source: str, fingerprint: bytes | None = GOOD, info: ExportInfo = RO) -> Reconnected:
    return Reconnected(info, source=source, fingerprint=fingerprint)


# --------------------------------------------------------------------------- the judge


def test_a_replica_matching_size_flags_and_first_mib_is_one() -> None:
    assert replica_mismatch(RO, GOOD, RO, GOOD) == ""


@pytest.mark.parametrize(("info", "fp", "why"), [
    (ExportInfo(name="", size=2 * SIZE, flags=RO.flags), GOOD, "size 2097152 bytes, the "
     "first server's is 1048576"),
    (INFO, GOOD, "transmission flags"),
    (RO, BAD, "its first MiB differs"),
    (RO, None, "its first MiB was not read"),
])
def test_a_replica_differing_in_anything_is_not_one(info: ExportInfo, fp: bytes | None,
                                                    why: str) -> None:
    assert why in replica_mismatch(RO, GOOD, info, fp)


# --------------------------------------------------------------------------- the core


def test_a_differing_replica_is_refused_named_and_the_requests_keep_waiting(
        caplog: pytest.LogCaptureFixture) -> None:
    core = replica_core()
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    with caplog.at_level(logging.ERROR, logger="appliance.relay.core"):
        actions = core.handle(offer(B, BAD), 1.5)
    assert [type(a) for a in actions] == [RefuseServer, Reconnect]
    assert actions[1] == Reconnect(0.5)
    assert answers(actions) == []
    assert core.state is RelayState.OUTAGE and core.pending.keys() == {1}
    assert not core.connected
    assert any(B in r.getMessage() and "first MiB differs" in r.getMessage()
               for r in caplog.records), caplog.text


def test_refusals_back_off_with_the_shared_policy_then_a_good_replica_gets_the_replay() -> None:
    core, srv = replica_core(), Server()
    core.handle(read(1, offset=8192), 0.0)
    core.handle(read(2), 0.0)
    srv.requests(core)
    lose(core, 1.0)
    delays = [next(a.delay for a in core.handle(offer(B, BAD), t) if isinstance(a, Reconnect))
              for t in (1.1, 1.7, 2.8, 5.0, 9.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]  # initial * 2**n, capped at maximum
    assert core.handle(offer(C), 13.0)[0] == AcceptServer()
    srv = Server()  # the replica's end of the new connection
    replayed = srv.requests(core)
    assert [(r.cookie, r.offset) for r in replayed] == [(1, 8192), (2, 0)]
    assert core.stats.replayed == 2 and core.state is RelayState.CONNECTED
    actions = core.handle(srv.reply(1, data=b"x" * 4096), 13.1)
    assert actions == [Answer(1, 0, b"x" * 4096)]
    assert core.refused == 0
    assert core.stats.errors == 0 and core.stats.outage_log == [pytest.approx(12.0)]


def test_a_replica_of_another_size_is_refused_without_failing_requests() -> None:
    core = replica_core()
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    bigger = ExportInfo(name="", size=2 * SIZE, flags=RO.flags)
    actions = core.handle(offer(B, GOOD, bigger), 2.0)
    assert [type(a) for a in actions] == [RefuseServer, Reconnect]
    assert core.state is RelayState.OUTAGE and core.pending.keys() == {1}


def test_a_writable_replica_of_a_read_only_export_is_refused() -> None:
    core = replica_core()
    lose(core, 1.0)
    actions = core.handle(offer(B, GOOD, INFO), 2.0)
    assert isinstance(actions[0], RefuseServer) and "flags" in actions[0].why
    assert not core.connected


def test_the_outage_deadline_still_fails_requests_while_replicas_are_refused() -> None:
    core = replica_core(deadline=5.0)
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    core.handle(offer(B, BAD), 2.0)
    assert answers(core.handle(Tick(), 5.9)) == []
    assert answers(core.handle(Tick(), 6.0)) == [(1, errno.EIO)]
    assert core.state is RelayState.FAILING
    # Still refusing differing replicas while FAILING; a good one ends the outage.
    assert isinstance(core.handle(offer(B, BAD), 7.0)[0], RefuseServer)
    assert core.handle(offer(A), 8.0) == [AcceptServer()]
    assert core.state is RelayState.CONNECTED


def test_without_a_fingerprint_the_single_server_rules_are_unchanged() -> None:
    core = RelayCore(INFO, ReconnectPolicy(), now=0.0)
    lose(core, 1.0)
    # One server that came back read-only is accepted (writes then fail one by one) ...
    assert core.handle(Reconnected(RO), 2.0) == [AcceptServer()]
    lose(core, 3.0)
    # ... and the fingerprint of the offer is not looked at.
    assert core.handle(Reconnected(RO, fingerprint=BAD), 4.0) == [AcceptServer()]
