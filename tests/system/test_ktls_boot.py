"""The root disk on the kernel-TLS path (``nbd.path=ktls``): booted, measured, kept across a
server kill.

Real QEMU (-M sabrelite), the real initramfs, a real TLS-PSK qemu-nbd on 127.0.0.1.  The
root image gets 32 MiB of random bytes appended after its filesystem: a region no one
writes, of dense data, whose sha256 the host knows.  The root's /etc/rc.local (written
with debugfs, as console input is not needed) then

* shows the kernel's TLS counters and which process serves the device;
* hashes the region, and measures ``dd bs=1M`` (cold cache) and ``dd bs=4k
  iflag=direct`` on it through the kTLS device -- with NBDROOT_KTLS_COMPARE=1 also through
  the relay on /dev/nbd1 (``appliance nbd attach``, same server and region), twice each,
  alternating; and writes 16 MiB to a scratch file with ``oflag=direct``;
* reads 4 MiB of the region over and over, and writes a file, for 30 s, during which the host
  kills qemu-nbd with SIGKILL and restarts it: every read must hash right, the file must
  read back identical, and dmesg must show no I/O error;
* prints the supervisor's and the relay's RSS and the kernel's nbd lines, and powers off.

The same load rides out three deaths of the kernel's socket: the server killed with SIGKILL,
a TLS alert on the socket, and a network blackhole (:mod:`tests.system.blackhole`) longer
than the driver's request timeout.  A fourth boot serves the root from nbdkit's error
filter, whose error replies must fail exactly the requests they answer, and nothing else:
no reconnect, the region read back intact once the errors stop.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.host.demo import EXPORT, IDENTITY, ROOT_OK, guest_uri
from appliance.host.servers import NBDServer, make_psk, start_nbdkit, start_qemu_nbd
from image.qemu import QemuBoard
from tests.figures import figure
from tests.image_artefacts import debugfs
from tests.system.agent_boot import boot, psk_settings, raw_root, start_root_server
from tests.system.blackhole import Blackhole
from tests.system.tls_proxy import TLSProxy

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 420.0
REGION_MIB = 32
LOAD_S = 30
CUT_S = 25.0  # the blackhole: longer than the driver's 10 s request timeout
NO_CHACHA = "NORMAL:-CHACHA20-POLY1305"  # GnuTLS: a server that leaves AES-GCM only
ERROR_RATE = 25  # % of reads nbdkit's error filter fails while its trigger file exists
HITS = 20  # error replies the guest waits for
CLEAN_RUN = 50  # reads in a row without error that mean the errors stopped (0.75^50 < 1e-6)
# NBDROOT_KTLS_COMPARE=1: also measure the relay in the same boot (about 3 minutes more).
COMPARE = os.environ.get("NBDROOT_KTLS_COMPARE") == "1"

RC_LOCAL = """#!/bin/sh
# Written by tests/system/test_ktls_boot.py: measure, load through a server kill, verify.
say() { echo "rc.local: $*"; }
n=@REGION@
skip=$(( $(cat /sys/block/nbd0/size) / 2048 - n ))  # the region: the last $n MiB
region() {  # DEVICE [MiB]: sha256 of the region (or its first MiB), read past the cache
    dd if="$1" bs=1M skip=$skip count=${2:-$n} iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}
