"""The settings table, value parsing, the Config value and its typed view."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from appliance.config import SETTINGS, BootConfig, Config
from appliance.config.settings import lookup
from appliance.errors import ConfigError

KEY = "0123456789abcdef" * 4  # 32 bytes
URI = "nbds://board7@10.0.2.2:10809/root?tls-psk-file=/run/nbdroot.psk"


def bootable() -> Config:
    return Config().set("nbd.uri", URI).set("psk.identity", "board7").set("psk.key", KEY)


def test_table_drives_the_typed_config() -> None:
    fields = [f.name for f in dataclasses.fields(BootConfig)]
    assert fields == [s.attr for s in SETTINGS]
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:  # every default parses and is canonical
        if s.default is not None:
            assert s.fmt(s.parse(s.default)) == s.default, s.key


@pytest.mark.parametrize(("key", "value", "message"), [
    ("nbd.urx", "nbd://h/x", "unknown key 'nbd.urx' (did you mean nbd.uri?)"),
    ("zzz", "1", "unknown key 'zzz' (help lists the keys)"),
    ("nbd.uri", "http://10.0.2.2/root", "nbd.uri: bad NBD URI 'http://10.0.2.2/root': unknown"),
    ("nbd.uri", "nbd+unix:///r?socket=/s", "nbd.uri: a unix-socket URI cannot work"),
    ("nbd.uri", "nbd://h:70000/x", "nbd.uri: bad NBD URI 'nbd://h:70000/x': bad port"),
    ("psk.key", "abc", "psk.key: psk key must be an even number of hex digits (got 3)"),
    ("psk.key", "zz" * 16, "psk.key: psk key must be hex digits"),
    ("psk.key", "ab" * 8 + "ab", "psk.key: psk key must be 16-64 bytes"),
    ("psk.identity", "a:b", "psk.identity: psk identity must be"),
    ("board.phy", "40", "board.phy: phy must be 0-31 or auto"),
    ("board.phy", "-1", "board.phy: phy must be 0-31 or auto"),
    ("net.mode", "bootp", "net.mode: must be dhcp or static"),
    ("net.address", "192.168.1.20", "net.address: needs a prefix length"),
    ("net.address", "192.168.1.0/24", "net.address: '192.168.1.0/24' is a network address"),
    ("net.gateway", "10.0.0.300", "net.gateway: '10.0.0.300' is not an IP address"),
    ("net.dns", "1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4", "net.dns: at most 3"),
    ("net.interface", "eth0:1", "net.interface: interface name must be"),
    ("net.interface", "a" * 16, "net.interface: interface name must be"),
    ("retry.deadline", "0", "retry.deadline: reconnect deadline must be seconds > 0 or forever"),
    ("retry.deadline", "nan", "retry.deadline: reconnect deadline must be"),
    ("retry.backoff-max", "-1", "retry.backoff-max: must be 0-86400 seconds"),
    ("console.countdown", "1.5", "console.countdown: must be whole seconds 0-60"),
    ("board.profile", "Bad Name", "board.profile: profile must be auto or a name"),
    ("nbd.uri", "   ", "nbd.uri: needs a value"),
    ("nbd.uri", "nbd://h/\x1b[2J", "nbd.uri: control characters are not allowed"),
])
def test_bad_values_give_one_line_messages(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().set(key, value)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("key", "value", "stored"), [
    ("board.phy", "07", "7"),
    ("board.phy", "0x1f", "31"),
    ("board.phy", "AUTO", "auto"),
    ("psk.key", KEY.upper(), KEY),
    ("net.dns", "1.1.1.1, 2001:db8::1", "1.1.1.1,2001:db8::1"),
    ("retry.deadline", "90.0", "90"),
    ("retry.deadline", "Forever", "forever"),
    ("net.mode", "STATIC", "static"),
])
def test_values_are_stored_canonical(key: str, value: str, stored: str) -> None:
    assert Config().set(key, value).values[key] == stored


def test_typed_view() -> None:
    boot = (bootable().set("board.phy", "5").set("retry.deadline", "120")
            .set("net.mode", "static").set("net.address", "192.168.7.2/24")
            .set("net.gateway", "192.168.7.1").boot_config())
    assert boot.board_phy == 5
    assert boot.retry_deadline == 120.0
    assert str(boot.net_address) == "192.168.7.2/24"
    assert boot.psk_key == bytes.fromhex(KEY)
    assert boot.uri.host == "10.0.2.2" and boot.uri.export == "root"
    assert boot.psk_file_text() == f"board7:{KEY}\n"
    auto = Config().set("nbd.uri", "nbd://10.0.2.2/root").boot_config()
    assert auto.board_phy is None and auto.retry_deadline is None and auto.board_profile is None


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c.unset("nbd.uri"), "nbd.uri is not set"),
    (lambda c: c.unset("psk.key"), "psk.key is not set but nbd.uri uses TLS"),
    (lambda c: c.set("psk.identity", "other"), "psk.identity 'other' differs from the user"),
    (lambda c: c.set("net.mode", "static"), "net.mode is static but net.address is not set"),
    (lambda c: c.set("net.mode", "static").set("net.address", "10.1.0.2/16")
     .set("net.gateway", "10.2.0.1"), "net.gateway 10.2.0.1 is outside 10.1.0.0/16"),
    (lambda c: c.set("retry.backoff-max", "0.1"), "retry.backoff-max is smaller"),
])
def test_unbootable_configs_say_why(change: object, problem: str) -> None:
    assert callable(change)
    with pytest.raises(ConfigError, match=problem):
        change(bootable()).boot_config()
    bootable().boot_config()  # the base itself is fine


def test_secret_is_masked_in_show_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = bootable()
    shown = "\n".join(config.show_lines())
    assert "psk.key               = 0123... (64 hex digits)" in shown
    logging.getLogger("test").info("config %r, typed %r", config, config.boot_config())
    for text in (shown, repr(config), repr(config.boot_config()), caplog.text):
        assert KEY not in text
        assert KEY[:12] not in text


def test_show_marks_defaults_and_unset() -> None:
    lines = dict(line.split(" = ", 1) for line in Config().set("board.phy", "3").show_lines())
    assert lines["board.phy".ljust(21)] == "3"
    assert lines["net.mode".ljust(21)] == "dhcp  (default)"
    assert lines["nbd.uri".ljust(21)] == "(unset)"


def test_text_round_trip_and_errors() -> None:
    config = bootable().set("net.dns", "9.9.9.9").set("board.phy", "0")
    assert Config.from_text(config.to_text()) == config
    assert Config.from_text("# comment\n\nboard.phy = 4\n").values == {"board.phy": "4"}
    with pytest.raises(ConfigError, match=r"line 2: board\.phy: phy must be 0-31 or auto"):
        Config.from_text("net.mode=dhcp\nboard.phy=99\n")
    with pytest.raises(ConfigError, match="line 1: expected key=value"):
        Config.from_text("garbage\n")
    with pytest.raises(ConfigError, match="unknown key"):
        Config({"nope": "1"})


def test_unset_restores_default() -> None:
    config = Config().set("net.interface", "eth1").unset("net.interface")
    assert config.raw("net.interface") == "eth0"
    assert config.values == {}
    assert lookup("net.interface").default == "eth0"


def test_nbd_path_defaults_to_ktls_and_takes_the_relay() -> None:
    assert Config().raw("nbd.path") == "ktls"
    assert Config().set("nbd.path", "RELAY").raw("nbd.path") == "relay"
    with pytest.raises(ConfigError, match=r"nbd\.path: must be one of ktls, relay"):
        Config().set("nbd.path", "kernel")
