"""The HTTP/1.1 codec as pure pairs: bytes in, events out, no sockets (like h11's tests)."""

from __future__ import annotations

from typing import Any

import pytest

from pilotfish.codec.http1 import (
    CodecError,
    Http1ClientCodec,
    Http1ServerCodec,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
)
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders


class ServerEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.framing: list[dict[str, object]] = []
        self.codec: Http1ServerCodec | None = None

    def on_request_headers(self, headers: RequestHeaders) -> None:
        assert self.codec is not None
        c = self.codec
        self.framing.append(
            {
                "version": c.version,
                "keep_alive": c.keep_alive,
                "length": c.content_length,
                "chunked": c.chunked,
                "expect": c.expect_continue,
                "upgrade": c.upgrade,
            }
        )
        self.events.append(("headers", headers))

    def on_request_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_request_complete(self, trailers: HeaderMap | None) -> None:
        self.events.append(("complete", trailers))

    def body(self) -> bytes:
        return b"".join(v for k, v in self.events if k == "body")


def server(**kw: object) -> tuple[Http1ServerCodec, ServerEvents]:
    ev = ServerEvents()
    codec = Http1ServerCodec(ev, **kw)  # type: ignore[arg-type]
    ev.codec = codec
    return codec, ev


class ClientEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        self.events.append(("headers", (headers.status, list(headers.items), end_stream)))

    def on_response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_response_complete(self, trailers: HeaderMap | None) -> None:
        self.events.append(("complete", trailers.items if trailers else None))

    def on_informational(self, headers: ResponseHeaders) -> None:
        self.events.append(("1xx", headers.status))


def test_simple_request_headers_and_pseudo_headers() -> None:
    codec, ev = server()
    codec.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nX-Mixed: V\r\nAccept: */*\r\n\r\n")
    kind, headers = ev.events[0]
    assert kind == "headers"
    assert isinstance(headers, RequestHeaders)
    assert (headers.method, headers.path, headers.authority) == (b"GET", b"/a?b=1", b"Example.com")
    # Names are lower-cased, order kept; Host became :authority.
    assert headers.items == [(b"x-mixed", b"V"), (b"accept", b"*/*")]
    assert headers.get(b":authority") == b"Example.com" and headers.get(b"host") == b"Example.com"
    assert ev.events[-1] == ("complete", None)
    assert ev.framing[0]["keep_alive"] is True


def test_request_round_trip_through_client_encoder() -> None:
    req = RequestHeaders(b"POST", b"/up", b"svc", [(b"content-length", b"5"), (b"x", b"1")])
    head, chunked = encode_request_head(req, end_stream=False)
    assert not chunked
    assert head.startswith(b"POST /up HTTP/1.1\r\nhost: svc\r\n")
    codec, ev = server()
    codec.feed(head + b"hello")
    assert ev.body() == b"hello"
    assert ev.framing[0]["length"] == 5


@pytest.mark.parametrize(
    ("method", "framing"),
    [
        (b"GET", b""),
        (b"HEAD", b""),
        (b"DELETE", b""),
        (b"TRACE", b""),
        (b"POST", b"content-length: 0\r\n"),
        (b"PUT", b"content-length: 0\r\n"),
        (b"OPTIONS", b"content-length: 0\r\n"),
        (b"PATCH", b"content-length: 0\r\n"),
    ],
)
def test_bodiless_request_framing_follows_envoy(method: bytes, framing: bytes) -> None:
    # Observed on Envoy 1.40: a headers-only POST/PUT/OPTIONS/PATCH gets an explicit
    # content-length: 0 upstream; GET/HEAD/DELETE/TRACE get no framing header.
    head, chunked = encode_request_head(RequestHeaders(method, b"/", b"svc", [(b"x", b"1")]), True)
    assert not chunked
    assert head == method + b" / HTTP/1.1\r\nhost: svc\r\nx: 1\r\n" + framing + b"\r\n"