rate() { tail -n 1 | sed 's/.*, //'; }
cold() {
    sync; echo 3 > /proc/sys/vm/drop_caches
    dd if="$1" of=/dev/null bs=1M skip=$skip count=$n 2>&1 | rate
}
direct() { dd if="$1" of=/dev/null bs=4k skip=$((skip * 256)) count=50 iflag=direct 2>&1 | rate; }
pid() { cat "/sys/block/$1/pid"; }
rss() { grep VmRSS "/proc/$(pid "$1")/status" | tr -s ' \\t' ' '; }
say "TLS $(grep -E 'TlsCurr(Tx|Rx)(Sw|Device)' /proc/net/tls_stat | tr -s ' \\n' ' ')"
argv0() { tr '\\0' ' ' < "/proc/$(pid "$1")/cmdline" | cut -d' ' -f1; }
say "SERVED nbd0 pid=$(pid nbd0) argv0=$(argv0 nbd0)"
want=$(region /dev/nbd0)
say "SHA $want"
if [ @COMPARE@ = 1 ]; then  # the relay on /dev/nbd1, same server and region, alternating
    /usr/local/bin/appliance nbd attach --detach --device /dev/nbd1 '@URI@' >/dev/null 2>&1 \\
        || say "RELAY ATTACH FAILED"
    for round in 1 2; do
        for path in ktls relay; do
            dev=/dev/nbd0; [ $path = relay ] && dev=/dev/nbd1
            say "DD1M $path $(cold $dev)"
            say "DD4K $path $(direct $dev)"
        done
    done
    say "SHA relay $(region /dev/nbd1)"
    say "RSS relay $(rss nbd1)"
    /usr/local/bin/appliance nbd detach /dev/nbd1 >/dev/null 2>&1 || say "RELAY DETACH FAILED"
else
    say "DD1M ktls $(cold /dev/nbd0)"
    say "DD4K ktls $(direct /dev/nbd0)"
fi
say "DDW ktls $(dd if=/dev/zero of=/root/scratch bs=1M count=16 oflag=direct 2>&1 | rate)"
rm -f /root/scratch
say "RSS supervisor $(rss nbd0)"
say "LOCKED supervisor $(grep VmLck "/proc/$(pid nbd0)/status" | tr -s ' \\t' ' ')"
want4=$(region /dev/nbd0 4)
say "LOADING"
dd if=/dev/urandom of=/root/blob bs=64k count=256 conv=fsync 2>/dev/null || say "DD FAILED" &
end=$(( $(cut -d. -f1 /proc/uptime) + @LOAD@ ))
reads=0 bad=0
while [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ]; do
    [ "$(region /dev/nbd0 4)" = "$want4" ] || bad=$((bad + 1))
    reads=$((reads + 1))
