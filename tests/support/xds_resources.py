"""Envoy v3 xDS resources for tests that drive a proxy (or grpc's xDS client) from the ADS
server: written as Envoy JSON dicts (readable, like the bootstraps) and parsed into protos."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from tests.support.proxies import HCM_TYPE, ROUTER_FILTER

from pilotfish.xds import protos

__all__ = [
    "ADS_SOURCE",
    "api_listener",
    "eds_cluster",
    "http_listener",
    "load_assignment",
    "parse",
    "route_config",
]

ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


def parse(type_name: str, doc: dict[str, Any]) -> Message:
    """A resource from its JSON form; ``type_name`` like ``envoy.config.cluster.v3.Cluster``."""
    any_doc = protos.load_types_in({"@type": protos.TYPE_PREFIX + type_name, **doc})
    return protos.unpack_any(json_format.ParseDict(any_doc, AnyProto()))


def eds_cluster(name: str, **extra: Any) -> Message:
    return parse(
        "envoy.config.cluster.v3.Cluster",
        {
            "name": name,
            "type": "EDS",
            "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": ADS_SOURCE},
            **extra,
        },
    )


def load_assignment(name: str, *ports: int) -> Message:
    """The endpoints 127.0.0.1:port in one locality, weighted 1 (gRPC rejects a locality
    without the ``locality`` field and ignores one without a weight)."""
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    return parse(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        {
            "cluster_name": name,
            "endpoints": [{"locality": {}, "lb_endpoints": endpoints, "load_balancing_weight": 1}],
        },
    )


def route_config(
    name: str, cluster: str, *, prefix: str = "/", regex: str | None = None
) -> Message:
    """One virtual host for every domain, one route to ``cluster`` (by prefix or safe regex)."""
    match: dict[str, Any] = {"prefix": prefix}
    if regex is not None:
        match = {"safe_regex": {"regex": regex}}
    return parse(
        "envoy.config.route.v3.RouteConfiguration",
        {
            "name": name,
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": match, "route": {"cluster": cluster}}],
                }
            ],
        },
    )


def _hcm(route_name: str) -> dict[str, Any]:
    return {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress",
        "rds": {"config_source": ADS_SOURCE, "route_config_name": route_name},
        "http_filters": [ROUTER_FILTER],
    }


def http_listener(name: str, port: int, route_name: str) -> Message:
    """A listener on 127.0.0.1:port whose HCM takes its routes from RDS over ADS."""
    return parse(
        "envoy.config.listener.v3.Listener",
        {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": _hcm(route_name),
                        }
                    ]
                }
            ],
        },
    )


def api_listener(name: str, route_name: str) -> Message:
    """The listener a proxyless gRPC client asks for (``xds:///name``): an HCM api_listener."""
    return parse(
        "envoy.config.listener.v3.Listener",
        {"name": name, "api_listener": {"api_listener": _hcm(route_name)}},
    )
