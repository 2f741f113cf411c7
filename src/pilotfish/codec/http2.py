"""HTTP/2, sans-IO: bytes in, events out (``codec.events``); stream calls in, bytes out.

The protocol engine is libnghttp2 through ``ngh2`` (chosen by measurement, docs/http2.md):
framing, HPACK, stream states, flow-control windows and RFC 9113's message checks
(pseudo-headers, connection-specific headers, content-length) are nghttp2's, as in Envoy's
nghttp2 codec. What this module adds is what Envoy adds on top of nghttp2:

- ``http2_protocol_options``: SETTINGS, the connection window, header count/size limits,
  extended CONNECT (``allow_connect``), and ``override_stream_error_on_invalid_http_message``:
  by default an invalid message ends the whole connection (GOAWAY), as in Envoy;
- receive windows reopen only as the consumer drains data (``consumed``): backpressure;
- a stream's queued body above ``stream_buffer_limit`` pauses its producer (WriteBlocked);
- request heads in the shape HTTP/1.1 gives them (``authority`` from ``:authority`` or
  ``host``, cookie crumbs joined, extended CONNECT seen as an Upgrade);
- graceful drain (GOAWAY), PING for keepalive.
"""

from __future__ import annotations

import ngh2

from pilotfish.codec.events import (
    CANCEL,
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
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
from pilotfish.codec.h1_h2 import (
    join_cookies,
    request_to_h2,
    response_from_h2_upgrade,
    response_to_h2,
    trailers_to_h2,
)
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_WINDOW = 65535
_RST_STREAM = 0x3
_MESSAGING = "http2.violation.of.messaging.rule"  # Envoy's response code detail


class Http2StreamError(Exception):
    """A stream cannot be started on this connection (GOAWAY, closed, ids exhausted): open
    another connection. ``can_open_stream`` tells beforehand."""


class Http2Options:
    """Envoy's ``http2_protocol_options`` (and the HCM limits that apply to HTTP/2). Defaults
    are Envoy 1.40's, as its SETTINGS frame shows them: 1024 streams, 16 MiB stream window,
    24 MiB connection window, HPACK table 4096."""

    __slots__ = (
        "allow_connect",
        "hpack_table_size",
        "initial_connection_window_size",
        "initial_stream_window_size",
        "max_concurrent_streams",
        "max_headers_count",
        "max_headers_kb",
        "override_stream_error_on_invalid_http_message",
        "stream_buffer_limit",
        "underscores",
    )

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1024,
        initial_stream_window_size: int = 16 * 1024 * 1024,
        initial_connection_window_size: int = 24 * 1024 * 1024,
        hpack_table_size: int = 4096,
        max_headers_count: int = 100,
        max_headers_kb: int = 60,
        allow_connect: bool = False,
        override_stream_error_on_invalid_http_message: bool = False,
        underscores: str = "ALLOW",
        stream_buffer_limit: int = 1024 * 1024,
    ) -> None:
        # Envoy's proto validation ranges; the error names the field.
        if not 1 <= max_concurrent_streams <= _MAX_WINDOW:
            raise ValueError("http2_protocol_options.max_concurrent_streams: 1 to 2147483647")
        if not _DEFAULT_WINDOW <= initial_stream_window_size <= _MAX_WINDOW:
            raise ValueError(
                "http2_protocol_options.initial_stream_window_size: 65535 to 2147483647"
            )
        if not _DEFAULT_WINDOW <= initial_connection_window_size <= _MAX_WINDOW:
            raise ValueError(
                "http2_protocol_options.initial_connection_window_size: 65535 to 2147483647"
            )
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_stream_window_size = initial_stream_window_size
        self.initial_connection_window_size = initial_connection_window_size
        self.hpack_table_size = hpack_table_size
        self.max_headers_count = max_headers_count
        self.max_headers_kb = max_headers_kb
        self.allow_connect = allow_connect
        self.override_stream_error_on_invalid_http_message = (
            override_stream_error_on_invalid_http_message
        )
        self.underscores = underscores
        self.stream_buffer_limit = stream_buffer_limit


