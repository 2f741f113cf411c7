"""Bad input on both sides of the proxy, end to end over real sockets.

Every case runs on pilotfish and on real Envoy 1.40 with the same bootstrap (each proxy
started once for the module), so the Envoy run proves that the expected answer is Envoy's; a
known pilotfish difference is a strict xfail of its run that says what differs.

* Malformed requests (request line, header names and values, framing: Content-Length with
  Transfer-Encoding, duplicate Content-Length, bad chunk sizes, unsupported codings, header
  size and count limits): the exact local reply, the connection closed by the proxy, nothing
  complete reaching the backend.
* Timeouts (request_headers_timeout, stream_idle_timeout while receiving the request and while
  waiting for the upstream, request_timeout, route timeout): Envoy's status and body.
* Upstreams that reset, send garbage, close before answering, die mid-body or hang.

After each case the proxy must still serve (a good request on a new connection works) and
hold no connection (``http.<stat_prefix>.downstream_cx_active`` back to 0).

The listeners set ``delayed_close_timeout: 0.2s`` so that Envoy's delayed close after a local
reply (1 s by default) does not dominate the runtime; pilotfish closes at once either way
(docs/compatibility.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.pairs import (
    CLOSE_WAIT,
    OPEN_WAIT,
    Deployment,
    deploy,
    each_proxy,
    masked_head,
    place_listeners,
    shape,
)
from tests.support.proxies import bootstrap, http_listener, static_cluster
from tests.support.rawconn import RawConn

# --- the deployment ------------------------------------------------------------------------


def build(echo_port: int) -> tuple[dict[str, Any], dict[str, str]]:
    routes = [
        {"match": {"prefix": "/timeout"}, "route": {"cluster": "A", "timeout": "0.5s"}},
        {"match": {"prefix": "/route-idle"}, "route": {"cluster": "A", "idle_timeout": "0.5s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "A"}},
    ]
    base = {"delayed_close_timeout": "0.2s"}
    listeners = [
        http_listener("main", routes, hcm=base),
        http_listener(
            "lim",
            routes,
            hcm={
                **base,
                "max_request_headers_kb": 2,
                "common_http_protocol_options": {"max_headers_count": 10},
            },
        ),
        http_listener("hto", routes, hcm={**base, "request_headers_timeout": "1s"}),
        http_listener("sito", routes, hcm={**base, "stream_idle_timeout": "1s"}),
        http_listener("rqto", routes, hcm={**base, "request_timeout": "1s"}),
    ]
    hosts = place_listeners(listeners)
    return bootstrap(listeners, [static_cluster("A", echo_port)]), hosts


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, echo: EchoBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """``echo`` and ``backend`` (the same echo backend ``A``) come from conftest.py."""
    yield from deploy(request, tmp_path_factory, "bad", *build(echo.port))


def still_serving(proxy: Deployment, backend: EchoBackend, listener: str) -> None:
    """A good request on a new connection is answered by the backend; the backend received no
    other complete request; the listener's connections all end."""
    with RawConn(proxy.addr(listener)) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = conn.response()
        assert resp.status == 200
        assert resp.header("x-backend") == "A"
    assert [r.target for r in backend.requests] == ["/ok"]
    no_connection_left(proxy, listener)


def no_connection_left(proxy: Deployment, listener: str) -> None:
    stat = f"http.{listener}.downstream_cx_active"
    assert proxy.wait_stat(stat, 0) == 0, f"{stat} stays above 0"


def local_reply(status_line: str, body: str) -> list[str]:
    """Envoy's local reply with a body, on a connection it closes."""
    return [
        status_line,
        f"content-length: {len(body)}",
        "content-type: text/plain",
        "date: <date>",
        "server: envoy",
        "connection: close",
    ]


def empty_reply(status_line: str) -> list[str]:
    """Envoy's local reply without a body, on a connection it closes."""
    return [status_line, "date: <date>", "server: envoy", "connection: close", "content-length: 0"]


# --- malformed requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    request: bytes
    status_line: str
    body: str  # "" → Envoy's empty local reply
    listener: str = "main"
    pilotfish_xfail: str | None = None

    @property
    def expected(self) -> list[str]:
        if self.body:
            return local_reply(self.status_line, self.body)
        return empty_reply(self.status_line)


