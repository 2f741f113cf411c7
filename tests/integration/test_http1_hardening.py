"""HTTP/1.1 hardening (issue 11), end to end on pilotfish and on real Envoy 1.40 with the same
bootstrap, each proxy started once for the module: the Envoy run proves the expected answer is
Envoy's.

* Path normalization: ``normalize_path`` (dot segments, escaped dots, backslashes, decoded
  unreserved characters, escaped forbidden ones, ``%00`` refused), ``merge_slashes``,
  ``path_with_escaped_slashes_action`` in each mode; the route is chosen on the normalized
  path (a ``/public/../private`` request meets the ``/private`` route).
* Header bytes bounded while they arrive: a header line that never ends, or endless header
  lines, are answered 431 at the limit; from an upstream, a 502 (``protocol error``). Under a
  flood on four connections pilotfish's memory stays bounded, comes back, and other clients
  are served promptly.
* Nothing in flight is lost: pipelined requests before one that fails to parse are answered
  first, then the 400; bytes after ``Connection: close`` are ignored.
* ``Upgrade: h2c`` is ignored (headers stripped) and pipelined requests after it are served.
* Host validation (RFC 3986 authority characters) and absolute-form targets (http/https
  only, userinfo dropped, malformed authority refused).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.pairs import CLOSE_WAIT, OPEN_WAIT, Deployment, deploy, each_proxy, shape
from tests.support.proxies import ProxyProcess, bootstrap, http_listener, static_cluster
from tests.support.rawconn import RawConn
from tests.support.rss import MB, PeakRss, rss_bytes
from tests.support.threaded_server import ThreadedServer

# --- the deployment ------------------------------------------------------------------------


class EndlessHeaderUpstream(ThreadedServer):
    """Answers every request with a status line and a header value that never ends."""

    thread_prefix = "endless"

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        with contextlib.suppress(OSError):
            sock.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                data += chunk
            sock.sendall(b"HTTP/1.1 200 OK\r\nx-endless: ")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not self._stopping.is_set():
                sock.sendall(b"a" * 16384)
        return True


@pytest.fixture(scope="module")
def endless() -> Iterator[EndlessHeaderUpstream]:
    with EndlessHeaderUpstream("B") as server:
        yield server


ESCAPED = "path_with_escaped_slashes_action"


def build(echo_port: int, endless_port: int) -> tuple[dict[str, Any], dict[str, str]]:
    routes: list[dict[str, Any]] = [
        {"match": {"prefix": "/private"}, "direct_response": {"status": 403}},
        {"match": {"prefix": "/endless"}, "route": {"cluster": "B"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "A"}},
    ]
    base = {"delayed_close_timeout": "0.2s"}
    norm = {**base, "normalize_path": True}
    listeners = [
        http_listener("raw", routes, hcm=base),
        http_listener("norm", routes, hcm=norm),
        http_listener("merge", routes, hcm={**norm, "merge_slashes": True}),
        http_listener("mergeonly", routes, hcm={**base, "merge_slashes": True}),
        http_listener("reject", routes, hcm={**norm, ESCAPED: "REJECT_REQUEST"}),
        http_listener("redirect", routes, hcm={**norm, ESCAPED: "UNESCAPE_AND_REDIRECT"}),
        http_listener("forward", routes, hcm={**norm, ESCAPED: "UNESCAPE_AND_FORWARD"}),
        http_listener("fwdonly", routes, hcm={**base, ESCAPED: "UNESCAPE_AND_FORWARD"}),
    ]
    hosts = {}
    for i, listener in enumerate(listeners):
        host = f"127.0.0.{i + 1}"
        listener["address"] = {"socket_address": {"address": host, "port_value": 0}}
        hosts[listener["name"]] = host
    clusters = [static_cluster("A", echo_port), static_cluster("B", endless_port)]
    return bootstrap(listeners, clusters), hosts


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest,
    echo: EchoBackend,
    endless: EndlessHeaderUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    yield from deploy(request, tmp_path_factory, "hardening", *build(echo.port, endless.port))


def get(target: str, *headers: str, host: str = "x") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(proxy: Deployment, listener: str, data: bytes) -> RawConn:
    conn = RawConn(proxy.addr(listener))
    conn.send(data)
    return conn


def no_connection_left(proxy: Deployment, listener: str) -> None:
    stat = f"http.{listener}.downstream_cx_active"
    assert proxy.wait_stat(stat, 0) == 0, f"{stat} stays above 0"


BAD_REQUEST_400 = [
    "HTTP/1.1 400 Bad Request",
    "content-length: 11",
    "content-type: text/plain",
    "date: <date>",
    "server: envoy",
    "connection: close",
]
EMPTY_400 = [
    "HTTP/1.1 400 Bad Request",
    "date: <date>",
    "server: envoy",
    "connection: close",
    "content-length: 0",
]


def assert_refused(conn: RawConn, expected: list[str], backend: EchoBackend) -> None:
    resp = conn.response()
    assert shape(resp) == expected
    assert conn.wait_closed(CLOSE_WAIT) is not None
    assert backend.requests == []


# --- 1. path normalization -----------------------------------------------------------------

NORMALIZED = [
    ("norm", "/a/../../etc", "/etc"),
    ("norm", "/..", "/"),
    ("norm", "/a/./b/../c", "/a/c"),
    ("norm", "/%2e%2e/%2e%2e/etc", "/etc"),
    ("norm", "/a/%2E%2e/b", "/b"),
    ("norm", "/a\\..\\b", "/b"),
    ("norm", "/a%41%7e%2D%5f%2f%5C%25%20b", "/aA~-_%2f%5C%25%20b"),
    ("norm", "/a/b?x=/../y&z=%2e", "/a/b?x=/../y&z=%2e"),
    ("norm", "/a//b///c", "/a//b///c"),
    ("norm", "/a/%2f/../b", "/a/b"),
    ("norm", "/a%zzb", "/a%zzb"),
    ("norm", '/a"b', "/a%22b"),
    ("norm", "/a{b}|^`", "/a%7Bb%7D%7C%5E%60"),
    ("norm", "/a/b/..", "/a/"),
    ("norm", "/a/.b/..c/...", "/a/.b/..c/..."),
    ("norm", "/%%30%30", "/%2500"),
    ("norm", "/a//../b", "/a/b"),
    ("norm", "http://h/a/../b", "/b"),
    ("raw", "/a/../b", "/a/../b"),
    ("raw", "/a%00b", "/a%00b"),
    ("merge", "/a//b///c/?q=//x", "/a/b/c/?q=//x"),
    ("merge", "///", "//"),
    ("mergeonly", "/a//b/../c", "/a/b/../c"),
    ("reject", "/a/b?x=%2f", "/a/b?x=%2f"),
    ("forward", "/a%2fb/%2F..%2f/c", "/a/b//c"),
    ("forward", "/a%5cb", "/a/b"),
    ("fwdonly", "/a%2f..%2fb", "/a/../b"),
]


@pytest.mark.parametrize(("listener", "target", "forwarded"), NORMALIZED)
@each_proxy()
def test_path_is_normalized(
    proxy: Deployment, backend: EchoBackend, listener: str, target: str, forwarded: str
) -> None:
    with exchange(proxy, listener, get(target)) as conn:
        assert conn.response().status == 200
    assert [r.target for r in backend.requests] == [forwarded]


@pytest.mark.parametrize(
    ("listener", "target"),
    [("norm", "/a%00b"), ("reject", "/a%2fb"), ("reject", "/a%5Cb"), ("reject", "/a/%2F../b")],
)
@each_proxy()
def test_path_is_rejected(
    proxy: Deployment, backend: EchoBackend, listener: str, target: str
) -> None:
    with exchange(proxy, listener, get(target)) as conn:
        assert_refused(conn, EMPTY_400, backend)
    assert proxy.stat(f"http.{listener}.downstream_rq_failed_path_normalization") >= 1


@pytest.mark.parametrize(
    ("target", "location"), [("/a%2fb?q=1", "/a/b?q=1"), ("/a%2F..%2Fb", "/b")]
)
@each_proxy()
def test_escaped_slashes_redirect(
    proxy: Deployment, backend: EchoBackend, target: str, location: str
) -> None:
    """UNESCAPE_AND_REDIRECT: 307 to the unescaped, normalized path; the connection stays."""
    with exchange(proxy, "redirect", get(target)) as conn:
        resp = conn.response()
        assert shape(resp) == [
            "HTTP/1.1 307 Temporary Redirect",
            f"location: {location}",
            "date: <date>",
            "server: envoy",
            "content-length: 0",
        ]
        conn.send(get("/a/b"))
        assert conn.response().status == 200
    assert [r.target for r in backend.requests] == ["/a/b"]


@pytest.mark.parametrize(
    "target", ["/public/../private", "/public/%2e%2e/private/x", "/public\\..\\private"]
)
@each_proxy()
def test_route_matches_the_normalized_path(
    proxy: Deployment, backend: EchoBackend, target: str
) -> None:
    """The /private route (a 403) cannot be bypassed with dot segments; without
    normalize_path the raw path is routed."""
    with exchange(proxy, "norm", get(target)) as conn:
        assert conn.response().status == 403
    with exchange(proxy, "raw", get(target)) as conn:
        assert conn.response().status == 200
    assert len(backend.requests) == 1


# --- 2. header bytes bounded while they arrive ---------------------------------------------

TOO_LARGE_431 = [
    "HTTP/1.1 431 Request Header Fields Too Large",
    "content-length: 31",
    "content-type: text/plain",
    "date: <date>",
    "server: envoy",
    "connection: close",
]


def flood(conn: RawConn, chunk: bytes, limit: int, stop: threading.Event | None = None) -> int:
    """Send ``chunk`` again and again (up to ``limit`` bytes) until the server stops reading;
    the bytes sent."""
    sent = 0
    with contextlib.suppress(OSError):
        conn.sock.settimeout(2)
        while sent < limit and (stop is None or not stop.is_set()):
            conn.sock.sendall(chunk)
            sent += len(chunk)
    return sent


@pytest.mark.parametrize(
    ("start", "chunk"),
    [
        (b"GET /flood HTTP/1.1\r\nHost: x\r\nx-endless: ", b"v" * 4096),
        (b"GET /flood HTTP/1.1\r\nHost: x\r\n", b"x-endless-name-" * 300),
        (b"GET /flood HTTP/1.1\r\nHost: x\r\n", b"x-line: 1234567890abcdef\r\n"),
        (b"GET /", b"u" * 4096),
        (
            b"POST /flood HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\nx-endless-trailer: ",
            b"t" * 4096,
        ),
    ],
    ids=["endless-value", "endless-name", "endless-lines", "endless-url", "endless-trailer"],
)
@each_proxy()
def test_endless_header_is_refused_at_the_limit(
    proxy: Deployment, backend: EchoBackend, start: bytes, chunk: bytes
) -> None:
    """A head that never ends: 431 once the limit (60 KiB, 100 headers) is passed, then the
    proxy stops reading; far less than the 8 MiB offered is taken."""
    with RawConn(proxy.addr("raw")) as conn:
        conn.send(start)
        sent = flood(conn, chunk, 8 << 20)
        assert shape(conn.response()) == TOO_LARGE_431
        assert conn.wait_closed(CLOSE_WAIT) is not None
    assert sent < 8 << 20
    assert backend.requests == []
    no_connection_left(proxy, "raw")


@each_proxy()
def test_endless_upstream_header(proxy: Deployment, backend: EchoBackend) -> None:
    """An upstream whose response header never ends: Envoy's 502 ``protocol error`` at the
    limit; the client connection stays usable."""
    with exchange(proxy, "raw", get("/endless")) as conn:
        resp = conn.response()
        assert resp.status == 502
        assert resp.body == (
            b"upstream connect error or disconnect/reset before headers. "
            b"reset reason: protocol error"
        )
        conn.send(get("/after"))
        assert conn.response().status == 200


def test_header_flood_memory_comes_back(
    echo: EchoBackend, endless: EndlessHeaderUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Four connections flood pilotfish with endless header values, names and lines: its
    memory stays bounded and comes back after they close, and another client is served
    promptly meanwhile."""
    config, hosts = build(echo.port, endless.port)
    process = ProxyProcess("pilotfish", config, tmp_path_factory.mktemp("flood"), free_ports=False)
    with process:
        proxy = Deployment("pilotfish", process, hosts)
        before = rss_bytes(proxy.pid)
        stop = threading.Event()
        chunks = [b"v" * 65536, b"x-name-" * 9000, b"x-l: 1\r\n" * 8000]
        starts = [b"x-endless: ", b"", b""]

        def attack(i: int) -> None:
            while not stop.is_set():
                with RawConn(proxy.addr("raw")) as conn:
                    conn.send(b"GET /flood HTTP/1.1\r\nHost: x\r\n" + starts[i % 3])
                    flood(conn, chunks[i % 3], 64 << 20, stop)

        threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(4)]
        with PeakRss(proxy.pid) as rss:
            for t in threads:
                t.start()
            worst = 0.0
            for _ in range(10):
                started = time.monotonic()
                with exchange(proxy, "raw", get("/during")) as conn:
                    assert conn.response().status == 200
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.1)
            stop.set()
            for t in threads:
                t.join(timeout=10)
        assert worst < 0.5, f"a client waited {worst:.2f} s during the flood"
        assert rss.peak - before < 40 * MB, rss.summary()
        no_connection_left(proxy, "raw")
        after = rss_bytes(proxy.pid)
        assert after - before < 20 * MB, (before / MB, after / MB, rss.summary())


