"""The bootstrap the local mesh gives each proxy (sidecar or gateway): an admin, the
``xds-grpc`` cluster pointing at the control plane, and ADS for listeners and clusters in
delta mode, the shape of the bootstrap Istio's pilot-agent renders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
# Istio's sidecar TLS contexts name their secrets (``default``, ``ROOTCA``) with this source:
# istio-agent's SDS server behind the bootstrap's ``sds-grpc`` cluster.
SDS_SOURCE = {
    "api_config_source": {
        "api_type": "GRPC",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
        "set_node_on_first_message_only": True,
        "transport_api_version": "V3",
    },
    "resource_api_version": "V3",
}

RE2_ERROR_LEVEL = "re2.max_program_size.error_level"


def node_id(kind: str, name: str, namespace: str, address: str = "127.0.0.1") -> str:
    """Istio's node id: ``sidecar~10.1.1.1~reviews-v1-xyz.default~default.svc.cluster.local``
    (``router`` for gateways)."""
    return f"{kind}~{address}~{name}.{namespace}~{namespace}.svc.cluster.local"


def xds_address(address: str) -> dict[str, Any]:
    """An Envoy Address for the control plane: ``unix:/path`` or ``host:port``."""
    if address.startswith("unix:"):
        return {"pipe": {"path": address[len("unix:") :]}}
    host, _, port = address.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def proxy_bootstrap(
    xds: str,
    node: str,
    *,
    cluster: str,
    admin_port: int = 0,
    delta: bool = True,
    metadata: Mapping[str, Any] | None = None,
    initial_fetch_timeout: str | None = None,
    sds_socket: str | None = None,
    admin_address: str = "127.0.0.1",
) -> dict[str, Any]:
    """A bootstrap (Envoy v3 JSON shape) whose config all comes over ADS from ``xds``
    (``host:port`` or ``unix:/path``). With ``sds_socket`` (a path), the ``sds-grpc``
    cluster Istio's TLS contexts take their secrets from (``SDS_SOURCE``) points at it."""
    source: dict[str, Any] = dict(ADS_SOURCE)
    if initial_fetch_timeout is not None:
        source["initial_fetch_timeout"] = initial_fetch_timeout
    node_doc: dict[str, Any] = {"id": node, "cluster": cluster}
    if metadata:
        node_doc["metadata"] = dict(metadata)
    clusters = [_grpc_cluster("xds-grpc", xds_address(xds))]
    if sds_socket is not None:
        clusters.append(sds_cluster(sds_socket))
    return {
        "node": node_doc,
        "admin": {
            "address": {"socket_address": {"address": admin_address, "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": source,
            "lds_config": source,
        },
        "static_resources": {"clusters": clusters},
        # Istio's bootstrap raises Envoy's RE2 program size limit (default 100) so that the
        # regexes of VirtualServices are not refused: the same static layer value.
        "layered_runtime": {
            "layers": [{"name": "global config", "static_layer": {RE2_ERROR_LEVEL: "32768"}}]
        },
    }


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """Istio's ``sds-grpc`` cluster: the workload's SDS server on a Unix socket."""
    return _grpc_cluster("sds-grpc", {"pipe": {"path": socket_path}})


def _grpc_cluster(name: str, address: dict[str, Any]) -> dict[str, Any]:
    """A static HTTP/2 cluster of one endpoint, for a gRPC service."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