class _Stream:
    __slots__ = ("blocked", "local_done", "remote_done", "stream_id", "unconsumed", "upgrade")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        # A stream leaves the table once both sides have ended it (or on a reset).
        self.local_done = False
        self.remote_done = False
        self.unconsumed = 0  # body bytes delivered and not yet handed back with consumed()
        self.blocked = False  # WriteBlocked was reported (queued body above the limit)
        # Extended CONNECT: the :protocol (server: the request came as one; client: it went
        # out as one), so that the answer is translated back (101 <-> 200).
        self.upgrade: bytes | None = None


def _goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    # Written by hand only for the one case nghttp2 cannot: it refused the input outright and
    # its session is no longer usable, yet the peer is owed a GOAWAY (RFC 9113 §5.4.1).
    return (
        b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"
        + last_stream_id.to_bytes(4, "big")
        + error_code.to_bytes(4, "big")
    )


class _Http2Codec:
    """What the server and client sides share: one HTTP/2 connection."""

    def __init__(self, role: ngh2.Role, options: Http2Options | None) -> None:
        opts = options if options is not None else Http2Options()
        self.options = opts
        self._max_header_bytes = opts.max_headers_kb * 1024
        # nghttp2's own limits stay above ours, so that ours decide (and reset just the
        # stream, as Envoy does) while nghttp2's still stop a peer that floods.
        config = ngh2.Configuration(
            auto_window_update=False,
            max_inbound_header_count=max(1024, opts.max_headers_count * 2),
            max_inbound_header_list_size=max(1 << 16, self._max_header_bytes * 2),
        )
        self._conn = ngh2.Connection(role, config)
        self._streams: dict[int, _Stream] = {}
        self._out: list[bytes] = []
        self._last_peer_stream = 0
        # Streams closed normally while their consumer still holds body bytes: consumed() for
        # them still reopens the connection window.
        self._orphans: dict[int, int] = {}
        self._bad: list[int] = []  # streams nghttp2 reset for an invalid message, this input
        self.closed = False  # no more input is processed; send what is left, then close
        self.goaway_received = False
        # Envoy's http2.* counters this codec can see.
        self.rx_messaging_error = 0
        self.rx_reset = 0
        self.tx_reset = 0
        self.header_overflow = 0
        self.requests_rejected_with_underscores_in_headers = 0

    def _start(self, settings: dict[int, int]) -> None:
        conn = self._conn
        conn.initiate_connection(settings)
        window = self.options.initial_connection_window_size
        if window > _DEFAULT_WINDOW:
            conn.set_local_window_size(window)  # a WINDOW_UPDATE on stream 0, as Envoy sends

    # -- output ----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything the codec has to send now (write it to the transport)."""
        try:
            out = self._conn.data_to_send()
        except ngh2.NGH2Error:
            out = b""
        if self._out:
            self._out.append(out)
            out = b"".join(self._out)
            self._out = []
        return out

    @property
    def want_close(self) -> bool:
        """The connection is finished (GOAWAY exchanged and nothing left in flight)."""
        conn = self._conn
        return self.closed or (not conn.want_read and not conn.want_write)

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    # -- stream calls ----------------------------------------------------------------------

    def encode_data(self, stream_id: int, data: bytes, end_stream: bool) -> bool:
        """Queue body bytes; nghttp2 sends them as the peer's windows allow. Returns True if
        the stream's queued body is now above ``stream_buffer_limit``: pause its producer
        until WriteUnblocked."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False  # reset meanwhile: Envoy drops the bytes too
        conn = self._conn
        try:
            conn.send_data(stream_id, data, end_stream=end_stream)
        except ngh2.NGH2Error:
            return False
        if end_stream:
            self._local_end(stream)
            return False
        if stream.blocked:
            return False
        if conn.queued_body_size(stream_id) > self.options.stream_buffer_limit:
            stream.blocked = True
            return True
        return False

    def encode_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        block = trailers_to_h2(trailers)
        try:
            if block:
                self._conn.send_trailers(stream_id, block)
            else:
                self._conn.send_data(stream_id, b"", end_stream=True)
        except ngh2.NGH2Error:
            pass
        self._local_end(stream)

    def _local_end(self, stream: _Stream) -> None:
        stream.local_done = True
        if stream.remote_done:
            self._finish(stream)

    def _remote_end(self, stream: _Stream) -> None:
        stream.remote_done = True
        if stream.local_done:
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        del self._streams[stream.stream_id]
        if stream.unconsumed:
            self._orphans[stream.stream_id] = stream.unconsumed

    def _drop(self, stream_id: int) -> _Stream | None:
        """Forget a reset stream. Its unconsumed bytes are handed back at once: nobody will
        consume them, and the connection window must not shrink for good."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.unconsumed:
            self._ack(stream_id, stream.unconsumed)
            stream.unconsumed = 0
        return stream

    def _ack(self, stream_id: int, amount: int) -> None:
        try:
            self._conn.acknowledge_received_data(amount, stream_id)
        except ngh2.NGH2Error:
            pass

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """RST_STREAM: this side abandons the stream."""
        if self._drop(stream_id) is None:
            return
        self.tx_reset += 1
        try:
            self._conn.reset_stream(stream_id, error_code)
        except ngh2.NGH2Error:
            pass

    def consumed(self, stream_id: int, amount: int) -> None:
        """The consumer passed on ``amount`` bytes of received body: reopen the windows by as
        much (nghttp2 sends WINDOW_UPDATE once half a window is consumed)."""
        if amount <= 0:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            amount = min(amount, stream.unconsumed)
            stream.unconsumed -= amount
        else:
            left = self._orphans.get(stream_id)
            if left is None:
                return  # reset: its bytes were handed back already
            amount = min(amount, left)
            if left > amount:
                self._orphans[stream_id] = left - amount
            else:
                del self._orphans[stream_id]
        if amount:
            self._ack(stream_id, amount)

    # -- connection calls ------------------------------------------------------------------

    def ping(self, opaque: bytes = b"\x00" * 8) -> None:
        """A keepalive PING (``connection_keepalive``); PingAck reports the answer."""
        self._conn.ping(opaque)

    def shutdown_notice(self) -> None:
        """Drain, first step: GOAWAY with the largest stream id (no stream refused yet)."""
        try:
            self._conn.send_shutdown_notice()
        except ngh2.NGH2Error:
            pass

    def goaway(self, error_code: int = 0) -> None:
        """GOAWAY with the last stream this side processed: no new streams; the ones in
        flight finish (``want_close`` turns True when they have)."""
        try:
            self._conn.send_goaway(error_code)
        except ngh2.NGH2Error:
            pass

    # -- input -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the transport; returns what they meant, in order."""
        if self.closed:
            return []
        conn = self._conn
        events: list[Event] = []
        pending = conn.data_to_send()  # what stream calls queued: not part of the scan below
        if pending:
            self._out.append(pending)
        if not conn.want_read:
            # Our GOAWAY went out and no stream is left: input past it means nothing.
            self._lost(events, 0, "http2.goaway")
            return events
        try:
            conn.receive_data(data)
        except ngh2.NGH2Error as e:
            self._fail(events, PROTOCOL_ERROR, f"http2.codec_error: {e}")
            return events
        out = conn.data_to_send()
        bad = self._bad
        messaging_errors = self.rx_messaging_error
        if out:
            self._out.append(out)
            self._scan_resets(out)
        for event in conn.events():
            self._dispatch(event, events)
        if bad:
            for stream_id in bad:
                # Streams nghttp2 reset without a StreamClosed (never surfaced, or still open).
                self._drop(stream_id)
                events.append(StreamReset(stream_id, PROTOCOL_ERROR, False, _MESSAGING))
            bad.clear()
        if self.rx_messaging_error != messaging_errors and not self.closed:
            if not self.options.override_stream_error_on_invalid_http_message:
                # Envoy's default: an invalid HTTP message ends the connection, not the stream.
                try:
                    conn.terminate_connection(PROTOCOL_ERROR)
                except ngh2.NGH2Error:
                    pass
                self._lost(events, PROTOCOL_ERROR, _MESSAGING)
        return events

    def _fail(self, events: list[Event], error_code: int, details: str) -> None:
        try:
            self._conn.terminate_connection(error_code)
            out = self._conn.data_to_send()
        except ngh2.NGH2Error:
            out = _goaway_frame(self._last_peer_stream, error_code)
        self._out.append(out)
        self._lost(events, error_code, details)

    def _lost(self, events: list[Event], error_code: int, details: str) -> None:
        self.closed = True
        for stream_id in list(self._streams):
            events.append(StreamReset(stream_id, error_code, False, "http2.connection_closed"))
        self._streams.clear()
        self._orphans.clear()
        events.append(ConnectionLost(error_code, details))

    def _scan_resets(self, out: bytes) -> None:
        # nghttp2 resets a stream whose message breaks RFC 9113 §8 (bad pseudo-headers,
        # connection-specific headers, content-length mismatch...) by itself and reports
        # nothing; its RST_STREAM(PROTOCOL_ERROR) frames in what it answered to the input are
        # how the codec learns of it. Only frame headers are read.
        i = 0
        end = len(out)
        while i + 9 <= end:
            length = (out[i] << 16) | (out[i + 1] << 8) | out[i + 2]
            if out[i + 3] == _RST_STREAM and length == 4 and i + 13 <= end:
                if int.from_bytes(out[i + 9 : i + 13], "big") == PROTOCOL_ERROR:
                    self.rx_messaging_error += 1
                    self._bad.append(int.from_bytes(out[i + 5 : i + 9], "big") & _MAX_WINDOW)
            i += 9 + length

    def _dispatch(self, e: object, events: list[Event]) -> None:
        if isinstance(e, ngh2.DataReceived):
            stream_id = e.stream_id
            stream = self._streams.get(stream_id)
            if stream is None:
                # A stream this side reset: the bytes still count against the connection
                # window, which must not leak.
                self._ack(stream_id, len(e.data))
                return
            stream.unconsumed += len(e.data)
            if e.end_stream:
                self._remote_end(stream)
            events.append(Data(stream_id, e.data, e.end_stream))
        elif isinstance(e, ngh2.RequestReceived):
            self._on_request(e.stream_id, e.headers, e.end_stream, events)
        elif isinstance(e, ngh2.ResponseReceived):
            self._on_response(e.stream_id, e.headers, e.end_stream, events)
        elif isinstance(e, ngh2.TrailersReceived):
            stream = self._streams.get(e.stream_id)
            if stream is not None:
                self._remote_end(stream)
                items = [(n, v) for n, v in e.headers if n[:1] != b":"]
                events.append(Trailers(e.stream_id, HeaderMap(items)))
        elif isinstance(e, ngh2.StreamClosed):
            stream = self._drop(e.stream_id)
            if e.stream_id in self._bad:
                self._bad.remove(e.stream_id)
                events.append(StreamReset(e.stream_id, PROTOCOL_ERROR, False, _MESSAGING))
            elif stream is not None and e.error_code != 0:
                # Closed by nghttp2 for a stream error it found (flow control, state).
                events.append(StreamReset(e.stream_id, e.error_code, False, "http2.stream_error"))
        elif isinstance(e, ngh2.StreamReset):
            self.rx_reset += 1
            if self._drop(e.stream_id) is not None:
                refused = e.error_code == REFUSED_STREAM
                details = "http2.remote_refuse" if refused else "http2.remote_reset"
                events.append(StreamReset(e.stream_id, e.error_code, True, details))
        elif isinstance(e, ngh2.WindowUpdated | ngh2.SettingsReceived):
            self._unblock(events)
        elif isinstance(e, ngh2.InformationalResponseReceived):
            if e.stream_id in self._streams:
                head = _response_headers(e.headers)
                if head is not None:
                    events.append(InformationalHead(e.stream_id, head))
        elif isinstance(e, ngh2.PingAcknowledged):
            events.append(PingAck(e.opaque_data))
        elif isinstance(e, ngh2.GoAwayReceived):
            self.goaway_received = True
            events.append(GoAway(e.last_stream_id, e.error_code))
        elif isinstance(e, ngh2.ConnectionClosed):
            details = "http2.codec_error" if e.error_code else "http2.goaway"
            self._lost(events, e.error_code, details)

    def _unblock(self, events: list[Event]) -> None:
        low = self.options.stream_buffer_limit // 2
        conn = self._conn
        for stream in self._streams.values():
            if stream.blocked and conn.queued_body_size(stream.stream_id) <= low:
                stream.blocked = False
                events.append(WriteUnblocked(stream.stream_id))

    def _too_big(self, stream_id: int, count: int, size: int, events: list[Event]) -> bool:
        opts = self.options
        if count <= opts.max_headers_count and size <= self._max_header_bytes:
            return False
        # Envoy resets such a stream with INTERNAL_ERROR (checked against Envoy 1.40).
        self.header_overflow += 1
        self._drop(stream_id)
        self.tx_reset += 1
        self._conn.reset_stream(stream_id, INTERNAL_ERROR)
        events.append(StreamReset(stream_id, INTERNAL_ERROR, False, "http2.too_many_headers"))
        return True

    def _on_request(
        self, stream_id: int, block: tuple, end_stream: bool, events: list[Event]
    ) -> None:
        raise NotImplementedError  # a client is never sent requests (nghttp2 refuses them)

    def _on_response(
        self, stream_id: int, block: tuple, end_stream: bool, events: list[Event]
    ) -> None:
        raise NotImplementedError


