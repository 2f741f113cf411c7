"""HTTP/1.1, sans-IO: bytes in, handler callbacks out; messages in, bytes out. No asyncio.

Parsing is llhttp (through httptools). What llhttp leaves to its user is done here: limits on
header count and size, request smuggling checks, hop-by-hop headers, absolute-form targets,
responses to HEAD (no body whatever the headers say) and close-delimited bodies (llhttp has no
end-of-input call in httptools).

The server side reads the framing of the request it is delivering from attributes
(``version``, ``keep_alive``, ``content_length``, ``chunked``, ``expect_continue``, ``upgrade``)
inside ``on_request_headers``: no per-request object beyond the header map.
"""

from __future__ import annotations

from typing import Any, Protocol

import httptools

from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    207: b"Multi-Status",
    208: b"Already Reported",
    226: b"IM Used",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Entity",
    423: b"Locked",
    424: b"Failed Dependency",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates",
    507: b"Insufficient Storage",
    508: b"Loop Detected",
    510: b"Not Extended",
    511: b"Network Authentication Required",
}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


class CodecError(Exception):
    """A protocol error. ``status`` is the local reply to send (server side), ``details`` is
    Envoy's response code detail (``http1.codec_error`` ...)."""

    def __init__(self, details: str, status: int = 400) -> None:
        super().__init__(details)
        self.details = details
        self.status = status


class _HeadResponseDone(Exception):
    """Raised inside llhttp's callback to stop it reading a body a HEAD response has not."""


class _Stopped(Exception):
    """Raised inside llhttp's callback when the connection stopped reading (it is closing)
    while llhttp was still going through the bytes already received."""


class ServerHandler(Protocol):
    def on_request_headers(self, headers: RequestHeaders) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_complete(self, trailers: HeaderMap | None) -> None: ...


class ClientHandler(Protocol):
    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self, trailers: HeaderMap | None) -> None: ...
    def on_informational(self, headers: ResponseHeaders) -> None: ...


# Request headers the codec treats specially. The low byte of each value says what to do with
# the header; the high bits are the ``seen`` flag it sets, which the connection manager reads to
# skip scanning the header list for headers that are not there (the common case).
_PLAIN = 0  # forwarded, only flagged
_HOP = 1  # describes this hop only: dropped
_HOST = 2
_CONTENT_LENGTH = 3
_TRANSFER_ENCODING = 4
_CONNECTION = 5
_UPGRADE = 6
_EXPECT = 7
_TE = 8

SEEN_XFF = 1 << 8
SEEN_XFP = 1 << 9
SEEN_REQUEST_ID = 1 << 10
SEEN_ENVOY = 1 << 11  # any x-envoy-* header
SEEN_XFCC = 1 << 12
SEEN_CONTENT_LENGTH = 1 << 13
SEEN_TE = 1 << 14
SEEN_HOST_TWICE = 1 << 15
SEEN_HOST = 1 << 16  # a Host header, even an empty one (Envoy accepts "Host:" with no value)

_SPECIAL: dict[bytes, int] = {
    b"host": _HOST | SEEN_HOST,
    b"content-length": _CONTENT_LENGTH | SEEN_CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"te": _TE | SEEN_TE,
    b"x-forwarded-for": SEEN_XFF,
    b"x-forwarded-proto": SEEN_XFP,
    b"x-request-id": SEEN_REQUEST_ID,
    b"x-forwarded-client-cert": SEEN_XFCC,
}


# RFC 3986 authority characters ([userinfo "@"] host [":" port]), the set Envoy's
# HeaderUtility::authorityIsValid accepts in Host: anything else is a 400.
_AUTHORITY_CHARS = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@[]"
)
# An absolute-form target is parsed as http-parser does for Envoy: a host of these characters
# (or a bracketed IPv6 literal), an optional numeric port, an optional userinfo (dropped).
_URL_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
_URL_IPV6_CHARS = b"0123456789abcdefABCDEF:."
_URL_USERINFO_CHARS = _URL_HOST_CHARS + b"!~*'()%;:&=+$,"