@pytest.mark.parametrize("enable_trailers", [True, False])
def test_chunked_request_with_trailers_and_split_feeds(enable_trailers: bool) -> None:
    req = RequestHeaders(b"POST", b"/c", b"svc", [])
    head, chunked = encode_request_head(req, end_stream=False)
    assert chunked and b"transfer-encoding: chunked" in head
    wire = (
        head
        + encode_chunk(b"abc")
        + encode_chunk(b"defg")
        + encode_last_chunk(HeaderMap([(b"x-checksum", b"42")]))
    )
    codec, ev = server(enable_trailers=enable_trailers)
    for i in range(len(wire)):  # one byte at a time: the parser must not care
        codec.feed(wire[i : i + 1])
    assert ev.body() == b"abcdefg"
    trailers = ev.events[-1][1]
    if enable_trailers:
        assert isinstance(trailers, HeaderMap) and trailers.items == [(b"x-checksum", b"42")]
    else:  # Envoy's default: parsed, then dropped
        assert trailers is None
    assert ev.framing[0]["chunked"] is True


def test_pipelined_requests_arrive_in_order() -> None:
    codec, ev = server()
    codec.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    paths = [h.path for k, h in ev.events if k == "headers"]
    assert paths == [b"/1", b"/2"]


@pytest.mark.parametrize(
    ("wire", "status", "details"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "http1.content_length_and_chunked_not_allowed",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "http1.invalid_transfer_encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "http1.invalid_transfer_encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\n",
            400,
            "http1.content_length_and_chunked_not_allowed",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "http1.codec_error",
        ),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "http1.codec_error"),
        (b"this is not http\r\n\r\n", 400, "http1.codec_error"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400, "http1.codec_error"),
    ],
)
def test_smuggling_and_malformed_requests_are_rejected(
    wire: bytes, status: int, details: str
) -> None:
    codec, ev = server()
    with pytest.raises(CodecError) as info:
        codec.feed(wire)
    assert (info.value.status, info.value.details) == (status, details)
    assert not any(k == "complete" for k, _ in ev.events)


def test_header_count_and_size_limits() -> None:
    codec, _ = server(max_headers_count=3)
    many = b"".join(b"x-%d: v\r\n" % i for i in range(4))
    with pytest.raises(CodecError) as info:
        codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert (info.value.status, info.value.details) == (431, "http1.too_many_headers")

    codec, _ = server(max_headers_kb=1)
    with pytest.raises(CodecError) as info:
        codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nx-big: " + b"v" * 1100 + b"\r\n\r\n")
    assert (info.value.status, info.value.details) == (431, "http1.headers_too_large")

    # Host counts (Envoy counts every header line): Host and two more is the limit of 3.
    codec, ev = server(max_headers_count=3)
    codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nx-1: v\r\nConnection: keep-alive\r\n\r\n")
    assert ev.events[-1][0] == "complete"
    codec, ev = server(max_headers_count=3)
    with pytest.raises(CodecError):
        codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nx-1: v\r\nx-2: v\r\nx-3: v\r\n\r\n")


def test_hop_by_hop_headers_are_consumed_and_connection_close_seen() -> None:
    codec, ev = server()
    codec.feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nKeep-Alive: 5\r\n"
        b"Proxy-Connection: x\r\nExpect: 100-continue\r\nX-Keep: y\r\n\r\n"
    )
    headers = ev.events[0][1]
    assert isinstance(headers, RequestHeaders)
    assert headers.items == [(b"x-keep", b"y")]
    assert ev.framing[0]["keep_alive"] is False
    assert ev.framing[0]["expect"] is True


