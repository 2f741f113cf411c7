"""envoy.filters.listener.http_inspector: on a plaintext connection, tell HTTP/1.x and h2c
apart from other protocols by the first bytes, and record ``http/1.1``, ``http/1.0`` or ``h2c``
as the connection's application protocol (Istio's inbound listeners match on it)."""

from __future__ import annotations

import re
from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.net.connection import ConnectionInfo

H2C_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Envoy inspects at most this much of the request line.
MAX_INSPECT = 8 * 1024
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/1\.([01])\r?\n")
# A request line still arriving: method token, then target, then the start of a version.
_PARTIAL_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]*(?: \S*(?: [HTP/0-9.]*)?)?\r?")


def detect(data: bytes) -> str | None:
    """ "h2c", "http/1.1", "http/1.0"; "" when the bytes are not HTTP; None: need more."""
    if data[:24] == H2C_PREFACE[: len(data[:24])]:
        return "h2c" if len(data) >= 24 else None
    m = _REQUEST_LINE.match(data)
    if m is not None:
        return "http/1.1" if m.group(1) == b"1" else "http/1.0"
    if len(data) >= MAX_INSPECT or b"\n" in data:
        return ""
    partial = _PARTIAL_LINE.fullmatch(data)
    return None if partial is not None else ""


class HttpInspector:
    max_read_bytes = MAX_INSPECT

    def on_accept(self, info: ConnectionInfo, sock: Any) -> None:
        return None

    def on_data(self, info: ConnectionInfo, data: bytes) -> bool:
        if info.transport_protocol != "raw_buffer":
            return True  # TLS: the tls_inspector's ALPN says what it is
        protocol = detect(data)
        if protocol is None:
            return False
        if protocol:
            info.application_protocols = (protocol,)
        return True


class HttpInspectorFactory(ExtensionFactory):
    category = Category.LISTENER_FILTER
    name = "envoy.filters.listener.http_inspector"
    type_names = ("envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",)

    def parse(self, msg: Any, ctx: Any, path: str) -> None:
        return None

    def build(self, config: None) -> HttpInspector:
        return HttpInspector()