def split_absolute_url(url: bytes) -> tuple[bytes, bytes]:
    """``http://[userinfo@]host[:port][/path?query]`` → (host[:port], path). Raises CodecError
    (400) for another scheme or a malformed authority. The userinfo is dropped, as Envoy
    does; a target with no path gets ``/``, one whose path does not start with ``/`` keeps it
    (the connection manager answers 404, as Envoy)."""
    scheme_end = url.find(b"://")
    if scheme_end < 0 or url[:scheme_end].lower() not in (b"http", b"https"):
        raise CodecError("http1.invalid_url", 400)
    rest = url[scheme_end + 3 :]
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    authority = rest[:end]
    path = rest[end:] or b"/"
    at = authority.rfind(b"@")
    if at >= 0:
        if authority[:at].translate(None, _URL_USERINFO_CHARS):
            raise CodecError("http1.invalid_url", 400)
        authority = authority[at + 1 :]
    host = authority
    if host[:1] == b"[":
        close = host.find(b"]")
        if close < 0 or host[1:close].translate(None, _URL_IPV6_CHARS) or close == 1:
            raise CodecError("http1.invalid_url", 400)
        port = host[close + 1 :]
        name = b"x"
    else:
        colon = host.find(b":")
        name, port = (host, b"") if colon < 0 else (host[:colon], host[colon:])
    if not name or name.translate(None, _URL_HOST_CHARS):
        raise CodecError("http1.invalid_url", 400)
    if port and (port[:1] != b":" or not port[1:].isdigit() or int(port[1:]) > 65535):
        raise CodecError("http1.invalid_url", 400)
    return authority, path


