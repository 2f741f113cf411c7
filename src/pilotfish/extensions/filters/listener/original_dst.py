"""envoy.filters.listener.original_dst: the connection's destination is where the client sent it
before an iptables REDIRECT (SO_ORIGINAL_DST), not the proxy's port."""

from __future__ import annotations

from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.net.connection import ConnectionInfo, original_destination


class OriginalDstFilter:
    def on_accept(self, info: ConnectionInfo, sock: Any) -> None:
        if sock is None:
            return
        # Envoy restores the local address whenever SO_ORIGINAL_DST answers, even when the
        # connection was not redirected (the address is then the local one).
        dst = original_destination(sock)
        if dst is not None:
            info.set_local(*dst)


class OriginalDstFactory(ExtensionFactory):
    category = Category.LISTENER_FILTER
    name = "envoy.filters.listener.original_dst"
    type_names = ("envoy.extensions.filters.listener.original_dst.v3.OriginalDst",)

    def parse(self, msg: Any, ctx: Any, path: str) -> None:
        return None

    def build(self, config: None) -> OriginalDstFilter:
        return OriginalDstFilter()
