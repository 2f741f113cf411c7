"""Envoy's admin API, on the bootstrap's ``admin.address``: same paths, methods and formats,
because pilot-agent and istioctl read them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from pilotfish.admin import handlers
from pilotfish.codec.http1 import CodecError, Http1ServerCodec, status_line
from pilotfish.http.date import DATE
from pilotfish.http.headers import HeaderMap, RequestHeaders
from pilotfish.model.bootstrap import Admin
from pilotfish.model.common import PipeAddress, SocketAddress

if TYPE_CHECKING:
    from pilotfish.server import Server

log = logging.getLogger("pilotfish.admin")


class AdminServer:
    def __init__(self, server: Server, model: Admin) -> None:
        self.server = server
        self.model = model
        self.sock: socket.socket | None = None
        self.aio_server: asyncio.AbstractServer | None = None
        self.access_loggers: list[Any] = []

    def bind(self) -> None:
        addr = self.model.address
        if isinstance(addr, PipeAddress):
            if os.path.exists(addr.path):
                os.unlink(addr.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(addr.path)
        else:
            assert isinstance(addr, SocketAddress)
            family = socket.AF_INET6 if ":" in addr.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr.address, addr.port))
            except OSError as e:
                sock.close()
                raise OSError(
                    e.errno, f"cannot bind admin address '{addr}': {e.strerror}"
                ) from None
        sock.listen(128)
        sock.setblocking(False)
        self.sock = sock

    async def start(self) -> None:
        assert self.sock is not None
        ctx = self.server.ctx
        assert ctx is not None
        if ctx.access_logs is not None:
            self.access_loggers = [
                ext.factory.build(ext.config, ctx.access_logs)
                for ext in self.model.access_log
                if ext.factory is not None
            ]
        self.aio_server = await ctx.loop.create_server(
            lambda: AdminConnection(self), sock=self.sock
        )

    def address_text(self) -> str:
        assert self.sock is not None
        name = self.sock.getsockname()
        if isinstance(name, tuple):
            host, port = name[0], name[1]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return str(name)

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def stop(self) -> None:
        if self.aio_server is not None:
            self.aio_server.close()
            self.aio_server = None


class AdminConnection(asyncio.Protocol):
    """A plain HTTP/1.1 server for admin requests (one at a time per connection)."""

    def __init__(self, admin: AdminServer) -> None:
        self.admin = admin
        self.codec = Http1ServerCodec(self, max_headers_kb=60)
        self.transport: asyncio.Transport | None = None
        self.request: RequestHeaders | None = None
        self.body = bytearray()
        self.version = "1.1"
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.codec.feed(data)
        except CodecError as e:
            self._send(e.status, "text/plain; charset=UTF-8", b"", close=True)

    def on_request_headers(self, headers: RequestHeaders) -> None:
        self.request = headers
        self.body = bytearray()
        self.keep_alive = self.codec.keep_alive

    def on_request_body(self, data: bytes) -> None:
        if len(self.body) < 1 << 20:
            self.body += data

    def on_request_complete(self, trailers: HeaderMap | None) -> None:
        req = self.request
        if req is None:
            return
        self.request = None
        method = req.method.decode("latin-1")
        path, _, query = req.path.decode("latin-1").partition("?")
        params = _parse_query(query)
        try:
            result = handlers.dispatch(
                self.admin.server, method, unquote(path), params, bytes(self.body)
            )
        except Exception:  # the admin API must answer, whatever happened
            log.exception("admin handler failed for %s", path)
            result = handlers.Response(500, "internal error\n")
        self._send(
            result.status,
            result.content_type,
            result.body_bytes(),
            head=method == "HEAD",
            extra=result.headers,
            close=not self.keep_alive,
        )
        if result.after is not None:
            asyncio.get_running_loop().call_soon(result.after)

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        if self.transport is None:
            return
        lines = [
            status_line(status),
            f"content-type: {content_type}\r\n".encode(),
            b"cache-control: no-cache, max-age=0\r\n",
            b"x-content-type-options: nosniff\r\n",
        ]
        for k, v in extra or ():
            lines.append(f"{k}: {v}\r\n".encode())
        lines.append(b"date: " + DATE.get() + b"\r\n")
        lines.append(b"server: envoy\r\n")
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(lines) + (b"" if head else body))
        if close:
            self.transport.close()


def _parse_query(query: str) -> dict[str, str]:
    """Envoy accepts bare flags (``?usedonly``) as well as key=value pairs; a repeated key
    counts with its first value (Envoy's getFirstValue)."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        out.setdefault(key, value)
    return out
