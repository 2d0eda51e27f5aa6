"""Failover between read-only replicas, against real qemu-nbd servers over TLS-PSK.

Each server serves its own copy of one image read-only; the relay gets them all as a
:class:`~appliance.relay.replicas.ReplicaSet` and is driven from the kernel's side of a
socketpair.  The server in use is killed with SIGKILL while 64 random 4 KiB reads are in
flight:

* two good replicas: the relay moves to the other one and replays; the kernel side sees
  no error, every read matches the image, and a full read-back's SHA-256 equals the
  image's;
* a replica whose first MiB differs sits between them: it is refused with a log line
  naming it, and the good one after it is used;
* only a differing replica is left: it is refused again and again, the requests wait
  (no error), and when the killed server comes back the relay takes it.

The relay in its own process (``python -m appliance.relay``, as on the board) does the
same with the replicas on its command line.  And several URIs with a writable export are
refused before the relay starts.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from appliance.config import BootConfig
from appliance.errors import UsageError
from appliance.host.servers import NBDServer
from appliance.nbd.uri import parse_uri
from appliance.relay import ReconnectPolicy
from appliance.relay.replicas import ReplicaSet
from tests.faults import rig
from tests.figures import figure
from tests.relay.harness import RelayRun

pytestmark = pytest.mark.interop

SIZE = 16 << 20
POLICY = ReconnectPolicy(initial=0.05, maximum=0.5, connect_timeout=5.0)
KILL_AFTER = 1.0      # seconds of load before the kill
LOAD_AFTER = 2.0      # seconds of load on the replica after the failover


@pytest.fixture
def golden(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "golden.img"
    return path, rig.random_image(path, SIZE, seed=16)


def _replica(nbd_servers, psk_file: Path, golden: Path, name: str,
             change: Callable[[bytearray], None] | None = None,
             read_only: bool = True) -> NBDServer:
    """A qemu-nbd serving a copy of ``golden`` (``change``d, for a bad replica)."""
    copy = golden.parent / f"{name}.img"
    shutil.copyfile(golden, copy)
    if change is not None:
        data = bytearray(copy.read_bytes())
        change(data)
        copy.write_bytes(data)
    return nbd_servers.qemu_nbd(copy, psk_file=psk_file, read_only=read_only, export="golden")


def _flip_in_first_mib(data: bytearray) -> None:
    data[1000] ^= 0xFF  # one byte of the "partition table"


def _replicas(*servers: NBDServer) -> ReplicaSet:
    return ReplicaSet([parse_uri(s.uri()) for s in servers], timeout=POLICY.connect_timeout)


@pytest.fixture
def keeper() -> Iterator[Callable[[Callable[[], None]], threading.Thread]]:
    """Run a side job (kill, restart) in a thread that lives until the test ends: qemu-nbd
    dies with the thread that started it (parent-death signal)."""
    done = threading.Event()
    threads: list[threading.Thread] = []

    def start(job: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            job()
            done.wait(120.0)
        t = threading.Thread(target=body, name="side-job", daemon=True)
        t.start()
        threads.append(t)
        return t

    yield start
    done.set()
    for t in threads:
        t.join(10.0)


def _load_until_failover(run: RelayRun, model: rig.Model, kill: Callable[[], None],
                         after: float = LOAD_AFTER) -> tuple[rig.IOStats, float]:
    """Random reads, 64 in flight; ``kill`` after KILL_AFTER s; stop ``after`` s past the
    failover (the relay connected again).  Returns the stats and the kill's time."""
    killed: list[float] = []
    started = time.monotonic()

    def tick(_: rig.IOStats) -> None:
        if not killed and time.monotonic() - started >= KILL_AFTER:
            killed.append(time.monotonic())
            kill()

    def until() -> bool:
        back = run.relay.stats.outage_log
        return bool(killed) and bool(back) and time.monotonic() - killed[0] > after + back[0]

    stats = rig.mixed_io(run.kernel, model, depth=64, seconds=60.0, write_share=0.0,
                         until=until, tick=tick)
    assert killed, "the load ended before the kill"
    return stats, killed[0]


def test_kill_9_of_the_replica_in_use_under_load_fails_over_with_no_error(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes]) -> None:
    path, data = golden
    a = _replica(nbd_servers, psk_file, path, "a")
    b = _replica(nbd_servers, psk_file, path, "b")
    model = rig.Model(data)
    replicas = _replicas(a, b)
    with rig.relay_running(replicas, POLICY) as run:
        assert replicas.in_use == parse_uri(a.uri())
        stats, _ = _load_until_failover(run, model, a.kill)
        back = rig.read_all(run.kernel, SIZE)
        relay_stats = run.relay.stats
        in_use = replicas.in_use
    assert stats.error_count == 0, f"the kernel saw errors: {stats.errors} {stats.error_log[:5]}"
    assert stats.mismatches == [], f"wrong data for blocks {stats.mismatches[:8]}"
    assert relay_stats.outages == 1 and relay_stats.replayed >= 1, relay_stats
    assert in_use == parse_uri(b.uri()), "the relay is not on the second replica"
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    figure(f"failover: qemu-nbd replica in use killed (-9) under 64 in-flight 4 KiB reads: "
           f"{stats.ops} requests, {stats.error_count} errors, {relay_stats.replayed} "
           f"replayed on the second replica, outage {relay_stats.outage_log[0] * 1000:.0f} ms, "
           f"p99 {stats.percentile(99) * 1000:.0f} ms, {SIZE >> 20} MiB verified by SHA-256")


