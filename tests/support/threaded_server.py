"""The scaffolding the test backends share (stdlib only): a TCP server on a loopback port with
one accept thread and one thread per connection, ``start``/``stop``, use as a context manager,
and running it as a process until SIGTERM.

A subclass implements :meth:`ThreadedServer._handle` (serve one accepted connection) and may
extend :meth:`ThreadedServer._accepted` (bookkeeping for a new connection, under the lock).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import struct
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Self

__all__ = ["ThreadedServer", "serve_until_signalled"]


class ThreadedServer:
    """A threaded TCP server on ``host:port`` (port 0: a free one, read back after start)."""

    thread_prefix = "server"  # names the threads: <prefix>-<name>-accept, <prefix>-<name>-connN

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._clients: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> Self:
        if self._listener is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{self.thread_prefix}-{self.name}-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, shut every open connection down and wait for its thread."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            clients = list(self._clients.values())
            threads = list(self._threads)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        with self._lock:
            leftover = list(self._clients.values())
            self._clients.clear()
            self._threads.clear()
        for sock in leftover:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    def _accepted(self, conn_id: int) -> None:
        """Called under the lock for each new connection, before its thread starts."""

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        """Serve one connection until it is done. Returns True to close it abortively (RST),
        False for an orderly close (FIN)."""
        raise NotImplementedError

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    break
                self.connections_accepted += 1
                conn_id = self.connections_accepted
                self._clients[conn_id] = sock
                self._accepted(conn_id)
                thread = threading.Thread(
                    target=self._serve,
                    args=(sock, conn_id),
                    name=f"{self.thread_prefix}-{self.name}-conn{conn_id}",
                    daemon=True,
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, conn_id: int) -> None:
        abortive = False
        try:
            abortive = self._handle(sock, conn_id)
        finally:
            with self._lock:
                self._clients.pop(conn_id, None)
                with contextlib.suppress(ValueError):
                    self._threads.remove(threading.current_thread())
            if abortive:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            sock.close()


def serve_until_signalled(
    make: Callable[[str, str, int], ThreadedServer],
    argv: list[str] | None,
    description: str,
    default_name: str,
) -> int:
    """A process main: parse ``--name --host --port``, start ``make(name, host, port)``,
    print ``PORT <n>`` and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", default=default_name)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = make(args.name, args.host, args.port).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0
