"""A fast HTTP/1.1 origin for bulk transfers in tests (stdlib only).

:class:`SinkBackend` reads every request body and throws it away, keeping only its size and
CRC-32, so that gigabytes can go through a proxy without the test process holding them. It
can also stream a large response body made of a repeated pattern. The answer is ``200`` with
a JSON body ``{"received": N, "crc32": C, "framing": "content-length"|"chunked"|"none"}``
unless a control header asks for a generated body:

``x-sink-respond-bytes: N``    the response body is N bytes of :data:`PATTERN` repeated
                               (the JSON summary is then not sent)
``x-sink-respond-chunked: 1``  send that body with chunked encoding (1 MiB chunks)

Each finished request is recorded in :attr:`SinkBackend.requests` (without its body); the
byte count of the request being read is visible in :attr:`SinkBackend.receiving` while it
arrives. The connection is kept alive unless the request says ``connection: close``.

The client side of the same transfers: :func:`send_pattern_body` writes such a body (chunked
or not) and :func:`drain_response` reads one response of any size, keeping only its head, its
size and its CRC-32.
"""

from __future__ import annotations

import contextlib
import json
import socket
import zlib
from dataclasses import dataclass, field

from tests.support.headers import HeaderLookup
from tests.support.threaded_server import ThreadedServer

__all__ = [
    "PATTERN",
    "DrainedResponse",
    "SinkBackend",
    "SinkRequest",
    "drain_response",
    "pattern_crc32",
    "send_pattern_body",
]

_RECV = 1 << 20
_MAX_HEAD = 64 * 1024
# 64 KiB of non-repeating-looking bytes; bodies are this pattern repeated (and cut).
PATTERN = bytes((i * 7919 + (i >> 8) * 31) & 0xFF for i in range(64 * 1024))


def pattern_crc32(size: int) -> int:
    """CRC-32 of ``size`` bytes of :data:`PATTERN` repeated."""
    crc = 0
    full, rest = divmod(size, len(PATTERN))
    for _ in range(full):
        crc = zlib.crc32(PATTERN, crc)
    return zlib.crc32(PATTERN[:rest], crc)


class _Closed(Exception):
    pass


class _BadRequest(Exception):
    pass


