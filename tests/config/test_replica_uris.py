"""nbd.uri with several replicas: parsing, canonical text, and what makes it bootable."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.boot.sequence import write_key
from appliance.config import Config
from appliance.config.validate import check_replicas, parse_nbd_uris
from appliance.errors import ConfigError
from appliance.nbd.uri import parse_uri

KEY = "0123456789abcdef" * 4
R1 = "nbds://board7@10.0.2.2:10809/golden"
R2 = "nbds://board7@10.0.2.3:10809/golden"


def replicas() -> Config:
    return (Config().set("nbd.uri", f"{R1}   {R2}").set("psk.identity", "board7")
            .set("psk.key", KEY).set("root.mode", "overlay"))


def test_several_uris_are_kept_in_order_with_one_space() -> None:
    config = replicas()
    assert config.raw("nbd.uri") == f"{R1} {R2}"
    boot = config.boot_config()
    assert [u.host for u in boot.uris] == ["10.0.2.2", "10.0.2.3"]
    assert boot.uri.host == "10.0.2.2"


def test_one_uri_is_unchanged() -> None:
    assert [u.uri for u in parse_nbd_uris(R1)] == [R1]


@pytest.mark.parametrize(("text", "message"), [
    (f"{R1} nbd://10.0.2.3/golden", "nbd.uri: replicas must use one scheme: "
     "nbd://10.0.2.3/golden differs from"),
    (f"{R1} nbds://board7@10.0.2.2:10809/golden", "server 10.0.2.2:10809 is named twice"),
    (f"{R1} http://10.0.2.3/golden", "bad NBD URI 'http://10.0.2.3/golden'"),
    (f"{R1} nbd+unix:///r?socket=/s", "a unix-socket URI cannot work"),
])
def test_bad_replica_lists_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config().set("nbd.uri", text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_several_replicas_need_a_read_only_root() -> None:
    with pytest.raises(ConfigError, match=r"needs root\.mode=overlay"):
        replicas().set("root.mode", "rw").boot_config()


def test_every_replica_must_name_the_configured_identity() -> None:
    other = "nbds://board8@10.0.2.3:10809/golden"
    with pytest.raises(ConfigError, match="differs from the user 'board8'"):
        replicas().set("nbd.uri", f"{R1} {other}").boot_config()


def test_unix_replicas_of_one_family_pass_the_cli_check() -> None:
    check_replicas([parse_uri("nbd+unix:///x?socket=/a"), parse_uri("nbd+unix:///x?socket=/b")])
    with pytest.raises(ValueError, match="one scheme"):
        check_replicas([parse_uri("nbd+unix:///x?socket=/a"), parse_uri("nbd://h/x")])


def test_the_boot_gives_every_replica_the_key_file(tmp_path: Path) -> None:
    uris = write_key(replicas().boot_config(), tmp_path).split()
    assert len(uris) == 2
    assert all(parse_uri(u).tls_psk_file == str(tmp_path / "psk") for u in uris)
    assert [parse_uri(u).host for u in uris] == ["10.0.2.2", "10.0.2.3"]
