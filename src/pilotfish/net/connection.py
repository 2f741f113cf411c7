"""What is known about an accepted downstream connection, from accept to close."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80


def format_address(addr: Any) -> tuple[str, str, int]:
    """(text "ip:port", ip, port) for a socket address tuple; a path for Unix sockets."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        ip, port = str(addr[0]), int(addr[1])
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
        text = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return text, ip, port
    if isinstance(addr, str | bytes):
        path = addr.decode() if isinstance(addr, bytes) else addr
        return path, "", 0
    return "", "", 0


def original_destination(sock: Any) -> tuple[str, int] | None:
    """The pre-REDIRECT destination of an iptables-redirected connection (SO_ORIGINAL_DST)."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            ip = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            return ip, port
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        ip = socket.inet_ntoa(raw[4:8])
        return ip, port
    except (OSError, AttributeError, ValueError):
        return None


_LOOPBACK = frozenset(("127.0.0.1", "::1"))


class ConnectionInfo:
    __slots__ = (
        "application_protocols",
        "buffer_limit",
        "close_hook",
        "connection_id",
        "filter_chain",
        "listener",
        "local_address",
        "local_ip",
        "local_port",
        "original_dst",
        "remote_address",
        "remote_ip",
        "remote_is_loopback",
        "remote_port",
        "server_name",
        "start",
        "tls",
        "transport_protocol",
    )

    def __init__(
        self, connection_id: int, sockname: Any, peername: Any, start: float, buffer_limit: int
    ) -> None:
        self.connection_id = connection_id
        self.local_address, self.local_ip, self.local_port = format_address(sockname)
        self.remote_address, self.remote_ip, self.remote_port = format_address(peername)
        # Envoy's isLoopbackAddress: exactly 127.0.0.1 or ::1 (not all of 127/8); Unix sockets
        # count as local.
        self.remote_is_loopback = self.remote_ip in _LOOPBACK or not self.remote_ip
        # Set only when a listener filter restored the original destination (Envoy's
        # localAddressRestored): ORIGINAL_DST clusters and use_original_dst use nothing else.
        self.original_dst: tuple[str, int] | None = None
        self.start = start
        self.buffer_limit = buffer_limit
        self.server_name = ""
        self.transport_protocol = "raw_buffer"
        self.application_protocols: tuple[str, ...] = ()
        self.listener: Any = None
        self.filter_chain: Any = None
        self.close_hook: Callable[[], None] | None = None
        # After a TLS handshake: the connection's TLS layer (tls.downstream.TlsServerConnection:
        # negotiated ALPN, peer certificate).
        self.tls: Any = None

    def set_local(self, ip: str, port: int) -> None:
        """The connection's destination as the listener filters found it (original_dst)."""
        self.local_ip, self.local_port = ip, port
        self.local_address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.original_dst = (ip, port)

    def closed(self) -> None:
        hook = self.close_hook
        if hook is not None:
            self.close_hook = None
            hook()