def test_absolute_form_target_sets_authority() -> None:
    codec, ev = server()
    codec.feed(b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    headers = ev.events[0][1]
    assert isinstance(headers, RequestHeaders)
    assert (headers.authority, headers.path) == (b"example.com", b"/x?y=1")


def test_http10_version_is_reported() -> None:
    codec, ev = server()
    codec.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert ev.framing[0]["version"] == "1.0" and ev.framing[0]["keep_alive"] is False


def test_upgrade_returns_tunnel_bytes() -> None:
    codec, ev = server()
    rest = codec.feed(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    )
    assert rest == b"RAW"
    assert ev.framing[0]["upgrade"] == b"websocket"


def test_underscore_headers_policy() -> None:
    codec, ev = server(underscores="DROP_HEADER")
    codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nx_under: 1\r\nx-ok: 2\r\n\r\n")
    headers = ev.events[0][1]
    assert isinstance(headers, RequestHeaders) and headers.items == [(b"x-ok", b"2")]
    codec, _ = server(underscores="REJECT_REQUEST")
    with pytest.raises(CodecError) as info:
        codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nx_under: 1\r\n\r\n")
    assert info.value.details == "http1.unexpected_underscore"


# -- responses -----------------------------------------------------------------------------------


def test_response_framing_rules() -> None:
    codec, _ = server()
    # Headers-only response: content-length: 0 added.
    out = codec.encode_headers(ResponseHeaders(404, [(b"server", b"envoy")]), True)
    assert out == b"HTTP/1.1 404 Not Found\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n"
    # 204: nothing added.
    out = codec.encode_headers(ResponseHeaders(204, []), True)
    assert out == b"HTTP/1.1 204 No Content\r\n\r\n"
    # Body without length: chunked.
    out = codec.encode_headers(ResponseHeaders(200, []), False)
    assert out.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert codec.encode_data(b"hi", False) == b"2\r\nhi\r\n"
    assert codec.encode_data(b"", True) == b"0\r\n\r\n"
    # HEAD: chunked announced, no chunk framing.
    out = codec.encode_headers(ResponseHeaders(200, []), False, head_request=True)
    assert b"transfer-encoding: chunked" in out
    assert codec.encode_data(b"", True) == b""
    # HTTP/1.0 client: status line 1.0, no chunking.
    out = codec.encode_headers(ResponseHeaders(200, []), False, http10=True)
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") and b"chunked" not in out
    # Unknown code: Envoy says "Unknown".
    assert codec.encode_headers(ResponseHeaders(299, []), True).startswith(b"HTTP/1.1 299 Unknown")


def client(enable_trailers: bool = False) -> tuple[Http1ClientCodec, ClientEvents]:
    ev = ClientEvents()
    return Http1ClientCodec(ev, enable_trailers=enable_trailers), ev


def test_client_parses_response_and_strips_hop_by_hop() -> None:
    codec, ev = client()
    codec.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-A: b\r\n\r\nok"
    )
    status, items, end = ev.events[0][1]
    assert status == 200 and not end
    assert items == [(b"content-length", b"2"), (b"x-a", b"b")]
    assert ev.events[1] == ("body", b"ok")
    assert ev.events[2] == ("complete", None)
    assert codec.keep_alive


def test_client_head_response_has_no_body_and_connection_stays_usable() -> None:
    codec, ev = client()
    codec.head_request = True
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert ev.events == [
        ("headers", (200, [(b"content-length", b"1000")], True)),
        ("complete", None),
    ]
    codec.head_request = False
    codec.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert ev.events[-1] == ("complete", None)
    assert ev.events[-2][1][0] == 204


def test_client_close_delimited_body_completes_at_eof() -> None:
    codec, ev = client()
    codec.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body")
    assert ("body", b"some body") in ev.events
    assert not any(k == "complete" for k, _ in ev.events)
    assert not codec.keep_alive
    assert codec.eof() is True
    assert ev.events[-1] == ("complete", None)


def test_client_truncated_body_is_not_completed_by_eof() -> None:
    codec, ev = client()
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    assert codec.eof() is False
    assert not any(k == "complete" for k, _ in ev.events)


def test_client_informational_then_final() -> None:
    codec, ev = client()
    codec.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert ev.events[0] == ("1xx", 100)
    assert ev.events[1][0] == "headers" and ev.events[-1] == ("complete", None)


def test_client_garbage_is_a_protocol_error() -> None:
    codec, _ = client()
    with pytest.raises(CodecError):
        codec.feed(b"this is not http\r\n\r\n")


