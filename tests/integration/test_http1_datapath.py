"""HTTP/1.1 data path, end to end: client → proxy → backend over real sockets.

Every test runs twice with the same bootstrap: on pilotfish and on real Envoy 1.40, each
started once for the module. The Envoy run proves that what the test expects is Envoy's
behaviour; where pilotfish differs, its run is a strict xfail that says how.

Covered: keep-alive on both sides, ``Connection: close`` from the client and from the
upstream, HTTP/1.0 with and without keep-alive, chunked request and response bodies,
trailers (dropped unless ``enable_trailers``), pipelining, ``Expect: 100-continue``, HEAD,
1xx from the upstream, WebSocket upgrades (refused, accepted and tunnelled, declined by the
upstream), absolute-form targets, and bulk transfers that must stream: a 256 MiB response to
a client that pauses, and a 1 GiB upload, while the proxy's resident memory is watched.
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend, ReceivedRequest
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
from tests.support.rss import MB, PeakRss
from tests.support.sink_backend import (
    SinkBackend,
    drain_response,
    pattern_crc32,
    send_pattern_body,
)

RSS_LIMIT = 150 * MB
UPLOAD = 1 << 30
DOWNLOAD = 256 << 20

ECHO_200_JSON = [
    "HTTP/1.1 200 OK",
    "content-type: application/json",
    "x-backend: A",
    "content-length: <n>",
    "x-envoy-upstream-service-time: <ms>",
    "date: <date>",
    "server: envoy",
]


def upstream(target: str, host: str = "x", *extra: str, method: str = "GET") -> bytes:
    """The head Envoy sends upstream for a plain request: the client's headers (lower-cased,
    host first) then x-forwarded-proto, x-request-id, x-envoy-expected-rq-timeout-ms."""
    lines = [
        f"{method} {target} HTTP/1.1",
        f"host: {host}",
        *extra,
        "x-forwarded-proto: http",
        "x-request-id: <uuid>",
        "x-envoy-expected-rq-timeout-ms: 15000",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def echo_json(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


# --- the deployment ------------------------------------------------------------------------


def build(echo_port: int, sink_port: int) -> tuple[dict[str, Any], dict[str, str]]:
    trailers_upstream = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
        }
    }
    to_a = [{"match": {"prefix": "/"}, "route": {"cluster": "A"}}]
    main_routes = [
        # Dedicated clusters (own connection pools) where a test counts upstream connections.
        {"match": {"prefix": "/ka/"}, "route": {"cluster": "KA"}},
        {"match": {"prefix": "/cc/"}, "route": {"cluster": "CC"}},
        {"match": {"prefix": "/h10/"}, "route": {"cluster": "H10"}},
        {"match": {"prefix": "/sink"}, "route": {"cluster": "S", "timeout": "0s"}},
        *to_a,
    ]
    listeners = [
        http_listener("main", main_routes),
        http_listener("ws", to_a, hcm={"upgrade_configs": [{"upgrade_type": "websocket"}]}),
        http_listener(
            "h10",
            [{"match": {"prefix": "/"}, "route": {"cluster": "H10"}}],
            hcm={
                "http_protocol_options": {
                    "accept_http_10": True,
                    "default_host_for_http_10": "h10.default",
                }
            },
        ),
        http_listener(
            "trl",
            [{"match": {"prefix": "/"}, "route": {"cluster": "AT"}}],
            hcm={"http_protocol_options": {"enable_trailers": True}},
        ),
        http_listener("p100", to_a, hcm={"proxy_100_continue": True}),
    ]
    hosts = place_listeners(listeners)
    clusters = [
        static_cluster("A", echo_port),
        static_cluster("KA", echo_port),
        static_cluster("CC", echo_port),
        static_cluster("H10", echo_port),
        static_cluster("AT", echo_port, typed_extension_protocol_options=trailers_upstream),
        static_cluster("S", sink_port),
    ]
    return bootstrap(listeners, clusters), hosts


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkBackend]:
    with SinkBackend() as backend:
        yield backend


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest,
    echo: EchoBackend,
    sink: SinkBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """``echo`` and ``backend`` (the same echo backend ``A``) come from conftest.py."""
    yield from deploy(request, tmp_path_factory, "datapath", *build(echo.port, sink.port))


def requests_to(backend: EchoBackend, prefix: str) -> list[ReceivedRequest]:
    return [r for r in list(backend.requests) if r.target.startswith(prefix)]


# --- keep-alive and connection close -------------------------------------------------------


@each_proxy()
def test_keepalive_both_sides(proxy: Deployment, backend: EchoBackend) -> None:
    """Three requests, one after the other on one client connection, go over one new pooled
    upstream connection; the client connection stays open."""
    before = backend.connections_accepted
    with RawConn(proxy.addr("main")) as conn:
        for i in (1, 2, 3):
            conn.send(b"GET /ka/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            resp = conn.response()
            assert shape(resp) == ECHO_200_JSON
            assert echo_json(resp.body)["target"] == f"/ka/{i}"
        assert conn.wait_closed(OPEN_WAIT) is None
    got = requests_to(backend, "/ka/")
    assert [masked_head(r) for r in got] == [upstream(f"/ka/{i}") for i in (1, 2, 3)]
    assert len({r.connection_id for r in got}) == 1
    assert backend.connections_accepted - before == 1


@each_proxy()
def test_client_connection_close(proxy: Deployment, backend: EchoBackend) -> None:
    """``Connection: close``: the response ends with ``connection: close``, the proxy closes
    right after it, and the upstream connection stays pooled (the next client's request reuses
    it); ``connection`` is not sent upstream."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /cc/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = conn.response()
        assert shape(resp) == [*ECHO_200_JSON, "connection: close"]
        assert conn.wait_closed(CLOSE_WAIT) is not None
        assert conn.data == b""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /cc/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200
    first, second = requests_to(backend, "/cc/")
    assert masked_head(first) == upstream("/cc/1")
    assert first.connection_id == second.connection_id


