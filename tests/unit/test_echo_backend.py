"""Tests for the stdlib echo backend used by the integration tests."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import echo_backend
from tests.support.echo_backend import EchoBackend


@pytest.fixture
def backend() -> Iterator[EchoBackend]:
    with EchoBackend("b1") as b:
        yield b


def _connect(b: EchoBackend) -> socket.socket:
    sock = socket.create_connection(b.address, timeout=5)
    return sock


def _read_all(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, bool]:
    """Read until EOF or until nothing arrives for ``timeout``; returns (data, closed)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        if not chunk:
            return data, True
        data += chunk


def _wait_requests(b: EchoBackend, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(b.requests) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(b.requests) >= n


def test_default_get_json_echo(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    conn.request("GET", "/hello?x=1", headers={"X-Custom": "Value"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200
    assert resp.getheader("content-type") == "application/json"
    assert resp.getheader("x-backend") == "b1"
    assert int(resp.getheader("content-length") or -1) == len(body)
    doc = json.loads(body)
    assert doc["backend"] == "b1"
    assert doc["method"] == "GET"
    assert doc["target"] == "/hello?x=1"
    assert doc["version"] == "HTTP/1.1"
    assert ["X-Custom", "Value"] in doc["headers"]
    assert doc["body_len"] == 0
    assert doc["connection_id"] == 1
    req = backend.requests[0]
    assert req.header("x-custom") == "Value"
    assert ("X-Custom", "Value") in req.headers  # original case kept
    conn.close()


def test_header_order_and_case_preserved(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nzZ-B: 1\r\nAa-A: 2\r\nzz-b: 3\r\n\r\n")
    data, _ = _read_all(sock, 0.5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    sock.close()
    req = backend.requests[0]
    assert req.headers == [("Host", "h"), ("zZ-B", "1"), ("Aa-A", "2"), ("zz-b", "3")]
    assert req.header("ZZ-b") == "1"


def test_keep_alive_reuses_connection(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    for _ in range(3):
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()
    assert backend.connections_accepted == 1
    assert [r.connection_id for r in backend.requests] == [1, 1, 1]
    conn2 = http.client.HTTPConnection(*backend.address, timeout=5)
    conn2.request("GET", "/")
    assert json.loads(conn2.getresponse().read())["connection_id"] == 2
    conn2.close()
    assert backend.connections_accepted == 2


def test_post_content_length_body(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    conn.request("POST", "/p", body=b"hello world")
    doc = json.loads(conn.getresponse().read())
    assert doc["body_len"] == 11
    assert backend.requests[0].body == b"hello world"
    conn.close()


def test_chunked_request_with_trailers(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\nX-Other: 1\r\n\r\n"
    )
    data, closed = _read_all(sock, 0.5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not closed
    sock.close()
    req = backend.requests[0]
    assert req.body == b"hello world"
    assert req.trailers == [("X-Sum", "abc"), ("X-Other", "1")]
    assert req.raw.startswith(b"POST /c HTTP/1.1\r\n")
    assert req.raw.endswith(b"0\r\nX-Sum: abc\r\nX-Other: 1\r\n\r\n")


def test_raw_bytes_per_request_and_connection(backend: EchoBackend) -> None:
    sock = _connect(backend)
    first = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
    second = b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    incomplete = b"POST /3 HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"
    sock.sendall(first + second + incomplete)
    _read_all(sock, 0.5)
    assert [r.raw for r in backend.requests] == [first, second]
    assert backend.received_bytes(1) == first + second + incomplete
    backend.clear()
    assert backend.received_bytes(1) == b""
    sock.close()


def test_control_headers(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    conn.putrequest("GET", "/")
    conn.putheader("x-echo-status", "404")
    conn.putheader("x-echo-header", "a-one=1")
    conn.putheader("x-echo-header", "A-Two=two = 2")
    conn.putheader("x-echo-body-size", "7")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 404
    assert resp.getheader("a-one") == "1"
    assert resp.getheader("a-two") == "two = 2"
    assert resp.getheader("content-type") == "text/plain"
    assert resp.read() == b"xxxxxxx"
    conn.close()


def test_head_has_no_body(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\nx-echo-body-size: 50\r\n\r\n")
    data, closed = _read_all(sock, 0.5)
    assert not closed
    assert data.endswith(b"content-length: 50\r\n\r\n")
    sock.close()


def test_chunked_response_with_trailers(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-body-size: 10\r\nx-echo-chunked: 1\r\n"
        b"x-echo-trailer: t-one=1\r\nx-echo-trailer: t-two=2\r\n\r\n"
    )
    data, closed = _read_all(sock, 0.5)
    assert not closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert b"content-length" not in head
    assert body == b"4\r\nxxxx\r\n4\r\nxxxx\r\n2\r\nxx\r\n0\r\nt-one: 1\r\nt-two: 2\r\n\r\n"
    sock.close()


def test_echo_close(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-close: 1\r\n\r\n")
    data, closed = _read_all(sock)
    assert closed
    assert b"\r\nconnection: close\r\n" in data
    sock.close()


def test_client_connection_close_and_http10(backend: EchoBackend) -> None:
    for raw in (
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        sock = _connect(backend)
        sock.sendall(raw)
        data, closed = _read_all(sock)
        assert closed
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.close()


def test_pipelined_requests(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    data, _ = _read_all(sock, 0.5)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert [r.target for r in backend.requests] == ["/1", "/2"]
    sock.close()


def test_delay(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    start = time.monotonic()
    conn.request("GET", "/", headers={"x-echo-delay-ms": "300"})
    conn.getresponse().read()
    assert time.monotonic() - start >= 0.29
    conn.close()


def test_behavior_reset(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: reset\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        _read_all(sock)
    sock.close()
    assert len(backend.requests) == 1


def test_behavior_garbage(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: garbage\r\n\r\n")
    assert _read_all(sock) == (b"this is not http\r\n\r\n", True)
    sock.close()


def test_behavior_close(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: close\r\n\r\n")
    assert _read_all(sock) == (b"", True)
    sock.close()


def test_behavior_hang_until_stop() -> None:
    b = EchoBackend("hang").start()
    sock = _connect(b)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: hang\r\n\r\n")
    assert _read_all(sock, 0.3) == (b"", False)
    start = time.monotonic()
    b.stop()
    assert time.monotonic() - start < 2
    assert _read_all(sock, 2) == (b"", True)
    sock.close()


def test_behavior_partial(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: partial\r\n\r\n")
    data, closed = _read_all(sock)
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 100" in head
    assert body == b"x" * 10
    sock.close()


def test_behavior_100_continue(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: 100-continue\r\n\r\n")
    data, closed = _read_all(sock, 0.5)
    assert not closed
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert data.count(b"100 Continue") == 1
    sock.close()


def test_expect_100_continue_answered_before_body(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    data, _ = _read_all(sock, 0.5)
    assert data == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"abc")
    data, _ = _read_all(sock, 0.5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert backend.requests[0].body == b"abc"
    sock.close()


def test_behavior_no_length(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: h\r\nx-echo-behavior: no-length\r\nx-echo-body-size: 5\r\n\r\n"
    )
    data, closed = _read_all(sock)
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length" not in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == b"xxxxx"
    sock.close()


def test_bad_request_gets_400(backend: EchoBackend) -> None:
    sock = _connect(backend)
    sock.sendall(b"NONSENSE\r\n\r\n")
    data, closed = _read_all(sock)
    assert closed
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    sock.close()


def test_clear(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(*backend.address, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    _wait_requests(backend, 1)
    backend.clear()
    assert backend.requests == []
    assert backend.connections_accepted == 1
    conn.close()


def test_main_process_prints_port_and_stops_on_sigterm() -> None:
    script = Path(echo_backend.__file__)
    proc = subprocess.Popen(
        [sys.executable, str(script), "--name", "proc", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT ")
        port = int(line.split()[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.getheader("x-backend") == "proc"
        resp.read()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
