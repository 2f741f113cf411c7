"""Port forwards from host loopback into a pod's network namespace (``kubectl port-forward``).

The pods' bridge lives in its own namespace, so the host has no route to a pod; instead the
control plane accepts on ``127.0.0.1:<free port>`` and, per connection, opens a socket
*inside* the pod's namespace (a socket belongs to the namespace its creating thread was in:
``setns`` there and straight back, on the event loop's thread, no blocking in between) and
connects it to ``127.0.0.1:<port>`` there. Nothing of the host's routes or iptables changes.
Used for each proxy's admin (``pilotfishctl status/proxy-config``) and the gateway's ports.
Connections from the host thus arrive at the pod's loopback, which the capture rules never
redirect (``-d 127.0.0.1/32 -j RETURN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
from pathlib import Path

__all__ = ["PortForward", "socket_in_netns"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns: Path, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A TCP (or ``kind``: UDP) socket of the network namespace ``netns`` (e.g.
    ``/run/netns/<name>``)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_INET, kind)
        finally:
            _setns(own)  # if this failed the thread would stay in the pod: let it raise
    finally:
        os.close(own)
        os.close(target)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


class PortForward:
    """``127.0.0.1:<self.port>`` on the host → ``127.0.0.1:<target_port>`` in ``netns``."""

    def __init__(self, netns: Path, target_port: int) -> None:
        self.netns = netns
        self.target_port = target_port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        """Serve from the running loop (the port is bound already, so callers may hand it
        out at once)."""
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, sock=self._sock)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        inner_writer: asyncio.StreamWriter | None = None
        try:
            sock = socket_in_netns(self.netns)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
            except OSError:
                sock.close()
                return
            inner_reader, inner_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        finally:
            self._conns.discard(writer)
            for w in (writer, inner_writer):
                if w is not None:
                    w.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        elif self._task is not None:
            self._task.cancel()
        for w in list(self._conns):
            w.close()
        with contextlib.suppress(OSError):
            self._sock.close()
