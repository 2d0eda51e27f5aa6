"""NBD URI parsing (appliance.nbd.uri), table-driven like libnbd's nbd_connect_uri."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.errors import UsageError
from appliance.nbd.uri import NBD_DEFAULT_PORT, parse_uri

GOOD = [
    ("nbd://example.com", dict(tls=False, host="example.com", port=10809, export="")),
    ("nbd://example.com/", dict(host="example.com", export="")),
    ("nbd://example.com:1234/disk", dict(port=1234, export="disk")),
    ("nbd://h//abs", dict(export="/abs")),
    ("nbd://h/a%20b%2Fc", dict(export="a b/c")),
    ("nbd://127.0.0.1:10810/x", dict(host="127.0.0.1", port=10810)),
    ("nbd://[::1]/", dict(host="::1", port=NBD_DEFAULT_PORT)),
    ("nbd://[::1]:99/e", dict(host="::1", port=99, export="e")),
    ("nbds://alice@h/d?tls-psk-file=/k/keys.psk",
     dict(tls=True, tls_username="alice", tls_psk_file="/k/keys.psk", export="d")),
    ("nbds://h/?tls-certificates=/etc/pki/qemu&tls-verify-peer=false",
     dict(tls=True, tls_certificates="/etc/pki/qemu", tls_verify_peer=False)),
    ("nbds://h/?tls-username=bob", dict(tls_username="bob")),
    ("nbd+unix:///disk?socket=/tmp/s.sock", dict(socket="/tmp/s.sock", host=None, export="disk")),
    ("nbd+unix://?socket=/tmp/s", dict(socket="/tmp/s", export="")),
    ("nbds+unix://alice@/?socket=/tmp/s&tls-psk-file=k",
     dict(tls=True, socket="/tmp/s", tls_username="alice", tls_psk_file="k")),
    ("NBD://H/", dict(host="h")),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_uris(text: str, expected: dict[str, object]) -> None:
    u = parse_uri(text)
    got = dataclasses.asdict(u)
    for key, value in expected.items():
        assert got[key] == value, key
    assert str(u) == text


BAD = [
    ("example.com/disk", "expected nbd://"),
    ("http://h/", "unknown scheme"),
    ("nbd+vsock://3/", "not supported"),
    ("nbd:///disk", "no server host"),
    ("nbd://h:99999/", "port"),
    ("nbd://h:0/", "port 0"),
    ("nbd://h:x/", "port"),
    ("nbd://[::1/", "IPv6"),
    ("nbd://h/?tls-psk-file=k", "nbds://"),
    ("nbd://h/?socket=/s", "+unix"),
    ("nbd+unix:///d", "socket=PATH"),
    ("nbd+unix://h/d?socket=/s", "no host"),
    ("nbds://h/?tls-psk-file=a&tls-certificates=b", "not both"),
    ("nbds://h/?tls-psk-file=", "empty"),
    ("nbds://h/?bogus=1", "unknown query parameter"),
    ("nbds://h/?tls-verify-peer=maybe", "not a boolean"),
    ("nbds://a:secret@h/", "password"),
    ("nbds://a@h/?tls-username=b", "twice"),
    ("nbd://h/?socket=/a&socket=/b", "twice"),
    ("nbd://h/d#frag", "fragment"),
    ("nbd://h/" + "x" * 4097, "4096"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_uris_are_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_uri(text)
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg


def test_address_forms() -> None:
    assert parse_uri("nbd://[::1]:5/").address == "[::1]:5"
    assert parse_uri("nbd://h/").address == "h:10809"
    assert parse_uri("nbd+unix:///?socket=/run/s").address == "/run/s"
    assert parse_uri("nbd+unix:///?socket=/run/s").is_unix


def test_uri_is_frozen() -> None:
    u = parse_uri("nbd://h/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.port = 1  # type: ignore[misc]