def _response_headers(block: tuple) -> ResponseHeaders | None:
    status = -1
    items = []
    for name, value in block:
        if name == b":status":
            status = int(value)
        elif name[:1] != b":":
            items.append((name, value))
    if status < 0:
        return None
    return ResponseHeaders(status, items)


class Http2ServerCodec(_Http2Codec):
    """The server side of one downstream HTTP/2 connection. Call ``data_to_send`` right after
    construction: the server's SETTINGS go first."""

    def __init__(self, options: Http2Options | None = None) -> None:
        super().__init__(ngh2.Role.SERVER, options)
        opts = self.options
        settings: dict[int, int] = {
            ngh2.Setting.MAX_CONCURRENT_STREAMS: opts.max_concurrent_streams,
            ngh2.Setting.INITIAL_WINDOW_SIZE: opts.initial_stream_window_size,
            ngh2.Setting.HEADER_TABLE_SIZE: opts.hpack_table_size,
        }
        if opts.allow_connect:
            settings[ngh2.Setting.ENABLE_CONNECT_PROTOCOL] = 1
        self._start(settings)

    def encode_headers(self, stream_id: int, headers: ResponseHeaders, end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        block = response_to_h2(headers, stream.upgrade is not None)
        try:
            if headers.status < 200:
                self._conn.send_informational_response(stream_id, block)
                return
            self._conn.send_response(stream_id, block, end_stream=end_stream)
        except ngh2.NGH2Error:
            return
        if end_stream:
            self._local_end(stream)

    def _on_request(
        self, stream_id: int, block: tuple, end_stream: bool, events: list[Event]
    ) -> None:
        self._last_peer_stream = max(self._last_peer_stream, stream_id)
        method = path = authority = protocol = host = None
        scheme = b"http"
        items: list[tuple[bytes, bytes]] = []
        size = 0
        underscores = self.options.underscores
        cookies = 0
        for name, value in block:
            size += len(name) + len(value)
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":scheme":
                    scheme = value
                elif name == b":protocol":
                    protocol = value
                continue
            if name == b"host":
                host = value
                continue
            if name == b"cookie":
                cookies += 1
            elif underscores != "ALLOW" and b"_" in name:
                if underscores == "DROP_HEADER":
                    continue
                self.requests_rejected_with_underscores_in_headers += 1
                self.tx_reset += 1
                self._conn.reset_stream(stream_id, PROTOCOL_ERROR)
                events.append(
                    StreamReset(stream_id, PROTOCOL_ERROR, False, "http2.unexpected_underscore")
                )
                return
            items.append((name, value))
        self._streams[stream_id] = stream = _Stream(stream_id)
        if self._too_big(stream_id, len(block), size, events):
            return
        if cookies > 1:
            items = join_cookies(items)
        if authority is None:
            authority = host  # RFC 9113 §8.3.1: host stands in; with :authority it is dropped
        if method == b"CONNECT":
            if protocol is not None:
                # Extended CONNECT (RFC 8441) reaches the filters as the HTTP/1.1 upgrade it
                # stands for, as in Envoy; the 101 answer goes back as 200.
                stream.upgrade = protocol
                method = b"GET"
                items.append((b"upgrade", protocol))
                items.append((b"connection", b"upgrade"))
            else:
                path = b""
        headers = RequestHeaders(method or b"", path or b"", authority or b"", items, scheme)
        if end_stream:
            stream.remote_done = True
        events.append(RequestHead(stream_id, headers, end_stream))


class Http2ClientCodec(_Http2Codec):
    """The client side of one upstream HTTP/2 connection (many streams)."""

    def __init__(self, options: Http2Options | None = None) -> None:
        super().__init__(ngh2.Role.CLIENT, options)
        opts = self.options
        self._start(
            {
                ngh2.Setting.ENABLE_PUSH: 0,
                ngh2.Setting.INITIAL_WINDOW_SIZE: opts.initial_stream_window_size,
                ngh2.Setting.HEADER_TABLE_SIZE: opts.hpack_table_size,
            }
        )

    @property
    def can_open_stream(self) -> bool:
        """A new stream may start: no GOAWAY, ids left, under the peer's concurrency limit."""
        return (
            not self.closed
            and not self.goaway_received
            and self._conn.can_send_request
            and len(self._streams) < self._conn.remote_settings.get(3, _MAX_WINDOW)
        )

    def encode_request(self, headers: RequestHeaders, end_stream: bool) -> int:
        """Start a stream with ``headers``; returns its id. An HTTP/1.1 upgrade request goes as
        an extended CONNECT (the peer must have offered it)."""
        block = request_to_h2(headers)
        try:
            stream_id = self._conn.send_request(block, end_stream=end_stream)
        except ngh2.NGH2Error as e:
            raise Http2StreamError(str(e)) from None
        stream = _Stream(stream_id)
        stream.local_done = end_stream
        if block[1][0] == b":protocol":
            stream.upgrade = block[1][1]
        self._streams[stream_id] = stream
        return stream_id

    def _on_response(
        self, stream_id: int, block: tuple, end_stream: bool, events: list[Event]
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        size = 0
        for name, value in block:
            size += len(name) + len(value)
        if self._too_big(stream_id, len(block), size, events):
            return
        head = _response_headers(block)
        if head is None:  # nghttp2 refuses a response without :status; belt and braces
            self.reset(stream_id, PROTOCOL_ERROR)
            events.append(StreamReset(stream_id, PROTOCOL_ERROR, False, "http2.invalid_response"))
            return
        if stream.upgrade is not None:
            head = response_from_h2_upgrade(head, stream.upgrade)
        if end_stream:
            self._remote_end(stream)
        events.append(ResponseHead(stream_id, head, end_stream))