done
wait
md5sum /root/blob > /root/blob.md5
sync; echo 3 > /proc/sys/vm/drop_caches
md5sum -c /root/blob.md5 >/dev/null && say "VERIFIED reads=$reads bad=$bad" || say "MISMATCH"
say "SHA after $(region /dev/nbd0)"
dmesg | grep -iE 'nbd|tls|block' | sed 's/^/rc.local: dmesg /'
say "IOERRORS=$(dmesg | grep -ci 'i/o error')"
/bin/busybox poweroff
"""


def rc_local(uri: str) -> str:
    return (RC_LOCAL.replace("@REGION@", str(REGION_MIB)).replace("@LOAD@", str(LOAD_S))
            .replace("@URI@", f"{uri}?tls-psk-file=/run/nbdroot/psk")
            .replace("@COMPARE@", "1" if COMPARE else "0"))


def add_region(root: Path) -> str:
    """Append REGION_MIB of random bytes after the filesystem; their sha256."""
    data = os.urandom(REGION_MIB << 20)
    with root.open("ab") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def install_rc_local(root: Path, text: str, tmp: Path) -> None:
    script = tmp / "rc.local"
    script.write_text(text)
    debugfs(root, f"write {script} /etc/rc.local", write=True)
    debugfs(root, "sif /etc/rc.local mode 0100755", write=True)


def line(board_output: str, tag: str) -> list[str]:
    return re.findall(rf"rc\.local: {tag} ([^\r\n]*)", board_output)


def ride_out(board: QemuBoard, kill: Callable[[], None]) -> None:
    """Once the root is up and the guest loads it: ``kill`` the socket, wait to power off."""
    board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
    board.expect(rb"rc\.local: LOADING\r?\n", 300)
    time.sleep(3.0)
    kill()
    board.expect(rb"rc\.local: (VERIFIED reads=\d+ bad=\d+|MISMATCH)\r?\n", 300)
    board.expect(rb"rc\.local: IOERRORS=\d+\r?\n", 60)
    board.expect(rb"reboot: Power down|System halted", 180)


def check_ridden_out(board: QemuBoard, region_sha: str, *, reconnect: bool = True) -> str:
    """The kTLS path served the boot, lost its socket once and got a new one (unless not
    ``reconnect``: then it may have kept it), every read hashed right, the written file
    read back, no I/O error; report the figures."""
    out = board.output
    print("\n".join(re.findall(r"rc\.local: [^\r\n]*", out)))
    assert re.search(r"attached \(\d+ bytes, kTLS [^)]*\); supervising", out), board.tail()
    assert "kTLS path unavailable" not in out
    assert line(out, "SERVED")[0].split("argv0=")[1].startswith("@")
    assert re.findall(r"rc\.local: SHA ([0-9a-f]{64})", out) == [region_sha]
    assert re.findall(r"rc\.local: SHA after ([0-9a-f]{64})", out) == [region_sha]
    if COMPARE:
        assert re.findall(r"rc\.local: SHA relay ([0-9a-f]{64})", out) == [region_sha]
    verified = re.findall(r"rc\.local: VERIFIED reads=\d+ bad=(\d+)", out)
    assert verified == ["0"], board.tail()
    if reconnect:
        assert re.search(r"block nbd0: reconnected socket", out), board.tail()
    locked = re.search(r"rc\.local: LOCKED supervisor VmLck: (\d+) kB", out)
    assert locked is not None and int(locked.group(1)) > 0, board.tail()  # mlockall'ed
    errors = re.search(r"rc\.local: IOERRORS=(\d+)", out)
    assert errors is not None and errors.group(1) == "0", board.tail()
    for tag in ("DD1M ktls", "DD1M relay", "DD4K ktls", "DD4K relay", "DDW ktls", "RSS supervisor",
                "LOCKED supervisor",
                "RSS relay", "TLS"):
        if line(out, tag):
            figure(f"kTLS boot, {tag}: {', '.join(line(out, tag))}")
    return out


def test_root_on_the_ktls_path_survives_a_server_kill_with_data_verified(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    key = secrets.token_bytes(32)
    root = raw_root(image_dir, tmp_path)  # the script needs the port: written below
    region_sha = add_region(root)
    server = start_root_server(root, tmp_path, key)
    serve.append(server)
    assert server.port is not None
    server.stop()  # write the script while nothing serves the image
    install_rc_local(root, rc_local(guest_uri(server.port)), tmp_path)
    server.start()
    board = boot(image_dir, tmp_path, {**psk_settings(server.port, key), "nbd.path": "ktls"})
    try:
        # SIGKILL under load, back on the same port 3 s later
        ride_out(board, lambda: server.restart(down_for=3.0, hard=True))
    finally:
        board.stop()
        server.stop()
    check_ridden_out(board, region_sha)


def test_a_tls_alert_on_the_kernels_socket_is_a_death_the_supervisor_recovers(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    """A non-data TLS record reaches the driver's read: the kernel marks the socket dead
    (its recvmsg has no control buffer for the record type) and the supervisor reconnects.

    The root is served through :class:`~tests.system.tls_proxy.TLSProxy` (OpenSSL
    terminating TLS-PSK in front of a plaintext qemu-nbd), which sends close_notify on the
    kernel's connection under load and keeps it open, so the alert alone is what it meets.
    """
    key = secrets.token_bytes(32)
    root = raw_root(image_dir, tmp_path)
    region_sha = add_region(root)
    server = start_qemu_nbd(root, tmp_path / "qemu-nbd", export=EXPORT)
    serve.append(server)
    assert server.port is not None
    server.stop()  # write the script (it names the proxy's port) while nothing serves
    proxy = TLSProxy(server.port, IDENTITY, key)
    try:
        install_rc_local(root, rc_local(guest_uri(proxy.port)), tmp_path)
        server.start()
        board = boot(image_dir, tmp_path, {**psk_settings(proxy.port, key), "nbd.path": "ktls"})
        try:
            ride_out(board, proxy.send_alert)
        finally:
            board.stop()
    finally:
        proxy.close()
        server.stop()
    out = check_ridden_out(board, region_sha)
    assert proxy.alerts_sent >= 1 and proxy.connections >= 2  # the first, the reconnect
    died = dict.fromkeys(re.findall(r"block nbd0: (Receive control failed \(result -?\d+\))",
                                    out))  # the console shows each line twice (printk, dmesg)
    figure(f"kTLS path, TLS alert on the kernel's socket: {', '.join(died) or 'no read error'}"
           ", then reconnected")


def test_root_on_the_ktls_path_rides_out_a_network_blackhole(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    """Every frame dropped for CUT_S under load, the link up: a pause, never an error --
    no I/O error, data verified.

    The driver's request timeout (10 s) kills the socket only once its handler gets the
    socket's send lock, which a sender blocked on the full send buffer holds: measured,
    the timeout came as the network returned (then the supervisor reconnected) or not at
    all (the old socket went on).  Either is right; the figure says which happened.

    The server rules ChaCha20 out (GnuTLS priority), so this boot also takes the other
    TLS 1.3 PSK suite, AES-128-GCM: the kernel refuses it until the agent has loaded
    AES-GCM, then takes it over (each reconnect too)."""
    key = secrets.token_bytes(32)
    root = raw_root(image_dir, tmp_path)
    region_sha = add_region(root)
    server = start_root_server(root, tmp_path, key, tls_priority=NO_CHACHA)
    serve.append(server)
    assert server.port is not None
    server.stop()  # write the script while nothing serves the image
    install_rc_local(root, rc_local(guest_uri(server.port)), tmp_path)
    server.start()
    hole = Blackhole()
    cut: list[float] = []

    def blackhole() -> None:
        hole.set(True)
        began = time.monotonic()
        time.sleep(CUT_S)  # the outage's length is the scenario
        hole.set(False)
        cut.append(time.monotonic() - began)

    try:
        board = boot(image_dir, tmp_path, {**psk_settings(server.port, key), "nbd.path": "ktls"},
                     qemu=hole.argv)
        try:
            ride_out(board, blackhole)
        finally:
            board.stop()
    finally:
        hole.close()
        server.stop()
    out = check_ridden_out(board, region_sha, reconnect=False)
    assert "kTLS TLS 1.3 AES-GCM-128 both ways" in out, board.tail()
    timed_out = dict.fromkeys(re.findall(r"block nbd0: (Connection timed out[^\r\n]*)", out))
    socket = ("the socket replaced" if "block nbd0: reconnected socket" in out else
              "the socket kept")
    figure(f"kTLS path (AES-GCM-128), {cut[0]:.0f} s network blackhole under load: "
           f"{', '.join(timed_out) or 'no request timeout'}, {socket}; 0 I/O errors, "
           "data verified")


ERRORS_RC = """#!/bin/sh
# Written by tests/system/test_ktls_boot.py: read through nbdkit's error replies, verify.
say() { echo "rc.local: $*"; }
n=@REGION@
skip=$(( $(cat /sys/block/nbd0/size) / 2048 - n ))
region() {  # sha256 of the region, read past the cache
    dd if=/dev/nbd0 bs=1M skip=$skip count=$n iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}
