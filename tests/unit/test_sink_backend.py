"""The bulk-transfer test helpers talk to each other directly (no proxy): what the sink counts
and what the client drains must be exactly what was sent."""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from collections.abc import Iterator

import pytest
from tests.support.rss import MB, PeakRss, rss_bytes
from tests.support.sink_backend import (
    PATTERN,
    SinkBackend,
    drain_response,
    pattern_crc32,
    send_pattern_body,
)

SIZE = 3 * (1 << 20) + 17  # not a multiple of the pattern nor of the 1 MiB pieces


@pytest.fixture
def sink() -> Iterator[SinkBackend]:
    with SinkBackend() as backend:
        yield backend


def connect(sink: SinkBackend) -> socket.socket:
    return socket.create_connection((sink.host, sink.port), timeout=10)


def test_pattern_crc32() -> None:
    data = (PATTERN * 50)[:SIZE]
    assert pattern_crc32(SIZE) == zlib.crc32(data)
    assert pattern_crc32(0) == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_is_counted(sink: SinkBackend, chunked: bool) -> None:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % SIZE
    with connect(sink) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: s\r\n" + framing + b"\r\n\r\n")
        send_pattern_body(sock, 1 << 20, chunked=chunked, last_chunk=False)
        send_pattern_body(sock, SIZE - (1 << 20), chunked=chunked)
        resp = drain_response(sock)
        # keep-alive: a second request on the same connection
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: s\r\n\r\n")
        again = drain_response(sock)
    assert resp.status_line == "HTTP/1.1 200 OK"
    assert resp.header("content-type") == "application/json"
    framing_name = "chunked" if chunked else "content-length"
    assert resp.framing == "content-length"
    assert again.status_line == "HTTP/1.1 200 OK"
    up, second = sink.requests
    assert (up.method, up.target, up.framing) == ("POST", "/up", framing_name)
    assert (up.received, up.crc32) == (SIZE, pattern_crc32(SIZE))
    assert (second.target, second.framing, second.received) == ("/again", "none", 0)
    assert up.connection_id == second.connection_id


def test_summary_body_and_trailers(sink: SinkBackend) -> None:
    with connect(sink) as sock:
        sock.sendall(
            b"POST /t HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head
    assert json.loads(body) == {"received": 3, "crc32": zlib.crc32(b"abc"), "framing": "chunked"}
    assert sink.requests[0].trailers == [("X-T", "1")]


@pytest.mark.parametrize("chunked", [False, True])
def test_generated_response_is_drained(sink: SinkBackend, chunked: bool) -> None:
    with connect(sink) as sock:
        sock.sendall(
            b"GET /down HTTP/1.1\r\nHost: s\r\nx-sink-respond-bytes: %d\r\n"
            b"x-sink-respond-chunked: %d\r\n\r\n" % (SIZE, chunked)
        )
        resp = drain_response(sock)
    assert resp.framing == ("chunked" if chunked else "content-length")
    assert (resp.size, resp.crc32) == (SIZE, pattern_crc32(SIZE))
    assert resp.trailers == []


def test_drain_close_delimited_and_short() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname()) as client:
        peer, _ = server.accept()
        with peer:
            peer.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx: y\r\n\r\nabcdef")
            peer.shutdown(socket.SHUT_WR)
            resp = drain_response(client)
    assert (resp.status_line, resp.framing, resp.size) == ("HTTP/1.1 200 OK", "close", 6)
    assert resp.headers == [("x", "y")]

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname()) as client:
        peer, _ = server.accept()
        with peer:
            peer.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            peer.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionError):
                drain_response(client)


def test_peak_rss_sees_an_allocation() -> None:
    with PeakRss(os.getpid(), interval=0.001) as rss:
        block = bytearray(64 << 20)  # zero-filled by calloc: make every page resident
        block[:: 1 << 12] = b"x" * len(block[:: 1 << 12])
        seen = rss.samples
        deadline = time.monotonic() + 5
        while rss.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        del block
    assert rss.peak - rss.start > 32 * MB, rss.summary()
    assert rss_bytes(os.getpid()) > 0
