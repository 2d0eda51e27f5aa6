"""Load through the relay: random 4 KiB reads and writes, 64 in flight, for LOAD_SECONDS,
against qemu-nbd with TLS-PSK, every read checked against an in-memory model of the disk.

The relay runs in its own process (``python -m appliance.relay --fd N URI``, as on the
board, where the kernel is the other end), so the kernel-side driver in this process does
not share its interpreter.  Prints IOPS, p50/p99 latency and the error count (which must
be 0) as a FIGURE line; the figure is a measurement, not a pass/fail threshold.
Afterwards the whole export is read back through the relay and the image file is hashed:
both must equal the model.
``APPLIANCE_LOAD_SECONDS`` changes the duration (default 20).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.client import export_info
from tests.faults import rig
from tests.figures import figure
from tests.relay.kernelside import KernelSide

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SIZE = 32 << 20
LOAD_SECONDS = float(os.environ.get("APPLIANCE_LOAD_SECONDS", "20"))


def test_random_4k_mix_64_in_flight(nbd_servers, psk_file: Path, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    model = rig.Model(rig.random_image(image, SIZE, seed=11))
    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    info = export_info(srv.uri())
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = subprocess.Popen([sys.executable, "-m", "appliance.relay", "--fd",
                              str(theirs.fileno()), srv.uri()], pass_fds=[theirs.fileno()],
                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        ks = KernelSide(mine, info.size, info.flags)
        stats = rig.mixed_io(ks, model, depth=64, seconds=LOAD_SECONDS, seed=5)
        assert rig.flush(ks) == 0
        data = rig.read_all(ks, SIZE)
        ks.disconnect()
        _, err = relay.communicate(timeout=30)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(10)
        mine.close()
    assert relay.returncode == 0, err
    structured, extended = info.structured_replies, info.extended_headers
    figure(f"load: relay + qemu-nbd TLS-PSK, random 4 KiB 50/50 read/write, 64 in flight, "
           f"{stats.elapsed:.0f} s: {stats.ops / stats.elapsed:.0f} IOPS "
           f"({stats.reads} reads, {stats.writes} writes), p50 "
           f"{stats.percentile(50) * 1000:.2f} ms, p99 {stats.percentile(99) * 1000:.2f} ms, "
           f"{stats.error_count} errors, {len(stats.mismatches)} wrong reads "
           f"({'extended' if extended else 'structured' if structured else 'simple'} replies "
           f"upstream)")
    assert stats.error_count == 0, stats.errors
    assert stats.mismatches == [], f"wrong data in blocks {stats.mismatches[:8]}"
    assert "lost" not in err, err  # no outage
    assert stats.ops > 0
    assert hashlib.sha256(data).hexdigest() == model.sha256()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == model.sha256()