def test_a_replica_whose_first_mib_differs_is_refused_and_the_next_one_used(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes],
        caplog: pytest.LogCaptureFixture) -> None:
    path, data = golden
    a = _replica(nbd_servers, psk_file, path, "a")
    bad = _replica(nbd_servers, psk_file, path, "bad", _flip_in_first_mib)
    b = _replica(nbd_servers, psk_file, path, "b")
    model = rig.Model(data)
    replicas = _replicas(a, bad, b)
    with caplog.at_level(logging.ERROR, logger="appliance.relay.core"), \
            rig.relay_running(replicas, POLICY) as run:
        stats, _ = _load_until_failover(run, model, a.kill, after=0.5)
        back = rig.read_all(run.kernel, SIZE)
        relay_stats = run.relay.stats
        in_use = replicas.in_use
    refusals = [r.getMessage() for r in caplog.records if "refusing replica" in r.getMessage()]
    assert refusals and all(bad.uri() in m and "first MiB differs" in m for m in refusals), \
        caplog.text
    assert stats.error_count == 0 and stats.mismatches == [], (stats.errors, stats.mismatches)
    assert in_use == parse_uri(b.uri())
    assert relay_stats.outages == 1
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    figure(f"failover: a replica with a different first MiB refused ({len(refusals)} log "
           f"line(s) naming it), the next good one used: {stats.ops} reads, 0 errors, "
           f"outage {relay_stats.outage_log[0] * 1000:.0f} ms")


def test_with_only_a_differing_replica_left_the_requests_wait_for_a_good_one(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes], keeper,
        caplog: pytest.LogCaptureFixture) -> None:
    path, data = golden
    a = _replica(nbd_servers, psk_file, path, "a")
    bad = _replica(nbd_servers, psk_file, path, "bad", _flip_in_first_mib)
    model = rig.Model(data)
    replicas = _replicas(a, bad)
    down_for = 1.5

    def kill_then_restart() -> None:
        a.kill()
        time.sleep(down_for)  # the relay keeps refusing the bad replica meanwhile
        a.start()

    with caplog.at_level(logging.ERROR, logger="appliance.relay.core"), \
            rig.relay_running(replicas, POLICY) as run:
        stats, _ = _load_until_failover(run, model, lambda: keeper(kill_then_restart),
                                        after=0.5)
        back = rig.read_all(run.kernel, SIZE)
        relay_stats = run.relay.stats
        in_use = replicas.in_use
    refusals = [r for r in caplog.records if "refusing replica" in r.getMessage()]
    assert len(refusals) >= 2, caplog.text  # refused again on each round, with backoff
    assert stats.error_count == 0 and stats.mismatches == [], (stats.errors, stats.mismatches)
    assert in_use == parse_uri(a.uri()), "the relay did not return to the good replica"
    assert relay_stats.outage_log[0] >= down_for
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    figure(f"failover: only a differing replica left: refused {len(refusals)} times while "
           f"the good one was down {down_for} s; {stats.ops} reads, 0 errors, "
           f"outage {relay_stats.outage_log[0]:.2f} s")


def test_several_uris_with_a_writable_export_are_refused(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes]) -> None:
    path, _ = golden
    a = _replica(nbd_servers, psk_file, path, "a", read_only=False)
    b = _replica(nbd_servers, psk_file, path, "b")
    with pytest.raises(UsageError, match="several replicas need a read-only export"):
        _replicas(a, b)()


