"""Istio config → xDS resources in Istio's shape, per proxy (pure functions, no sockets).

What a runner calls::

    config = MeshConfig.from_store(store)          # a snapshot of the ConfigStore
    sidecar_resources(config, workloads, workload) # → ProxyResources (Envoy v3 protos)
    gateway_resources(config, workloads, gateway)  # → ProxyResources
    mesh_resources(config, workloads, gateways)    # → {node id: ProxyResources}
    resources.by_type_url()                        # → {type URL: [protos]} for set_resources

``sidecar_config`` / ``gateway_config`` return the same as Envoy JSON (``ProxyConfig``, with
``cluster(name)``, ``listener(name)``, ``route(name)``, ``endpoint(cluster)`` look-ups).

Layout: ``workload.py`` (Workload, GatewayProxy), ``services.py`` (MeshConfig snapshot; the
service registry: Services and ServiceEntries with endpoints from workloads and
WorkloadEntries), ``clusters.py`` (CDS/EDS, DestinationRule policies), ``routes.py``
(VirtualService HTTP routes, domains, defaults), ``proxy.py`` (listeners, route configs,
the per-proxy assembly), ``capture.py`` (iptables capture mode: virtualOutbound/virtualInbound),
``vips.py`` (service VIPs and pod hosts entries), ``common.py`` (names, durations, JSON → proto),
``authn.py`` (PeerAuthentication composition), ``mtls.py`` (Istio's TLS contexts, SDS secrets),
``inbound.py`` (an inbound port's filter chains per mTLS mode).

Istio → Envoy, as istiod does it (telemetry filters and HBONE left out; mTLS: see
docs/mesh-security.md):

========================================  ==================================================
Service port / ServiceEntry host:port     cluster ``outbound|<port>||<host>`` (EDS,
                                          ``service_name`` = cluster name; DNS resolution →
                                          STRICT_DNS/LOGICAL_DNS; NONE → ORIGINAL_DST)
DestinationRule subset                    cluster ``outbound|<port>|<subset>|<host>``,
                                          endpoints filtered by the subset's labels
trafficPolicy (top, port-level, subset)   lb_policy (default LEAST_REQUEST as Istio),
                                          RING_HASH/MAGLEV + route hash_policy,
                                          circuit_breakers, HttpProtocolOptions, keepalive,
                                          outlier_detection, tls SIMPLE/MUTUAL
workload (the sidecar)                    listener ``127.0.0.1_<outbound_port>`` (HTTP proxy,
                                          RDS ``http_proxy``), listener
                                          ``127.0.0.1_<inbound_port>`` → ``inbound|<port>||``
                                          (STATIC, the app); ``tcp_outbound`` → tcp_proxy
HTTP service port                         virtual host ``<host>:<port>`` with Istio's domains
VirtualService http                       routes in order, one per match; no rule → route
                                          ``default`` to ``outbound|<port>||<host>``
Gateway server (HTTP)                     listener ``127.0.0.1_<local port>``, RDS
                                          ``http.<server port>``, vhost ``<host>:<port>``
Sidecar egress hosts                      which services a sidecar sees
PeerAuthentication (workload's mode)      inbound chains: mTLS (``tls`` + Istio ALPNs,
                                          DownstreamTlsContext) and/or ``raw_buffer``
auto mTLS / DestinationRule ISTIO_MUTUAL  ``transport_socket_matches`` tlsMode-istio /
                                          tlsMode-disabled, or ``transport_socket``; EDS
                                          ``envoy.transport_socket_match: {tlsMode: istio}``
========================================  ==================================================
"""

from pilotfish.mesh.translate.proxy import (
    HTTP_PROXY_ROUTE,
    ProxyConfig,
    ProxyResources,
    gateway_config,
    gateway_resources,
    mesh_resources,
    sidecar_config,
    sidecar_resources,
)
from pilotfish.mesh.translate.services import MeshConfig, MeshService, build_services
from pilotfish.mesh.translate.workload import (
    GatewayProxy,
    Workload,
    labels_match,
    workloads_from_deployments,
)

__all__ = [
    "HTTP_PROXY_ROUTE",
    "GatewayProxy",
    "MeshConfig",
    "MeshService",
    "ProxyConfig",
    "ProxyResources",
    "Workload",
    "build_services",
    "gateway_config",
    "gateway_resources",
    "labels_match",
    "mesh_resources",
    "sidecar_config",
    "sidecar_resources",
    "workloads_from_deployments",
]
