"""A small HTTP/1.1 origin server for tests (stdlib only).

The server parses HTTP itself so that it can misbehave on purpose. Every complete request is
recorded in :attr:`EchoBackend.requests`. By default it answers ``200`` with a JSON description
of the request; control request headers change the answer:

``x-echo-status: N``           response status
``x-echo-header: name=value``  extra response header (repeatable)
``x-echo-body-size: N``        body is N bytes of ``b"x"`` instead of JSON
``x-echo-chunked: 1``          body sent with chunked encoding, in a few chunks
``x-echo-trailer: name=value`` trailer after a chunked body (repeatable; implies chunked)
``x-echo-delay-ms: N``         sleep before answering
``x-echo-close: 1``            send ``connection: close`` and close after the response
``x-echo-behavior: B``         misbehave; B is one of ``reset`` (RST, no response), ``garbage``
                               (non-HTTP bytes then close), ``close`` (close without answering),
                               ``hang`` (never answer, keep the socket open until stop()),
                               ``partial`` (content-length 100, 10 bytes, close),
                               ``100-continue`` (``HTTP/1.1 100 Continue`` first), ``no-length``
                               (no content-length nor chunked; body then close)

A request carrying ``expect: 100-continue`` is answered with ``HTTP/1.1 100 Continue`` before
its body is read, as common servers do.

Run as a process: ``python echo_backend.py --name x --port 0`` prints ``PORT <n>`` and serves
until SIGTERM.
"""

from __future__ import annotations