@dataclass
class SinkRequest(HeaderLookup):
    """One request as the sink saw it (the body is only counted)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    framing: str  # content-length | chunked | none
    received: int = 0
    crc32: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)
    connection_id: int = 0


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.scratch = bytearray(_RECV)

    def _fill(self) -> None:
        try:
            n = self.sock.recv_into(self.scratch)
        except OSError as exc:
            raise _Closed from exc
        if n == 0:
            raise _Closed
        self.buf += memoryview(self.scratch)[:n]

    def line(self, limit: int) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return out
            if len(self.buf) > limit:
                raise _BadRequest("line too long")
            self._fill()

    def head(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[: idx + 4]
                return out
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest("head too long")
            self._fill()

    def discard(self, size: int, req: SinkRequest, progress: list[int]) -> None:
        """Read exactly ``size`` body bytes, counting them into ``req``."""
        left = size
        if self.buf:
            take = min(left, len(self.buf))
            req.crc32 = zlib.crc32(memoryview(self.buf)[:take], req.crc32)
            del self.buf[:take]
            left -= take
            req.received += take
            progress[0] = req.received
        view = memoryview(self.scratch)
        while left > 0:
            try:
                n = self.sock.recv_into(view[: min(left, _RECV)])
            except OSError as exc:
                raise _Closed from exc
            if n == 0:
                raise _Closed
            req.crc32 = zlib.crc32(view[:n], req.crc32)
            left -= n
            req.received += n
            progress[0] = req.received


def _fields(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for raw in lines:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"bad header line {raw!r}")
        out.append((name, value.strip(" \t")))
    return out


class SinkBackend(ThreadedServer):
    """A threaded HTTP/1.1 server that discards request bodies; see the module docstring."""

    thread_prefix = "sink"

    def __init__(self, name: str = "sink", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(name, host, port)
        self.requests: list[SinkRequest] = []
        self._progress = [0]

    @property
    def receiving(self) -> int:
        """Body bytes received so far for the request being read (or the last one)."""
        return self._progress[0]

    # -- serving ---------------------------------------------------------------------------

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        reader = _Reader(sock)
        try:
            while not self._stopping.is_set():
                if not self._serve_one(sock, reader, conn_id):
                    break
        except (_Closed, _BadRequest, OSError, ValueError):
            pass  # the client went away or sent something the sink does not parse: hang up
        return False

    def _serve_one(self, sock: socket.socket, reader: _Reader, conn_id: int) -> bool:
        head = reader.head()
        while head.startswith(b"\r\n"):
            head = head[2:]
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise _BadRequest(f"bad request line {lines[0]!r}")
        headers = _fields(lines[1:])
        lower = {k.lower(): v for k, v in headers}
        te = lower.get("transfer-encoding", "").lower()
        framing = "chunked" if te else "content-length" if "content-length" in lower else "none"
        req = SinkRequest(parts[0], parts[1], parts[2], headers, framing, connection_id=conn_id)
        self._progress[0] = 0
        if lower.get("expect", "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if framing == "chunked":
            while True:
                size_line = reader.line(4096)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                reader.discard(size, req, self._progress)
                if reader.line(16) != b"":
                    raise _BadRequest("missing CRLF after a chunk")
            while trailer := reader.line(_MAX_HEAD):
                req.trailers += _fields([trailer])
        elif framing == "content-length":
            reader.discard(int(lower["content-length"]), req, self._progress)
        with self._lock:
            self.requests.append(req)

        close = "close" in lower.get("connection", "").lower()
        respond = lower.get("x-sink-respond-bytes", "").strip()
        conn_header = b"connection: close\r\n" if close else b""
        if respond.isdigit():
            self._send_generated(
                sock, int(respond), lower.get("x-sink-respond-chunked") == "1", conn_header
            )
        else:
            body = json.dumps(
                {"received": req.received, "crc32": req.crc32, "framing": framing}
            ).encode()
            sock.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + conn_header
                + b"\r\n"
                + body
            )
        return not close

    @staticmethod
    def _send_generated(sock: socket.socket, size: int, chunked: bool, conn: bytes) -> None:
        framing = b"transfer-encoding: chunked\r\n" if chunked else b"content-length: %d\r\n" % size
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
            + framing
            + conn
            + b"\r\n"
        )
        block = PATTERN * 16  # 1 MiB
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            if chunked:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                sock.sendall(piece)
            left -= len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")


# -- client side ----------------------------------------------------------------------------


def send_pattern_body(
    sock: socket.socket, size: int, *, chunked: bool, last_chunk: bool = True
) -> None:
    """Write ``size`` bytes of :data:`PATTERN` repeated, in 1 MiB pieces (one chunk each when
    ``chunked``, then the last chunk unless ``last_chunk`` is false). A body can be sent in
    several calls when each but the last is a multiple of 64 KiB."""
    block = PATTERN * 16
    left = size
    while left > 0:
        piece = block[: min(left, len(block))]
        if chunked:
            sock.sendall(b"%x\r\n" % len(piece))
            sock.sendall(piece)
            sock.sendall(b"\r\n")
        else:
            sock.sendall(piece)
        left -= len(piece)
    if chunked and last_chunk:
        sock.sendall(b"0\r\n\r\n")


@dataclass
class DrainedResponse(HeaderLookup):
    """A response read by :func:`drain_response`: the head as sent, the body only counted."""

    status_line: str
    headers: list[tuple[str, str]]
    framing: str  # content-length | chunked | close | none
    size: int = 0
    crc32: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)


def drain_response(sock: socket.socket) -> DrainedResponse:
    """Read one final response (1xx are skipped) of any size from ``sock``: content-length,
    chunked or close-delimited. Raises ConnectionError if the connection ends early."""
    reader = _Reader(sock)
    progress = [0]
    try:
        while True:
            head = reader.head()
            lines = head.split(b"\r\n")
            status_line = lines[0].decode("latin-1")
            code = int(status_line.split(" ", 2)[1])
            if not 100 <= code < 200:
                break
        headers = _fields(lines[1:])
        lower = {k.lower(): v for k, v in headers}
        counted = SinkRequest("", "", "", [], "")
        if "chunked" in lower.get("transfer-encoding", "").lower():
            framing = "chunked"
            while True:
                size = int(reader.line(4096).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                reader.discard(size, counted, progress)
                if reader.line(16) != b"":
                    raise ConnectionError("missing CRLF after a chunk")
            while trailer := reader.line(_MAX_HEAD):
                counted.trailers += _fields([trailer])
        elif "content-length" in lower:
            framing = "content-length"
            reader.discard(int(lower["content-length"]), counted, progress)
        else:
            framing = "close"
            with contextlib.suppress(_Closed):
                reader.discard(1 << 62, counted, progress)
    except _Closed as exc:
        raise ConnectionError("the connection ended inside a response") from exc
    return DrainedResponse(
        status_line, headers, framing, counted.received, counted.crc32, counted.trailers
    )
