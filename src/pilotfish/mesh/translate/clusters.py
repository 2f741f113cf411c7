"""CDS and EDS in Istio's shape: one ``outbound|<port>||<host>`` cluster per service port and
one ``outbound|<port>|<subset>|<host>`` per DestinationRule subset, their endpoint
assignments (``service_name`` = cluster name, endpoints filtered by subset labels), and the
sidecar's ``inbound|<port>||`` cluster to its app.

DestinationRule traffic policies: loadBalancer (simple → lb_policy, consistentHash →
RING_HASH/MAGLEV; the route's hash_policy is made in routes.py), connectionPool →
circuit_breakers / protocol options / keepalive, outlierDetection → outlier_detection, tls
(SIMPLE/MUTUAL with files) → an upstream TLS transport socket, ISTIO_MUTUAL → Istio's mTLS
context (SDS secrets of the proxy's agent).

Auto mTLS (Istio's default): a cluster to an in-mesh service without a DestinationRule tls
setting gets ``transport_socket_matches``, mTLS to endpoints with a sidecar (EDS metadata
``envoy.transport_socket_match: {tlsMode: istio}``) and plaintext to the others; none when
the service's namespace is DISABLE, the service is MESH_EXTERNAL or the cluster is
ORIGINAL_DST. An endpoint loses its ``tlsMode`` when the DestinationRule disables TLS for it,
or (unless the rule says ISTIO_MUTUAL) its workload's PeerAuthentication is DISABLE at its
port. With ``MeshConfig.mtls`` false (no certificates) all of this is off and ISTIO_MUTUAL is
plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import fqdn, host_matches
from pilotfish.mesh.translate.authn import namespace_mtls_mode, workload_mtls
from pilotfish.mesh.translate.common import ADS, JSON, cluster_name, duration
from pilotfish.mesh.translate.mtls import auto_mtls_matches, istio_sni, upstream_istio_mutual
from pilotfish.mesh.translate.services import (
    Endpoint,
    MeshConfig,
    MeshService,
    ServicePortInfo,
)
from pilotfish.mesh.translate.workload import labels_match

__all__ = [
    "Policy",
    "destination_rule_for",
    "effective_policy",
    "inbound_cluster",
    "outbound_clusters",
]

TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
MAX = 4294967295  # Istio's "no limit" for circuit breakers
CONNECT_TIMEOUT = "10s"  # Istio's default connectTimeout (MeshConfig)


@dataclass(frozen=True, slots=True)
class Policy:
    load_balancer: m.LoadBalancerSettings | None = None
    connection_pool: m.ConnectionPoolSettings | None = None
    outlier_detection: m.OutlierDetection | None = None
    tls: m.ClientTLSSettings | None = None


def destination_rule_for(
    config: MeshConfig, host: str, proxy_namespace: str
) -> m.DestinationRule | None:
    """The DestinationRule Istio applies to ``host`` for a proxy in ``proxy_namespace``: one in
    the proxy's namespace first, then the service's own; an exact host before a wildcard."""
    candidates = []
    for dr in config.destination_rules:
        if dr.workload_selector:
            continue  # per-workload rules: not modelled yet
        dr_host = fqdn(dr.host, dr.meta.namespace)
        if dr_host == host:
            rank = 0
        elif host_matches(dr_host, host):
            rank = 1
        else:
            continue
        ns_rank = 0 if dr.meta.namespace == proxy_namespace else 1
        candidates.append(((ns_rank, rank, dr.meta.namespace, dr.meta.name), dr))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[0])[1]


def _apply(base: Policy, tp: m.TrafficPolicy | None, port: int) -> Policy:
    if tp is None:
        return base
    lb = tp.load_balancer or base.load_balancer
    cp = tp.connection_pool or base.connection_pool
    od = tp.outlier_detection or base.outlier_detection
    tls = tp.tls or base.tls
    for pl in tp.port_level_settings:
        if pl.port == port:
            lb = pl.load_balancer or lb
            cp = pl.connection_pool or cp
            od = pl.outlier_detection or od
            tls = pl.tls or tls
    return Policy(lb, cp, od, tls)


def effective_policy(dr: m.DestinationRule | None, subset: m.Subset | None, port: int) -> Policy:
    """The rule's policy at ``port``, overridden section by section by the subset's (Istio's
    MergeTrafficPolicies)."""
    policy = Policy()
    if dr is None:
        return policy
    policy = _apply(policy, dr.traffic_policy, port)
    if subset is not None:
        policy = _apply(policy, subset.traffic_policy, port)
    return policy


_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "CLUSTER_PROVIDED",
}


def _lb(cluster: JSON, lb: m.LoadBalancerSettings | None) -> None:
    ch = lb.consistent_hash if lb else None
    if ch is not None:
        if ch.maglev_table_size is not None:
            cluster["lb_policy"] = "MAGLEV"
            cluster["maglev_lb_config"] = {"table_size": ch.maglev_table_size}
        else:
            cluster["lb_policy"] = "RING_HASH"
            cluster["ring_hash_lb_config"] = {"minimum_ring_size": ch.minimum_ring_size or 1024}
        return
    simple = (lb.simple if lb else None) or "UNSPECIFIED"
    # Istio's default (UNSPECIFIED) is LEAST_REQUEST.
    cluster["lb_policy"] = _SIMPLE.get(simple, "LEAST_REQUEST")
    if simple == "PASSTHROUGH":
        cluster["type"] = "ORIGINAL_DST"
        cluster.pop("eds_cluster_config", None)
        cluster.pop("load_assignment", None)


def _connection_pool(
    cluster: JSON, cp: m.ConnectionPoolSettings | None, port: ServicePortInfo
) -> None:
    threshold: JSON = {
        "max_connections": MAX,
        "max_pending_requests": MAX,
        "max_requests": MAX,
        "max_retries": MAX,
        "track_remaining": True,
    }
    common_http: JSON = {}
    http2: JSON | None = {} if port.protocol in ("HTTP2", "GRPC", "GRPC-Web") else None
    if cp is not None and cp.tcp is not None:
        tcp = cp.tcp
        if tcp.max_connections is not None:
            threshold["max_connections"] = tcp.max_connections
        if tcp.connect_timeout is not None:
            cluster["connect_timeout"] = duration(tcp.connect_timeout)
        if tcp.max_connection_duration is not None:
            common_http["max_connection_duration"] = duration(tcp.max_connection_duration)
        if tcp.tcp_keepalive is not None:
            ka: JSON = {}
            if tcp.tcp_keepalive.probes is not None:
                ka["keepalive_probes"] = tcp.tcp_keepalive.probes
            if tcp.tcp_keepalive.time is not None:
                ka["keepalive_time"] = int(tcp.tcp_keepalive.time)
            if tcp.tcp_keepalive.interval is not None:
                ka["keepalive_interval"] = int(tcp.tcp_keepalive.interval)
            cluster["upstream_connection_options"] = {"tcp_keepalive": ka}
    if cp is not None and cp.http is not None:
        http = cp.http
        if http.http1_max_pending_requests is not None:
            threshold["max_pending_requests"] = http.http1_max_pending_requests
        if http.http2_max_requests is not None:
            threshold["max_requests"] = http.http2_max_requests
        if http.max_retries is not None:
            threshold["max_retries"] = http.max_retries
        if http.max_requests_per_connection:
            common_http["max_requests_per_connection"] = http.max_requests_per_connection
        if http.idle_timeout is not None:
            common_http["idle_timeout"] = duration(http.idle_timeout)
        if http.h2_upgrade_policy == "UPGRADE" and port.is_http:
            http2 = {}
        if http.max_concurrent_streams is not None and http2 is not None:
            http2["max_concurrent_streams"] = http.max_concurrent_streams
    cluster["circuit_breakers"] = {"thresholds": [threshold]}
    if port.is_http and (common_http or http2 is not None):
        options: JSON = {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        }
        if common_http:
            options["common_http_protocol_options"] = common_http
        if http2 is not None:
            options["explicit_http_config"] = {"http2_protocol_options": http2}
        else:
            options["explicit_http_config"] = {"http_protocol_options": {}}
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options
        }


def _outlier(cluster: JSON, od: m.OutlierDetection | None) -> None:
    if od is None:
        return
    out: JSON = {}
    c5 = od.consecutive_5xx_errors
    if c5 is not None:
        out["consecutive_5xx"] = c5
        out["enforcing_consecutive_5xx"] = 100 if c5 > 0 else 0
    gw = od.consecutive_gateway_errors
    if gw is None and od.consecutive_errors is not None:
        gw = od.consecutive_errors  # the deprecated field counted 502/503/504
    if gw is not None:
        out["consecutive_gateway_failure"] = gw
        out["enforcing_consecutive_gateway_failure"] = 100 if gw > 0 else 0
    if od.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        if od.consecutive_local_origin_failures is not None:
            out["consecutive_local_origin_failure"] = od.consecutive_local_origin_failures
            out["enforcing_consecutive_local_origin_failure"] = 100
    if od.interval is not None:
        out["interval"] = duration(od.interval)
    if od.base_ejection_time is not None:
        out["base_ejection_time"] = duration(od.base_ejection_time)
    if od.max_ejection_percent is not None:
        out["max_ejection_percent"] = od.max_ejection_percent
    out["enforcing_success_rate"] = 0  # Istio never ejects by success rate
    cluster["outlier_detection"] = out
    cluster.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {
        "value": float(od.min_health_percent or 0)
    }


def _tls(cluster: JSON, tls: m.ClientTLSSettings | None, host: str) -> None:
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL"):
        return  # DISABLE; ISTIO_MUTUAL needs the mesh's certificates (none locally)
    common: JSON = {}
    if tls.ca_certificates and not tls.insecure_skip_verify:
        validation: JSON = {"trusted_ca": {"filename": tls.ca_certificates}}
        if tls.subject_alt_names:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": san}} for san in tls.subject_alt_names
            ]
        common["validation_context"] = validation
    if tls.mode == "MUTUAL" and tls.client_certificate and tls.private_key:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.client_certificate},
                "private_key": {"filename": tls.private_key},
            }
        ]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS_CONTEXT,
            "common_tls_context": common,
            "sni": tls.sni or host,
        },
    }


def _lb_endpoint(ep: Endpoint, port: int, mtls: bool) -> JSON:
    out: JSON = {
        "endpoint": {
            "address": {
                "socket_address": {"address": ep.address, "port_value": ep.ports.get(port, port)}
            }
        },
        "health_status": "HEALTHY",
        "load_balancing_weight": ep.weight,
    }
    metadata: JSON = {}
    if mtls:
        metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
    if ep.workload:
        metadata["istio"] = {"workload": ep.workload}
    if metadata:
        out["metadata"] = {"filter_metadata": metadata}
    return out


def _assignment(name: str, endpoints: Sequence[Endpoint], port: int, mtls: Sequence[bool]) -> JSON:
    cla: JSON = {"cluster_name": name}
    if endpoints:
        cla["endpoints"] = [
            {
                "locality": {},
                "lb_endpoints": [
                    _lb_endpoint(ep, port, ep_mtls)
                    for ep, ep_mtls in zip(endpoints, mtls, strict=True)
                ],
                "load_balancing_weight": sum(ep.weight for ep in endpoints),
            }
        ]
    return cla


def _dr_tls_mode(dr: m.DestinationRule | None, ep: Endpoint, port: int) -> str | None:
    """The tls mode a DestinationRule sets for one endpoint: the first subset selecting it
    that sets one at ``port``, else the rule's own (Istio's mtlsChecker)."""
    if dr is None:
        return None
    for subset in dr.subsets:
        if subset.traffic_policy is not None and labels_match(subset.labels, ep.labels):
            tls = _apply(Policy(), subset.traffic_policy, port).tls
            if tls is not None:
                return tls.mode
    tls = _apply(Policy(), dr.traffic_policy, port).tls
    return None if tls is None else tls.mode


def _endpoint_mtls(
    config: MeshConfig, dr: m.DestinationRule | None, ep: Endpoint, port: ServicePortInfo
) -> bool:
    """Whether EDS marks the endpoint ``tlsMode: istio`` (mTLS under auto mTLS)."""
    if not config.mtls:
        return False
    mode = _dr_tls_mode(dr, ep, port.number)
    if mode == "DISABLE":
        return False
    if not ep.sidecar:
        return False  # no tlsMode label to keep
    if mode == "ISTIO_MUTUAL":
        return True  # the rule wins over the workload's PeerAuthentication
    # PeerAuthentication port-level modes name the workload's port: the target port.
    target = port.target_port if isinstance(port.target_port, int) else port.number
    return workload_mtls(config, ep.namespace, ep.labels).mode_at(target) != "DISABLE"


def _is_http2(cluster: JSON) -> bool:
    options = cluster.get("typed_extension_protocol_options", {})
    for value in options.values():
        if "http2_protocol_options" in value.get("explicit_http_config", {}):
            return True
    return False


def _mesh_tls(
    config: MeshConfig,
    cluster: JSON,
    svc: MeshService,
    port: ServicePortInfo,
    subset: m.Subset | None,
    tls: m.ClientTLSSettings | None,
) -> None:
    """ISTIO_MUTUAL from a DestinationRule, or auto mTLS when the rule sets no tls."""
    if not config.mtls:
        return
    sni = istio_sni(port.number, subset.name if subset else None, svc.hostname)
    if tls is not None:
        if tls.mode == "ISTIO_MUTUAL":
            cluster["transport_socket"] = upstream_istio_mutual(
                tls.subject_alt_names or svc.service_accounts,
                tls.sni or sni,
                http2=_is_http2(cluster),
            )
        return
    if (
        not config.enable_auto_mtls
        or svc.mesh_external
        or cluster["type"] == "ORIGINAL_DST"
        or namespace_mtls_mode(config, svc.namespace) == "DISABLE"
    ):
        return
    socket = upstream_istio_mutual(svc.service_accounts, sni, http2=_is_http2(cluster))
    cluster["transport_socket_matches"] = auto_mtls_matches(socket)


def _cluster(
    config: MeshConfig,
    svc: MeshService,
    port: ServicePortInfo,
    subset: m.Subset | None,
    dr: m.DestinationRule | None,
) -> tuple[JSON, JSON | None]:
    name = cluster_name("outbound", port.number, subset.name if subset else None, svc.hostname)
    endpoints = [
        ep for ep in svc.endpoints if subset is None or labels_match(subset.labels, ep.labels)
    ]
    mtls = [_endpoint_mtls(config, dr, ep, port) for ep in endpoints]
    cluster: JSON = {"name": name, "connect_timeout": CONNECT_TIMEOUT}
    assignment: JSON | None = None
    if svc.resolution == "EDS":
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": name}
        assignment = _assignment(name, endpoints, port.number, mtls)
    elif svc.resolution.startswith("DNS"):
        cluster["type"] = "STRICT_DNS" if svc.resolution == "DNS" else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["load_assignment"] = _assignment(name, endpoints, port.number, mtls)
    else:
        cluster["type"] = "ORIGINAL_DST"
    policy = effective_policy(dr, subset, port.number)
    _lb(cluster, policy.load_balancer)
    if cluster["type"] == "ORIGINAL_DST":
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
        assignment = None
    _connection_pool(cluster, policy.connection_pool, port)
    _outlier(cluster, policy.outlier_detection)
    _tls(cluster, policy.tls, svc.hostname)
    _mesh_tls(config, cluster, svc, port, subset, policy.tls)
    istio: JSON = {
        "services": [{"host": svc.hostname, "name": svc.short_name, "namespace": svc.namespace}],
        "default_original_port": port.number,
    }
    if subset is not None:
        istio["subset"] = subset.name
    if dr is not None:
        istio["config"] = (
            f"/apis/networking.istio.io/v1/namespaces/{dr.meta.namespace}"
            f"/destination-rule/{dr.meta.name}"
        )
    cluster["metadata"] = {"filter_metadata": {"istio": istio}}
    return cluster, assignment


def outbound_clusters(
    config: MeshConfig, services: Sequence[MeshService], proxy_namespace: str
) -> tuple[list[JSON], list[JSON]]:
    """(clusters, endpoint assignments) for every port of every service, and every subset."""
    clusters: list[JSON] = []
    assignments: list[JSON] = []
    for svc in services:
        dr = destination_rule_for(config, svc.hostname, proxy_namespace)
        for port in svc.ports:
            for subset in (None, *(dr.subsets if dr else ())):
                cluster, cla = _cluster(config, svc, port, subset, dr)
                clusters.append(cluster)
                if cla is not None:
                    assignments.append(cla)
    return clusters, assignments


def inbound_cluster(
    port: int, app_address: str, app_port: int, service: tuple[str, str] | None = None
) -> JSON:
    """``inbound|9080||``: the app itself, as a STATIC cluster. ``service`` (hostname,
    namespace): the service it serves, in the cluster's ``istio.services`` metadata as istiod
    puts it there (Istio's stats filter reads ``destination_service`` from it)."""
    name = cluster_name("inbound", port, None, "")
    istio: JSON = {"default_original_port": port}
    if service is not None:
        host, namespace = service
        istio["services"] = [{"host": host, "name": host.split(".", 1)[0], "namespace": namespace}]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "circuit_breakers": unlimited_circuit_breakers(track_remaining=True),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": app_address,
                                        "port_value": app_port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "metadata": {"filter_metadata": {"istio": istio}},
    }


def unlimited_circuit_breakers(*, track_remaining: bool = False) -> JSON:
    """Istio's thresholds for clusters no DestinationRule limits: everything at the maximum."""
    threshold: JSON = {
        "max_connections": MAX,
        "max_pending_requests": MAX,
        "max_requests": MAX,
        "max_retries": MAX,
    }
    if track_remaining:
        threshold["track_remaining"] = True
    return {"thresholds": [threshold]}


def static_blackhole() -> JSON:
    """Istio's BlackHoleCluster: a STATIC cluster with no endpoints."""
    return {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT}
