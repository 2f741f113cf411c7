"""The HTTP/2 codec as pure pairs: a client codec and a server codec (or an independent h2
peer that sends what the codec's own client never would), no sockets."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from pilotfish.codec.events import (
    CANCEL,
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    ConnectionLost,
    Data,
    Event,
    GoAway,
    InformationalHead,
    PingAck,
    RequestHead,
    ResponseHead,
    StreamReset,
    Trailers,
    WriteUnblocked,
)
from pilotfish.codec.http2 import (
    Http2ClientCodec,
    Http2Options,
    Http2ServerCodec,
    Http2StreamError,
)
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders


class Pair:
    def __init__(
        self, server: Http2Options | None = None, client: Http2Options | None = None
    ) -> None:
        self.server = Http2ServerCodec(server)
        self.client = Http2ClientCodec(client)
        self.server_events: list[Event] = []
        self.client_events: list[Event] = []
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until both sides are quiet."""
        for _ in range(100):
            c2s = self.client.data_to_send()
            if c2s:
                self.server_events += self.server.receive(c2s)
            s2c = self.server.data_to_send()
            if s2c:
                self.client_events += self.client.receive(s2c)
            if not c2s and not s2c:
                return
        raise AssertionError("the codecs never went quiet")

    def take_server(self) -> list[Event]:
        events, self.server_events = self.server_events, []
        return events

    def take_client(self) -> list[Event]:
        events, self.client_events = self.client_events, []
        return events


def get(path: bytes = b"/", items: list[tuple[bytes, bytes]] | None = None) -> RequestHeaders:
    return RequestHeaders(b"GET", path, b"example.com", items or [])


