"""appliance.status: the status line names the data path serving the root, from the
process the kernel records for the device.  Directories here stand in for / (a fake
/proc and /sys: the line is read off them as off the real ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.status import collect


def tree(tmp: Path, comm: str | None, pid: int = 209) -> Path:
    (tmp / "proc/self").mkdir(parents=True)
    (tmp / "proc/self/mounts").write_text("/dev/nbd0 / ext4 rw,noatime 0 0\n")
    (tmp / "sys/block/nbd0").mkdir(parents=True)
    (tmp / "sys/block/nbd0/pid").write_text(f"{pid}\n")
    if comm is not None:
        (tmp / f"proc/{pid}").mkdir()
        (tmp / f"proc/{pid}/cmdline").write_text("@usr/bin/python3\0-S\0-m\0appliance.boot\0")
        (tmp / f"proc/{pid}/comm").write_text(comm + "\n")
    return tmp


@pytest.mark.parametrize(("comm", "path"), [("nbdroot-ktls", "ktls"), ("nbdroot-relay", "relay"),
                                            ("python3", "python3")])
def test_the_line_names_the_data_path(tmp_path: Path, comm: str, path: str) -> None:
    status = collect(tree(tmp_path, comm))
    assert status.ok
    assert status.line() == ("nbdroot-status: root=/dev/nbd0 relay=alive pid=209 "
                             f"argv0=@usr/bin/python3 path={path}")


def test_no_process_no_path(tmp_path: Path) -> None:
    status = collect(tree(tmp_path, None))
    assert not status.ok
    assert status.line() == "nbdroot-status: root=/dev/nbd0 relay=dead pid=209 argv0=- path=-"