@pytest.mark.parametrize("enable_trailers", [True, False])
def test_client_chunked_response_with_trailers(enable_trailers: bool) -> None:
    codec, ev = client(enable_trailers)
    codec.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
    )
    _, items, _ = ev.events[0][1]
    assert items == []  # transfer-encoding is the hop's, not the message's
    assert ev.events[-1] == ("complete", [(b"x-t", b"1")] if enable_trailers else None)


@pytest.mark.parametrize("enable_trailers", [True, False])
def test_response_trailers_are_encoded_only_when_enabled(enable_trailers: bool) -> None:
    codec, _ = server(enable_trailers=enable_trailers)
    codec.feed(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    head = codec.encode_headers(ResponseHeaders(200, []), False)
    assert b"transfer-encoding: chunked" in head
    end = codec.encode_trailers(HeaderMap([(b"grpc-status", b"0")]))
    assert end == (b"0\r\ngrpc-status: 0\r\n\r\n" if enable_trailers else b"0\r\n\r\n")


def test_in_head_tracks_an_incomplete_request_head_and_stop_ends_parsing() -> None:
    codec, ev = server()
    assert not codec.in_head
    codec.feed(b"GET / HT")
    assert codec.in_head  # request_headers_timeout runs while this is true
    codec.feed(b"TP/1.1\r\nhost: a\r\n\r\n")
    assert not codec.in_head and len(ev.events) == 2  # headers, complete
    codec.stop()
    codec.feed(b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n")
    assert len(ev.events) == 2  # nothing more is parsed after a protocol error


# --- hardening (issue 11): limits while bytes arrive, h2c, Connection: close, Host, targets ---


@pytest.mark.parametrize(
    ("start", "chunk"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ", b"v" * 1000),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", b"x-endless-name" * 70),
        (b"GET /", b"u" * 1000),
    ],
    ids=["value", "name", "url"],
)
def test_a_head_line_that_never_ends_is_refused_at_the_limit(start: bytes, chunk: bytes) -> None:
    """httptools buffers a header line until it ends: the codec counts the unfinished line
    after every read, so 431 comes once the limit is passed, not when the line ends."""
    codec, ev = server(max_headers_kb=2)
    codec.feed(start)
    fed = len(start)
    with pytest.raises(CodecError) as err:
        for _ in range(100):
            codec.feed(chunk)
            fed += len(chunk)
    assert (err.value.status, err.value.details) == (431, "http1.headers_too_large")
    assert fed <= 2048 + len(chunk)
    assert codec.stopped
    assert codec.feed(chunk) is None  # nothing more is parsed
    assert ev.events == []


def test_a_trailer_line_that_never_ends_is_refused() -> None:
    codec, _ = server(max_headers_kb=2, enable_trailers=True)
    codec.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    codec.feed(b"5\r\nhello\r\n0\r\nx-endless: ")
    with pytest.raises(CodecError) as err:
        for _ in range(100):
            codec.feed(b"t" * 1000)
    assert err.value.status == 431


def test_a_long_chunked_body_without_line_ends_is_fine() -> None:
    codec, ev = server(max_headers_kb=1)
    codec.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    codec.feed(b"%x\r\n" % 100000)
    for _ in range(100):
        codec.feed(b"b" * 1000)
    codec.feed(b"\r\n0\r\n\r\n")
    assert len(ev.body()) == 100000
    assert ev.events[-1][0] == "complete"


def test_a_long_head_in_many_reads_under_the_limit_is_fine() -> None:
    codec, ev = server(max_headers_kb=2)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 1900 + b"\r\n\r\n"
    for i in range(0, len(head), 7):
        codec.feed(head[i : i + 7])
    assert ev.events[0][0] == "headers"


def test_the_limit_applies_to_each_request_of_a_pipeline() -> None:
    """Bytes of earlier requests in the same read do not count against the next head."""
    codec, ev = server(max_headers_kb=2)
    one = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 1500 + b"\r\n\r\n"
    codec.feed(one * 3 + b"GET / HTTP/1.1\r\nHost: x\r\nX-B: " + b"b" * 1500)
    codec.feed(b"\r\n\r\n")
    assert [k for k, _ in ev.events].count("headers") == 4


def test_client_refuses_an_endless_response_header() -> None:
    codec, _ = client()
    codec.max_header_bytes = 2048
    codec.feed(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    with pytest.raises(CodecError) as err:
        for _ in range(100):
            codec.feed(b"v" * 1000)
    assert (err.value.status, err.value.details) == (502, "upstream.headers_too_large")


def test_obs_fold_is_refused() -> None:
    codec, _ = server()
    with pytest.raises(CodecError):
        codec.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n")


@pytest.mark.parametrize("after", [b"X\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_bytes_after_connection_close_are_ignored(after: bytes) -> None:
    codec, ev = server()
    codec.feed(b"GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + after)
    codec.feed(after)
    assert [k for k, _ in ev.events] == ["headers", "complete"]
    assert codec.closed_by_request


def test_h2c_upgrade_is_ignored_and_parsing_goes_on() -> None:
    codec, ev = server()
    rest = codec.feed(
        b"POST /u1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMA\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /u2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert rest is None
    heads = [v for k, v in ev.events if k == "headers"]
    assert [h.path for h in heads] == [b"/u1", b"/u2"]
    assert heads[0].items == [(b"content-length", b"2")]
    assert ev.body() == b"hi"
    assert [f["upgrade"] for f in ev.framing] == [None, None]


def test_websocket_upgrade_still_upgrades() -> None:
    codec, ev = server()
    rest = codec.feed(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    )
    assert rest == b"RAW"
    assert ev.framing[0]["upgrade"] == b"websocket"


@pytest.mark.parametrize(
    "host", [b"a, b", b"a b", b"a/b", b'a"b', b"a{b}", b"a?b", b"a#b", b"a\\b", b"a|b"]
)
def test_invalid_host_is_refused(host: bytes) -> None:
    codec, _ = server()
    with pytest.raises(CodecError) as err:
        codec.feed(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert err.value.status == 400


@pytest.mark.parametrize("host", [b"a@b", b"[::1]:80", b"a:x", b"a_b.c-d~e!$&'()*+;=%20", b""])
def test_unusual_valid_host_is_kept(host: bytes) -> None:
    codec, ev = server()
    codec.feed(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert ev.events[0][1].authority == host


@pytest.mark.parametrize(
    ("target", "authority", "path"),
    [
        (b"http://shop.example.com@evil.example/abs", b"evil.example", b"/abs"),
        (b"http://u:p@h/", b"h", b"/"),
        (b"HTTPS://h:8443/a?q", b"h:8443", b"/a?q"),
        (b"http://h", b"h", b"/"),
        (b"http://h?x", b"h", b"?x"),
        (b"http://[::1]:80/v6", b"[::1]:80", b"/v6"),
    ],
)
def test_absolute_form(target: bytes, authority: bytes, path: bytes) -> None:
    codec, ev = server()
    codec.feed(b"GET " + target + b" HTTP/1.1\r\nHost: other\r\n\r\n")
    headers = ev.events[0][1]
    assert (headers.authority, headers.path) == (authority, path)


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://h/a",
        b"http:///a",
        b"http://a,b/",
        b"http://a:99999/",
        b"http://a:8x/",
        b"http://a@b@c/",
        b"http://[::1/",
        b"http://a b/",
        b"*",
    ],
)
def test_bad_request_target_is_refused(target: bytes) -> None:
    codec, _ = server()
    with pytest.raises(CodecError) as err:
        codec.feed(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert err.value.status == 400


def test_asterisk_is_for_options() -> None:
    codec, ev = server()
    codec.feed(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ev.events[0][1].path == b"*"


def test_h2c_upgrade_with_a_chunked_body_and_trailers() -> None:
    codec, ev = server(enable_trailers=True)
    codec.feed(
        b"POST /u1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nx-t: 1\r\n\r\n"
        b"GET /u2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    kinds = [k for k, _ in ev.events]
    assert kinds == ["headers", "body", "complete", "headers", "complete"]
    assert ev.body() == b"hi"
    assert ev.events[2][1].items == [(b"x-t", b"1")]
    assert ev.events[3][1].path == b"/u2"
