"""Device discovery from sysfs, on a FAKE /sys/block tree made by the test (the host kernel
has no nbd driver; the real thing is exercised by test_attach.py in the guest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import KernelError
from appliance.kernel import devices


def fake_nbd(root: Path, index: int, *, sectors: int = 0, pid: int | None = None) -> None:
    d = root / f"nbd{index}"
    d.mkdir(parents=True)
    (d / "size").write_text(f"{sectors}\n")
    if pid is not None:
        (d / "pid").write_text(f"{pid}\n")


def test_first_free_skips_devices_in_use(tmp_path: Path) -> None:
    fake_nbd(tmp_path, 0, sectors=2048, pid=123)
    fake_nbd(tmp_path, 1, sectors=8)            # size left over: still counts as in use
    fake_nbd(tmp_path, 2)
    fake_nbd(tmp_path, 10)
    (tmp_path / "sda").mkdir()
    states = devices.list_devices(tmp_path)
    assert [s.index for s in states] == [0, 1, 2, 10]
    assert states[0].pid == 123 and states[0].size_bytes == 2048 * 512
    free = devices.first_free(tmp_path)
    assert free is not None and free.path == "/dev/nbd2"


def test_no_free_device(tmp_path: Path) -> None:
    fake_nbd(tmp_path, 0, pid=1)
    assert devices.first_free(tmp_path) is None


@pytest.mark.parametrize(("text", "index"), [("/dev/nbd3", 3), ("nbd12", 12), ("7", 7)])
def test_parse_device(text: str, index: int) -> None:
    assert devices.parse_device(text) == index


@pytest.mark.parametrize("text", ["/dev/sda", "nbd", "/dev/nbdx1", ""])
def test_parse_device_rejects_others(text: str) -> None:
    with pytest.raises(KernelError, match="not an nbd device"):
        devices.parse_device(text)
