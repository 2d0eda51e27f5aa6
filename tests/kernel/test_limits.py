"""Queue limits for the export's maximum block size, on a FAKE /sys/block tree made by
the test (the host kernel has no nbd driver; test_attach.py checks the real kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import KernelError
from appliance.kernel.limits import apply_max_request


def fake_queue(root: Path, *, max_kb: int = 32768, hw_kb: int = 32768,
               discard_hw: int = 2 ** 32 - 512) -> Path:
    queue = root / "nbd0" / "queue"
    queue.mkdir(parents=True)
    for name, value in (("max_sectors_kb", max_kb), ("max_hw_sectors_kb", hw_kb),
                        ("discard_max_hw_bytes", discard_hw), ("discard_max_bytes", discard_hw)):
        (queue / name).write_text(f"{value}\n")
    return queue


def test_small_maximum_lowers_reads_writes_and_trims(tmp_path: Path) -> None:
    queue = fake_queue(tmp_path)
    apply_max_request(0, 64 << 10, tmp_path)
    assert (queue / "max_sectors_kb").read_text() == "64\n"
    assert (queue / "discard_max_bytes").read_text() == f"{64 << 10}\n"


def test_larger_maximum_leaves_the_kernel_defaults(tmp_path: Path) -> None:
    queue = fake_queue(tmp_path, max_kb=1280)
    apply_max_request(0, 32 << 20, tmp_path)
    assert (queue / "max_sectors_kb").read_text() == "1280\n"  # already smaller
    assert (queue / "discard_max_bytes").read_text() == f"{32 << 20}\n"


def test_no_discard_is_left_alone(tmp_path: Path) -> None:
    queue = fake_queue(tmp_path, discard_hw=0)
    apply_max_request(0, 64 << 10, tmp_path)
    assert (queue / "discard_max_bytes").read_text() == "0\n"


def test_below_a_page_is_refused(tmp_path: Path) -> None:
    fake_queue(tmp_path)
    with pytest.raises(KernelError, match="below a page"):
        apply_max_request(0, 2048, tmp_path)


def test_missing_device_is_a_kernel_error(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="cannot read"):
        apply_max_request(3, 64 << 10, tmp_path)
