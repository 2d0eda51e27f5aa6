"""``appliance bench board``'s pure parts: the allocated range, the script, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.host.bench_board import (
    BASELINE,
    OURS,
    BenchError,
    BoardBenchOptions,
    BootRun,
    MiB,
    data_extent,
    rc_local,
    record_result,
)
from appliance.host.bench_figures import table


def test_data_extent_finds_the_largest_allocated_range(tmp_path: Path) -> None:
    image = tmp_path / "disk"
    with image.open("wb") as f:
        f.truncate(64 * MiB)
        f.seek(MiB)
        f.write(b"a" * MiB)
        f.seek(20 * MiB)
        f.write(b"b" * 3 * MiB)
    assert data_extent(image) == (20 * MiB, 3 * MiB)


def test_the_script_reads_inside_the_allocated_range(tmp_path: Path) -> None:
    opts = BoardBenchOptions(out=tmp_path, read_mib=4, requests=256)
    script = rc_local(opts, (8 * MiB + 512, 10 * MiB))
    assert "bs=1M skip=9 count=4" in script  # the first whole MiB inside the range
    assert "bs=4k skip=3328 count=256 iflag=direct" in script  # (9 + 4) MiB / 4 KiB
    with pytest.raises(BenchError, match="largest allocated range"):
        rc_local(opts, (0, 4 * MiB))


def test_dd_lines_and_agents_are_recorded() -> None:
    run = BootRun(OURS)
    record_result(run, "dd-read-4k", "262144 bytes (262 kB, 256 KiB) copied, 0.5 s, 524 kB/s")
    record_result(run, "agent", "31808 170 nbdroot-relay @usr/bin/python3 -m appliance.boot")
    record_result(run, "agent", "21480 205 nbdroot-lease @usr/bin/python3 -m appliance.boot")
    assert run.dd == {"read-4k": pytest.approx(0.524288)}
    assert (run.rss_kb, run.keeper_kb) == (31808, 21480)  # the data path and the keeper
    with pytest.raises(BenchError, match="dd read-1M failed"):
        record_result(run, "dd-read-1M", "dd: error reading '/dev/nbd0': Input/output error")


def _run(variant: str, scale: float, rss: int) -> BootRun:
    return BootRun(variant, kernel_to_root=10 * scale, init_to_root=5 * scale,
                   qemu_to_root_up=20 * scale,
                   dd={k: 1 / scale for k in ("read-1M", "read-4k", "write-1M", "write-4k")},
                   rss_kb=rss, keeper_kb=rss // 2)


def test_the_table_has_medians_ranges_and_ratios() -> None:
    runs = [_run(OURS, 2, 30 * 1024), _run(BASELINE, 1, 0), _run(OURS, 3, 31 * 1024),
            _run(BASELINE, 1, 0), _run(OURS, 2.5, 32 * 1024), _run(BASELINE, 1, 0)]
    lines = table(runs)
    assert lines[0].startswith("| metric (median of 3, min-max)")
    kernel = next(line for line in lines if line.startswith("| kernel -> root"))
    assert kernel == ("| kernel -> root mounted (guest clock) | 25.00 s (20.00-30.00) | "
                      "10.00 s (10.00-10.00) | 2.50x slower |")
    read = next(line for line in lines if line.startswith("| dd bs=1M read"))
    assert read.endswith("| 0.40 MB/s (0.33-0.50) | 1.00 MB/s (1.00-1.00) | 0.40x slower |")
    rss = next(line for line in lines if line.startswith("| data path RSS"))
    assert "31.0 MB (30.0-32.0)" in rss and "none (no process" in rss
    keeper = next(line for line in lines if line.startswith("| DHCP lease keeper RSS"))
    assert "15.5 MB (15.0-16.0)" in keeper and "none (udhcpc exits" in keeper


def test_both_boards_get_the_cores_asked_for(tmp_path: Path) -> None:
    from appliance.host.bench_board import BoardBenchOptions, _argv

    four = _argv(BoardBenchOptions(out=tmp_path, cpus=4), BASELINE, tmp_path, 10809, b"", 0)
    assert four[-2:] == ["-smp", "4"] and four[0] == "qemu-system-arm"
    one = _argv(BoardBenchOptions(out=tmp_path), BASELINE, tmp_path, 10809, b"", 0)
    assert "-smp" not in one
