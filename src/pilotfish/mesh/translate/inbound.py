"""The filter chains of one inbound port under an mTLS mode, as istiod builds them (its
filter chain match options per mode and protocol):

=============  ============================================================================
PERMISSIVE     HTTP: mTLS (``tls`` + Istio's ALPNs), plaintext (``raw_buffer``).
               TCP: mTLS, plaintext, and TLS that is not Istio's (the app's own) passed
               through as TCP.
STRICT         only the mTLS chain (``tls``, any ALPN): plaintext finds no chain and the
               connection is closed.
DISABLE        only plaintext (``raw_buffer``).
=============  ============================================================================

``inbound_filter_chains`` serves the loopback-mode inbound listener (one per workload
port) and a ``virtualInbound`` (capture mode, ``destination_port`` set); the listener needs
the returned listener filters (tls_inspector sets the transport protocol and ALPN the
chains match).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from pilotfish.mesh.translate.common import JSON
from pilotfish.mesh.translate.mtls import (
    MTLS_APPLICATION_PROTOCOLS,
    downstream_istio_mutual,
    tls_inspector,
)

__all__ = ["MTLS_MODES", "InboundChains", "inbound_filter_chains"]

MTLS_MODES = ("DISABLE", "PERMISSIVE", "STRICT")


@dataclass(frozen=True, slots=True)
class InboundChains:
    filter_chains: list[JSON]
    listener_filters: list[JSON]


def inbound_filter_chains(
    mode: str,
    filters: Sequence[JSON],
    *,
    http: bool,
    name: str | None = None,
    destination_port: int | None = None,
) -> InboundChains:
    """The chains of one port: ``mode`` is the port's effective PeerAuthentication mode
    (DISABLE, PERMISSIVE or STRICT), ``filters`` its network filters (the HCM or tcp_proxy,
    the same on every chain), ``http`` whether the port's protocol is HTTP."""
    if mode not in MTLS_MODES:
        raise ValueError(f"mTLS mode {mode!r} is not one of {', '.join(MTLS_MODES)}")

    def chain(transport: str, alpn: Sequence[str] = (), mtls: bool = False) -> JSON:
        match: JSON = {} if destination_port is None else {"destination_port": destination_port}
        match["transport_protocol"] = transport
        if alpn:
            match["application_protocols"] = list(alpn)
        out: JSON = {"filter_chain_match": match, "filters": copy.deepcopy(list(filters))}
        if mtls:
            out["transport_socket"] = downstream_istio_mutual(http=http)
        if name is not None:
            out["name"] = name
        return out

    chains = []
    if mode != "DISABLE":
        alpn = MTLS_APPLICATION_PROTOCOLS if mode == "PERMISSIVE" else ()
        chains.append(chain("tls", alpn, mtls=True))
    if mode != "STRICT":
        chains.append(chain("raw_buffer"))
    if mode == "PERMISSIVE" and not http:
        chains.append(chain("tls"))  # the app's own TLS, passed through as TCP
    return InboundChains(chains, [tls_inspector()])
