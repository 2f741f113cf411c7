"""A minimal HTTP/2 server on pilotfish's codec: every request gets "200 ok" once its request
side ends. It is what h2spec runs against until the connection manager serves HTTP/2.

``H2FixedServer(options)`` is a context manager that serves on 127.0.0.1:<port> from an
event loop in a thread (``.port``); ``python -m tests.support.h2_server`` serves in the
foreground and prints the port.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from types import TracebackType
from typing import Any

from pilotfish.codec.events import ConnectionLost, Data, RequestHead, Trailers
from pilotfish.codec.http2 import Http2Options, Http2ServerCodec
from pilotfish.http.headers import ResponseHeaders

BODY = b"ok"


class H2FixedResponse(asyncio.Protocol):
    def __init__(self, options: Http2Options | None) -> None:
        self.options = options
        self.transport: asyncio.Transport | None = None
        self.codec = Http2ServerCodec(options)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.codec.data_to_send())

    def data_received(self, data: bytes) -> None:
        codec = self.codec
        transport = self.transport
        assert transport is not None
        lost = False
        for event in codec.receive(data):
            if isinstance(event, RequestHead):
                if event.end_stream:
                    self.respond(event.stream_id)
            elif isinstance(event, Data):
                codec.consumed(event.stream_id, len(event.data))
                if event.end_stream:
                    self.respond(event.stream_id)
            elif isinstance(event, Trailers):
                self.respond(event.stream_id)
            elif isinstance(event, ConnectionLost):
                lost = True
        out = codec.data_to_send()
        if out:
            transport.write(out)
        if lost or codec.want_close:
            transport.close()

    def respond(self, stream_id: int) -> None:
        headers = ResponseHeaders(200, [(b"content-length", b"%d" % len(BODY))])
        self.codec.encode_headers(stream_id, headers, False)
        self.codec.encode_data(stream_id, BODY, True)


class H2FixedServer:
    def __init__(self, options: Http2Options | None = None) -> None:
        self.options = options
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> H2FixedServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)
        return self

    async def _start(self) -> int:
        self._server = await self._loop.create_server(
            lambda: H2FixedResponse(self.options), "127.0.0.1", 0
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


if __name__ == "__main__":
    with H2FixedServer() as server:
        print(server.port, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            sys.exit(0)