one() {  # read block $1 (mod the region's) with one request
    dd if=/dev/nbd0 of=/dev/null bs=4k count=1 skip=$(( skip * 256 + $1 % (n * 256) )) \\
        iflag=direct 2>/dev/null
}
pid=$(cat /sys/block/nbd0/pid)
say "SHA $(region)"
sync
say "ERRORS ON"
reads=0 hits=0
while [ $hits -lt @HITS@ ] && [ $reads -lt 5000 ]; do
    one $reads || hits=$((hits + 1))
    reads=$((reads + 1))
done
say "HIT $hits of $reads"
run=0 reads=0
while [ $run -lt @CLEAN@ ] && [ $reads -lt 5000 ]; do
    if one $reads; then run=$((run + 1)); else run=0; fi
    reads=$((reads + 1))
done
say "CLEAN after $reads"
say "SHA after $(region)"
say "PID before=$pid after=$(cat /sys/block/nbd0/pid)"
dmesg | grep -iE 'nbd' | sed 's/^/rc.local: dmesg /'
say "IOERRORS=$(dmesg | grep -ci 'i/o error')"
/bin/busybox poweroff
"""


def test_error_replies_on_the_ktls_path_fail_only_their_requests(
        image_dir: Path, tmp_path: Path, serve: list[NBDServer]) -> None:
    """nbdkit's error filter (reads only, ERROR_RATE %, while a trigger file exists) in
    front of the root: the guest's reads that meet an error reply fail with EIO, the
    socket stays up (no reconnect, the same supervisor), and once the trigger is gone every
    read is right again."""
    key = secrets.token_bytes(32)
    root = raw_root(image_dir, tmp_path)
    region_sha = add_region(root)
    script = (ERRORS_RC.replace("@REGION@", str(REGION_MIB)).replace("@HITS@", str(HITS))
              .replace("@CLEAN@", str(CLEAN_RUN)))
    install_rc_local(root, script, tmp_path)
    trigger = tmp_path / "errors-on"
    psk = make_psk(tmp_path / "tls", IDENTITY, key)
    server = start_nbdkit("file", str(root), "error-pread=EIO",
                          f"error-pread-rate={ERROR_RATE}%", f"error-pread-file={trigger}",
                          tmp=tmp_path / "nbdkit", psk_file=psk, export=EXPORT,
                          filters=("error",))
    serve.append(server)
    assert server.port is not None
    board = boot(image_dir, tmp_path, {**psk_settings(server.port, key), "nbd.path": "ktls"})
    try:
        board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
        board.expect(rb"rc\.local: ERRORS ON\r?\n", 300)
        trigger.touch()
        hit = board.expect(rb"rc\.local: HIT (\d+) of (\d+)\r?\n", 300)
        trigger.unlink()
        board.expect(rb"rc\.local: CLEAN after \d+\r?\n", 300)
        board.expect(rb"rc\.local: IOERRORS=\d+\r?\n", 120)
        board.expect(rb"reboot: Power down|System halted", 180)
    finally:
        board.stop()
        server.stop()
    out = board.output
    print("\n".join(re.findall(r"rc\.local: [^\r\n]*", out)))
    assert re.search(r"attached \(\d+ bytes, kTLS [^)]*\); supervising", out), board.tail()
    hits, reads = int(hit.group(1)), int(hit.group(2))
    assert hits == HITS, f"only {hits} of {reads} reads met an error reply"
    assert reads < 20 * HITS, f"{hits} errors took {reads} reads at {ERROR_RATE} %"
    assert re.findall(r"rc\.local: SHA ([0-9a-f]{64})", out) == [region_sha]
    assert re.findall(r"rc\.local: SHA after ([0-9a-f]{64})", out) == [region_sha]
    (pids,) = re.findall(r"rc\.local: PID before=(\d+) after=(\d+)", out)
    assert pids[0] == pids[1], "the supervisor changed"
    assert "reconnected socket" not in out and "Receive control failed" not in out, (
        "an error reply killed the kernel's socket")
    errors = re.search(r"rc\.local: IOERRORS=(\d+)", out)
    assert errors is not None and int(errors.group(1)) >= 1, board.tail()
    figure(f"kTLS path, nbdkit error filter at {ERROR_RATE} % of reads: {hits} EIO in "
           f"{reads} reads, the socket kept, data verified after")