def test_unary_exchange_with_trailers() -> None:
    p = Pair()
    sid = p.client.encode_request(
        RequestHeaders(
            b"POST",
            b"/pkg.Svc/Call?x=1",
            b"svc:8080",
            [(b"content-type", b"application/grpc"), (b"te", b"trailers")],
        ),
        end_stream=False,
    )
    assert sid == 1
    p.client.encode_data(sid, b"hello", end_stream=True)
    p.pump()
    head, data = p.take_server()
    assert isinstance(head, RequestHead) and head.stream_id == 1 and not head.end_stream
    h = head.headers
    assert (h.method, h.path, h.authority, h.scheme) == (
        b"POST",
        b"/pkg.Svc/Call?x=1",
        b"svc:8080",
        b"http",
    )
    assert h.items == [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    assert isinstance(data, Data) and data.data == b"hello" and data.end_stream
    p.server.encode_headers(
        1, ResponseHeaders(200, [(b"content-type", b"application/grpc")]), False
    )
    p.server.encode_data(1, b"world", False)
    p.server.encode_trailers(1, HeaderMap([(b"grpc-status", b"0")]))
    p.pump()
    resp, body, trailers = p.take_client()
    assert isinstance(resp, ResponseHead) and resp.headers.status == 200
    assert resp.headers.items == [(b"content-type", b"application/grpc")]
    assert isinstance(body, Data) and body.data == b"world" and not body.end_stream
    assert isinstance(trailers, Trailers) and trailers.headers.items == [(b"grpc-status", b"0")]
    assert p.server.active_streams == 0 and p.client.active_streams == 0


def test_many_streams_interleave() -> None:
    p = Pair()
    ids = [p.client.encode_request(get(b"/%d" % i), end_stream=True) for i in range(5)]
    assert ids == [1, 3, 5, 7, 9]
    p.pump()
    heads = p.take_server()
    assert [e.headers.path for e in heads if isinstance(e, RequestHead)] == [
        b"/%d" % i for i in range(5)
    ]
    for sid in reversed(ids):
        p.server.encode_headers(sid, ResponseHeaders(204), True)
    p.pump()
    assert [e.stream_id for e in p.take_client() if isinstance(e, ResponseHead)] == list(
        reversed(ids)
    )


def test_informational_then_final_response() -> None:
    p = Pair()
    sid = p.client.encode_request(
        RequestHeaders(b"PUT", b"/", b"a", [(b"expect", b"100-continue")]), False
    )
    p.pump()
    p.server.encode_headers(sid, ResponseHeaders(100), False)
    p.pump()
    (info,) = p.take_client()
    assert isinstance(info, InformationalHead) and info.headers.status == 100
    p.server.encode_headers(sid, ResponseHeaders(200), True)
    p.pump()
    (final,) = p.take_client()
    assert isinstance(final, ResponseHead) and final.end_stream


def test_receive_window_reopens_only_as_data_is_consumed() -> None:
    # The smallest stream window: the client can send 65535 bytes, then waits for the server's
    # consumer; the codec itself never reopens the window.
    p = Pair(server=Http2Options(initial_stream_window_size=65535))
    sid = p.client.encode_request(RequestHeaders(b"POST", b"/up", b"a"), False)
    body = b"x" * 200_000
    p.client.encode_data(sid, body, True)
    p.pump()
    received = sum(len(e.data) for e in p.take_server() if isinstance(e, Data))
    assert received == 65535
    p.pump()
    assert p.take_server() == []  # nothing consumed: nothing more comes
    total = received
    while total < len(body):
        p.server.consumed(sid, received)
        p.pump()
        received = sum(len(e.data) for e in p.take_server() if isinstance(e, Data))
        assert received > 0
        total += received
    assert total == len(body)


def test_send_queue_above_limit_blocks_the_producer_until_the_peer_consumes() -> None:
    p = Pair(
        server=Http2Options(initial_stream_window_size=65535),
        client=Http2Options(stream_buffer_limit=100_000),
    )
    sid = p.client.encode_request(RequestHeaders(b"POST", b"/up", b"a"), False)
    assert p.client.encode_data(sid, b"x" * 90_000, False) is False
    assert p.client.encode_data(sid, b"x" * 90_000, False) is True  # 180k queued > 100k
    p.pump()
    got = sum(len(e.data) for e in p.take_server() if isinstance(e, Data))
    assert not any(isinstance(e, WriteUnblocked) for e in p.take_client())
    p.server.consumed(sid, got)
    p.pump()
    p.server.consumed(sid, sum(len(e.data) for e in p.take_server() if isinstance(e, Data)))
    p.pump()
    assert [e.stream_id for e in p.take_client() if isinstance(e, WriteUnblocked)] == [sid]


def test_server_settings_and_connection_window_are_envoys() -> None:
    peer = H2Peer(Http2ServerCodec())
    settings = peer.settings
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 1024
    assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 16 * 1024 * 1024
    assert h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL not in settings
    # The connection window: 24 MiB, as Envoy opens it with a WINDOW_UPDATE on stream 0.
    assert peer.conn.outbound_flow_control_window == 24 * 1024 * 1024
    peer = H2Peer(Http2ServerCodec(Http2Options(max_concurrent_streams=7, allow_connect=True)))
    assert peer.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert peer.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1


def test_client_respects_the_peers_max_concurrent_streams() -> None:
    p = Pair(server=Http2Options(max_concurrent_streams=1))
    assert p.client.can_open_stream
    sid = p.client.encode_request(get(), True)
    assert not p.client.can_open_stream
    p.pump()
    p.server.encode_headers(sid, ResponseHeaders(200), True)
    p.pump()
    assert p.client.can_open_stream


def test_options_reject_out_of_range_values_by_field() -> None:
    with pytest.raises(ValueError, match="initial_stream_window_size"):
        Http2Options(initial_stream_window_size=1000)
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        Http2Options(max_concurrent_streams=0)
    with pytest.raises(ValueError, match="initial_connection_window_size"):
        Http2Options(initial_connection_window_size=1 << 31)


def test_request_head_in_http1_shape() -> None:
    peer = H2Peer(Http2ServerCodec())
    events = peer.request(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/p"),
            (b":authority", b"a.b"),
            (b"host", b"other"),
            (b"cookie", b"a=1"),
            (b"x", b"1"),
            (b"cookie", b"b=2"),
        ]
    )
    (head,) = events
    assert isinstance(head, RequestHead)
    h = head.headers
    # :authority wins over host, which is dropped; cookie crumbs are joined in place.
    assert (h.authority, h.scheme) == (b"a.b", b"https")
    assert h.items == [(b"cookie", b"a=1; b=2"), (b"x", b"1")]
    (head,) = peer.request(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h:1")]
    )
    assert head.headers.authority == b"h:1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad",
    [
        [(b"connection", b"keep-alive")],
        [(b"transfer-encoding", b"chunked")],
        [(b"te", b"gzip")],
        [(b"Upper", b"x")],
        [(b":foo", b"x")],
        [(b"x", b"a\x00b")],
    ],
    ids=["connection", "transfer-encoding", "te-gzip", "uppercase", "unknown-pseudo", "nul"],
)
def test_invalid_message_ends_the_connection_by_default(bad: list[tuple[bytes, bytes]]) -> None:
    peer = H2Peer(Http2ServerCodec())
    events = peer.request(GET_BLOCK + bad)
    assert [type(e) for e in events] == [StreamReset, ConnectionLost]
    assert events[0].details == "http2.violation.of.messaging.rule"  # type: ignore[attr-defined]
    assert peer.codec.rx_messaging_error == 1 and peer.codec.closed
    assert peer.goaway == PROTOCOL_ERROR


