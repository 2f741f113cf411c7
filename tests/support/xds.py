"""Builders for xDS tests: Envoy v3 resources as protos, and bootstraps whose
``dynamic_resources`` point at an ADS server (``pilotfish.mesh.xds_server``).

Resources are written as Envoy's JSON and parsed through the protos, so that a test reads
like the config a user would write."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from pilotfish.mesh.bootstrap import proxy_bootstrap
from pilotfish.xds import protos
from pilotfish.xds import resource_types as rt

__all__ = [
    "ads_bootstrap",
    "cla",
    "eds_cluster",
    "http_listener",
    "parse",
    "route_config",
    "tcp_listener",
]

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


def parse(rtype: rt.ResourceType, doc: dict[str, Any]) -> Message:
    """A resource from Envoy's JSON (``@type`` of nested Any resolved as Envoy does)."""
    return json_format.ParseDict(protos.load_types_in(doc), rtype.message())


def eds_cluster(name: str, service_name: str = "", **extra: Any) -> Message:
    doc: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": ADS_SOURCE},
        **extra,
    }
    if service_name:
        doc["eds_cluster_config"]["service_name"] = service_name
    return parse(rt.CLUSTER, doc)


def cla(service: str, ports: list[int], weights: list[int] | None = None) -> Message:
    """A ClusterLoadAssignment with one locality of 127.0.0.1 endpoints."""
    endpoints = []
    for i, port in enumerate(ports):
        ep: dict[str, Any] = {
            "endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
            }
        }
        if weights is not None:
            ep["load_balancing_weight"] = weights[i]
        endpoints.append(ep)
    return parse(rt.ENDPOINT, {"cluster_name": service, "endpoints": [{"lb_endpoints": endpoints}]})


def http_listener(name: str, port: int, route_name: str, stat_prefix: str = "") -> Message:
    """A listener on 127.0.0.1:port whose HTTP connection manager takes ``route_name`` by RDS."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix or name,
        "rds": {"route_config_name": route_name, "config_source": ADS_SOURCE},
        "http_filters": [ROUTER],
    }
    return parse(
        rt.LISTENER,
        {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        },
    )


def tcp_listener(name: str, port: int, cluster: str) -> Message:
    return parse(
        rt.LISTENER,
        {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                "stat_prefix": name,
                                "cluster": cluster,
                            },
                        }
                    ]
                }
            ],
        },
    )


def route_config(
    name: str, routes: list[dict[str, Any]], domains: list[str] | None = None
) -> Message:
    """One virtual host (``domains``, default ``*``) with the given routes (Envoy JSON)."""
    return parse(
        rt.ROUTE,
        {
            "name": name,
            "virtual_hosts": [{"name": "vh", "domains": domains or ["*"], "routes": routes}],
        },
    )


def ads_bootstrap(
    server_address: str,
    *,
    delta: bool = False,
    node_id: str = "sidecar~127.0.0.1~test.default~default.svc.cluster.local",
    initial_fetch_timeout: str | None = None,
) -> dict[str, Any]:
    """A bootstrap with only an admin, the ``xds-grpc`` cluster and ADS for LDS and CDS, as
    Istio's; ``server_address`` is ``host:port`` or ``unix:/path``."""
    return proxy_bootstrap(
        server_address,
        node_id,
        cluster="test.default",
        delta=delta,
        initial_fetch_timeout=initial_fetch_timeout,
    )
