"""A scripted HTTP/1.1 backend for resilience tests: it answers every request by its current
``mode``, which a test changes at any time:

- ``ok``: 200 with ``x-backend: <name>`` (keep-alive);
- ``503``: 503 with the same header;
- ``reset``: reads the request and closes the connection abortively (RST), no response;
- ``blackhole``: reads the request and never answers (until stopped).

GET requests without a body only (what the tests send). ``served`` counts requests by mode.
"""

from __future__ import annotations

import collections
import socket
import time

from tests.support.threaded_server import ThreadedServer

__all__ = ["FaultyBackend"]


class FaultyBackend(ThreadedServer):
    thread_prefix = "faulty"

    def __init__(self, name: str, mode: str = "ok") -> None:
        super().__init__(name)
        self.mode = mode
        self.served: collections.Counter[str] = collections.Counter()

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        buf = b""
        while not self._stopping.is_set():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return False
                if not data:
                    return False
                buf += data
                continue
            head, buf = buf[:end], buf[end + 4 :]
            mode = self.mode
            self.served[mode] += 1
            if mode == "reset":
                return True
            if mode == "blackhole":
                while not self._stopping.is_set():
                    time.sleep(0.05)
                return True
            status = b"503 Service Unavailable" if mode == "503" else b"200 OK"
            body = self.name.encode()
            resp = (
                b"HTTP/1.1 "
                + status
                + b"\r\nx-backend: "
                + body
                + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
                + body
            )
            try:
                sock.sendall(resp)
            except OSError:
                return False
            del head
        return False
