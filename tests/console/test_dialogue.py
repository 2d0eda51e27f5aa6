"""The console dialogue end to end: the board's prompt on one pty, pyserial on the other.

Every test runs twice: over a pty pair (a USB serial adapter) and over
``socket://`` (QEMU's ``-serial tcp:``), both bridged by socat.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import BootConfig, Config
from appliance.config.psk import write_psk_file
from appliance.errors import ConsoleError, TransportError
from appliance.host.console import BoardDialogue, BoardRefused, Expect, SerialDriver, run_script
from tests.console.conftest import BOOTABLE, KEY, Board, Link

MakeBoard = Callable[..., Board]


def open_dialogue(link: Link) -> tuple[SerialDriver, BoardDialogue]:
    driver = SerialDriver(link.host)
    dialogue = BoardDialogue(Expect(driver), timeout=10)
    dialogue.interrupt(timeout=10)
    return driver, dialogue


def test_fresh_board_is_configured_saved_and_booted(
        board: MakeBoard, serial_link: Link, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    b = board(None)  # nothing stored: the prompt opens without a countdown
    results = run_script(serial_link.host, [
        "set nbd.uri nbds://board7@10.0.2.2:10809/root",
        "set psk.identity board7",
        f"set psk.key {KEY}",
        "set board.phy 4",
        "set net.dns 10.0.2.3",
        "show",
        "save",
        "boot",
    ], timeout=10, boot_timeout=10)
    booted = b.wait()
    assert booted.board_phy == 4
    assert booted.psk_key == bytes.fromhex(KEY)
    expected = BOOTABLE.set("board.phy", "4").set("net.dns", "10.0.2.3")
    assert b.store.load() == expected
    show = dict(results)["show"]
    assert any(line.startswith("psk.key") and line.endswith("= 5eed... (64 hex digits)")
               for line in show), show
    assert "board.phy             = 4" in show
    assert dict(results)["save"] == ["saved (slot a, sequence 1)"]
    assert ("set psk.key ***", ["psk.key = 5eed... (64 hex digits)"]) in results
    # the key never shows: not in the board's echo, answers, or any log line
    assert KEY not in caplog.text and KEY[:8] not in caplog.text
    received = b"".join(r.args[0] for r in caplog.records  # type: ignore[misc,index]
                        if r.msg == "< %r" and isinstance(r.args, tuple))
    assert b"set psk.key " + b"*" * len(KEY) + b"\r\n" in received  # the board echoed stars
    assert KEY.encode() not in received


def test_key_press_interrupts_the_countdown(board: MakeBoard, serial_link: Link) -> None:
    b = board(BOOTABLE, countdown=5)
    run_script(serial_link.host, ["set board.phy 9", "boot"], timeout=10, boot_timeout=10)
    assert b.wait().board_phy == 9
    assert b.store.load() == BOOTABLE  # not saved: boots once with the change


def test_no_key_boots_the_stored_config(board: MakeBoard) -> None:
    b = board(BOOTABLE, countdown=1)
    assert b.wait(timeout=10) == BOOTABLE.boot_config()


@pytest.mark.parametrize(("command", "reply"), [
    ("set nbd.urx nbd://h/x", "unknown key 'nbd.urx' (did you mean nbd.uri?)"),
    ("set nbd.uri http://10.0.2.2/root",
     "nbd.uri: bad NBD URI 'http://10.0.2.2/root': unknown scheme 'http'; "
     "expected one of nbd, nbds, nbd+unix, nbds+unix"),
    ("set psk.key abc", "psk.key: psk key must be an even number of hex digits (got 3)"),
    ("set board.phy 40", "board.phy: phy must be 0-31 or auto"),
    ("set board.phy", "usage: set KEY VALUE"),
    ("frobnicate", "unknown command 'frobnicate' (help lists the commands)"),
    ("psk destroy", "usage: psk generate [BYTES]"),
])
def test_bad_input_is_refused_in_one_line_and_nothing_changes(
        board: MakeBoard, serial_link: Link, command: str, reply: str) -> None:
    b = board(BOOTABLE)
    slot = (b.store.medium.read_slot(0), b.store.medium.read_slot(1))
    driver, dialogue = open_dialogue(serial_link)
    try:
        before = dialogue.command("show")
        with pytest.raises(BoardRefused) as info:
            dialogue.command(command)
        assert info.value.reply == reply
        shown = command.replace("abc", "***")  # a secret value is never repeated
        assert str(info.value) == f"the board refused '{shown}': {reply}"
        assert dialogue.command("show") == before  # the board is still there, unchanged
        dialogue.command("boot", expect_prompt=False)
    finally:
        driver.close()
    assert b.wait() == BOOTABLE.boot_config()
    assert (b.store.medium.read_slot(0), b.store.medium.read_slot(1)) == slot


def test_unbootable_config_is_neither_saved_nor_booted(board: MakeBoard,
                                                       serial_link: Link) -> None:
    b = board(BOOTABLE)
    driver, dialogue = open_dialogue(serial_link)
    try:
        dialogue.command("unset psk.key")
        for command in ("save", "boot"):
            with pytest.raises(BoardRefused, match=r"psk\.key is not set but nbd\.uri uses TLS"):
                dialogue.command(command)
        out = dialogue.command("psk generate")
        assert len(out) == 1 and out[0].startswith("psk.key = ") and "(64 hex digits)" in out[0]
        assert dialogue.command("save") == ["saved (slot b, sequence 2)"]
        dialogue.command("boot", expect_prompt=False)
    finally:
        driver.close()
    booted = b.wait()
    assert booted.psk_key is not None and booted.psk_key != bytes.fromhex(KEY)
    assert b.store.load().boot_config() == booted


def test_test_command_calls_the_hook(board: MakeBoard, serial_link: Link) -> None:
    seen: list[BootConfig] = []

    def tester(boot: BootConfig) -> str:
        seen.append(boot)
        if boot.board_phy == 13:
            raise TransportError("cannot connect to 10.0.2.2:10809: connection refused")
        return f"connected to {boot.uri.address}, export '{boot.uri.export}'"

    b = board(BOOTABLE, tester=tester)
    driver, dialogue = open_dialogue(serial_link)
    try:
        assert dialogue.command("test") == ["connected to 10.0.2.2:10809, export 'root'"]
        dialogue.command("set board.phy 13")
        with pytest.raises(BoardRefused, match="connection refused"):
            dialogue.command("test")
        dialogue.command("boot", expect_prompt=False)
    finally:
        driver.close()
    b.wait()
    assert [s.board_phy for s in seen] == [None, 13]


def test_help_lists_every_key(board: MakeBoard, serial_link: Link) -> None:
    b = board(BOOTABLE)
    driver, dialogue = open_dialogue(serial_link)
    try:
        text = "\n".join(dialogue.command("help"))
        assert dialogue.command("help board.phy") == [
            "board.phy (0-31|auto, default auto): MDIO address of the Ethernet PHY "
            "(auto: scan the bus)"]
        dialogue.command("boot", expect_prompt=False)
    finally:
        driver.close()
    b.wait()
    from appliance.config import SETTINGS
    for s in SETTINGS:
        assert s.key in text


def test_no_prompt_is_a_clear_error(serial_link: Link) -> None:
    """Nobody on the line (the board already booted): a ConsoleError, not a hang."""
    driver = SerialDriver(serial_link.host)
    try:
        with pytest.raises(ConsoleError, match=r"no 'nbdroot>' prompt on .* within 1 s"):
            BoardDialogue(Expect(driver)).interrupt(timeout=1)
    finally:
        driver.close()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *argv],
                          capture_output=True, text=True, timeout=60)


def test_cli_scripts_a_board(board: MakeBoard, serial_link: Link, tmp_path: Path) -> None:
    psk = tmp_path / "board7.psk"
    key = bytes.fromhex("77" * 32)
    write_psk_file(psk, "board7", key)
    b = board(Config().set("nbd.uri", "nbd://10.0.2.2/root"))
    r = cli("console", serial_link.host, "--set", "nbd.uri=nbds://board7@10.0.2.2/root",
            "--set", "board.phy=2", "--psk-file", str(psk), "--save", "--boot",
            "--timeout", "10", "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert key.hex() not in r.stdout + r.stderr
    assert "nbdroot> set psk.key ***\npsk.key = 7777... (64 hex digits)\n" in r.stdout
    booted = b.wait()
    assert (booted.board_phy, booted.psk_identity, booted.psk_key) == (2, "board7", key)
    assert b.store.load().boot_config() == booted


def test_cli_reports_the_boards_refusal(board: MakeBoard, serial_link: Link) -> None:
    b = board(BOOTABLE, idle_timeout=3)
    r = cli("console", serial_link.host, "--set", "board.phy=3", "--set", "board.phy=40",
            "--save", "--timeout", "10", "--wait", "10")
    assert r.returncode == 1
    assert r.stderr == ("appliance: error: the board refused 'set board.phy 40': "
                        "board.phy: phy must be 0-31 or auto\n")
    assert b.store.load() == BOOTABLE
    # hung up or idle: the board boots what it has
    assert b.wait(timeout=30) == BOOTABLE.set("board.phy", "3").boot_config()


def test_cli_usage_errors() -> None:
    r = cli("console", "/dev/null/nope", "--set", "board.phy")
    assert r.returncode == 2
    assert r.stderr == "appliance: error: --set needs KEY=VALUE, got 'board.phy'\n"
    r = cli("console", "/nonexistent/tty", "--show")
    assert r.returncode == 1
    assert r.stderr.startswith("appliance: error: cannot open /nonexistent/tty:")
    assert "Traceback" not in r.stderr


def test_interactive_terminal_passes_keys_and_quits_on_ctrl_bracket(
        board: MakeBoard, serial_link: Link) -> None:
    b = board(BOOTABLE, countdown=10)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "console", serial_link.host],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        time.sleep(1.0)  # the terminal is up; now the operator types
        for keys in (b"\r", b"show board.phy\r", b"set board.phy 6\rboot\r"):
            proc.stdin.write(keys)
            proc.stdin.flush()
            time.sleep(0.7)
        booted = b.wait()  # the board has answered everything; give the terminal a moment
        time.sleep(0.5)
        proc.stdin.write(b"\x1d")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "board.phy = auto\r\nok\r\nnbdroot> " in text
    assert "booting with unsaved changes (they are lost at the next reboot)\r\nok\r\n" in text
    assert "Ctrl-] quits" in err.decode()
    assert booted.board_phy == 6


def test_damaged_store_opens_the_prompt_and_is_repaired(
        board: MakeBoard, serial_link: Link, tmp_path: Path) -> None:
    boot_dir = tmp_path / "boot"
    boot_dir.mkdir()
    (boot_dir / "nbdroot-config.a").write_bytes(b"NBDRCFG1" + b"\x5a" * 100)
    driver = SerialDriver(serial_link.host)  # listening before the board speaks
    b = board(None)
    try:
        io = Expect(driver)
        said = io.expect(re.compile(rb"cannot boot: (.*)\r\n"), 10, "damage report").group(1)
        assert said.startswith(b"no valid configuration stored (slot a: unknown flags")
        dialogue = BoardDialogue(io, timeout=10)
        dialogue.interrupt(timeout=10)
        dialogue.command("set nbd.uri nbd://10.0.2.2/root")
        assert dialogue.command("save") == ["saved (slot a, sequence 1)"]
        dialogue.command("boot", expect_prompt=False)
    finally:
        driver.close()
    assert b.wait().nbd_uri == "nbd://10.0.2.2/root"
    assert b.store.load() == Config().set("nbd.uri", "nbd://10.0.2.2/root")
