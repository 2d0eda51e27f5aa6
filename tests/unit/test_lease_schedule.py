"""The lease renewal schedule: T1 at half the lease, retries at half the time left."""

from __future__ import annotations

from appliance.net import lease


def test_renewal_at_half_the_lease() -> None:
    assert lease.renew_after(120) == 60
    assert lease.renew_after(86400) == 43200
    assert lease.renew_after(None) == lease.DEFAULT_LEASE_S / 2
    assert lease.renew_after(2) == lease.MIN_RETRY_S


def test_retry_at_half_the_time_left_but_not_in_a_busy_loop() -> None:
    assert lease.retry_after(60) == 30
    assert lease.retry_after(4) == lease.MIN_RETRY_S
    assert lease.retry_after(-10) == lease.MIN_RETRY_S
