"""A network cut between the relay and a real qemu-nbd (TLS-PSK), in network namespaces.

Two namespaces created here, ``client`` and ``server``, joined by a veth pair
(10.199.0.1/30 -- 10.199.0.2/30, addresses that exist only inside them).  The cut is a
netem qdisc dropping 100 % on both ends when the kernel has sch_netem, else the server
end of the veth set down (the client end loses carrier; TCP sees silence either way).
Two qemu-nbd servers run in the server namespace; two relays run in this process but
make their sockets inside the client namespace (the connector enters it with setns, for
the calling thread only).  Both relays carry a random 4 KiB read/write
workload when the link becomes a blackhole for ``CUT`` seconds:

* relay A's reconnect deadline is longer than the cut: the kernel side sees no error at
  all, and afterwards the image file equals the model of the disk;
* relay B's deadline is shorter: requests fail with EIO -- not before the deadline -- and
  the relay recovers when the link comes back; every block not hit by a failed write
  still matches the model.

Needs root (``ip netns``, ``tc``); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.nbd.uri import parse_uri
from appliance.relay import ReconnectPolicy, Upstream, uri_connector
from tests import servers
from tests.faults import rig
from tests.figures import figure

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.interop]

CUT = 30.0           # seconds of blackhole
IO_TIMEOUT = 3.0     # relay: no byte from the server for this long = connection dead
SIZE = 8 << 20
CLIENT_IP, SERVER_IP = "10.199.0.1", "10.199.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _tc(ns: str, dev: str, verb: str, *netem: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", verb, "dev", dev, "root",
                    "netem", *netem], check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str, str, str, bool]]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("needs root with ip and tc (iproute2)")
    tag = f"{os.getpid() % 100000}"
    cns, sns = f"aplfc{tag}", f"aplfs{tag}"
    cdev, sdev = f"aplc{tag}", f"apls{tag}"
    made: list[str] = []
    try:
        try:
            for ns in (cns, sns):
                _ip("netns", "add", ns)
                made.append(ns)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc.stderr!r}")
        _ip("link", "add", cdev, "netns", cns, "type", "veth", "peer", "name", sdev,
            "netns", sns)
        for ns, dev, addr in ((cns, cdev, CLIENT_IP), (sns, sdev, SERVER_IP)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        try:
            for ns, dev in ((cns, cdev), (sns, sdev)):
                _tc(ns, dev, "add", "delay", "1ms")
            netem = True
        except subprocess.CalledProcessError:  # no sch_netem in this kernel
            netem = False
        yield cns, sns, cdev, sdev, netem
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def set_blackhole(net: tuple[str, str, str, str, bool], on: bool) -> None:
    cns, sns, cdev, sdev, netem = net
    if netem:
        args = ("loss", "100%") if on else ("delay", "1ms")
        _tc(cns, cdev, "change", *args)
        _tc(sns, sdev, "change", *args)
    else:
        _ip("-n", sns, "link", "set", sdev, "down" if on else "up")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with this *thread* in network namespace ``name``."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            yield
        finally:
            os.setns(home, os.CLONE_NEWNET)
    finally:
        os.close(home)
        os.close(target)


def qemu_nbd_in(ns: str, image: Path, port: int, psk: Path, tmp: Path) -> servers.NBDServer:
    tmp.mkdir(parents=True, exist_ok=True)
    argv = ["ip", "netns", "exec", ns, servers.require("qemu-nbd"), "-f", "raw", "-t",
            "-e", "8", "-x", "", "--pid-file", str(tmp / "qemu-nbd.pid"),
            "-b", SERVER_IP, "-p", str(port),
            "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={psk.parent}",
            "--tls-creds", "tls0", str(image)]
    srv = servers.NBDServer("qemu-nbd", argv, tmp / "qemu-nbd.pid", tmp / "qemu-nbd.log",
                            port=port, psk_file=psk)
    return srv.start()  # `ip netns exec` execs qemu-nbd: the PID we hold is the server's


def connector_in(ns: str, uri: str, policy: ReconnectPolicy):
    inner = uri_connector(parse_uri(uri), timeout=policy.connect_timeout)

    def connect() -> Upstream:
        with in_netns(ns):
            return inner()

    return connect


def test_blackhole_shorter_and_longer_than_the_deadline(tmp_path: Path) -> None:
    with namespaces() as net:
        sns = net[1]
        psk = servers.make_psk(tmp_path / "psk")
        images = {k: tmp_path / f"{k}.img" for k in "AB"}
        models = {k: rig.Model(rig.random_image(images[k], SIZE, seed=ord(k))) for k in "AB"}
        ports = {"A": 10809, "B": 10810}
        deadlines = {"A": CUT + 20.0, "B": 8.0}
        srvs = {k: qemu_nbd_in(sns, images[k], ports[k], psk, tmp_path / k) for k in "AB"}
        try:
            _run(net, psk, images, models, ports, deadlines)
        finally:
            for s in srvs.values():
                s.stop()


def _run(net, psk, images, models, ports, deadlines) -> None:
    cns = net[0]
    stats: dict[str, rig.IOStats] = {}
    relays = {}
    stop_io = threading.Event()
    t_cut: list[float] = []
    errors: list[BaseException] = []

    def workload(k: str, ks) -> None:
        try:
            ks.sock.settimeout(CUT + 30.0)  # relay A's kernel side waits out the whole cut
            # a short pause per completion batch: relay B fails fast during the cut and
            # would otherwise spin a core that relay A and the servers need
            stats[k] = rig.mixed_io(ks, models[k], depth=16, seconds=CUT + 60, seed=ord(k),
                                    until=stop_io.is_set, tick=lambda _s: time.sleep(0.002))
        except BaseException as exc:  # reported below
            errors.append(exc)

    with contextlib.ExitStack() as stack:
        for k in "AB":
            policy = ReconnectPolicy(initial=0.1, maximum=1.0, deadline=deadlines[k],
                                     connect_timeout=2.0, io_timeout=IO_TIMEOUT)
            uri = f"nbds://alice@{SERVER_IP}:{ports[k]}/?tls-psk-file={psk}"
            relays[k] = stack.enter_context(
                rig.relay_running(connector_in(cns, uri, policy), policy))
        threads = [threading.Thread(target=workload, args=(k, relays[k].kernel), daemon=True)
                   for k in "AB"]
        for t in threads:
            t.start()
        time.sleep(3.0)
        t_cut.append(time.monotonic())
        set_blackhole(net, True)
        try:
            time.sleep(CUT)
        finally:
            set_blackhole(net, False)
        t_up = time.monotonic()
        end = t_up + 30.0  # until both relays are back and a few seconds of traffic pass
        while time.monotonic() < end and not all(r.relay.connected for r in relays.values()):
            time.sleep(0.2)
        time.sleep(3.0)
        stop_io.set()
        for t in threads:
            t.join(90.0)
        assert not errors, f"workload failed: {errors!r}"
        back = {k: r.relay.connected for k, r in relays.items()}
        assert all(back.values()), f"relays not back after the cut: {back}"
        data = {}
        for k in "AB":
            assert rig.flush(relays[k].kernel) == 0
            data[k] = rig.read_all(relays[k].kernel, SIZE)
        rstats = {k: relays[k].relay.stats for k in "AB"}

    a, b = stats["A"], stats["B"]
    # A: outage shorter than its deadline -> nothing visible.
    assert a.error_count == 0, f"relay A (deadline {deadlines['A']}s) gave errors: {a.errors}"
    assert a.mismatches == [] and b.mismatches == []
    assert rstats["A"].outages >= 1
    assert hashlib.sha256(data["A"]).hexdigest() == models["A"].sha256()
    assert hashlib.sha256(images["A"].read_bytes()).hexdigest() == models["A"].sha256(), \
        "image A differs from the model after the outage (a stale write landed?)"
    # B: outage longer than its deadline -> EIO, never before the deadline, then recovery.
    assert set(b.errors) == {errno.EIO}, b.errors
    first_error = min(t for t, _, _ in b.error_log)
    b_t0 = t_cut[0] - b.started  # the cut on the workload's clock
    assert first_error - b_t0 >= deadlines["B"] - 0.5, (
        f"EIO {first_error - b_t0:.1f}s after the cut, before the {deadlines['B']}s deadline")
    assert first_error - b_t0 <= deadlines["B"] + IO_TIMEOUT + 5.0
    last_error = max(t for t, _, _ in b.error_log)
    assert last_error - b_t0 <= CUT + 5.0, "EIO long after the link came back"
    disk_b = images["B"].read_bytes()
    for blk in range(models["B"].blocks):
        sl = slice(blk * rig.BLOCK, (blk + 1) * rig.BLOCK)
        assert models["B"].matches(blk, data["B"][sl]), f"B block {blk} (read back)"
        assert models["B"].matches(blk, disk_b[sl]), f"B block {blk} (file)"
    how = "netem loss 100%" if net[4] else "veth link down"
    figure(f"faults: {CUT:.0f} s network blackhole ({how}, netns) under 16 in-flight "
           f"4 KiB r/w: deadline {deadlines['A']:.0f} s -> {a.error_count} errors in "
           f"{a.ops} requests, outage survived ({max(rstats['A'].outage_log):.1f} s), "
           f"{SIZE >> 20} MiB SHA-256 identical; deadline {deadlines['B']:.0f} s -> "
           f"{b.error_count} EIO (first {first_error - b_t0:.1f} s after the cut), "
           f"recovered, {SIZE >> 20} MiB verified")



SHORT_CUT = 8.0


def test_short_cut_leaves_no_stale_write_behind(tmp_path: Path) -> None:
    """A cut a little longer than the relay's I/O timeout, then heavy rewriting.

    The relay gives up on the silent connection after IO_TIMEOUT and replays its writes on
    a new one.  Whatever the old connection still had queued must never reach the server
    later (its TCP retransmits once the link is back) and overwrite newer data.
    """
    with namespaces() as net:
        psk = servers.make_psk(tmp_path / "psk")
        image = tmp_path / "disk.img"
        model = rig.Model(rig.random_image(image, 1 << 20, seed=9))  # 256 blocks: rewrites
        srv = qemu_nbd_in(net[1], image, 10811, psk, tmp_path / "srv")
        try:
            policy = ReconnectPolicy(initial=0.1, maximum=0.5, deadline=None,
                                     connect_timeout=2.0, io_timeout=IO_TIMEOUT)
            uri = f"nbds://alice@{SERVER_IP}:10811/?tls-psk-file={psk}"
            stop_io = threading.Event()
            out: list[rig.IOStats] = []
            errors: list[BaseException] = []
            with rig.relay_running(connector_in(net[0], uri, policy), policy) as run:
                run.kernel.sock.settimeout(SHORT_CUT + 30.0)

                def workload() -> None:
                    try:
                        out.append(rig.mixed_io(run.kernel, model, depth=16, seconds=120,
                                                write_share=0.8, seed=4, until=stop_io.is_set,
                                                tick=lambda _s: time.sleep(0.001)))
                    except BaseException as exc:  # reported below
                        errors.append(exc)

                t = threading.Thread(target=workload, daemon=True)
                t.start()
                time.sleep(2.0)
                set_blackhole(net, True)
                try:
                    time.sleep(SHORT_CUT)
                finally:
                    set_blackhole(net, False)
                time.sleep(15.0)  # old retransmissions, if any, arrive in this window
                stop_io.set()
                t.join(60.0)
                assert not errors, errors
                assert rig.flush(run.kernel) == 0
                data = rig.read_all(run.kernel, 1 << 20)
                rstats = run.relay.stats
        finally:
            srv.stop()
    stats = out[0]
    assert stats.error_count == 0, stats.errors
    assert rstats.outages >= 1, "the cut was not noticed"
    assert stats.mismatches == [], f"reads returned old data for blocks {stats.mismatches[:8]}"
    assert hashlib.sha256(data).hexdigest() == model.sha256(), "read-back differs from model"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == model.sha256(), \
        "image differs from the model: a write from the abandoned connection landed late"
    figure(f"faults: {SHORT_CUT:.0f} s cut (> {IO_TIMEOUT:.0f} s I/O timeout) then 15 s of "
           f"rewrites on 256 blocks: {stats.ops} requests, 0 errors, "
           f"{rstats.outages} outage(s), {rstats.replayed} replayed, SHA-256 identical")