@each_proxy()
def test_upstream_connection_close(proxy: Deployment, backend: EchoBackend) -> None:
    """An upstream ``connection: close`` is not forwarded: the client connection stays open and
    the next request goes over a new upstream connection."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /uc/1 HTTP/1.1\r\nHost: x\r\nx-echo-close: 1\r\n\r\n")
        assert shape(conn.response()) == ECHO_200_JSON
        conn.send(b"GET /uc/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert shape(conn.response()) == ECHO_200_JSON
        assert conn.wait_closed(OPEN_WAIT) is None
    first, second = requests_to(backend, "/uc/")
    assert first.connection_id != second.connection_id


# --- HTTP/1.0 ------------------------------------------------------------------------------


@each_proxy()
def test_http10_without_keepalive(proxy: Deployment, backend: EchoBackend) -> None:
    """HTTP/1.0 (accept_http_10): ``HTTP/1.0`` status line, ``connection: close`` and a close;
    the request goes upstream as HTTP/1.1; without Host, default_host_for_http_10 is used."""
    with RawConn(proxy.addr("h10")) as conn:
        conn.send(b"GET /h10/1 HTTP/1.0\r\nHost: h10.test\r\n\r\n")
        resp = conn.response()
        assert resp.status_line == "HTTP/1.0 200 OK"
        assert shape(resp)[1:] == [*ECHO_200_JSON[1:], "connection: close"]
        assert conn.wait_closed(CLOSE_WAIT) is not None
    with RawConn(proxy.addr("h10")) as conn:
        conn.send(b"GET /h10/2 HTTP/1.0\r\n\r\n")
        assert conn.response().status == 200
        assert conn.wait_closed(CLOSE_WAIT) is not None
    first, second = requests_to(backend, "/h10/")
    assert masked_head(first) == upstream("/h10/1", "h10.test")
    assert masked_head(second) == upstream("/h10/2", "h10.default")


@each_proxy()
def test_http10_keepalive(proxy: Deployment, backend: EchoBackend) -> None:
    """HTTP/1.0 with ``Connection: keep-alive``: the response says ``connection: keep-alive``
    and the connection stays open; the next HTTP/1.0 request without it gets
    ``connection: close`` and the close. Both use one upstream connection."""
    with RawConn(proxy.addr("h10")) as conn:
        conn.send(b"GET /h10/ka1 HTTP/1.0\r\nHost: h10.test\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.response()
        assert resp.status_line == "HTTP/1.0 200 OK"
        assert shape(resp)[1:] == [*ECHO_200_JSON[1:], "connection: keep-alive"]
        assert conn.wait_closed(OPEN_WAIT) is None
        conn.send(b"GET /h10/ka2 HTTP/1.0\r\nHost: h10.test\r\n\r\n")
        resp = conn.response()
        assert shape(resp)[1:] == [*ECHO_200_JSON[1:], "connection: close"]
        assert conn.wait_closed(CLOSE_WAIT) is not None
    first, second = requests_to(backend, "/h10/ka")
    assert masked_head(first) == upstream("/h10/ka1", "h10.test")
    assert first.connection_id == second.connection_id


@pytest.mark.parametrize(
    "upstream_framing",
    [b"x-echo-chunked: 1", b"x-echo-behavior: no-length"],
    ids=["chunked", "close-delimited"],
)
@each_proxy()
def test_http10_body_is_close_delimited(
    proxy: Deployment, backend: EchoBackend, upstream_framing: bytes
) -> None:
    """An HTTP/1.0 client cannot take chunked: a chunked or close-delimited upstream body
    reaches it raw, delimited by the close, with ``connection: close``."""
    with RawConn(proxy.addr("h10")) as conn:
        conn.send(
            b"GET /h10/body HTTP/1.0\r\nHost: h10.test\r\nx-echo-body-size: 12\r\n"
            + upstream_framing
            + b"\r\n\r\n"
        )
        assert conn.wait_closed(CLOSE_WAIT) is not None
        resp = conn.response()
    assert shape(resp) == [
        "HTTP/1.0 200 OK",
        "content-type: text/plain",
        "x-backend: A",
        "x-envoy-upstream-service-time: <ms>",
        "date: <date>",
        "server: envoy",
        "connection: close",
    ]
    assert (resp.framing, resp.body) == ("close", b"x" * 12)


# --- bodies --------------------------------------------------------------------------------


@each_proxy()
def test_content_length_body(proxy: Deployment, backend: EchoBackend) -> None:
    """A Content-Length body is forwarded verbatim, content-length kept in place."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
        assert shape(conn.response()) == ECHO_200_JSON
    (got,) = requests_to(backend, "/cl")
    assert masked_head(got) == upstream("/cl", "x", "content-length: 11", method="POST")
    assert got.body == b"hello world"


