"""What a codec reports, whatever the protocol: stream events and connection events.

A codec turns bytes into these events and stream calls (``encode_headers/encode_data/
encode_trailers/reset``) into bytes. Every stream event carries its stream id: HTTP/2's id, or
the message number for HTTP/1.1 (one stream at a time). ``end_stream`` on a head or a data
event says that the peer's side of the stream is complete; trailers always complete it.

Header maps are the request-path types of ``pilotfish.http.headers`` (pseudo-headers in
attributes). Plain classes with ``__slots__``: they are made per frame on the request path,
which mypyc compiles.
"""

from __future__ import annotations

from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

# Stream and connection error codes (RFC 9113 §7), as RST_STREAM and GOAWAY carry them.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
REFUSED_STREAM = 0x7
CANCEL = 0x8
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB


class Event:
    __slots__ = ()


class RequestHead(Event):
    """A request's headers (server side)."""

    __slots__ = ("end_stream", "headers", "stream_id")

    def __init__(self, stream_id: int, headers: RequestHeaders, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream

    def __repr__(self) -> str:
        return f"RequestHead({self.stream_id}, {self.headers!r}, end_stream={self.end_stream})"


class ResponseHead(Event):
    """A final response's headers (client side)."""

    __slots__ = ("end_stream", "headers", "stream_id")

    def __init__(self, stream_id: int, headers: ResponseHeaders, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream

    def __repr__(self) -> str:
        return f"ResponseHead({self.stream_id}, {self.headers!r}, end_stream={self.end_stream})"


class InformationalHead(Event):
    """A 1xx response (client side): 100 Continue, 103 Early Hints."""

    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: ResponseHeaders) -> None:
        self.stream_id = stream_id
        self.headers = headers


class Data(Event):
    """Body bytes. The consumer hands their length back (``consumed``) once it has passed them
    on: that is what reopens the peer's flow-control window (backpressure)."""

    __slots__ = ("data", "end_stream", "stream_id")

    def __init__(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.end_stream = end_stream

    def __repr__(self) -> str:
        return f"Data({self.stream_id}, {len(self.data)} bytes, end_stream={self.end_stream})"


class Trailers(Event):
    """Trailers: the end of the peer's side of the stream."""

    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: HeaderMap) -> None:
        self.stream_id = stream_id
        self.headers = headers

    def __repr__(self) -> str:
        return f"Trailers({self.stream_id}, {self.headers!r})"


class StreamReset(Event):
    """The stream ended abnormally. ``remote``: the peer reset it (RST_STREAM received), else
    this codec did (a stream error the peer caused: ``details`` says which, Envoy's wording)."""

    __slots__ = ("details", "error_code", "remote", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote: bool, details: str = "") -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote
        self.details = details

    def __repr__(self) -> str:
        who = "remote" if self.remote else "local"
        return f"StreamReset({self.stream_id}, {self.error_code}, {who}, {self.details!r})"


class WriteBlocked(Event):
    """More of this stream's body is queued in the codec than ``stream_buffer_limit`` (the
    peer's window is closed): stop producing for it until WriteUnblocked."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class WriteUnblocked(Event):
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class GoAway(Event):
    """The peer will start no stream above ``last_stream_id`` (and not accept ours above it)."""

    __slots__ = ("error_code", "last_stream_id")

    def __init__(self, last_stream_id: int, error_code: int) -> None:
        self.last_stream_id = last_stream_id
        self.error_code = error_code


class PingAck(Event):
    """The answer to our PING: the keepalive's proof of life."""

    __slots__ = ("opaque",)

    def __init__(self, opaque: bytes) -> None:
        self.opaque = opaque


class ConnectionLost(Event):
    """The connection is finished at protocol level: flush the bytes to send, then close.
    ``details`` is Envoy's wording for why (``http2.codec_error``, ``http2.goaway``...)."""

    __slots__ = ("details", "error_code")

    def __init__(self, error_code: int, details: str) -> None:
        self.error_code = error_code
        self.details = details

    def __repr__(self) -> str:
        return f"ConnectionLost({self.error_code}, {self.details!r})"
