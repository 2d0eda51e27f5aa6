"""``appliance nbd attach URI URI...``: a list that cannot be replicas is refused in one line,
before anything connects (exit 2)."""

from __future__ import annotations

import pytest

from tests.relay.test_cli_attach import appliance, one_line_error


@pytest.mark.parametrize(("uris", "message"), [
    (["nbds://a@127.0.0.1:7/x?tls-psk-file=/k.psk", "nbd://127.0.0.2:7/x"],
     "replicas must use one scheme: nbd://127.0.0.2:7/x differs from"),
    (["nbd://127.0.0.1:7/x", "nbd+unix:///x?socket=/tmp/s"], "replicas must use one scheme"),
    (["nbd://127.0.0.1:7/x", "nbd://127.0.0.1:7/y"], "server 127.0.0.1:7 is named twice"),
    (["nbd://127.0.0.1:7/x", "nbds://a@127.0.0.2/x?tls-psk-file=k.psk"], "absolute path"),
])
def test_attach_refuses_a_list_that_cannot_be_replicas(uris: list[str], message: str) -> None:
    proc = appliance("nbd", "attach", *uris, "--no-root-daemon")
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc)
