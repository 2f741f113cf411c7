"""Upstream failures made on loopback only, for tests of connect failures and timeouts.

``RefusedPort``: a port bound without listening, so connecting to it is refused (and nothing
else can take it). ``Blackhole``: a listening socket whose accept queue is full and never
drained, so the kernel drops new SYNs and a connect attempt neither succeeds nor fails until
its own timeout.
"""

from __future__ import annotations

import socket

from tests.support.proxies import LOCALHOST

__all__ = ["Blackhole", "RefusedPort"]


class RefusedPort:
    """A port bound without listening: connecting is refused, and nothing else can take it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class Blackhole:
    """A listening socket whose accept queue is full and never drained: the kernel drops new
    SYNs, so a connect attempt neither succeeds nor fails until its own timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(8):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(0.3)
            try:
                filler.connect((LOCALHOST, self.port))
            except TimeoutError:
                filler.close()
                return  # the queue is full: this SYN was dropped
            self.fillers.append(filler)
        self.close()
        raise RuntimeError("could not fill the accept queue of the blackhole socket")

    def close(self) -> None:
        for s in [*self.fillers, self.sock]:
            s.close()