@pytest.mark.parametrize(
    ("chunks", "body"),
    [(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"), (b"0\r\n\r\n", b"")],
    ids=["two-chunks", "empty"],
)
@each_proxy()
def test_chunked_request_body(
    proxy: Deployment, backend: EchoBackend, chunks: bytes, body: bytes
) -> None:
    """A chunked request is re-chunked upstream with ``transfer-encoding: chunked`` moved after
    the headers Envoy adds. (Chunk boundaries are not compared: Envoy writes one chunk per
    read.)"""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        resp = conn.response()
        assert shape(resp) == ECHO_200_JSON
        assert echo_json(resp.body)["body_len"] == len(body)
    (got,) = requests_to(backend, "/chunked")
    assert masked_head(got) == upstream("/chunked", "x", method="POST").replace(
        b"\r\n\r\n", b"\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert got.body == body
    assert got.trailers == []


@each_proxy()
def test_chunked_response_body(proxy: Deployment, backend: EchoBackend) -> None:
    """A chunked upstream response is sent chunked, ``transfer-encoding`` last."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"GET /rc HTTP/1.1\r\nHost: x\r\nx-echo-chunked: 1\r\nx-echo-body-size: 10\r\n\r\n"
        )
        resp = conn.response()
    assert shape(resp) == [
        "HTTP/1.1 200 OK",
        "content-type: text/plain",
        "x-backend: A",
        "x-envoy-upstream-service-time: <ms>",
        "date: <date>",
        "server: envoy",
        "transfer-encoding: chunked",
    ]
    assert (resp.framing, resp.body, resp.trailers) == ("chunked", b"x" * 10, [])


@each_proxy()
def test_close_delimited_response_becomes_chunked(proxy: Deployment, backend: EchoBackend) -> None:
    """An upstream body delimited by the close (no length) reaches an HTTP/1.1 client chunked,
    and the client connection stays open."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"GET /nl HTTP/1.1\r\nHost: x\r\nx-echo-behavior: no-length\r\n"
            b"x-echo-body-size: 12\r\n\r\n"
        )
        resp = conn.response()
        assert shape(resp)[-1] == "transfer-encoding: chunked"
        assert (resp.framing, resp.body) == ("chunked", b"x" * 12)
        conn.send(b"GET /nl/after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200


TRAILERS_DROPPED = "trailers are forwarded although enable_trailers is off"


@pytest.mark.parametrize(
    ("listener", "forwarded"), [("main", False), ("trl", True)], ids=["default", "enabled"]
)
@each_proxy()
def test_request_trailers(
    proxy: Deployment, backend: EchoBackend, listener: str, forwarded: bool
) -> None:
    """Request trailers are dropped unless http_protocol_options.enable_trailers (listener and
    cluster); then they go upstream with lower-cased names."""
    with RawConn(proxy.addr(listener)) as conn:
        conn.send(
            b"POST /trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t1\r\nX-Other: t2\r\n\r\n"
        )
        assert conn.response().status == 200
    (got,) = requests_to(backend, "/trailers")
    assert got.body == b"hello world"
    assert got.trailers == ([("x-trailer", "t1"), ("x-other", "t2")] if forwarded else [])


@pytest.mark.parametrize(
    ("listener", "forwarded"), [("main", False), ("trl", True)], ids=["default", "enabled"]
)
@each_proxy()
def test_response_trailers(
    proxy: Deployment, backend: EchoBackend, listener: str, forwarded: bool
) -> None:
    """Response trailers are dropped unless enable_trailers."""
    with RawConn(proxy.addr(listener)) as conn:
        conn.send(
            b"GET /trailers HTTP/1.1\r\nHost: x\r\nx-echo-body-size: 10\r\n"
            b"x-echo-trailer: x-resp-trailer=rt1\r\n\r\n"
        )
        resp = conn.response()
    assert (resp.framing, resp.body) == ("chunked", b"x" * 10)
    assert resp.trailers == ([("x-resp-trailer", "rt1")] if forwarded else [])


# --- pipelining, 100-continue, HEAD, 1xx ---------------------------------------------------


@each_proxy()
def test_pipelining(proxy: Deployment, backend: EchoBackend) -> None:
    """Three requests in one write (one with a body) are all answered, in order."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /p/3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [echo_json(conn.response().body) for _ in range(3)]
        assert conn.wait_closed(OPEN_WAIT) is None
    assert [(a["method"], a["target"], a["body_len"]) for a in answers] == [
        ("GET", "/p/1", 0),
        ("POST", "/p/2", 3),
        ("GET", "/p/3", 0),
    ]
    assert [r.target for r in requests_to(backend, "/p/")] == ["/p/1", "/p/2", "/p/3"]


@each_proxy()
def test_expect_100_continue(proxy: Deployment, backend: EchoBackend) -> None:
    """``Expect: 100-continue``: the proxy answers ``100 Continue`` itself before the body is
    sent, and does not forward ``expect``."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            b"POST /e100 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = conn.response(timeout=2)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello")
        assert shape(conn.response()) == ECHO_200_JSON
        assert conn.wait_closed(OPEN_WAIT) is None
        assert conn.data == b""  # exactly one 100
    (got,) = requests_to(backend, "/e100")
    assert masked_head(got) == upstream("/e100", "x", "content-length: 5", method="POST")
    assert got.body == b"hello"


@each_proxy()
def test_expect_100_continue_proxied(proxy: Deployment, backend: EchoBackend) -> None:
    """With proxy_100_continue, ``expect`` goes upstream unchanged and the upstream's
    ``100 Continue`` is relayed: exactly one 100 downstream."""
    with RawConn(proxy.addr("p100")) as conn:
        conn.send(
            b"POST /p100 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = conn.response(timeout=2)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello")
        assert shape(conn.response()) == ECHO_200_JSON
        assert conn.wait_closed(OPEN_WAIT) is None
        assert conn.data == b""
    (got,) = requests_to(backend, "/p100")
    assert masked_head(got) == upstream(
        "/p100", "x", "expect: 100-continue", "content-length: 5", method="POST"
    )


@each_proxy()
def test_upstream_100_continue_swallowed(proxy: Deployment, backend: EchoBackend) -> None:
    """An unsolicited upstream ``100 Continue`` is not forwarded (no proxy_100_continue)."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"GET /u100 HTTP/1.1\r\nHost: x\r\nx-echo-behavior: 100-continue\r\n\r\n")
        assert shape(conn.response()) == ECHO_200_JSON
        conn.send(b"GET /u100/after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert shape(conn.response()) == ECHO_200_JSON


@each_proxy()
def test_upstream_100_continue_relayed(proxy: Deployment, backend: EchoBackend) -> None:
    """With proxy_100_continue, the upstream's ``100 Continue`` reaches the client before the
    final response, even without ``Expect``."""
    with RawConn(proxy.addr("p100")) as conn:
        conn.send(b"GET /u100 HTTP/1.1\r\nHost: x\r\nx-echo-behavior: 100-continue\r\n\r\n")
        assert conn.response().raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert shape(conn.response()) == ECHO_200_JSON


@each_proxy()
def test_head_keeps_content_length(proxy: Deployment, backend: EchoBackend) -> None:
    """HEAD: the upstream's content-length is passed on and no body follows (the next
    response on the connection starts right after the head)."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"HEAD /head HTTP/1.1\r\nHost: x\r\nx-echo-body-size: 1000\r\n\r\n")
        resp = conn.response(head=True)
        assert shape(resp) == [
            "HTTP/1.1 200 OK",
            "content-type: text/plain",
            "x-backend: A",
            "content-length: 1000",
            "x-envoy-upstream-service-time: <ms>",
            "date: <date>",
            "server: envoy",
        ]
        assert conn.wait_closed(OPEN_WAIT) is None
        assert conn.data == b""
        conn.send(b"GET /head/after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert echo_json(conn.response().body)["target"] == "/head/after"
    assert masked_head(requests_to(backend, "/head")[0]) == upstream(
        "/head", "x", "x-echo-body-size: 1000", method="HEAD"
    )


@each_proxy()
def test_head_keeps_transfer_encoding(proxy: Deployment, backend: EchoBackend) -> None:
    """HEAD answered with ``transfer-encoding: chunked``: the header is kept, no body."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(b"HEAD /head HTTP/1.1\r\nHost: x\r\nx-echo-chunked: 1\r\n\r\n")
        resp = conn.response(head=True)
        assert shape(resp) == [
            "HTTP/1.1 200 OK",
            "content-type: application/json",
            "x-backend: A",
            "x-envoy-upstream-service-time: <ms>",
            "date: <date>",
            "server: envoy",
            "transfer-encoding: chunked",
        ]
        assert conn.wait_closed(OPEN_WAIT) is None
        assert conn.data == b""


# --- upgrades ------------------------------------------------------------------------------

WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@each_proxy()
def test_websocket_refused_without_upgrade_configs(proxy: Deployment, backend: EchoBackend) -> None:
    """No upgrade_configs: ``403 Forbidden``, empty body, ``connection: close``; nothing is sent
    upstream."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(WS_HANDSHAKE + b"\r\n")
        resp = conn.response()
        assert shape(resp) == [
            "HTTP/1.1 403 Forbidden",
            "date: <date>",
            "server: envoy",
            "connection: close",
            "content-length: 0",
        ]
        assert resp.body == b""
        assert conn.wait_closed(CLOSE_WAIT) is not None
    assert backend.requests == []


@each_proxy()
def test_websocket_tunnel(proxy: Deployment, backend: EchoBackend) -> None:
    """upgrade_configs websocket: the handshake goes upstream with ``connection``/``upgrade``
    kept in place, the ``101`` comes back with ``date``/``server``, then raw bytes flow both
    ways unchanged, several times over."""
    with RawConn(proxy.addr("ws")) as conn:
        conn.send(
            WS_HANDSHAKE + b"x-echo-status: 101\r\nx-echo-header: Upgrade=websocket\r\n"
            b"x-echo-header: Connection=Upgrade\r\n\r\n"
        )
        resp = conn.response()
        assert shape(resp) == [
            "HTTP/1.1 101 Switching Protocols",
            "content-type: application/json",
            "x-backend: A",
            "upgrade: websocket",
            "connection: Upgrade",
            "date: <date>",
            "server: envoy",
        ]
        # Through the tunnel, the echo backend keeps reading HTTP requests: its raw answers
        # come back untouched (no server/date added), and it sees the exact bytes sent.
        for i in (1, 2):
            sent = b"GET /tunnelled/%d HTTP/1.1\r\nHost: t\r\nx-echo-body-size: 3\r\n\r\n" % i
            conn.send(sent)
            answer = (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: A\r\n"
                b"content-length: 3\r\n\r\nxxx"
            )
            assert conn.read_exact(len(answer), timeout=5) == answer
            assert requests_to(backend, "/tunnelled/")[-1].raw == sent
        assert conn.wait_closed(OPEN_WAIT) is None
    handshake = requests_to(backend, "/ws")[0]
    assert masked_head(handshake) == upstream(
        "/ws",
        "ws.test",
        "connection: Upgrade",
        "upgrade: websocket",
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version: 13",
        "x-echo-status: 101",
        "x-echo-header: Upgrade=websocket",
        "x-echo-header: Connection=Upgrade",
    )
    assert handshake.body == b""


@each_proxy()
def test_websocket_declined_by_upstream(proxy: Deployment, backend: EchoBackend) -> None:
    """The upstream answers the handshake with 200: Envoy sends the upstream's headers without
    content-type and content-length, then ``connection: close``, ``content-length: 0``, no
    body, and closes."""
    with RawConn(proxy.addr("ws")) as conn:
        conn.send(WS_HANDSHAKE + b"\r\n")
        resp = conn.response()
        assert shape(resp) == [
            "HTTP/1.1 200 OK",
            "x-backend: A",
            "date: <date>",
            "server: envoy",
            "connection: close",
            "content-length: 0",
        ]
        assert conn.wait_closed(CLOSE_WAIT) is not None


# --- request targets -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
@each_proxy()
def test_absolute_form(proxy: Deployment, backend: EchoBackend, scheme: str) -> None:
    """An absolute-form target goes upstream in origin form, ``host`` taken from the URL
    (the client's Host is dropped); x-forwarded-proto stays ``http``."""
    with RawConn(proxy.addr("main")) as conn:
        conn.send(
            f"GET {scheme}://example.test/abs?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n".encode()
        )
        assert shape(conn.response()) == ECHO_200_JSON
    (got,) = requests_to(backend, "/abs")
    assert masked_head(got) == upstream("/abs?x=1", "example.test")


# --- bulk transfers ------------------------------------------------------------------------


@functools.cache
def crc_of(size: int) -> int:
    return pattern_crc32(size)


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@each_proxy()
def test_large_response_streams_with_backpressure(
    proxy: Deployment, sink: SinkBackend, chunked: bool
) -> None:
    """A 256 MiB response to a client that does not read for a second: the proxy must apply
    backpressure instead of buffering it, and deliver every byte."""
    with RawConn(proxy.addr("main"), timeout=30) as conn, PeakRss(proxy.pid) as rss:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        conn.send(
            b"GET /sink/down HTTP/1.1\r\nHost: x\r\nx-sink-respond-bytes: %d\r\n"
            b"x-sink-respond-chunked: %d\r\n\r\n" % (DOWNLOAD, chunked)
        )
        time.sleep(1.0)
        resp = drain_response(conn.sock)
    assert resp.status_line == "HTTP/1.1 200 OK"
    assert resp.framing == ("chunked" if chunked else "content-length")
    assert (resp.size, resp.crc32) == (DOWNLOAD, crc_of(DOWNLOAD))
    assert rss.peak < RSS_LIMIT, rss.summary()


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@each_proxy()
def test_1gib_upload_is_streamed(proxy: Deployment, sink: SinkBackend, chunked: bool) -> None:
    """1 GiB uploaded through the proxy to a backend that reads and discards it: the body
    reaches the backend while it is being sent (less than 100 MB behind at half-way), the
    proxy's resident memory stays under 150 MB, and the backend gets every byte."""
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % UPLOAD
    half = UPLOAD // 2
    started = time.monotonic()
    with RawConn(proxy.addr("main"), timeout=60) as conn, PeakRss(proxy.pid) as rss:
        conn.send(b"POST /sink/up HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        send_pattern_body(conn.sock, half, chunked=chunked, last_chunk=False)
        lag_at_half = half - sink.receiving
        send_pattern_body(conn.sock, UPLOAD - half, chunked=chunked)
        resp = drain_response(conn.sock)
    elapsed = time.monotonic() - started
    assert resp.status_line == "HTTP/1.1 200 OK"
    got = sink.requests[-1]
    assert got.target == "/sink/up"
    expected_framing = "chunked" if chunked else "content-length"
    assert (got.framing, got.received, got.crc32) == (expected_framing, UPLOAD, crc_of(UPLOAD))
    assert lag_at_half < 100 * MB, f"backend {lag_at_half / MB:.0f} MB behind at half-way"
    assert rss.peak < RSS_LIMIT, rss.summary()
    assert elapsed < 30, f"1 GiB took {elapsed:.1f} s"
