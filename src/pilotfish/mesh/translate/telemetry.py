"""Istio's telemetry filters in the shape istiod gives them (TypedStructs of Istio's own types):
the HTTP peer metadata exchange (``istio.metadata_exchange``) and the stats filter
(``istio.stats``) of every sidecar and gateway HTTP chain, the stats filter in front of
tcp_proxy. As istiod's defaults: inbound and gateway stats have
``disable_host_header_fallback`` (a host header from outside the mesh must not become a
``destination_service``).

Differences from istiod: the peer metadata filter lists only ``istio_headers`` (istiod adds
``workload_discovery``, which needs the ambient workload xDS pilotfish does not serve), and TCP
chains have no TCP metadata exchange filter (pilotfish does not run the MX protocol; TCP
metrics know the peer from the endpoint's ``istio.workload`` metadata).
"""

from __future__ import annotations

from typing import Any

from pilotfish.mesh.translate.routes import CORS, FAULT

JSON = dict[str, Any]
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
PEER_METADATA = "type.googleapis.com/io.istio.http.peer_metadata.Config"
STATS = "type.googleapis.com/stats.PluginConfig"


def _typed_struct(type_url: str, value: JSON) -> JSON:
    return {"@type": TYPED_STRUCT, "type_url": type_url, "value": value}


def peer_metadata_filter(direction: str) -> JSON:
    """OUTBOUND: discover the upstream from the response, propagate to the request; INBOUND:
    discover the downstream from the request, answer in the response."""
    headers: list[JSON] = [{"istio_headers": {}}]
    if direction == "INBOUND":
        value = {"downstream_discovery": headers, "downstream_propagation": headers}
    else:
        value = {"upstream_discovery": headers, "upstream_propagation": headers}
    return {"name": "istio.metadata_exchange", "typed_config": _typed_struct(PEER_METADATA, value)}


def stats_filter(direction: str, *, gateway: bool = False) -> JSON:
    value: JSON = {}
    if direction == "INBOUND" or gateway:
        value["disable_host_header_fallback"] = True
    return {"name": "istio.stats", "typed_config": _typed_struct(STATS, value)}


ROUTER: JSON = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
FAULT_FILTER: JSON = {
    "name": FAULT,
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    },
}
CORS_FILTER: JSON = {
    "name": CORS,
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
}


def http_filters(direction: str, *, telemetry: bool, gateway: bool = False) -> list[JSON]:
    """An HTTP chain as istiod builds it (less grpc_stats and alpn): outbound and gateway
    metadata exchange, fault, cors, stats, router; inbound metadata exchange, stats, router
    (Istio's fault and cors act on outbound routes only). ``telemetry=False`` (proxies without
    Istio's extensions, e.g. upstream Envoy) leaves the Istio types out."""
    if direction == "INBOUND":
        core: list[JSON] = []
    else:
        core = [FAULT_FILTER, CORS_FILTER]
    if not telemetry:
        return [*core, ROUTER]
    return [
        peer_metadata_filter(direction),
        *core,
        stats_filter(direction, gateway=gateway),
        ROUTER,
    ]


def tcp_stats(direction: str, telemetry: bool) -> list[JSON]:
    """The network filters before a TCP chain's tcp_proxy."""
    return [stats_filter(direction)] if telemetry else []