def test_the_relay_process_fails_over_across_the_uris_it_is_given(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes], tmp_path: Path) -> None:
    """``python -m appliance.relay --fd N A BAD B``: the relay in its own process, as on the
    board, with the replicas on its command line; A killed under load."""
    from appliance.client import export_info
    from tests.relay.kernelside import KernelSide

    path, data = golden
    a = _replica(nbd_servers, psk_file, path, "a")
    bad = _replica(nbd_servers, psk_file, path, "bad", _flip_in_first_mib)
    b = _replica(nbd_servers, psk_file, path, "b")
    info = export_info(a.uri())
    relay_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log = tmp_path / "relay.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.relay", "--fd", str(relay_end.fileno()),
             "--backoff", "0.05", "--max-backoff", "0.5", a.uri(), bad.uri(), b.uri()],
            pass_fds=(relay_end.fileno(),), stdin=subprocess.DEVNULL, stderr=err)
    relay_end.close()
    try:
        ks = KernelSide(kernel_end, info.size, info.flags)
        started = time.monotonic()
        killed: list[float] = []

        def tick(_: rig.IOStats) -> None:
            if not killed and time.monotonic() - started >= KILL_AFTER:
                killed.append(time.monotonic())
                a.kill()

        stats = rig.mixed_io(ks, rig.Model(data), depth=64, seconds=KILL_AFTER + 3.0,
                             write_share=0.0, tick=tick)
        back = rig.read_all(ks, SIZE)
        ks.disconnect()
        assert proc.wait(15.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
        kernel_end.close()
    text = log.read_text()
    assert killed and stats.error_count == 0 and stats.mismatches == [], (stats.errors, text)
    assert f"refusing replica {bad.uri()}: its first MiB differs" in text, text
    assert "server back after" in text, text
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_boots_server_wait_takes_the_first_replica_that_answers(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes], tmp_path: Path) -> None:
    """The boot's 'server' step with nbd.uri = a dead server, then a live replica."""
    import io

    from appliance.boot.sequence import wait_for_server, write_key
    from appliance.config import Config
    from appliance.host.servers import free_port

    path, _ = golden
    live = _replica(nbd_servers, psk_file, path, "b")
    port = free_port()  # nothing listens there
    dead = f"nbds://alice@127.0.0.1:{port}/golden"
    key = psk_file.read_text().split(":", 1)[1].strip()
    alive = f"nbds://alice@127.0.0.1:{live.port}/golden"  # the key comes from the config
    boot = (Config().set("nbd.uri", f"{dead} {alive}").set("psk.identity", "alice")
            .set("psk.key", key).set("root.mode", "overlay").boot_config())
    out = io.StringIO()
    found = wait_for_server(write_key(boot, tmp_path / "run"), boot, out)
    assert found.description == f"golden, {SIZE} bytes" and found.upstream is None
    assert f"127.0.0.1:{port}" in out.getvalue(), out.getvalue()
    assert out.getvalue().rstrip().endswith("; retrying")


def _one_server_boot(nbd_servers, psk_file: Path, golden: Path) -> tuple[str, BootConfig]:
    """One TLS-PSK replica serving ``golden``: its URI and the board config naming it."""
    from appliance.config import Config

    live = _replica(nbd_servers, psk_file, golden, "only")
    key = psk_file.read_text().split(":", 1)[1].strip()
    uri = f"nbds://alice@127.0.0.1:{live.port}/golden"
    return uri, (Config().set("nbd.uri", uri).set("psk.identity", "alice")
                 .set("psk.key", key).boot_config())


def test_the_boots_server_wait_keeps_the_connection_for_the_relay(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes], tmp_path: Path) -> None:
    """With one URI the server step negotiates as the relay does (NBD_OPT_GO over TLS-PSK)
    and hands that connection on: it is in the transmission phase and reads the export."""
    import io

    from appliance.boot.sequence import wait_for_server, write_key
    from appliance.client.connection import Connection

    path, data = golden
    uri, boot = _one_server_boot(nbd_servers, psk_file, path)
    found = wait_for_server(write_key(boot, tmp_path / "run"), boot, io.StringIO(), keep=True)
    assert found.description == f"golden, {SIZE} bytes" and found.upstream is not None
    up = found.upstream
    conn = Connection(up.sock, up.info, parse_uri(uri), up.trailing)
    try:
        assert conn.pread(SIZE - 4096, 4096) == data[-4096:]
    finally:
        conn.close()


def test_a_ktls_session_the_kernel_refuses_is_said_once_and_the_relay_keeps_the_connection(
        nbd_servers, psk_file: Path, golden: tuple[Path, bytes], tmp_path: Path) -> None:
    """The kTLS probe of the server step, when the kernel does not take over the negotiated
    cipher: the console says why, once, and the step keeps a relay connection instead.
    This host's kernel has no ``tls``, so the opener here raises what the board's kernel
    answers (:class:`~appliance.errors.OffloadRefused`); the server is real."""
    import io

    from appliance.boot.sequence import wait_for_server, write_key
    from appliance.errors import OffloadRefused

    _, boot = _one_server_boot(nbd_servers, psk_file, golden[0])
    calls: list[int] = []

    def refused() -> NoReturn:
        calls.append(1)
        raise OffloadRefused("10.0.2.2:10809: the kernel did not take over TLS (TLSv1.3 "
                             "TLS_SM4_GCM_SHA256: ...)", "TLSv1.3 TLS_SM4_GCM_SHA256")

    out = io.StringIO()
    found = wait_for_server(write_key(boot, tmp_path / "run"), boot, out, keep=True,
                            ktls=refused)
    try:
        assert calls == [1]
        assert found.session is None and found.upstream is not None
        assert found.description == f"golden, {SIZE} bytes"
        lines = out.getvalue().splitlines()
        assert lines == ["nbdroot: kTLS path unavailable: 10.0.2.2:10809: the kernel did not "
                         "take over TLS (TLSv1.3 TLS_SM4_GCM_SHA256: ...); using the relay"]
    finally:
        if found.upstream is not None:
            found.upstream.sock.close()
