"""appliance.relay.stale_tls: a healthy connection told from a broken one, on real sockets."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest

from appliance.relay.stale_tls import clear_thread_errors, healthy


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    client.setblocking(False)
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()


def test_idle_live_connection_is_healthy(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    assert healthy(client)


def test_data_waiting_is_not_taken_for_healthy(
        tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = tcp_pair
    peer.sendall(b"x")
    assert not healthy(client)  # loopback delivers within send()
    assert client.recv(1) == b"x"  # the peek consumed nothing


def test_end_of_stream_and_reset_are_not_healthy(
        tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = tcp_pair
    peer.shutdown(socket.SHUT_WR)
    assert not healthy(client)  # loopback delivers within send()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    peer.close()  # RST
    assert not healthy(client)  # loopback delivers within send()


def test_clearing_leaves_a_tls_session_of_this_thread_working() -> None:
    key = b"k" * 32
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.set_psk_server_callback(lambda identity: key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_psk_client_callback(lambda hint: ("board", key))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(6):  # the handshake, in memory
        for end, out, into in ((client, c_out, s_in), (server, s_out, c_in)):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
            into.write(out.read())
    clear_thread_errors()
    with pytest.raises(ssl.SSLWantReadError):
        client.read(4)
    server.write(b"data")
    c_in.write(s_out.read())
    assert client.read(4) == b"data"