class Http1ServerCodec:
    """Server side of one downstream connection."""

    def __init__(
        self,
        handler: ServerHandler,
        *,
        max_headers_kb: int = 60,
        max_headers_count: int = 100,
        allow_chunked_length: bool = False,
        underscores: str = "ALLOW",
        allow_absolute_url: bool = True,
        enable_trailers: bool = False,
        keep_expect: bool = False,
    ) -> None:
        self.handler = handler
        # Envoy parses trailers but drops them unless http_protocol_options.enable_trailers.
        self.enable_trailers = enable_trailers
        # proxy_100_continue: "expect: 100-continue" goes upstream, in its place.
        self.keep_expect = keep_expect
        self.max_header_bytes = max_headers_kb * 1024
        self.max_headers_count = max_headers_count
        self.allow_chunked_length = allow_chunked_length
        self.underscores = underscores
        self.allow_absolute_url = allow_absolute_url
        self._parser = self._new_parser()
        # Per-message parse state.
        self._url = b""
        self._items: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._hbytes = 0
        self._partial = 0  # bytes of an incomplete header line httptools holds
        self._chunked_open = False  # a chunked request body (and its trailers) is being read
        self._fed_body = 0  # body bytes delivered during the current feed()
        self._count = 0
        self._in_trailers = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._error: CodecError | None = None
        self._h2c = False  # the request just parsed asked for h2c, which is ignored
        self._h2c_body = False  # ... and has a body llhttp did not read (an upgrade's is raw)
        self.closed_by_request = False  # a request said "Connection: close": read no more
        self.in_head = False  # a request has begun and its headers are not complete yet
        self.stopped = False  # after a protocol error or timeout nothing more is parsed
        # Framing of the request being delivered (read by the handler in on_request_headers).
        self.version = "1.1"
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.connection_tokens: bytes = b""
        self.transfer_encoding: bytes | None = None
        # Where Connection/Upgrade stood: an upgrade request forwards them in place.
        self._hop_items: list[tuple[int, tuple[bytes, bytes]]] | None = None
        self.seen = 0  # SEEN_* flags of the request being delivered
        self._check_underscores = underscores != "ALLOW"
        # Response encoding state.
        self._chunked_out = False
        self.messages = 0

    # -- parsing ---------------------------------------------------------------------------

    def _new_parser(self) -> Any:
        parser = httptools.HttpRequestParser(self)
        # Envoy accepts bare LF line endings; so do we (not obs-fold, see compatibility.md).
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        return parser

    def feed(self, data: bytes) -> bytes | None:
        """Parse ``data``. Returns the bytes after an upgrade request's headers (the tunnel's
        first bytes) if the request upgraded the connection, else None. Raises CodecError."""
        if self.stopped:
            return None
        self._fed_body = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            upgraded_at: int = e.args[0]
        except httptools.HttpParserCallbackError as e:
            inner = e.__context__
            if isinstance(inner, CodecError):
                raise inner from None
            if isinstance(inner, _Stopped):
                return None
            raise
        except httptools.HttpParserError as e:
            if self.closed_by_request:
                self.stopped = True  # bytes after "Connection: close" are ignored (Envoy)
                return None
            raise self._classify(str(e)) from None
        else:
            if self.in_head:
                self._bound_head(data)
            elif self._chunked_open:
                self._bound_framing(data)
            return None
        # (Outside the except block, so that errors of what follows are not chained to it.)
        if self._h2c:
            return self._after_h2c(data[upgraded_at:])
        return data[upgraded_at:]

    def _after_h2c(self, rest: bytes) -> bytes | None:
        """An h2c upgrade is ignored (as Envoy): what follows is HTTP/1.1 again, but llhttp
        stopped after the head, taking any body for the new protocol's. A fresh parser reads
        on; if the request has a body, it is first given a head with that framing (whose
        callbacks the relay swallows) so that it reads the body as the request's."""
        self._h2c = False
        if not self._h2c_body:
            self._parser = self._new_parser()
            return self.feed(rest)
        self._h2c_body = False
        parser = httptools.HttpRequestParser(_H2cBodyRelay(self))
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._parser = parser
        if self.chunked:
            framing = b"transfer-encoding: chunked"
        else:
            framing = b"content-length: %d" % (self.content_length or 0)
        parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
        return self.feed(rest)

    def _bound_framing(self, data: bytes) -> None:
        """The same bound inside a chunked body, for a trailer (or chunk-size) line that never
        ends: the bytes of this read that were not body and came after its last LF, at
        least, extend the current line."""
        lf = data.rfind(b"\n")
        if lf < 0:
            self._partial += len(data) - self._fed_body
        else:
            self._partial = max(0, len(data) - lf - 1 - self._fed_body)
        if self._hbytes + self._partial > self.max_header_bytes:
            self.stopped = True
            raise CodecError("http1.headers_too_large", 431)

    def _bound_head(self, data: bytes) -> None:
        """A request head is incomplete after this read: httptools holds its current header
        line (everything after the last LF) until the line ends. Count it against
        max_request_headers_kb now, so that a line that never ends costs at most the limit
        plus one read, and is answered 431 as Envoy does."""
        lf = data.rfind(b"\n")
        if lf < 0:
            self._partial += len(data)
        else:
            self._partial = len(data) - lf - 1
        if self._hbytes + self._partial > self.max_header_bytes:
            self.stopped = True
            self.in_head = False
            raise CodecError("http1.headers_too_large", 431)

    def _classify(self, reason: str) -> CodecError:
        if self._error is not None:
            return self._error
        lower = reason.lower()
        if "can't be present with" in lower:  # content-length and transfer-encoding both
            return CodecError("http1.content_length_and_chunked_not_allowed", 400)
        te = self.transfer_encoding
        if te is not None and te.strip().lower() != b"chunked":
            return CodecError("http1.invalid_transfer_encoding", 501)
        if "transfer-encoding" in lower:
            return CodecError("http1.invalid_transfer_encoding", 501)
        if "header value char" in lower:
            return CodecError("http1.invalid_characters", 400)
        if "invalid http version" in lower:
            return CodecError("low_version", 426)
        return CodecError("http1.codec_error", 400)

    def stop(self) -> None:
        """Parse nothing more on this connection."""
        self.stopped = True
        self.in_head = False

    def on_message_begin(self) -> None:
        if self.stopped:
            raise _Stopped()
        self.in_head = True
        self._url = b""
        self._count = 0
        self._items = []
        self._host = None
        self._hbytes = 0
        self._partial = 0
        self._in_trailers = False
        self._trailers = None
        self.seen = 0
        self.expect_continue = False
        self.upgrade = None
        self.connection_tokens = b""
        self.transfer_encoding = None
        self._hop_items = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._hbytes += len(url)
        if self._hbytes > self.max_header_bytes:
            self._fail(CodecError("http1.headers_too_large", 431))

    def _fail(self, error: CodecError) -> None:
        self._error = error
        raise error

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        hbytes = self._hbytes + len(name) + len(value)
        self._hbytes = hbytes
        if hbytes > self.max_header_bytes:
            self._fail(CodecError("http1.headers_too_large", 431))
        if self._in_trailers:
            if not self.enable_trailers:
                return
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        count = self._count + 1  # every header counts, host and hop-by-hop ones included
        self._count = count
        if count > self.max_headers_count:
            self._fail(CodecError("http1.too_many_headers", 431))
        items = self._items
        special = _SPECIAL.get(name)
        if special is None:
            if name[:8] == b"x-envoy-":
                self.seen |= SEEN_ENVOY
            elif self._check_underscores and b"_" in name:
                if self.underscores == "DROP_HEADER":
                    return
                self._fail(CodecError("http1.unexpected_underscore", 400))
            items.append((name, value))
            return
        self.seen |= special
        kind = special & 0xFF
        if kind in (_PLAIN, _CONTENT_LENGTH, _TE):
            items.append((name, value))
        elif kind == _HOST:
            if self._host is None:
                self._host = value
            else:
                self.seen |= SEEN_HOST_TWICE
                self._host += b"," + value  # Envoy joins them (and then matches no domain)
        elif kind == _TRANSFER_ENCODING:
            te = self.transfer_encoding
            self.transfer_encoding = value if te is None else te + b"," + value
        elif kind == _CONNECTION:
            tokens = self.connection_tokens
            self.connection_tokens = value.lower() if not tokens else tokens + b"," + value.lower()
            self._keep_hop(len(items), name, value)
        elif kind == _UPGRADE:
            self.upgrade = value
            self._keep_hop(len(items), name, value)
        elif kind == _EXPECT:
            if value.lower() == b"100-continue":
                self.expect_continue = True
                if self.keep_expect:
                    items.append((name, value))
            else:
                items.append((name, value))
        # _HOP: dropped

    def _keep_hop(self, index: int, name: bytes, value: bytes) -> None:
        if self._hop_items is None:
            self._hop_items = []
        self._hop_items.append((index, (name, value)))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()
        seen = self.seen
        hop = self._hop_items
        upgrade = self.upgrade
        if upgrade is not None and parser.should_upgrade():
            if upgrade.strip().lower() == b"h2c":
                # Envoy ignores h2c upgrades: Upgrade, its Connection token and HTTP2-Settings
                # go, and the request is served as HTTP/1.1 (pipelined ones after it too).
                self._h2c = True
                self._h2c_body = self.transfer_encoding is not None or bool(
                    seen & SEEN_CONTENT_LENGTH
                )
                self.upgrade = None
                self._items = [(n, v) for n, v in self._items if n != b"http2-settings"]
            elif hop is not None:
                items = self._items
                for k, (index, item) in enumerate(hop):
                    items.insert(index + k, item)
        self.chunked = False
        self.content_length = None
        if self.transfer_encoding is not None:
            self._framing_chunked()
        elif seen & SEEN_CONTENT_LENGTH:
            for n, v in self._items:
                if n == b"content-length":
                    try:
                        self.content_length = int(v)
                    except ValueError:
                        self._fail(CodecError("http1.codec_error", 400))
                    break
        if self.upgrade is not None and not parser.should_upgrade():
            self.upgrade = None
        if self.connection_tokens:
            self._drop_connection_nominated()
        if seen & SEEN_TE:
            # TE is hop-by-hop; Envoy keeps only "trailers".
            self._items = [(n, v) for n, v in self._items if n != b"te" or v.lower() == b"trailers"]
        method = parser.get_method()
        url = self._url
        host = self._host
        if host is not None and host.translate(None, _AUTHORITY_CHARS):
            self._fail(CodecError("http1.invalid_host", 400))
        if url[:1] != b"/" and method != b"CONNECT":
            if url == b"*":
                if method != b"OPTIONS":  # "*" is OPTIONS' target only (Envoy: 400)
                    self._fail(CodecError("http1.codec_error", 400))
            elif not self.allow_absolute_url:
                self._fail(CodecError("http1.invalid_url", 400))
            else:
                # Absolute form (http://host/path): the authority comes from the URL.
                try:
                    host, url = split_absolute_url(url)
                except CodecError as e:
                    self._fail(e)
        elif method == b"CONNECT" and host is None:
            host = url
        self.messages += 1
        self._in_trailers = True
        self.handler.on_request_headers(RequestHeaders(method, url, host or b"", self._items))

    def _framing_chunked(self) -> None:
        # Envoy accepts exactly "chunked": any other coding, even "gzip, chunked", is 501.
        te = self.transfer_encoding or b""
        if te.strip().lower() != b"chunked" or self._parser.get_method() == b"CONNECT":
            self._fail(CodecError("http1.invalid_transfer_encoding", 501))
        self.chunked = True
        self._chunked_open = True
        self._partial = 0
        if self.seen & SEEN_CONTENT_LENGTH:
            if not self.allow_chunked_length:
                self._fail(CodecError("http1.content_length_and_chunked_not_allowed", 400))
            self._items = [(n, v) for n, v in self._items if n != b"content-length"]

    def _drop_connection_nominated(self) -> None:
        """Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1), as is a TE other
        than "trailers"."""
        tokens = {t.strip() for t in self.connection_tokens.split(b",")}
        tokens.discard(b"")
        if tokens - {b"close", b"keep-alive", b"upgrade"} or b"te" in tokens:
            self._items = [(n, v) for n, v in self._items if n not in tokens]

    def on_body(self, body: bytes) -> None:
        self._fed_body += len(body)
        self.handler.on_request_body(body)

    def on_message_complete(self) -> None:
        if self._h2c_body:
            return  # llhttp ends an upgrade request at its head: the body is still to come
        self._chunked_open = False
        if not self.keep_alive:
            self.closed_by_request = True
        trailers = self._trailers
        self.handler.on_request_complete(HeaderMap(trailers) if trailers else None)

    # -- encoding the response ---------------------------------------------------------------

    def encode_headers(
        self,
        headers: ResponseHeaders,
        end_stream: bool,
        *,
        head_request: bool = False,
        http10: bool = False,
    ) -> bytes:
        """The response head. Framing follows Envoy: a content-length is kept; a headers-only
        response gets ``content-length: 0`` (not for 204, 304, 1xx); otherwise, and for any HEAD
        response without a content-length, chunked (close-delimited for HTTP/1.0 clients)."""
        status = headers.status
        line = status_line(status)
        if http10:
            line = b"HTTP/1.0" + line[8:]
        items = headers.items
        block = b"\r\n".join([b": ".join(item) for item in items])
        framing = b""
        chunked = False
        if status >= 200 and status != 204 and status != 304:
            if any(n == b"content-length" for n, _ in items):
                pass
            elif end_stream and not head_request:
                framing = b"content-length: 0\r\n"
            elif not http10:
                framing = b"transfer-encoding: chunked\r\n"
                chunked = not head_request
        self._chunked_out = chunked
        if block:
            return line + block + b"\r\n" + framing + b"\r\n"
        return line + framing + b"\r\n"

    def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._chunked_out:
            out = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
            return out + b"0\r\n\r\n" if end_stream else out
        return data

    def encode_trailers(self, trailers: HeaderMap | None) -> bytes:
        """End of a response body with trailers (dropped unless the body is chunked and
        trailers are enabled)."""
        if not self._chunked_out:
            return b""
        return encode_last_chunk(trailers if self.enable_trailers else None)