def test_invalid_message_resets_only_the_stream_with_override() -> None:
    peer = H2Peer(
        Http2ServerCodec(Http2Options(override_stream_error_on_invalid_http_message=True))
    )
    events = peer.request([*GET_BLOCK, (b"connection", b"close")])
    assert [type(e) for e in events] == [StreamReset]
    assert peer.resets == {1: PROTOCOL_ERROR} and peer.goaway is None
    (head,) = peer.request(GET_BLOCK)
    assert isinstance(head, RequestHead) and head.stream_id == 3


def test_missing_pseudo_header_and_te_trailers() -> None:
    peer = H2Peer(
        Http2ServerCodec(Http2Options(override_stream_error_on_invalid_http_message=True))
    )
    events = peer.request([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")])
    assert [type(e) for e in events] == [StreamReset]  # no :path
    (head,) = peer.request([*GET_BLOCK, (b"te", b"trailers")])
    assert head.headers.items == [(b"te", b"trailers")]  # type: ignore[attr-defined]


def test_too_many_headers_resets_the_stream_as_envoy() -> None:
    peer = H2Peer(Http2ServerCodec(Http2Options(max_headers_count=10)))
    events = peer.request(GET_BLOCK + [(b"x-%d" % i, b"v") for i in range(7)])
    assert [type(e) for e in events] == [StreamReset]
    assert events[0].details == "http2.too_many_headers"  # type: ignore[attr-defined]
    assert peer.resets == {1: INTERNAL_ERROR} and not peer.codec.closed
    events = peer.request([*GET_BLOCK, (b"x-big", b"v" * 2000)])
    assert [type(e) for e in events] == [RequestHead]
    peer2 = H2Peer(Http2ServerCodec(Http2Options(max_headers_kb=1)))
    events = peer2.request([*GET_BLOCK, (b"x-big", b"v" * 2000)])
    assert [type(e) for e in events] == [StreamReset] and peer2.resets == {1: INTERNAL_ERROR}


def test_headers_with_underscores() -> None:
    peer = H2Peer(Http2ServerCodec(Http2Options(underscores="DROP_HEADER")))
    (head,) = peer.request([*GET_BLOCK, (b"x_a", b"1"), (b"x-b", b"2")])
    assert head.headers.items == [(b"x-b", b"2")]  # type: ignore[attr-defined]
    peer = H2Peer(Http2ServerCodec(Http2Options(underscores="REJECT_REQUEST")))
    (reset,) = peer.request([*GET_BLOCK, (b"x_a", b"1")])
    assert isinstance(reset, StreamReset) and reset.details == "http2.unexpected_underscore"
    assert peer.codec.requests_rejected_with_underscores_in_headers == 1 and not peer.codec.closed


def test_content_length_mismatch_is_a_messaging_error() -> None:
    peer = H2Peer(Http2ServerCodec())
    peer.conn.send_headers(
        1,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"a"),
            (b"content-length", b"3"),
        ],
    )
    peer.conn.send_data(1, b"toolong", end_stream=True)
    events = peer.flush()
    assert next(type(e) for e in events) is RequestHead
    assert [type(e) for e in events][-2:] == [StreamReset, ConnectionLost]


def test_extended_connect_is_seen_as_an_upgrade_and_answered_with_200() -> None:
    p = Pair(server=Http2Options(allow_connect=True))
    sid = p.client.encode_request(
        RequestHeaders(
            b"GET",
            b"/ws",
            b"a",
            [
                (b"upgrade", b"websocket"),
                (b"connection", b"upgrade"),
                (b"sec-websocket-version", b"13"),
            ],
        ),
        False,
    )
    p.pump()
    (head,) = p.take_server()
    assert isinstance(head, RequestHead)
    h = head.headers
    assert (h.method, h.path) == (b"GET", b"/ws")
    assert h.items == [
        (b"sec-websocket-version", b"13"),
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
    ]
    p.server.encode_headers(
        sid, ResponseHeaders(101, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]), False
    )
    p.pump()
    (resp,) = p.take_client()
    assert isinstance(resp, ResponseHead)
    assert resp.headers.status == 101
    assert resp.headers.items == [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
    p.client.encode_data(sid, b"frame", False)
    p.pump()
    (data,) = p.take_server()
    assert isinstance(data, Data) and data.data == b"frame"


def test_extended_connect_is_refused_without_allow_connect() -> None:
    peer = H2Peer(
        Http2ServerCodec(Http2Options(override_stream_error_on_invalid_http_message=True))
    )
    events = peer.request(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"a"),
        ],
        end_stream=False,
    )
    assert [type(e) for e in events] == [StreamReset]
    # Plain CONNECT is an HTTP/2 request like any other (a tunnel to :authority).
    (head,) = peer.request(
        [(b":method", b"CONNECT"), (b":authority", b"db:5432")], end_stream=False
    )
    assert isinstance(head, RequestHead)
    assert (head.headers.method, head.headers.authority, head.headers.path) == (
        b"CONNECT",
        b"db:5432",
        b"",
    )


