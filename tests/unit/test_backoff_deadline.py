"""The one backoff policy and the one Deadline, and the policies built on the backoff."""

from __future__ import annotations

import pytest

from appliance.backoff import Backoff
from appliance.deadline import Deadline
from appliance.relay.policy import ReconnectPolicy
from appliance.transport import ConnectPolicy


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    b = Backoff(0.5, 30.0)
    assert [b.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)


def test_connect_reconnect_and_boot_share_one_schedule() -> None:
    connect = ConnectPolicy(backoff=0.5, max_backoff=30.0)
    reconnect = ReconnectPolicy(initial=0.5, maximum=30.0)
    b = Backoff(0.5, 30.0)
    assert all(connect.delay(n) == reconnect.delay(n) == b.delay(n) for n in range(40))


def test_connect_backoff_survives_a_huge_attempt_count() -> None:
    """Was: ConnectPolicy.delay computed ``backoff * 2**attempt`` uncapped, so attempt 1100
    raised OverflowError (int too large to convert to float) instead of the cap."""
    assert ConnectPolicy(attempts=5000).delay(1100) == 5.0


def test_deadline_expiry_remaining_and_never() -> None:
    assert Deadline(0).expired and Deadline(0).remaining == 0.0
    later = Deadline(3600)
    assert not later.expired
    remaining = later.remaining
    assert remaining is not None and 3590 < remaining <= 3600
    assert 0 <= later.elapsed < 10
    never = Deadline(None)
    assert not never.expired and never.remaining is None
