"""One raw HTTP/1.1 client connection driven step by step: send exact bytes, read the next
response (interim 1xx ones included), read raw bytes (after a 101), and see whether and how
the server closed the connection.

    with RawConn(("127.0.0.1", port)) as conn:
        conn.send(b"POST / HTTP/1.1\\r\\nHost: x\\r\\nExpect: 100-continue\\r\\n...")
        assert conn.response().status == 100
        conn.send(b"hello")
        final = conn.response()
        assert conn.wait_closed(2.0) is None  # still open

Responses are parsed by :func:`tests.support.proxies.parse_responses`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from types import TracebackType

from tests.support.proxies import RawResponse, parse_responses

__all__ = ["RawConn"]


class RawConn:
    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data = bytearray()  # received and not yet handed out
        self.eof: str | None = None  # "FIN" | "RST" once the server closed

    def __enter__(self) -> RawConn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False on EOF or when the time is up."""
        if self.eof is not None:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        except OSError:
            self.eof = "RST"
            return False
        if not chunk:
            self.eof = "FIN"
            return False
        self.data += chunk
        return True

    def response(self, *, head: bool = False, timeout: float | None = None) -> RawResponse:
        """The next response on the connection (a 1xx counts as one). ``head``: it answers a
        HEAD request. Raises AssertionError if none is complete in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            found, _ = parse_responses(bytes(self.data), self.eof is not None, [head])
            if found and found[0].complete:
                del self.data[: len(found[0].raw)]
                return found[0]
            if self.eof is not None or time.monotonic() >= deadline:
                raise AssertionError(
                    f"no complete response from {self.address} "
                    f"({'closed: ' + self.eof if self.eof else 'timed out'}); "
                    f"received {bytes(self.data)[:600]!r}"
                )
            self._recv(deadline)

    def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        """Exactly ``size`` raw bytes (for tunnels); raises AssertionError if they do not come."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.data) < size:
            if self.eof is not None or time.monotonic() >= deadline:
                raise AssertionError(
                    f"wanted {size} bytes, got {bytes(self.data)!r} "
                    f"({'closed: ' + self.eof if self.eof else 'timed out'})"
                )
            self._recv(deadline)
        out = bytes(self.data[:size])
        del self.data[:size]
        return out

    def wait_closed(self, timeout: float) -> str | None:
        """Wait up to ``timeout`` seconds for the server to close: "FIN", "RST", or None if the
        connection is still open. Bytes that arrive meanwhile stay in :attr:`data`."""
        deadline = time.monotonic() + timeout
        while self.eof is None and time.monotonic() < deadline:
            self._recv(deadline)
        return self.eof