def test_drain_goaway_then_in_flight_stream_finishes() -> None:
    p = Pair()
    sid = p.client.encode_request(get(), True)
    p.pump()
    p.take_server()
    p.server.shutdown_notice()
    p.pump()
    (notice,) = p.take_client()
    assert isinstance(notice, GoAway) and notice.last_stream_id == (1 << 31) - 1
    p.server.goaway()
    p.pump()
    (final,) = p.take_client()
    assert isinstance(final, GoAway) and final.last_stream_id == 1 and final.error_code == 0
    assert not p.client.can_open_stream
    assert not p.server.want_close  # stream 1 is still in flight
    p.server.encode_headers(sid, ResponseHeaders(200), True)
    p.pump()
    assert isinstance(p.take_client()[0], ResponseHead)
    assert p.server.want_close


def test_stream_refused_by_goaway_is_reported_as_remote_refuse() -> None:
    p = Pair()
    p.server.goaway()
    sid = p.client.encode_request(get(), True)  # crosses the GOAWAY
    p.pump()
    (lost,) = p.take_server()  # the server is done: no stream was in flight
    assert isinstance(lost, ConnectionLost) and lost.error_code == 0 and p.server.want_close
    events = p.take_client()
    assert isinstance(events[0], GoAway)
    assert any(isinstance(e, StreamReset) and e.stream_id == sid for e in events)


def test_ping_keepalive() -> None:
    p = Pair()
    p.client.ping(b"12345678")
    p.pump()
    (ack,) = p.take_client()
    assert isinstance(ack, PingAck) and ack.opaque == b"12345678"
    assert p.take_server() == []


def test_reset_both_ways() -> None:
    p = Pair()
    sid = p.client.encode_request(RequestHeaders(b"POST", b"/", b"a"), False)
    p.pump()
    p.take_server()
    p.client.reset(sid)
    p.pump()
    (reset,) = p.take_server()
    assert isinstance(reset, StreamReset) and reset.remote and reset.error_code == CANCEL
    assert reset.details == "http2.remote_reset"
    sid = p.client.encode_request(RequestHeaders(b"POST", b"/", b"a"), False)
    p.pump()
    p.take_server()
    p.server.reset(sid, INTERNAL_ERROR)
    p.client.encode_data(sid, b"late", False)  # crossing the reset: dropped, no error
    p.pump()
    (reset,) = p.take_client()
    assert isinstance(reset, StreamReset) and reset.remote and reset.error_code == INTERNAL_ERROR
    assert p.take_server() == []
    # Encoding on a reset stream is a no-op, as in Envoy.
    p.server.encode_headers(sid, ResponseHeaders(200), True)
    p.server.encode_data(sid, b"x", True)
    p.pump()
    assert p.take_client() == []


def test_garbage_instead_of_a_preface_is_a_connection_error() -> None:
    server = Http2ServerCodec()
    server.data_to_send()
    events = server.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [type(e) for e in events] == [ConnectionLost]
    out = server.data_to_send()
    assert out[3] == 0x7  # a GOAWAY frame
    assert server.receive(b"more") == []


def test_bad_frame_is_a_connection_error_with_goaway() -> None:
    peer = H2Peer(Http2ServerCodec())
    # A WINDOW_UPDATE with a zero increment on stream 0 (RFC 9113 §6.9: PROTOCOL_ERROR).
    events = peer.raw(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")
    assert [type(e) for e in events] == [ConnectionLost]
    assert peer.goaway == PROTOCOL_ERROR


GET_BLOCK = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]


