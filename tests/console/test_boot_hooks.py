"""configure_at_boot's hooks for the boot's background work: ``early`` gets the stored
config before the countdown, ``before_prompt`` runs only when the prompt opens (the boot
lets the board's modules finish loading there, so that kernel messages do not interleave
with the session).  Over a pty pair and ``socket://``, as the other console tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

from appliance.config import BootConfig
from appliance.host.console import run_script
from tests.console.conftest import BOOTABLE, Board, Link

MakeBoard = Callable[..., Board]


def test_early_gets_the_stored_config_and_no_key_never_opens_the_prompt(
        board: MakeBoard) -> None:
    early: list[BootConfig] = []
    prompted = threading.Event()
    b = board(BOOTABLE, countdown=1, early=early.append, before_prompt=prompted.set)
    assert b.wait(timeout=10) == BOOTABLE.boot_config()
    assert early == [BOOTABLE.boot_config()]
    assert not prompted.is_set()


def test_before_prompt_runs_once_when_a_key_opens_the_prompt(
        board: MakeBoard, serial_link: Link) -> None:
    early: list[BootConfig] = []
    calls: list[bool] = []

    def before_prompt() -> None:  # what the boot does: the early work is done by now
        calls.append(bool(early))

    b = board(BOOTABLE, countdown=5, early=early.append, before_prompt=before_prompt)
    run_script(serial_link.host, ["set board.phy 9", "boot"], timeout=10, boot_timeout=10)
    assert b.wait().board_phy == 9
    assert calls == [True]


def test_a_config_that_cannot_boot_starts_nothing_early(board: MakeBoard,
                                                         serial_link: Link) -> None:
    early: list[BootConfig] = []
    calls: list[None] = []
    b = board(None, early=early.append, before_prompt=lambda: calls.append(None))
    run_script(serial_link.host, ["set nbd.uri nbds://board7@10.0.2.2:10809/root",
                                  "set psk.identity board7", f"set psk.key {'5eed' * 16}",
                                  "boot"], timeout=10, boot_timeout=10)
    assert b.wait().nbd_uri == "nbds://board7@10.0.2.2:10809/root"
    assert early == [] and calls == [None]
