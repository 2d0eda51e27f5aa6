"""Faults of a real server behind the relay, seen from the kernel's side of the socketpair.

* nbdkit's error filter at 1 % and 10 %: exactly the hit requests fail with EIO, every
  other read returns the model's bytes, the relay stays connected (an error reply is not
  an outage);
* nbdkit's delay filter: slow replies, no errors, latency reported;
* the server killed with SIGKILL and restarted (three times) while 64 random 4 KiB
  reads/writes are in flight: the kernel side sees no error and, afterwards, the image
  file's SHA-256 equals the model's.
"""

from __future__ import annotations

import errno
import hashlib
import threading
import time
from pathlib import Path

import pytest

from appliance.nbd.uri import parse_uri
from appliance.relay import ReconnectPolicy, uri_connector
from tests.faults import rig
from tests.figures import figure

pytestmark = pytest.mark.interop

SIZE = 8 << 20
POLICY = ReconnectPolicy(initial=0.05, maximum=0.5, connect_timeout=5.0)


def _connector(uri: str):
    return uri_connector(parse_uri(uri), timeout=POLICY.connect_timeout)


@pytest.mark.parametrize("rate", [1, 10])
def test_error_filter_fails_only_the_hit_requests(rate: int, nbd_servers, psk_file: Path,
                                                  tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    model = rig.Model(rig.random_image(image, SIZE))
    srv = nbd_servers.nbdkit("file", str(image), "error=EIO", f"error-rate={rate}%",
                             psk_file=psk_file, filters=("error",))
    ops = 3000
    with rig.relay_running(_connector(srv.uri()), POLICY) as run:
        stats = rig.mixed_io(run.kernel, model, depth=64, ops=ops)
        assert rig.flush(run.kernel) == 0
        data = rig.read_all(run.kernel, SIZE)
        outages = run.relay.stats.outages
        connected = run.relay.connected
    assert set(stats.errors) <= {errno.EIO}, stats.errors
    expected = ops * rate / 100
    assert 0 < stats.error_count < 3 * expected + 10, (stats.error_count, expected)
    assert stats.mismatches == [], f"reads returned wrong data for blocks {stats.mismatches[:8]}"
    assert outages == 0 and connected, "an error reply must not be treated as an outage"
    for b in range(model.blocks):
        assert model.matches(b, data[b * rig.BLOCK:(b + 1) * rig.BLOCK]), f"block {b}"
    on_disk = image.read_bytes()
    for b in range(model.blocks):
        assert model.matches(b, on_disk[b * rig.BLOCK:(b + 1) * rig.BLOCK]), f"file block {b}"
    figure(f"faults: nbdkit error filter {rate}%: {stats.ops} requests, {stats.error_count} "
           f"EIO ({100 * stats.error_count / stats.ops:.1f}%), 0 other errors, "
           f"{len(stats.mismatches)} wrong reads, {outages} outages, "
           f"{SIZE >> 20} MiB verified")


def test_delay_filter_is_slow_but_correct(nbd_servers, psk_file: Path, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    model = rig.Model(rig.random_image(image, SIZE))
    srv = nbd_servers.nbdkit("file", str(image), "delay-read=40ms", "delay-write=60ms",
                             psk_file=psk_file, filters=("delay",))
    with rig.relay_running(_connector(srv.uri()), POLICY) as run:
        stats = rig.mixed_io(run.kernel, model, depth=64, ops=1500)
        assert rig.flush(run.kernel) == 0
        data = rig.read_all(run.kernel, SIZE)
        outages = run.relay.stats.outages
    assert stats.error_count == 0, stats.errors
    assert stats.mismatches == []
    assert outages == 0
    assert hashlib.sha256(data).hexdigest() == model.sha256()
    assert stats.percentile(50) >= 0.04  # the delay really applied
    figure(f"faults: nbdkit delay filter (read 40 ms, write 60 ms), 64 in flight: "
           f"{stats.ops} requests, {stats.ops / stats.elapsed:.0f} IOPS, "
           f"p50 {stats.percentile(50) * 1000:.0f} ms, p99 {stats.percentile(99) * 1000:.0f} ms, "
           f"0 errors")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit"])
def test_kill_9_and_restart_during_writes(kind: str, nbd_servers, psk_file: Path,
                                          tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    model = rig.Model(rig.random_image(image, SIZE))
    if kind == "qemu-nbd":
        srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    else:
        srv = nbd_servers.nbdkit("file", str(image), psk_file=psk_file)
    kills = 3
    kills_done = threading.Event()
    finished = threading.Event()
    done_kills: list[float] = []
    killer_errors: list[BaseException] = []

    def killer() -> None:
        try:
            for _ in range(kills):
                time.sleep(1.5)
                srv.restart(down_for=0.5)  # SIGKILL, 0.5 s down, start on the same port
                done_kills.append(time.monotonic())
            time.sleep(1.0)  # traffic after the last restart too
        except BaseException as exc:  # reported by the test
            killer_errors.append(exc)
        kills_done.set()
        # nbdkit dies (SIGTERM) when the *thread* that started it exits (parent-death
        # signal), so the thread that restarted it lives until the test is over.
        finished.wait(120.0)

    t = threading.Thread(target=killer, name="killer", daemon=True)
    try:
        with rig.relay_running(_connector(srv.uri()), POLICY) as run:
            t.start()
            stats = rig.mixed_io(run.kernel, model, depth=64, seconds=60.0, write_share=0.7,
                                 until=kills_done.is_set)
            assert not killer_errors, f"restarting the server failed: {killer_errors!r}"
            assert rig.flush(run.kernel) == 0
            data = rig.read_all(run.kernel, SIZE)
            relay_stats = run.relay.stats
    finally:
        kills_done.wait(30.0)
        srv.stop()  # stop it from here, before its starter thread goes
        finished.set()
        t.join(10.0)
    assert len(done_kills) == kills
    assert stats.error_count == 0, f"the kernel saw errors: {stats.errors} {stats.error_log[:5]}"
    assert stats.mismatches == []
    assert relay_stats.outages >= kills
    assert hashlib.sha256(data).hexdigest() == model.sha256()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == model.sha256(), \
        "the image file differs from the model after the restarts"
    figure(f"faults: {kind} kill -9 + restart x{kills} under 64 in-flight 4 KiB r/w: "
           f"{stats.ops} requests ({stats.writes} writes), 0 errors, "
           f"{relay_stats.outages} outages survived, {relay_stats.replayed} replayed, "
           f"longest outage {max(relay_stats.outage_log):.2f} s, "
           f"{SIZE >> 20} MiB verified by SHA-256 (image file and relay read-back)")