class H2Peer:
    """An independent HTTP/2 peer (python-hyper h2) with its checks off, to send the codec
    what a conforming peer would not: a client for a server codec and the reverse."""

    def __init__(self, codec: Http2ServerCodec | Http2ClientCodec) -> None:
        self.codec = codec
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=isinstance(codec, Http2ServerCodec),
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.conn.initiate_connection()
        self.settings: dict[int, int] = {}
        self.resets: dict[int, int] = {}
        self.goaway: int | None = None
        self.flush()

    def flush(self) -> list[Event]:
        events: list[Event] = []
        for _ in range(20):
            out = self.conn.data_to_send()
            if out:
                events += self.codec.receive(out)
            back = self.codec.data_to_send()
            if not back and not out:
                break
            if back:
                for e in self.conn.receive_data(back):
                    if isinstance(e, h2.events.RemoteSettingsChanged):
                        self.settings.update(
                            {k: v.new_value for k, v in e.changed_settings.items()}
                        )
                    elif isinstance(e, h2.events.StreamReset):
                        self.resets[e.stream_id] = e.error_code
                    elif isinstance(e, h2.events.ConnectionTerminated):
                        self.goaway = e.error_code
                        return events
        return events

    def request(self, block: list[tuple[bytes, bytes]], end_stream: bool = True) -> list[Event]:
        self.conn.send_headers(
            self.conn.get_next_available_stream_id(), block, end_stream=end_stream
        )
        return self.flush()

    def raw(self, frame: bytes) -> list[Event]:
        events = self.codec.receive(frame)
        for e in self.conn.receive_data(self.codec.data_to_send()):
            if isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e.error_code
        return events


def test_connection_window_survives_reset_and_finished_streams() -> None:
    # Smallest windows: one stream's unreturned bytes would starve the whole connection.
    small = Http2Options(initial_stream_window_size=65535, initial_connection_window_size=65535)
    p = Pair(server=small)

    def upload(n: int, end: bool) -> tuple[int, int]:
        sid = p.client.encode_request(RequestHeaders(b"POST", b"/", b"a"), False)
        p.client.encode_data(sid, b"x" * n, end)
        p.pump()
        return sid, sum(len(e.data) for e in p.take_server() if isinstance(e, Data))

    sid, got = upload(60_000, False)
    assert got == 60_000
    p.server.reset(sid)  # never consumed: the codec hands the bytes back itself
    p.pump()
    p.take_client()
    sid, got = upload(60_000, True)
    assert got == 60_000
    # Stream finished (both sides ended) while its consumer still holds the bytes.
    p.server.encode_headers(sid, ResponseHeaders(200), True)
    p.pump()
    p.take_client()
    assert p.server.active_streams == 0
    p.server.consumed(sid, 60_000)
    p.server.consumed(sid, 60_000)  # more than was delivered: ignored
    _, got = upload(60_000, True)
    assert got == 60_000


@pytest.mark.parametrize("override", [False, True])
def test_invalid_response_from_upstream(override: bool) -> None:
    opts = Http2Options(override_stream_error_on_invalid_http_message=override)
    client = Http2ClientCodec(opts)
    peer = H2Peer(client)
    sid = client.encode_request(get(), True)
    peer.flush()
    peer.conn.send_headers(sid, [(b":status", b"200"), (b"transfer-encoding", b"chunked")])
    events = peer.flush()
    if override:
        assert [type(e) for e in events] == [StreamReset]
        assert peer.resets == {sid: PROTOCOL_ERROR} and peer.goaway is None
        assert client.can_open_stream
    else:
        assert [type(e) for e in events] == [StreamReset, ConnectionLost]
        assert peer.goaway == PROTOCOL_ERROR


def test_upstream_response_with_too_many_headers_is_reset() -> None:
    client = Http2ClientCodec(Http2Options(max_headers_count=5))
    peer = H2Peer(client)
    sid = client.encode_request(get(), True)
    peer.flush()
    peer.conn.send_headers(sid, [(b":status", b"200")] + [(b"x-%d" % i, b"v") for i in range(6)])
    events = peer.flush()
    assert [type(e) for e in events] == [StreamReset]
    assert events[0].details == "http2.too_many_headers"  # type: ignore[attr-defined]
    assert peer.resets == {sid: INTERNAL_ERROR}


def test_no_stream_after_goaway_raises_a_codec_error() -> None:
    p = Pair()
    p.server.goaway()
    p.pump()
    assert not p.client.can_open_stream
    with pytest.raises(Http2StreamError):
        for _ in range(2):
            p.client.encode_request(get(), True)
            p.pump()
