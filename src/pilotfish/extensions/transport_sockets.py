"""Transport sockets: raw_buffer (plain TCP) and ``envoy.transport_sockets.tls``.

A TLS transport socket's DownstreamTlsContext / UpstreamTlsContext is parsed into a
TlsContextConfig (tls/config.py: what pilotfish does not implement is refused by field name);
listeners (net/listener.py) and upstream hosts (upstream/cluster.py) turn it into a running
TLS context (tls/context.py) whose certificates and trusted CAs come inline, from files, or
from the SecretStore (static and SDS secrets), rebuilt when a secret rotates.
"""

from __future__ import annotations

from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.tls.config import TlsContextConfig, parse_tls_context

__all__ = ["TlsContextConfig", "transport_socket_factories"]


class RawBufferFactory(ExtensionFactory):
    category = Category.TRANSPORT_SOCKET
    name = "envoy.transport_sockets.raw_buffer"
    type_names = ("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",)

    def parse(self, msg: Any, ctx: Any, path: str) -> None:
        return None


class _TlsFactory(ExtensionFactory):
    category = Category.TRANSPORT_SOCKET
    name = "envoy.transport_sockets.tls"
    downstream = False

    def parse(self, msg: Any, ctx: Any, path: str) -> TlsContextConfig:
        return parse_tls_context(msg, self.downstream, f"{path}.typed_config")


class UpstreamTlsFactory(_TlsFactory):
    type_names = ("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",)


class DownstreamTlsFactory(_TlsFactory):
    type_names = ("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",)
    downstream = True


def transport_socket_factories() -> list[ExtensionFactory]:
    return [RawBufferFactory(), UpstreamTlsFactory(), DownstreamTlsFactory()]
