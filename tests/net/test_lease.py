"""Lease renewal against real dnsmasq on a 2-minute lease, in namespaces this test makes.

Three scenarios (renewed at T1; rebound by broadcast at T2; re-acquired after a lapse) run
at the same time, each in namespaces and with a dnsmasq of its own.

``appliance net up --dhcp`` configures eth0, then ``appliance net keep-lease --rounds 2``
starts the lease keeper exactly as the boot does (:func:`appliance.net.keeper.start`: a
forked process marked '@', DHCP over its own socket, state in RUN_DIR/lease.json), which
renews at T1 (60 s) twice, unicast (RENEWING).  dnsmasq's log must show the renewals for
the same address, its lease file's expiry must move forward and always lie ahead, eth0
must keep its address throughout (sampled every second), and the keeper must run with
'@' argv[0] and report its renewals in its state file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.figures import figure
from tests.net.conftest import Dnsmasq, Veth, dhcp_server, namespaces

pytestmark = pytest.mark.slow

LEASE_S = 120


def eth0_addresses(veth: Veth) -> list[str]:
    links = veth.client_json("addr", "show", "dev", "eth0")
    return [a["local"] for a in links[0]["addr_info"] if a["family"] == "inet"]


def lease_expiry(leases: Path) -> int | None:
    """The expiry (epoch seconds) of the one lease in dnsmasq's lease file."""
    text = leases.read_text() if leases.exists() else ""
    fields = text.split()
    return int(fields[0]) if fields else None


def start_keeper(veth: Veth, run_dir: Path,
                 rounds: int) -> tuple[subprocess.Popen[str], int, str]:
    """``appliance net keep-lease`` in the client namespace: (the CLI, the keeper's pid,
    the output up to its ready line)."""
    argv = ["ip", "netns", "exec", veth.client, sys.executable, "-m", "appliance", "net",
            "keep-lease", "--iface", "eth0", "--rounds", str(rounds), "--run-dir", str(run_dir)]
    cli = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert cli.stdout is not None
    out = ""
    for _ in range(10):  # the first lease, hygiene warnings, then the ready line
        line = cli.stdout.readline()
        out += line
        if started := re.search(r"lease keeper for .* \(pid (\d+)\)$", line.strip()):
            return cli, int(started.group(1)), out
    cli.kill()
    cli.wait(10)
    raise AssertionError(f"no lease keeper started: {out}")


