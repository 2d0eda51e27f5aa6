"""Replicas typed at the console: ``set nbd.uri URI1 URI2`` keeps both, in order."""

from __future__ import annotations

from collections.abc import Callable

from appliance.host.console import run_script
from tests.console.conftest import BOOTABLE, Board, Link

MakeBoard = Callable[..., Board]
R1 = "nbds://board7@10.0.2.2:10809/root"
R2 = "nbds://board7@10.0.2.3:10809/root"


def test_two_replicas_are_set_over_the_console_and_booted(board: MakeBoard,
                                                          serial_link: Link) -> None:
    b = board(BOOTABLE, countdown=5)
    results = run_script(serial_link.host, [f"set nbd.uri {R1}  {R2}", "set root.mode overlay",
                                            "save", "boot"], timeout=10, boot_timeout=10)
    assert (f"set nbd.uri {R1}  {R2}", [f"nbd.uri = {R1} {R2}"]) in results
    booted = b.wait()
    assert [u.host for u in booted.uris] == ["10.0.2.2", "10.0.2.3"]
    assert b.store.load().raw("nbd.uri") == f"{R1} {R2}"