# --- 3. nothing in flight is lost ----------------------------------------------------------


@pytest.mark.parametrize("delay", [0, 300])
@each_proxy()
def test_pipelined_requests_before_a_bad_one_are_answered(
    proxy: Deployment, backend: EchoBackend, delay: int
) -> None:
    """Two good requests then garbage, in one write: 200, 200, then the 400 and the close
    (even when the first upstream answer takes 300 ms)."""
    data = get("/p1", f"x-echo-delay-ms: {delay}") + get("/p2") + b"BAD\r\n\r\n"
    with exchange(proxy, "raw", data) as conn:
        first, second, third = conn.response(), conn.response(), conn.response()
        assert (first.status, second.status) == (200, 200)
        assert not first.announces_close() and not second.announces_close()
        assert shape(third) == BAD_REQUEST_400
        assert conn.wait_closed(CLOSE_WAIT) is not None
    assert [r.target for r in backend.requests] == ["/p1", "/p2"]
    no_connection_left(proxy, "raw")


@pytest.mark.parametrize(
    "after", [b"X\r\n\r\n", b"GET /cc2 HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["garbage", "request"]
)
@each_proxy()
def test_bytes_after_connection_close_are_ignored(
    proxy: Deployment, backend: EchoBackend, after: bytes
) -> None:
    with exchange(proxy, "raw", get("/cc1", "Connection: close") + after) as conn:
        resp = conn.response()
        assert resp.status == 200
        assert resp.announces_close()
        assert conn.wait_closed(CLOSE_WAIT) is not None
        assert conn.data == b""
    assert [r.target for r in backend.requests] == ["/cc1"]


# --- 4. upgrades ---------------------------------------------------------------------------


@each_proxy()
def test_h2c_upgrade_is_ignored_and_pipelined_requests_are_served(
    proxy: Deployment, backend: EchoBackend
) -> None:
    h2c = get(
        "/u1",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA",
    )
    with exchange(proxy, "raw", h2c + get("/u2")) as conn:
        assert conn.response().status == 200
        assert conn.response().status == 200
        assert conn.wait_closed(OPEN_WAIT) is None
    u1, u2 = backend.requests
    assert (u1.target, u2.target) == ("/u1", "/u2")
    for name in ("upgrade", "connection", "http2-settings"):
        assert u1.header(name) is None, name


@pytest.mark.parametrize(
    ("framing", "body"),
    [("Content-Length: 2", b"hi"), ("Transfer-Encoding: chunked", b"2\r\nhi\r\n0\r\n\r\n")],
    ids=["content-length", "chunked"],
)
@each_proxy()
def test_h2c_upgrade_with_a_body(
    proxy: Deployment, backend: EchoBackend, framing: str, body: bytes
) -> None:
    """The body of an ignored h2c upgrade is the request's (llhttp would take it for the new
    protocol's), and the pipelined request after it is served."""
    head = get("/u1", "Connection: Upgrade", "Upgrade: h2c", framing).replace(b"GET", b"POST", 1)
    with exchange(proxy, "raw", head + body + get("/u2")) as conn:
        assert conn.response().status == 200
        assert conn.response().status == 200
    u1, u2 = backend.requests
    assert (u1.target, u1.body, u2.target) == ("/u1", b"hi", "/u2")


@each_proxy()
def test_websocket_upgrade_not_enabled_is_refused(proxy: Deployment, backend: EchoBackend) -> None:
    """403 and the close; the pipelined request after it is not served."""
    ws = get("/w1", "Connection: Upgrade", "Upgrade: websocket")
    with exchange(proxy, "raw", ws + get("/w2")) as conn:
        resp = conn.response()
        assert resp.status == 403
        assert conn.wait_closed(CLOSE_WAIT) is not None
    assert backend.requests == []


# --- 5. Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["shop.example.com, evil.example", "a b", "a/b", 'a"b', "a{b}", "a?b", "a#b", "a\\b"],
)
@each_proxy()
def test_invalid_host_is_refused(proxy: Deployment, backend: EchoBackend, host: str) -> None:
    with exchange(proxy, "raw", get("/h", host=host)) as conn:
        assert_refused(conn, BAD_REQUEST_400, backend)