class _H2cBodyRelay:
    """The callbacks of the parser that reads on after an ignored h2c upgrade with a body: the
    made-up head that sets the body's framing is swallowed, everything after it goes to the
    codec."""

    def __init__(self, codec: Http1ServerCodec) -> None:
        self.codec = codec
        self.made_up_head = True  # parsing the made-up head
        self.made_up_message = True  # parsing the made-up message (its body is the real one)

    def on_message_begin(self) -> None:
        if not self.made_up_message:
            self.codec.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.made_up_message:
            self.codec.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.made_up_head:  # trailers of the body, or the next request's headers
            self.codec.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.made_up_head:
            self.made_up_head = False
            return
        self.codec.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.codec.on_body(body)

    def on_message_complete(self) -> None:
        self.made_up_message = False
        self.codec.on_message_complete()


def encode_request_head(
    headers: RequestHeaders, end_stream: bool, *, upgrade: bool = False
) -> tuple[bytes, bool]:
    """An upstream request head, and whether its body is chunked. ``host`` goes first, as
    Envoy encodes ``:authority``; a request without content-length and with a body is chunked."""
    items = headers.items
    head = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (headers.method, headers.path, headers.authority)
    block = b"\r\n".join([b": ".join(item) for item in items])
    if block:
        head += block + b"\r\n"
    method = headers.method
    if upgrade or method == b"CONNECT" or any(n == b"content-length" for n, _ in items):
        # An upgrade's bytes after the head belong to the new protocol: no HTTP framing.
        return head + b"\r\n", False
    if end_stream:
        # Envoy frames a bodiless POST, PUT, PATCH... explicitly (RFC 9110 §8.6).
        if method in _BODILESS_METHODS:
            return head + b"\r\n", False
        return head + b"content-length: 0\r\n\r\n", False
    return head + b"transfer-encoding: chunked\r\n\r\n", True


