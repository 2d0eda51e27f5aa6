"""The kTLS supervisor's decisions: events in, actions out, no sockets, no sleeps.

Time is a number handed in; every test walks the core through an outage the way the
driver would and checks both the actions and the state it is left in.
"""

from __future__ import annotations

import pytest

from appliance.ktls.core import Connect, Discard, Export, Reconfigure, State, SupervisorCore
from appliance.relay.policy import ReconnectPolicy

EXPORT = Export(size=256 << 20, flags=0x4D)
POLICY = ReconnectPolicy(initial=0.5, maximum=4.0)


def core() -> SupervisorCore:
    return SupervisorCore(EXPORT, POLICY)


def test_a_dead_link_starts_an_attempt_at_once() -> None:
    c = core()
    assert c.state is State.ATTACHED and c.wakeup(0.0) is None
    assert c.link_dead(10.0) == [Connect()]
    assert c.state is State.CONNECTING
    assert c.counters.deaths == 1 and c.counters.attempts == 1


def test_a_second_report_of_the_same_death_changes_nothing() -> None:
    c = core()
    c.link_dead(10.0)
    assert c.link_dead(10.1) == []  # the socket's POLLHUP after the multicast, or back
    c.attempt_failed(10.5, "refused")
    assert c.link_dead(10.6) == []
    assert c.counters.deaths == 1 and c.counters.attempts == 1


def test_failed_attempts_back_off_by_the_one_policy_and_never_give_up() -> None:
    c = core()
    c.link_dead(0.0)
    now, waits = 0.0, []
    for _ in range(7):
        assert c.attempt_failed(now, "connection refused") == []
        assert c.state is State.WAITING
        wait = c.wakeup(now)
        assert wait is not None
        waits.append(wait)
        assert c.tick(now + wait - 0.01) == []  # not yet
        now += wait
        assert c.tick(now) == [Connect()]
        assert c.state is State.CONNECTING
    assert waits == pytest.approx([POLICY.delay(n) for n in range(7)])
    assert waits[-1] == POLICY.maximum
    assert c.counters.attempts == 8 and c.last_error == "connection refused"


def test_a_session_for_the_same_export_is_handed_over_and_the_outage_ends() -> None:
    c = core()
    c.link_dead(100.0)
    c.attempt_failed(100.2, "refused")
    now = 100.2 + (c.wakeup(100.2) or 0.0)
    assert c.tick(now) == [Connect()]
    assert c.session_ready(now + 0.3, EXPORT.size, EXPORT.flags) == [Reconfigure()]
    assert c.state is State.HANDING_OVER
    assert c.outage(now + 0.4) == pytest.approx(now + 0.4 - 100.0)
    assert c.handed_over(now + 0.4) == []
    assert c.state is State.ATTACHED and c.outage(now + 1) == 0.0
    assert c.counters.handovers == 1 and c.last_error == ""
    # The next death starts from the first backoff step again.
    c.link_dead(200.0)
    c.attempt_failed(200.0, "refused")
    assert c.wakeup(200.0) == POLICY.delay(0)


@pytest.mark.parametrize(("size", "flags"), [(EXPORT.size + 4096, EXPORT.flags),
                                             (EXPORT.size, EXPORT.flags | 0x2)])
def test_a_changed_export_is_refused_and_retried_after_the_longest_wait(
        size: int, flags: int) -> None:
    c = core()
    c.link_dead(0.0)
    actions = c.session_ready(1.0, size, flags)
    assert len(actions) == 1 and isinstance(actions[0], Discard)
    assert "export changed" in actions[0].reason
    assert c.state is State.WAITING and c.wakeup(1.0) == pytest.approx(POLICY.maximum)
    assert c.tick(1.0 + POLICY.maximum) == [Connect()]


def test_a_refused_handover_closes_the_session_and_tries_again() -> None:
    c = core()
    c.link_dead(0.0)
    c.session_ready(0.5, EXPORT.size, EXPORT.flags)
    actions = c.handover_refused(0.6, "nbd netlink reconfigure failed: EINVAL",
                                 nothing_dead=False)
    assert actions == [Discard("nbd netlink reconfigure failed: EINVAL")]
    assert c.state is State.WAITING and c.wakeup(0.6) == pytest.approx(POLICY.delay(0))
    assert c.counters.handovers == 0


def test_no_dead_socket_behind_a_report_keeps_the_kernels_socket() -> None:
    """ENOSPC from RECONFIGURE: the report was stale (its socket was already replaced)."""
    c = core()
    c.link_dead(0.0)
    c.session_ready(0.5, EXPORT.size, EXPORT.flags)
    actions = c.handover_refused(0.6, "ENOSPC", nothing_dead=True)
    assert len(actions) == 1 and isinstance(actions[0], Discard)
    assert c.state is State.ATTACHED and c.wakeup(0.7) is None
    assert c.counters.stale == 1 and c.counters.handovers == 0


def test_events_out_of_turn_are_ignored_or_discarded() -> None:
    c = core()
    assert c.attempt_failed(0.0, "late") == []
    assert c.handed_over(0.0) == []
    assert c.handover_refused(0.0, "late", nothing_dead=False) == []
    late = c.session_ready(0.0, EXPORT.size, EXPORT.flags)
    assert len(late) == 1 and isinstance(late[0], Discard)  # never two sockets at once
    assert c.tick(1e9) == []
    assert c.state is State.ATTACHED and c.counters.attempts == 0


def test_a_stopped_supervisor_does_nothing() -> None:
    c = core()
    c.stop()
    assert c.link_dead(0.0) == [] and c.tick(10.0) == [] and c.wakeup(0.0) is None


def test_a_report_while_the_kernels_socket_is_up_waits_for_the_hang_up() -> None:
    """NBD_CMD_LINK_DEAD about a socket already replaced: the current one is still up."""
    c = core()
    assert c.link_dead(5.0, confirmed=False) == []
    assert c.state is State.ATTACHED and c.counters.stale == 1 and c.counters.deaths == 0
    assert c.link_dead(5.1) == [Connect()]  # the real death hangs the socket up