def end(cli: subprocess.Popen[str], pid: int) -> None:
    """End the CLI and the keeper (our grandchild, in its own session) by PID."""
    if cli.poll() is None:
        cli.kill()
        cli.wait(10)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def renewed_before_expiry_and_never_lapses(
        veth: Veth, dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    """Two renewals at T1, unicast; the lease never lapses, eth0 keeps its address."""
    up = veth.run("net", "up", "--dhcp", "--root", str(veth.root))
    assert up.returncode == 0, up.stderr
    address = re.search(r"eth0: ([\d.]+)/", up.stdout)
    assert address, up.stdout
    ip = address.group(1)
    leases, run_dir = tmp_path / "leases", tmp_path / "run"
    keeper, pid, out = start_keeper(veth, run_dir, 2)
    expiries: set[int] = set()
    states: list[dict[str, object]] = []
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        assert argv0.startswith(b"@"), argv0  # spared by systemd's killing sprees
        deadline = time.monotonic() + 2 * LEASE_S / 2 + 60
        while keeper.poll() is None:
            assert time.monotonic() < deadline, "keep-lease did not finish two renewals"
            assert ip in eth0_addresses(veth)
            expiry = lease_expiry(leases)
            assert expiry is not None and expiry > time.time(), "the lease lapsed"
            expiries.add(expiry)
            states.append(json.loads((run_dir / "lease.json").read_text()))
            time.sleep(1.0)
        out += keeper.communicate(timeout=10)[0]
        final = lease_expiry(leases)  # the last renewal, which ended keep-lease
        assert final is not None and final > time.time(), "the lease lapsed"
        expiries.add(final)
    finally:
        end(keeper, pid)
    assert keeper.returncode == 0, out
    renewed = rf"lease of {re.escape(ip)}/\d+ renewed for {LEASE_S} s \(renewing, server "
    assert len(re.findall(renewed, out)) == 2, out  # at T1, unicast: no rebinding needed
    final_state = json.loads((run_dir / "lease.json").read_text())
    assert final_state["renewals"] == 2 and final_state["state"] == "bound"
    assert final_state["address"].startswith(ip + "/") and final_state["pid"] == pid
    assert {s["renewals"] for s in states} >= {0, 1}
    assert all(float(str(s["expires"])) > float(str(s["updated"])) for s in states)
    first = float(str(states[0]["updated"]))
    renewed_at = sorted({float(str(s["last_renewal"])) - first
                         for s in [*states, final_state] if s["last_renewal"]})
    figure(f"lease keeper, {LEASE_S} s dnsmasq lease: renewals at "
           f"{', '.join(f'{t:.1f}' for t in renewed_at)} s after the keeper started (T1 = "
           f"{LEASE_S // 2} s)")
    acks = re.findall(rf"DHCPACK\(srv0\) {re.escape(ip)} ", dnsmasq.text())
    assert len(acks) >= 4, dnsmasq.text()[-3000:]  # net up, keep-lease's first, 2 renewals
    assert len(expiries) >= 3 and max(expiries) - min(expiries) >= LEASE_S // 2 - 10
    assert ip in eth0_addresses(veth)


def an_unreachable_server_is_rebound_by_broadcast_at_t2(
        veth: Veth, dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    """Unicast to the server is made to go nowhere (a permanent neighbour entry giving the
    server's address a MAC nobody has, in the client's namespace): the renewal at T1 gets
    no answer, the keeper goes on rebinding at T2 by broadcast, which dnsmasq answers,
    before the lease expires."""
    up = veth.run("net", "up", "--dhcp", "--root", str(veth.root))
    assert up.returncode == 0, up.stderr
    address = re.search(r"eth0: ([\d.]+)/", up.stdout)
    assert address, up.stdout
    ip = address.group(1)
    subprocess.run(["ip", "-n", veth.client, "neigh", "replace", f"{veth.subnet}.1", "lladdr",
                    "02:00:00:00:00:01", "dev", "eth0", "nud", "permanent"], check=True,
                   timeout=30)
    started = time.monotonic()
    cli, pid, out = start_keeper(veth, tmp_path / "run", 1)
    try:
        out += cli.communicate(timeout=LEASE_S + 60)[0]
    finally:
        end(cli, pid)
    took = time.monotonic() - started
    assert cli.returncode == 0, out
    assert "(renewing, " not in out, out
    assert re.search(rf"lease of {re.escape(ip)}/\d+ renewed for {LEASE_S} s \(rebinding, ", out)
    assert LEASE_S / 2 < took < LEASE_S, f"rebound after {took:.0f} s, not between T1 and expiry"
    assert ip in eth0_addresses(veth)
    figure(f"lease keeper, {LEASE_S} s lease, server unreachable by unicast: rebound by "
           f"broadcast {took:.1f} s after the keeper started (T2 = 7/8 lease)")


def a_lapsed_lease_is_acquired_again_and_the_address_never_leaves(
        veth: Veth, dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    """dnsmasq is stopped (SIGSTOP) past the lease's expiry: renewing and rebinding get no
    answer, the lease lapses, eth0 keeps its address all along, and once dnsmasq runs
    again the keeper's INIT-REBOOT request for the same address is granted.

    dnsmasq is authoritative here (``--dhcp-authoritative``, as the only DHCP server of a
    network usually is): a non-authoritative one ignores requests for leases it has
    dropped, and offers a discover another address, since the held one answers its ping
    (measured: the keeper refuses it with an ADDRESS CHANGE line and keeps asking)."""
    up = veth.run("net", "up", "--dhcp", "--root", str(veth.root))
    assert up.returncode == 0, up.stderr
    address = re.search(r"eth0: ([\d.]+)/", up.stdout)
    assert address, up.stdout
    ip = address.group(1)
    started = time.monotonic()
    cli, pid, out = start_keeper(veth, tmp_path / "run", 1)
    os.kill(dnsmasq.proc.pid, signal.SIGSTOP)
    stopped = True
    try:
        while cli.poll() is None and time.monotonic() - started < LEASE_S + 120:
            assert ip in eth0_addresses(veth)
            if stopped and time.monotonic() - started > LEASE_S + 5:
                os.kill(dnsmasq.proc.pid, signal.SIGCONT)
                stopped = False
            time.sleep(1.0)
    finally:
        if stopped:
            os.kill(dnsmasq.proc.pid, signal.SIGCONT)
        end(cli, pid)
        out += cli.communicate(timeout=10)[0]
    assert cli.returncode == 0, f"no lease after the lapse: {out}\n{dnsmasq.text()[-3000:]}"
    took = time.monotonic() - started
    assert cli.returncode == 0, out
    assert re.search(rf"eth0: the lease of {re.escape(ip)}/\d+ expired unrenewed; asking for "
                     rf"it again \({re.escape(ip)} stays on eth0", out), out
    assert re.search(rf"lease of {re.escape(ip)}/\d+ renewed for {LEASE_S} s \(init, ",
                     out), out
    assert ip in eth0_addresses(veth)
    figure(f"lease keeper, {LEASE_S} s lease, server stopped {LEASE_S + 5} s: the lapsed "
           f"lease was granted again {took:.1f} s after the keeper started, the address kept")


Scenario = Callable[[Veth, Dnsmasq, Path], None]
# name -> (scenario, dnsmasq authoritative?)
SCENARIOS: dict[str, tuple[Scenario, bool]] = {
    "renewed": (renewed_before_expiry_and_never_lapses, False),
    "rebound": (an_unreachable_server_is_rebound_by_broadcast_at_t2, False),
    "lapsed": (a_lapsed_lease_is_acquired_again_and_the_address_never_leaves, True),
}


def _in_own_network(name: str, tmp_path: Path) -> None:
    scenario, authoritative = SCENARIOS[name]
    work = tmp_path / name
    work.mkdir()
    with namespaces(work) as veth, dhcp_server(veth, work, "2m", authoritative) as server:
        scenario(veth, server, work)


def test_the_lease_keeper_renews_rebinds_and_reacquires_a_2_minute_lease(
        tmp_path: Path) -> None:
    """The three scenarios run at once, each in its own namespaces with its own dnsmasq
    (each waits on DHCP timers of about 2 minutes; one after another they took 6).  A
    failure names its scenario."""
    if os.geteuid() != 0:
        pytest.skip("netns tests need root (to create network namespaces)")
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        runs = {name: pool.submit(_in_own_network, name, tmp_path) for name in SCENARIOS}
    failed = [(name, run.exception()) for name, run in runs.items() if run.exception()]
    for name, error in failed:
        assert error is not None
        error.add_note(f"lease scenario: {name} ({SCENARIOS[name][0].__name__})")
    if failed:
        raise BaseExceptionGroup("lease scenarios failed",
                                 [error for _, error in failed if error is not None])