# Requests that carry no body by definition get no ``content-length: 0`` (as in Envoy).
_BODILESS_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"))


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def encode_last_chunk(trailers: HeaderMap | None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers.items) + b"\r\n"


class Http1ClientCodec:
    """Client side of one upstream connection: parses responses to the requests sent on it."""

    def __init__(
        self,
        handler: ClientHandler,
        *,
        max_headers_count: int = 100,
        max_headers_kb: int = 60,
        enable_trailers: bool = False,
    ) -> None:
        self.handler = handler
        self.enable_trailers = enable_trailers
        self.max_headers_count = max_headers_count
        self.max_header_bytes = max_headers_kb * 1024
        self._parser: Any = httptools.HttpResponseParser(self)
        self._items: list[tuple[bytes, bytes]] = []
        self._hbytes = 0
        self._partial = 0
        self.in_head = False
        self._in_trailers = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._error: CodecError | None = None
        self.head_request = False  # set by the sender before a HEAD request's response
        self.keep_alive = True
        self.close_delimited = False
        self.in_message = False
        self.status = 0
        self.upgraded: bytes | None = None  # bytes after a 101 response: the tunnel's first
        self.seen = 0
        self._length = -1
        self._hop: list[tuple[bytes, bytes]] | None = None

    def reset_for(self, handler: ClientHandler, *, head_request: bool) -> None:
        self.handler = handler
        self.head_request = head_request

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            inner = e.__context__
            if isinstance(inner, _HeadResponseDone):
                self._parser = httptools.HttpResponseParser(self)
                return
            if isinstance(inner, CodecError):
                raise inner from None
            raise
        except httptools.HttpParserUpgrade as e:
            if self.status != 101:
                raise CodecError("upstream.unexpected_upgrade", 502) from e
            self.upgraded = data[e.args[0] :]
        except httptools.HttpParserError as e:
            raise self._error or CodecError(f"http1.codec_error: {e}", 502) from None
        if self.in_head:
            # As on the server side: a header line that never ends is refused at the limit.
            lf = data.rfind(b"\n")
            self._partial = self._partial + len(data) if lf < 0 else len(data) - lf - 1
            if self._hbytes + self._partial > self.max_header_bytes:
                self.in_head = False
                self._error = CodecError("upstream.headers_too_large", 502)
                raise self._error

    def eof(self) -> bool:
        """The upstream closed the connection. Returns True if that completed a close-delimited
        response (which is then delivered), False if a response was cut short or none was
        pending."""
        if self.in_message and self.close_delimited:
            self.in_message = False
            self.handler.on_response_complete(None)
            return True
        return False

    def on_message_begin(self) -> None:
        self._items = []
        self._hbytes = 0
        self._partial = 0
        self.in_head = True
        self._in_trailers = False
        self._trailers = None
        self.in_message = True
        self.close_delimited = False
        self.seen = 0
        self._length = -1
        self._hop = None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        hbytes = self._hbytes + len(name) + len(value)
        self._hbytes = hbytes
        if hbytes > self.max_header_bytes:
            self._error = CodecError("upstream.headers_too_large", 502)
            raise self._error
        if self._in_trailers:
            if not self.enable_trailers:
                return
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        items = self._items
        if len(items) >= self.max_headers_count:
            self._error = CodecError("upstream.too_many_headers", 502)
            raise self._error
        flag = _RESPONSE_SPECIAL.get(name)
        if flag is not None:
            self.seen |= flag
            if flag == RESP_CONTENT_LENGTH:
                try:
                    self._length = int(value)
                except ValueError:
                    self._length = -1
            elif flag & RESP_HOP:
                # Hop-by-hop: not forwarded, except on a 101 (the switched protocol needs them).
                hop = self._hop
                if hop is None:
                    self._hop = [(name, value)]
                else:
                    hop.append((name, value))
                return
        items.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        status = parser.get_status_code()
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        items = self._items
        seen = self.seen
        chunked = bool(seen & RESP_CHUNKED)
        if status == 101 and self._hop is not None:
            items.extend(self._hop)
        headers = ResponseHeaders(status, items)
        headers.seen = seen
        if status < 200:
            if status == 101:
                self.handler.on_response_headers(headers, False)
                return
            self.handler.on_informational(headers)
            return
        self._in_trailers = True
        if self.head_request or status == 204 or status == 304:
            self.in_message = False
            self.handler.on_response_headers(headers, True)
            self.handler.on_response_complete(None)
            if self.head_request:
                raise _HeadResponseDone()
            return
        length = self._length
        self.close_delimited = not chunked and length < 0
        if self.close_delimited:
            self.keep_alive = False
        self.handler.on_response_headers(headers, length == 0 and not chunked)

    def on_body(self, body: bytes) -> None:
        self.handler.on_response_body(body)

    def on_message_complete(self) -> None:
        if not self.in_message:
            return  # a HEAD/204/304 response already delivered, or 1xx
        if self.status < 200:
            return
        self.in_message = False
        trailers = self._trailers
        self.handler.on_response_complete(HeaderMap(trailers) if trailers else None)


# Response headers the client codec flags (ResponseHeaders.seen), so that the connection
# manager knows without scanning whether date/server are there.
RESP_DATE = 1
RESP_SERVER = 2
RESP_CONTENT_LENGTH = 4
RESP_CHUNKED = 8
RESP_HOP = 16
RESP_SERVICE_TIME = 32
_RESPONSE_SPECIAL = {
    b"x-envoy-upstream-service-time": RESP_SERVICE_TIME,
    b"date": RESP_DATE,
    b"server": RESP_SERVER,
    b"content-length": RESP_CONTENT_LENGTH,
    b"transfer-encoding": RESP_CHUNKED | RESP_HOP,
    b"connection": RESP_HOP,
    b"keep-alive": RESP_HOP,
    b"proxy-connection": RESP_HOP,
    b"upgrade": RESP_HOP,
}
