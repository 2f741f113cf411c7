"""The tls_inspector's ClientHello parser and the http_inspector's protocol detection, fed
real ClientHellos made by Python's ssl module (no sockets)."""

from __future__ import annotations

import ssl

import pytest

from pilotfish.extensions.filters.listener.http_inspector import HttpInspector, detect
from pilotfish.extensions.filters.listener.tls_inspector import (
    NEED_MORE,
    NOT_TLS,
    ClientHello,
    TlsInspector,
    parse_client_hello,
)
from pilotfish.net.connection import ConnectionInfo


def client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def info() -> ConnectionInfo:
    return ConnectionInfo(1, ("127.0.0.1", 10000), ("127.0.0.1", 20000), 0.0, 1 << 20)


def test_sni_and_alpn_are_read_from_a_real_client_hello() -> None:
    hello = parse_client_hello(client_hello("Api.Example.COM", ["h2", "http/1.1"]))
    assert isinstance(hello, ClientHello)
    assert (hello.server_name, hello.alpn) == ("api.example.com", ("h2", "http/1.1"))


def test_a_client_hello_without_sni() -> None:
    hello = parse_client_hello(client_hello(None))
    assert isinstance(hello, ClientHello) and hello.server_name == "" and hello.alpn == ()


def test_every_prefix_of_a_client_hello_needs_more() -> None:
    data = client_hello("a.example.com")
    for cut in (0, 1, 4, 5, 40, len(data) - 1):
        assert parse_client_hello(data[:cut]) == NEED_MORE


def test_a_client_hello_split_over_two_records() -> None:
    data = client_hello("split.example.com", ["h2"])
    body = data[5:]
    half = len(body) // 2
    records = b"".join(
        b"\x16" + data[1:3] + len(part).to_bytes(2, "big") + part
        for part in (body[:half], body[half:])
    )
    hello = parse_client_hello(records)
    assert isinstance(hello, ClientHello) and hello.server_name == "split.example.com"


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x16\x01", b"\x15\x03\x01\x00\x02"])
def test_other_bytes_are_not_tls(data: bytes) -> None:
    assert parse_client_hello(data) == NOT_TLS


def test_tls_inspector_sets_transport_protocol_server_name_and_alpn() -> None:
    conn, inspector = info(), TlsInspector()
    data = client_hello("svc.test", ["istio-peer-exchange", "istio"])
    assert not inspector.on_data(conn, data[:10])
    assert inspector.on_data(conn, data)
    assert (conn.transport_protocol, conn.server_name) == ("tls", "svc.test")
    assert conn.application_protocols == ("istio-peer-exchange", "istio")
    plain = info()
    assert inspector.on_data(plain, b"GET / HTTP/1.1\r\n")
    assert (plain.transport_protocol, plain.server_name) == ("raw_buffer", "")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET /x HTTP/1.1\r\nhost: a\r\n", "http/1.1"),
        (b"POST / HTTP/1.0\r\n", "http/1.0"),
        (b"GET / HTTP/1.1\n", "http/1.1"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h2c"),
        (b"PRI * HTTP/2.0\r\n", None),
        (b"GET /long/pa", None),
        (b"GET / HTTP/1.", None),
        (b"\x16\x03\x01", ""),
        (b"SSH-2.0-OpenSSH\r\n", ""),
        (b"GET / HTTP/2.0\r\n", ""),
    ],
)
def test_http_inspector_detects_the_protocol(data: bytes, expected: str | None) -> None:
    assert detect(data) == expected


def test_http_inspector_leaves_tls_connections_alone() -> None:
    conn = info()
    conn.transport_protocol = "tls"
    assert HttpInspector().on_data(conn, b"GET / HTTP/1.1\r\n")
    assert conn.application_protocols == ()
