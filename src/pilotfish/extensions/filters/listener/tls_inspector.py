"""envoy.filters.listener.tls_inspector: read a connection's first bytes and, if they are a TLS
ClientHello, record ``tls`` as its transport protocol, the SNI server name and the ALPN
protocols, so that filter chains can match ``server_names``, ``transport_protocol`` and
``application_protocols``.

The ClientHello is parsed by hand: Python's ssl module can only parse one inside a full
handshake, and a proxy that routes on SNI must not terminate TLS. The bytes read are handed on
to the chosen filter chain unchanged (Envoy peeks; we read and replay)."""

from __future__ import annotations

from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.net.connection import ConnectionInfo

_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
# Envoy's default max_client_hello_size.
MAX_CLIENT_HELLO = 16 * 1024


class ClientHello:
    __slots__ = ("alpn", "server_name")

    def __init__(self, server_name: str, alpn: tuple[str, ...]) -> None:
        self.server_name = server_name
        self.alpn = alpn


NEED_MORE = "need-more"
NOT_TLS = "not-tls"


def parse_client_hello(data: bytes) -> ClientHello | str:
    """The ClientHello at the start of ``data``; NEED_MORE if it is incomplete; NOT_TLS if the
    bytes are not a TLS handshake (or are a malformed one)."""
    # Gather the handshake message from one or more TLS records.
    message = b""
    pos = 0
    while True:
        if len(data) < pos + 5:
            return NEED_MORE if _could_be_tls(data) else NOT_TLS
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            return NOT_TLS
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) < pos + 5 + length:
            return NEED_MORE
        message += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                return NOT_TLS
            body_length = int.from_bytes(message[1:4], "big")
            if len(message) >= 4 + body_length:
                return _parse_body(message[4 : 4 + body_length])
        if len(message) > MAX_CLIENT_HELLO:
            return NOT_TLS


def _could_be_tls(data: bytes) -> bool:
    return (not data or data[0] == _HANDSHAKE) and (len(data) < 2 or data[1] == 3)


def _parse_body(body: bytes) -> ClientHello | str:
    try:
        pos = 2 + 32  # client_version, random
        pos += 1 + body[pos]  # session_id
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]  # compression_methods
        server_name = ""
        alpn: tuple[str, ...] = ()
        if pos + 2 > len(body):
            return ClientHello(server_name, alpn)  # no extensions
        end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            ext_type = int.from_bytes(body[pos : pos + 2], "big")
            ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
            ext = body[pos + 4 : pos + 4 + ext_len]
            pos += 4 + ext_len
            if ext_type == _EXT_SERVER_NAME:
                server_name = _server_name(ext)
            elif ext_type == _EXT_ALPN:
                alpn = _alpn(ext)
        return ClientHello(server_name, alpn)
    except IndexError:
        return NOT_TLS


def _server_name(ext: bytes) -> str:
    pos = 2  # server_name_list length
    while pos + 3 <= len(ext):
        name_type = ext[pos]
        length = int.from_bytes(ext[pos + 1 : pos + 3], "big")
        name = ext[pos + 3 : pos + 3 + length]
        pos += 3 + length
        if name_type == 0:  # host_name
            return name.decode("ascii", "replace").lower()
    return ""


def _alpn(ext: bytes) -> tuple[str, ...]:
    out = []
    pos = 2  # protocol_name_list length
    while pos < len(ext):
        length = ext[pos]
        out.append(ext[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return tuple(out)


class TlsInspector:
    """A listener filter that needs the connection's first bytes (see net/listener.py)."""

    max_read_bytes = MAX_CLIENT_HELLO + 5 * 4

    def on_accept(self, info: ConnectionInfo, sock: Any) -> None:
        return None

    def on_data(self, info: ConnectionInfo, data: bytes) -> bool:
        """True once the decision is made (False: more bytes are needed)."""
        hello = parse_client_hello(data)
        if hello is NEED_MORE:
            return False
        if isinstance(hello, ClientHello):
            info.transport_protocol = "tls"
            info.server_name = hello.server_name
            info.application_protocols = hello.alpn
        return True


class TlsInspectorFactory(ExtensionFactory):
    category = Category.LISTENER_FILTER
    name = "envoy.filters.listener.tls_inspector"
    type_names = ("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",)

    def parse(self, msg: Any, ctx: Any, path: str) -> None:
        return None  # JA3/JA4 fingerprints are not computed (nothing here reads them)

    def build(self, config: None) -> TlsInspector:
        return TlsInspector()
