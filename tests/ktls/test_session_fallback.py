"""Where the kernel cannot take TLS over, the kTLS path says why and the boot uses the relay.

Against a real TLS-PSK qemu-nbd on loopback.  This host's kernel has no ``tls``
upper-layer protocol (checked below, so the test fails rather than lies where it has one):
OpenSSL completes the handshake with OP_ENABLE_KTLS set, keeps the records in user space,
and :func:`open_session` must refuse the socket -- the nbd driver would read ciphertext.
"""

from __future__ import annotations

import ssl
import struct
import threading
from pathlib import Path

import pytest

from appliance.errors import BoardError, KtlsUnavailable, TransportError
from appliance.ktls import offload
from appliance.ktls.session import ktls_context, open_session
from appliance.ktls.supervisor import prepare
from appliance.nbd.uri import parse_uri
from tests import servers

pytestmark = pytest.mark.interop

SIZE = 4 << 20


@pytest.fixture
def no_ktls_here() -> None:
    if offload.kernel_has_tls():
        pytest.skip("this kernel has kTLS: the fallback cannot be shown here")


def test_the_context_asks_openssl_for_kernel_tls(psk_file: Path) -> None:
    ctx = ktls_context(parse_uri(f"nbds://alice@127.0.0.1/x?tls-psk-file={psk_file}"))
    assert ctx.options & ssl.OP_ENABLE_KTLS


def test_a_plaintext_uri_is_not_for_the_ktls_path() -> None:
    with pytest.raises(KtlsUnavailable, match="needs an nbds:// URI"):
        ktls_context(parse_uri("nbd://127.0.0.1/x"))


def test_without_kernel_tls_the_negotiated_socket_is_refused_naming_why(
        nbd_servers, psk_file: Path, tmp_path: Path, no_ktls_here: None) -> None:
    image = servers.make_image(tmp_path / "disk.raw", SIZE)
    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    uri = parse_uri(srv.uri())
    with pytest.raises(KtlsUnavailable) as caught:
        open_session(uri, ktls_context(uri))
    message = str(caught.value)
    assert "the kernel did not take over TLS" in message
    assert "no TLS ULP on the socket" in message
    assert "TLS" in message.split("(", 1)[1]  # the negotiated cipher is named


def test_prepare_names_the_missing_tls_module(psk_file: Path, no_ktls_here: None) -> None:
    with pytest.raises(KtlsUnavailable, match="the kernel has no 'tls' upper-layer protocol"):
        prepare(parse_uri(f"nbds://alice@127.0.0.1/x?tls-psk-file={psk_file}"))


def test_an_absent_server_is_the_clients_one_line_error_not_a_fallback(
        psk_file: Path) -> None:
    port = servers.free_port()
    uri = parse_uri(f"nbds://alice@127.0.0.1:{port}/x?tls-psk-file={psk_file}")
    with pytest.raises(TransportError, match="refused"):
        open_session(uri, ktls_context(uri), timeout=2.0)


def test_offload_reads_the_kernels_crypto_info() -> None:
    raw = struct.pack("=HH", 0x0304, 54) + bytes(52)  # tls12_crypto_info_chacha20_poly1305
    assert offload.crypto_info(raw) == "TLS 1.3 ChaCha20-Poly1305"
    assert offload.crypto_info(struct.pack("=HH", 0x0303, 51)) == "TLS 1.2 AES-GCM-128"


def test_a_module_that_does_not_load_is_named_with_modprobes_words() -> None:
    failed = offload.BackgroundLoad(("nbdroot-no-such-module",)).wait()
    assert len(failed) == 1 and failed[0].startswith("nbdroot-no-such-module (")


def test_the_load_starts_after_the_job_it_follows_and_times_itself() -> None:
    from appliance.background import Background

    order: list[str] = []
    gate = threading.Event()

    def board() -> None:
        gate.wait(10)
        order.append("board")
        raise BoardError("the board's modules failed")  # the board step's to report

    first = Background("board-modules", board)
    load = offload.BackgroundLoad(("nbdroot-no-such-module",), after=first)
    assert load.seconds is None
    gate.set()
    failed = load.wait()
    order.append("ktls")
    assert order == ["board", "ktls"]
    assert failed[0].startswith("nbdroot-no-such-module (")
    assert load.seconds is not None and load.seconds >= 0