BAD_REQUEST = "HTTP/1.1 400 Bad Request"
B400 = "Bad Request"
TOO_LARGE = "HTTP/1.1 431 Request Header Fields Too Large"
B431 = "Request Header Fields Too Large"
NOT_IMPLEMENTED = "HTTP/1.1 501 Not Implemented"
B501 = "Not Implemented"
UPGRADE_REQUIRED = "HTTP/1.1 426 Upgrade Required"
B426 = "Upgrade Required"


def get(*headers: bytes, line: bytes = b"GET /bad HTTP/1.1") -> bytes:
    return line + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def post(*headers: bytes, body: bytes = b"") -> bytes:
    return get(*headers, line=b"POST /bad HTTP/1.1") + body


CHUNKED = b"Transfer-Encoding: chunked"
HEADERS = [b"X-H%d: %d" % (i, i) for i in range(100)]

BAD: list[Bad] = [
    # request line
    Bad("garbage-request-line", b"GARBAGE\r\n\r\n", BAD_REQUEST, B400),
    Bad("space-in-target", get(line=b"GET /a b HTTP/1.1"), BAD_REQUEST, B400),
    Bad("lowercase-method", get(line=b"get /bad HTTP/1.1"), BAD_REQUEST, B400),
    Bad("unknown-method", get(line=b"FOO /bad HTTP/1.1"), BAD_REQUEST, B400),
    Bad("http-1.2", get(line=b"GET /bad HTTP/1.2"), UPGRADE_REQUIRED, B426),
    Bad("http-0.9", b"GET /\r\n\r\n", UPGRADE_REQUIRED, B426),
    Bad("http-1.0-not-accepted", get(line=b"GET /bad HTTP/1.0"), UPGRADE_REQUIRED, B426),
    Bad("fragment", get(line=b"GET /bad#frag HTTP/1.1"), BAD_REQUEST, ""),
    Bad("missing-host", b"GET /bad HTTP/1.1\r\n\r\n", BAD_REQUEST, ""),
    # header names and values
    Bad("space-in-header-name", get(b"Bad Header: x"), BAD_REQUEST, B400),
    Bad("at-in-header-name", get(b"Bad@Header: x"), BAD_REQUEST, B400),
    Bad("space-before-colon", get(b"X-Foo : bar"), BAD_REQUEST, B400),
    Bad("header-without-colon", get(b"NoColonHere"), BAD_REQUEST, B400),
    Bad("ctl-in-value", get(b"X-Ctl: a\x01b"), BAD_REQUEST, B400),
    Bad("nul-in-value", get(b"X-Nul: a\x00b"), BAD_REQUEST, B400),
    Bad("del-in-value", get(b"X-Del: a\x7fb"), BAD_REQUEST, B400),
    # framing: request smuggling defences
    Bad(
        "content-length-and-chunked",
        post(b"Content-Length: 5", CHUNKED, body=b"5\r\nhello\r\n0\r\n\r\n"),
        BAD_REQUEST,
        B400,
    ),
    Bad(
        "chunked-and-content-length",
        post(CHUNKED, b"Content-Length: 5", body=b"5\r\nhello\r\n0\r\n\r\n"),
        BAD_REQUEST,
        B400,
    ),
    Bad(
        "smuggled-request-after-cl-te",
        post(b"Content-Length: 4", CHUNKED, body=b"5\r\nhello\r\n0\r\n\r\n")
        + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        BAD_REQUEST,
        B400,
    ),
    Bad(
        "two-content-lengths-differ",
        post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
        BAD_REQUEST,
        B400,
    ),
    Bad(
        "two-content-lengths-same",
        post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
        BAD_REQUEST,
        B400,
    ),
    Bad("content-length-list", post(b"Content-Length: 5, 5", body=b"hello"), BAD_REQUEST, B400),
    Bad("content-length-not-a-number", post(b"Content-Length: abc"), BAD_REQUEST, B400),
    Bad("content-length-negative", post(b"Content-Length: -1"), BAD_REQUEST, B400),
    Bad("content-length-plus", post(b"Content-Length: +5", body=b"hello"), BAD_REQUEST, B400),
    Bad("te-gzip", post(b"Transfer-Encoding: gzip"), NOT_IMPLEMENTED, B501),
    Bad("te-identity", post(b"Transfer-Encoding: identity"), NOT_IMPLEMENTED, B501),
    Bad(
        "te-gzip-chunked",
        post(b"Transfer-Encoding: gzip, chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        NOT_IMPLEMENTED,
        B501,
    ),
    Bad(
        "te-chunked-gzip",
        post(b"Transfer-Encoding: chunked, gzip", body=b"5\r\nhello\r\n0\r\n\r\n"),
        NOT_IMPLEMENTED,
        B501,
    ),
    # chunk sizes
    Bad("chunk-size-not-hex", post(CHUNKED, body=b"zz\r\nhello\r\n0\r\n\r\n"), BAD_REQUEST, B400),
    Bad("chunk-size-negative", post(CHUNKED, body=b"-5\r\nhello\r\n0\r\n\r\n"), BAD_REQUEST, B400),
    Bad(
        "chunk-size-overflow",
        post(CHUNKED, body=b"1" + b"0" * 19 + b"\r\nhello\r\n0\r\n\r\n"),
        BAD_REQUEST,
        B400,
    ),
    Bad("chunk-without-crlf", post(CHUNKED, body=b"5\r\nhelloXX0\r\n\r\n"), BAD_REQUEST, B400),
    # limits
    Bad("headers-over-max-kb", get(b"X-Big: " + b"v" * 3000), TOO_LARGE, B431, "lim"),
    Bad("headers-over-default-60kb", get(b"X-Big: " + b"v" * (61 * 1024)), TOO_LARGE, B431),
    Bad("headers-over-max-count", get(*HEADERS[:10]), TOO_LARGE, B431, "lim"),
    Bad("headers-over-default-count", get(*HEADERS[:100]), TOO_LARGE, B431),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
@each_proxy()
def test_malformed_request(
    proxy: Deployment, backend: EchoBackend, case: Bad, request: pytest.FixtureRequest
) -> None:
    """The exact local reply, then the proxy closes; no complete request reaches the backend
    (a pipelined request after the bad one is not served either)."""
    if proxy.kind == "pilotfish" and case.pilotfish_xfail is not None:
        # Marked here rather than in the parameters, which would keep pytest from running
        # all the cases of one proxy together (it would restart the proxies between cases).
        request.applymarker(
            pytest.mark.xfail(reason=f"pilotfish: {case.pilotfish_xfail}", strict=True)
        )
    with RawConn(proxy.addr(case.listener)) as conn:
        conn.send(case.request)
        resp = conn.response()
        assert shape(resp) == case.expected
        assert resp.body == case.body.encode()
        assert conn.wait_closed(CLOSE_WAIT) is not None
        assert conn.data == b""
    still_serving(proxy, backend, case.listener)


@pytest.mark.parametrize(
    "request_bytes",
    [get(*HEADERS[:9]), get(b"X-Big: " + b"v" * 1990)],
    ids=["max-count", "just-under-max-kb"],
)
@each_proxy()
def test_at_the_header_limits(
    proxy: Deployment, backend: EchoBackend, request_bytes: bytes
) -> None:
    """Exactly max_headers_count headers (Host included), and a head just under
    max_request_headers_kb, are accepted."""
    with RawConn(proxy.addr("lim")) as conn:
        conn.send(request_bytes)
        assert conn.response().status == 200
    (got,) = backend.requests
    assert got.target == "/bad"


# --- timeouts ------------------------------------------------------------------------------


def timed_response(conn: RawConn, timeout: float) -> tuple[float, list[str], bytes]:
    started = time.monotonic()
    resp = conn.response(timeout=timeout + 2.0)
    return time.monotonic() - started, shape(resp), resp.body


@pytest.mark.parametrize(
    "partial",
    [b"GET /hto HTTP/1.1\r\nHost: x\r\nX-Partial: 1\r\n", b"GET /hto HT"],
    ids=["headers", "request-line"],
)
@each_proxy()
def test_request_headers_timeout(proxy: Deployment, backend: EchoBackend, partial: bytes) -> None:
    """request_headers_timeout 1 s, request head incomplete: 408 ``request header timeout``
    and the close."""
    with RawConn(proxy.addr("hto")) as conn:
        conn.send(partial)
        elapsed, lines, body = timed_response(conn, 1.0)
        assert lines == local_reply("HTTP/1.1 408 Request Timeout", "request header timeout")
        assert body == b"request header timeout"
        assert elapsed > 0.8
        assert conn.wait_closed(CLOSE_WAIT) is not None
    still_serving(proxy, backend, "hto")


@each_proxy()
def test_request_headers_timeout_needs_a_first_byte(
    proxy: Deployment, backend: EchoBackend
) -> None:
    """A connection that sends nothing gets no 408 from request_headers_timeout."""
    with RawConn(proxy.addr("hto")) as conn:
        assert conn.wait_closed(1.6) is None
        assert conn.data == b""
        conn.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200
    no_connection_left(proxy, "hto")


@each_proxy()
def test_stream_idle_timeout_while_receiving(proxy: Deployment, backend: EchoBackend) -> None:
    """stream_idle_timeout 1 s, request body incomplete: 408 ``stream timeout`` and the
    close; the backend never gets a complete request."""
    with RawConn(proxy.addr("sito")) as conn:
        conn.send(b"POST /idle HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcd")
        elapsed, lines, body = timed_response(conn, 1.0)
        assert lines == local_reply("HTTP/1.1 408 Request Timeout", "stream timeout")
        assert body == b"stream timeout"
        assert elapsed > 0.8
        assert conn.wait_closed(CLOSE_WAIT) is not None
    still_serving(proxy, backend, "sito")


@each_proxy()
def test_stream_idle_timeout_waiting_for_upstream(proxy: Deployment, backend: EchoBackend) -> None:
    """stream_idle_timeout 1 s while the upstream takes 2.5 s: 504 ``stream timeout``; the
    client connection stays open."""
    with RawConn(proxy.addr("sito")) as conn:
        conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-echo-delay-ms: 2500\r\n\r\n")
        elapsed, lines, body = timed_response(conn, 1.0)
        assert lines == [
            "HTTP/1.1 504 Gateway Timeout",
            "content-length: 14",
            "content-type: text/plain",
            "date: <date>",
            "server: envoy",
        ]
        assert body == b"stream timeout"
        assert elapsed > 0.8
        conn.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200
    no_connection_left(proxy, "sito")


@each_proxy()
def test_route_idle_timeout_overrides_the_stream_idle_timeout(
    proxy: Deployment, backend: EchoBackend
) -> None:
    """A route's idle_timeout (0.5 s) applies instead of the HCM's stream_idle_timeout (none
    on ``main``): 504 ``stream timeout`` while the upstream takes 2 s."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /route-idle HTTP/1.1\r\nHost: x\r\nx-echo-delay-ms: 2000\r\n\r\n")
        elapsed, lines, body = timed_response(conn, 0.5)
        assert lines[0] == "HTTP/1.1 504 Gateway Timeout"
        assert body == b"stream timeout"
        assert 0.4 < elapsed < 1.8


@each_proxy()
def test_request_timeout(proxy: Deployment, backend: EchoBackend) -> None:
    """request_timeout 1 s, request body incomplete: 408 ``request timeout`` and the close."""
    with RawConn(proxy.addr("rqto")) as conn:
        conn.send(b"POST /rqto HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcd")
        elapsed, lines, body = timed_response(conn, 1.0)
        assert lines == local_reply("HTTP/1.1 408 Request Timeout", "request timeout")
        assert body == b"request timeout"
        assert elapsed > 0.8
        assert conn.wait_closed(CLOSE_WAIT) is not None
    still_serving(proxy, backend, "rqto")


@each_proxy()
def test_request_timeout_ends_with_the_request(proxy: Deployment, backend: EchoBackend) -> None:
    """request_timeout only covers receiving the request: a complete request whose upstream
    answers after 1.5 s gets that answer."""
    with RawConn(proxy.addr("rqto")) as conn:
        conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-echo-delay-ms: 1500\r\n\r\n")
        resp = conn.response(timeout=6)
        assert resp.status == 200
        assert resp.header("x-backend") == "A"
    no_connection_left(proxy, "rqto")


@each_proxy()
def test_route_timeout(proxy: Deployment, backend: EchoBackend) -> None:
    """Route timeout 0.5 s, upstream hangs: 504 ``upstream request timeout``; the client
    connection stays open and serves the next request."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /timeout HTTP/1.1\r\nHost: x\r\nx-echo-behavior: hang\r\n\r\n")
        elapsed, lines, body = timed_response(conn, 0.5)
        assert lines == [
            "HTTP/1.1 504 Gateway Timeout",
            "content-length: 24",
            "content-type: text/plain",
            "date: <date>",
            "server: envoy",
        ]
        assert body == b"upstream request timeout"
        assert elapsed > 0.4
        conn.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200
    no_connection_left(proxy, "main")
    hung = backend.requests[0]
    assert masked_head(hung).startswith(b"GET /timeout HTTP/1.1\r\nhost: x\r\n")
    assert b"x-envoy-expected-rq-timeout-ms: 500\r\n" in masked_head(hung)


# --- misbehaving upstreams -----------------------------------------------------------------

RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "


@pytest.mark.parametrize(
    ("behavior", "status_line", "reason"),
    [
        ("reset", "HTTP/1.1 503 Service Unavailable", "connection termination"),
        ("close", "HTTP/1.1 503 Service Unavailable", "connection termination"),
        ("garbage", "HTTP/1.1 502 Bad Gateway", "protocol error"),
    ],
)
@each_proxy()
def test_upstream_fails_before_headers(
    proxy: Deployment, backend: EchoBackend, behavior: str, status_line: str, reason: str
) -> None:
    """The upstream resets, closes or sends garbage instead of a response: Envoy's 503/502
    with the reset reason; the client connection stays open and the next request (on a new
    upstream connection) works."""
    body = RESET_BEFORE_HEADERS + reason
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"GET /fail HTTP/1.1\r\nHost: x\r\nx-echo-behavior: %s\r\n\r\n" % behavior.encode()
        )
        resp = conn.response()
        assert shape(resp) == [
            status_line,
            f"content-length: {len(body)}",
            "content-type: text/plain",
            "date: <date>",
            "server: envoy",
        ]
        assert resp.body == body.encode()
        conn.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        after = conn.response()
        assert after.status == 200
        assert conn.wait_closed(OPEN_WAIT) is None
    failed, ok = backend.requests
    assert ok.connection_id != failed.connection_id
    no_connection_left(proxy, "main")