@pytest.mark.parametrize(
    "host", ["a@b", "a:80:90", "[::1]:80", "a:x", "a_b.c-d~e!$&'()*+;=%20", "", "[::1"]
)
@each_proxy()
def test_unusual_but_valid_host_is_served(
    proxy: Deployment, backend: EchoBackend, host: str
) -> None:
    with exchange(proxy, "raw", get("/h", host=host)) as conn:
        assert conn.response().status == 200
    (got,) = backend.requests
    assert got.header("host") == host


# --- 6. absolute-form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "path"),
    [
        ("http://shop.example.com@evil.example/abs", "evil.example", "/abs"),
        ("http://u:p@h/", "h", "/"),
        ("https://evil.example/abs", "evil.example", "/abs"),
        ("HTTP://evil.example:8080/a?q", "evil.example:8080", "/a?q"),
        ("http://evil.example", "evil.example", "/"),
        ("http://[::1]:80/v6", "[::1]:80", "/v6"),
    ],
)
@each_proxy()
def test_absolute_form_is_served(
    proxy: Deployment, backend: EchoBackend, target: str, host: str, path: str
) -> None:
    with exchange(proxy, "raw", get(target)) as conn:
        assert conn.response().status == 200
    (got,) = backend.requests
    assert (got.header("host"), got.target) == (host, path)


@pytest.mark.parametrize(
    "target",
    [
        "ftp://evil.example/abs",
        "http:///a",
        "http://a,b/",
        "http://a:99999/",
        "http://a@b@c/",
        "foo",
        "*",
    ],
)
@each_proxy()
def test_bad_absolute_form_is_refused(proxy: Deployment, backend: EchoBackend, target: str) -> None:
    with exchange(proxy, "raw", get(target)) as conn:
        assert_refused(conn, BAD_REQUEST_400, backend)


@each_proxy()
def test_absolute_form_without_a_path(proxy: Deployment, backend: EchoBackend) -> None:
    """``http://host?x`` has no absolute path: 404, the connection stays (as Envoy)."""
    with exchange(proxy, "raw", get("http://evil.example?x")) as conn:
        assert conn.response().status == 404
        assert conn.wait_closed(OPEN_WAIT) is None
    assert backend.requests == []