import http
import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests.support`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.headers import HeaderLookup
from tests.support.threaded_server import ThreadedServer, serve_until_signalled

__all__ = ["EchoBackend", "ReceivedRequest", "main"]

_MAX_HEAD = 256 * 1024
_MAX_LINE = 64 * 1024
_RECV = 65536


@dataclass
class ReceivedRequest(HeaderLookup):
    """One complete request as the backend received it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # as received: original case and order
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)
    connection_id: int = 0
    raw: bytes = b""  # the exact bytes of this request on the wire (head, framed body, trailers)


class _BadRequest(Exception):
    pass


class _Closed(Exception):
    """The peer closed the connection (or stop() was called) mid-read."""


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket, wire: bytearray, lock: threading.Lock) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._taken = bytearray()
        self._wire = wire  # everything received on this connection (shared, guarded by lock)
        self._lock = lock

    def take_raw(self) -> bytes:
        """Every byte handed out since the previous call."""
        out = bytes(self._taken)
        self._taken.clear()
        return out

    def _fill(self) -> None:
        try:
            data = self._sock.recv(_RECV)
        except OSError as exc:
            raise _Closed from exc
        if not data:
            raise _Closed
        self._buf += data
        with self._lock:
            self._wire += data

    def read_until(self, delim: bytes, limit: int) -> bytes:
        """Bytes up to and including ``delim``."""
        start = 0
        while True:
            idx = self._buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                self._taken += out
                return out
            if len(self._buf) > limit:
                raise _BadRequest("line or head too long")
            start = max(0, len(self._buf) - len(delim) + 1)
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._taken += out
        return out


def _parse_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and fields:  # obs-fold: continue the previous value
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"bad header line {line!r}")
        fields.append((name, value.strip(" \t")))
    return fields


def _split_pair(value: str) -> tuple[str, str] | None:
    name, sep, val = value.partition("=")
    if not sep or not name.strip():
        return None
    return name.strip(), val.strip()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class EchoBackend(ThreadedServer):
    """A threaded HTTP/1.1 echo server; see the module docstring for its behaviour."""

    thread_prefix = "echo"

    def __init__(self, name: str = "backend", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(name, host, port)
        self.requests: list[ReceivedRequest] = []
        self._wire: dict[int, bytearray] = {}

    def clear(self) -> None:
        """Forget recorded requests and received bytes (connection counters are kept)."""
        with self._lock:
            self.requests.clear()
            for buf in self._wire.values():
                buf.clear()

    def received_bytes(self, connection_id: int) -> bytes:
        """Every byte received so far on a connection (since the last clear()), even if the
        request is incomplete."""
        with self._lock:
            return bytes(self._wire.get(connection_id, b""))

    # -- serving ---------------------------------------------------------------------------

    def _accepted(self, conn_id: int) -> None:
        self._wire[conn_id] = bytearray()

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        with self._lock:
            wire = self._wire[conn_id]
        reader = _Reader(sock, wire, self._lock)
        abortive = False
        try:
            while not self._stopping.is_set():
                try:
                    keep_going, abortive = self._serve_one(sock, reader, conn_id)
                except _BadRequest:
                    body = b"bad request\n"
                    self._send(
                        sock,
                        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
                        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                        + body,
                    )
                    break
                if not keep_going:
                    break
        except _Closed:
            pass
        return abortive

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
        except OSError:
            return False
        return True

    def _read_request(
        self, sock: socket.socket, reader: _Reader, conn_id: int
    ) -> tuple[ReceivedRequest, bool]:
        """Read one request; returns it and whether a 100 Continue was already sent."""
        reader.take_raw()
        head = b""
        while not head:  # tolerate empty lines before a request (RFC 9112 2.2)
            head = reader.read_until(b"\r\n\r\n", _MAX_HEAD)
            while head.startswith(b"\r\n"):
                head = head[2:]
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("HTTP/"):
            raise _BadRequest(f"bad request line {lines[0]!r}")
        method, target, version = parts
        headers = _parse_fields(lines[1:])
        req = ReceivedRequest(method, target, version, headers, b"", [], conn_id)

        sent_continue = False
        expect = (req.header("expect") or "").lower()
        behavior = (req.header("x-echo-behavior") or "").lower()
        if expect == "100-continue" or behavior == "100-continue":
            self._send(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            sent_continue = True

        te = ",".join(req.header_values("transfer-encoding")).lower()
        if te:
            if te.split(",")[-1].strip() != "chunked":
                raise _BadRequest("unsupported transfer-encoding")
            req.body, req.trailers = self._read_chunked(reader)
        else:
            lengths = {v.strip() for v in req.header_values("content-length")}
            if len(lengths) > 1:
                raise _BadRequest("conflicting content-length")
            if lengths:
                text = lengths.pop()
                if not text.isdigit():
                    raise _BadRequest("bad content-length")
                req.body = reader.read_exact(int(text))
        req.raw = reader.take_raw()
        return req, sent_continue

    @staticmethod
    def _read_chunked(reader: _Reader) -> tuple[bytes, list[tuple[str, str]]]:
        body = bytearray()
        while True:
            size_line = reader.read_until(b"\r\n", _MAX_LINE)[:-2]
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise _BadRequest(f"bad chunk size {size_line!r}") from exc
            if size < 0:
                raise _BadRequest("negative chunk size")
            if size == 0:
                break
            body += reader.read_exact(size)
            if reader.read_exact(2) != b"\r\n":
                raise _BadRequest("missing CRLF after chunk")
        trailer_lines: list[bytes] = []
        while True:
            line = reader.read_until(b"\r\n", _MAX_LINE)
            if line == b"\r\n":
                break
            trailer_lines.append(line[:-2])
        return bytes(body), _parse_fields(trailer_lines)

    def _serve_one(self, sock: socket.socket, reader: _Reader, conn_id: int) -> tuple[bool, bool]:
        """Serve one request. Returns (keep the connection, close it abortively)."""
        req, sent_continue = self._read_request(sock, reader, conn_id)
        with self._lock:
            self.requests.append(req)

        delay = req.header("x-echo-delay-ms")
        if delay and delay.strip().isdigit() and self._stopping.wait(int(delay) / 1000.0):
            return False, False

        behavior = (req.header("x-echo-behavior") or "").strip().lower()
        if behavior == "reset":
            return False, True
        if behavior == "close":
            return False, False
        if behavior == "garbage":
            self._send(sock, b"this is not http\r\n\r\n")
            return False, False
        if behavior == "hang":
            self._stopping.wait()
            return False, False
        if behavior == "partial":
            self._send(
                sock,
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                + f"x-backend: {self.name}\r\ncontent-length: 100\r\n\r\n".encode()
                + b"x" * 10,
            )
            return False, False
        if behavior == "100-continue" and not sent_continue:
            self._send(sock, b"HTTP/1.1 100 Continue\r\n\r\n")

        return self._respond(sock, req, no_length=behavior == "no-length"), False

    def _respond(self, sock: socket.socket, req: ReceivedRequest, *, no_length: bool) -> bool:
        """Write the normal response. Returns whether the connection stays open."""
        status = 200
        status_text = (req.header("x-echo-status") or "").strip()
        if status_text.isdigit() and 100 <= int(status_text) <= 999:
            status = int(status_text)

        size_text = (req.header("x-echo-body-size") or "").strip()
        if size_text.isdigit():
            body = b"x" * int(size_text)
            content_type = "text/plain"
        else:
            body = json.dumps(
                {
                    "backend": self.name,
                    "method": req.method,
                    "target": req.target,
                    "version": req.version,
                    "headers": [[k, v] for k, v in req.headers],
                    "body_len": len(req.body),
                    "connection_id": req.connection_id,
                }
            ).encode()
            content_type = "application/json"

        trailers = [
            pair
            for pair in (_split_pair(v) for v in req.header_values("x-echo-trailer"))
            if pair is not None
        ]
        chunked = (req.header("x-echo-chunked") or "").strip() == "1" or bool(trailers)
        conn_tokens = {
            t.strip().lower() for v in req.header_values("connection") for t in v.split(",")
        }
        close = (
            (req.header("x-echo-close") or "").strip() == "1"
            or "close" in conn_tokens
            or (req.version == "HTTP/1.0" and "keep-alive" not in conn_tokens)
            or no_length
        )
        bodiless_status = status < 200 or status in (204, 304)
        send_body = req.method != "HEAD" and not bodiless_status

        head = [f"HTTP/1.1 {status} {_reason(status)}"]
        head.append(f"content-type: {content_type}")
        head.append(f"x-backend: {self.name}")
        for value in req.header_values("x-echo-header"):
            pair = _split_pair(value)
            if pair is not None:
                head.append(f"{pair[0]}: {pair[1]}")
        if bodiless_status or no_length:
            pass
        elif chunked:
            head.append("transfer-encoding: chunked")
        else:
            head.append(f"content-length: {len(body)}")
        if close:
            head.append("connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")

        if send_body:
            if chunked and not no_length:
                data += self._chunk(body, trailers)
            else:
                data += body
        ok = self._send(sock, data)
        return ok and not close

    @staticmethod
    def _chunk(body: bytes, trailers: list[tuple[str, str]]) -> bytes:
        out = bytearray()
        if body:
            step = max(1, -(-len(body) // 3))  # three chunks (fewer for tiny bodies)
            for i in range(0, len(body), step):
                piece = body[i : i + step]
                out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        out += b"0\r\n"
        for name, value in trailers:
            out += f"{name}: {value}\r\n".encode("latin-1")
        out += b"\r\n"
        return bytes(out)


def main(argv: list[str] | None = None) -> int:
    return serve_until_signalled(EchoBackend, argv, "HTTP/1.1 echo backend for tests", "backend")


if __name__ == "__main__":
    sys.exit(main())