@each_proxy()
def test_upstream_dies_mid_body(proxy: Deployment, backend: EchoBackend) -> None:
    """The upstream announces 100 bytes, sends 10 and closes: the head and the 10 bytes are
    forwarded, then the proxy closes the client connection (the response stays short)."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /partial HTTP/1.1\r\nHost: x\r\nx-echo-behavior: partial\r\n\r\n")
        assert conn.wait_closed(CLOSE_WAIT) is not None
        head, sep, body = bytes(conn.data).partition(b"\r\n\r\n")
    assert sep
    lines = head.decode().split("\r\n")
    assert lines[:4] == [
        "HTTP/1.1 200 OK",
        "content-type: text/plain",
        "x-backend: A",
        "content-length: 100",
    ]
    assert [line.split(":")[0] for line in lines[4:]] == [
        "x-envoy-upstream-service-time",
        "date",
        "server",
    ]
    assert body == b"x" * 10
    backend.clear()
    still_serving(proxy, backend, "main")


@each_proxy()
def test_client_disconnect_while_upstream_hangs(proxy: Deployment, backend: EchoBackend) -> None:
    """A client that gives up on a hanging upstream leaves no connection behind."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /hang HTTP/1.1\r\nHost: x\r\nx-echo-behavior: hang\r\n\r\n")
        deadline = time.monotonic() + 5
        while not backend.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r.target for r in backend.requests] == ["/hang"]
    backend.clear()
    still_serving(proxy, backend, "main")
