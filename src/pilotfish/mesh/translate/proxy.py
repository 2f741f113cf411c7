"""Each proxy's xDS resources: a workload's sidecar or the ingress gateway.

Sidecar (no iptables, no root: the app uses its sidecar as an HTTP proxy):

* ``127.0.0.1_<outbound_port>``: the HTTP proxy the app reaches services through
  (``HTTP_PROXY``); its HCM takes route config ``http_proxy`` (Istio's RDSHttpProxy) holding
  the outbound virtual hosts of every HTTP service port, absolute-form URLs allowed.
* ``127.0.0.1_<inbound_port>``: the "pod address" other sidecars reach; an inline route
  config ``inbound|<port>||`` sends everything to cluster ``inbound|<port>||`` (the app).
  A TCP service port gets a tcp_proxy instead. Its filter chains follow the workload's
  PeerAuthentication mode at that port (``inbound.py``: mTLS and/or plaintext chains behind
  a tls_inspector), unless the mesh has no certificates (``MeshConfig.mtls``): one chain.
* ``127.0.0.1_<local port>`` per ``Workload.tcp_outbound`` entry: tcp_proxy to a TCP service.

Gateway: ``127.0.0.1_<local port>`` per Gateway server port, RDS ``http.<server port>``,
a virtual host per Gateway host from the VirtualServices bound to that Gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import fqdn, host_matches
from pilotfish.mesh.translate.authn import workload_mtls
from pilotfish.mesh.translate.clusters import inbound_cluster, outbound_clusters, static_blackhole
from pilotfish.mesh.translate.common import ADS, JSON, cluster_name, to_proto
from pilotfish.mesh.translate.inbound import InboundChains, inbound_filter_chains
from pilotfish.mesh.translate.routes import (
    RouteContext,
    default_route,
    is_bound,
    select_virtual_service,
    sidecar_domains,
    translate_http_routes,
)
from pilotfish.mesh.translate.services import (
    MeshConfig,
    MeshService,
    ServicePortInfo,
    build_services,
)
from pilotfish.mesh.translate.telemetry import http_filters, tcp_stats
from pilotfish.mesh.translate.workload import GatewayProxy, Workload, labels_match
from pilotfish.xds import resource_types as rt

__all__ = [
    "HTTP_PROXY_ROUTE",
    "ProxyConfig",
    "ProxyResources",
    "gateway_config",
    "gateway_resources",
    "mesh_resources",
    "sidecar_config",
    "sidecar_resources",
    "sidecar_scope",
    "visible_services",
]

HTTP_PROXY_ROUTE = "http_proxy"
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

# Istio's outbound HTTP filters (less grpc_stats and alpn), with its telemetry: metadata
# exchange, fault, cors, stats, router.
HTTP_FILTERS: list[JSON] = http_filters("OUTBOUND", telemetry=True)


@dataclass(frozen=True, slots=True)
class ProxyResources:
    """One proxy's resources as Envoy v3 protos, ready for ``XdsServer.set_resources``."""

    clusters: list[Message] = field(default_factory=list)
    endpoints: list[Message] = field(default_factory=list)
    listeners: list[Message] = field(default_factory=list)
    routes: list[Message] = field(default_factory=list)

    def by_type_url(self) -> dict[str, list[Message]]:
        return {
            rt.CLUSTER.type_url: self.clusters,
            rt.ENDPOINT.type_url: self.endpoints,
            rt.LISTENER.type_url: self.listeners,
            rt.ROUTE.type_url: self.routes,
        }


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """One proxy's resources as Envoy JSON (what ``to_protos`` parses)."""

    node_id: str
    clusters: list[JSON] = field(default_factory=list)
    endpoints: list[JSON] = field(default_factory=list)
    listeners: list[JSON] = field(default_factory=list)
    routes: list[JSON] = field(default_factory=list)

    def to_protos(self) -> ProxyResources:
        return ProxyResources(
            [to_proto(rt.CLUSTER, c) for c in self.clusters],
            [to_proto(rt.ENDPOINT, e) for e in self.endpoints],
            [to_proto(rt.LISTENER, x) for x in self.listeners],
            [to_proto(rt.ROUTE, r) for r in self.routes],
        )

    def cluster(self, name: str) -> JSON:
        return _named(self.clusters, name)

    def listener(self, name: str) -> JSON:
        return _named(self.listeners, name)

    def route(self, name: str) -> JSON:
        return _named(self.routes, name)

    def endpoint(self, cluster: str) -> JSON:
        return next(e for e in self.endpoints if e["cluster_name"] == cluster)


def _named(items: list[JSON], name: str) -> JSON:
    for item in items:
        if item["name"] == name:
            return item
    raise KeyError(f"{name!r} not among {[i['name'] for i in items]}")


# --- listeners -------------------------------------------------------------------------------


def _address(host: str, port: int) -> JSON:
    return {"socket_address": {"address": host, "port_value": port}}


def _listener(name: str, host: str, port: int, filters: list[JSON], direction: str) -> JSON:
    return {
        "name": name,
        "address": _address(host, port),
        "filter_chains": [{"filters": filters}],
        "traffic_direction": direction,
    }


def _hcm(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: JSON | None = None,
    filters: list[JSON] | None = None,
    **extra: object,
) -> JSON:
    config: JSON = {
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "http_filters": filters or HTTP_FILTERS,
        "use_remote_address": False,
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        **extra,
    }
    if rds is not None:
        config["rds"] = {"config_source": ADS, "route_config_name": rds}
    else:
        config["route_config"] = route_config
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _tcp_proxy(
    stat_prefix: str, cluster: str | None = None, weighted: list[JSON] | None = None
) -> JSON:
    config: JSON = {"@type": TCP_PROXY, "stat_prefix": stat_prefix}
    if weighted:
        config["weighted_clusters"] = {"clusters": weighted}
    else:
        config["cluster"] = cluster
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


# --- route configs ---------------------------------------------------------------------------


def _service_vhost(ctx: RouteContext, svc: MeshService, port: ServicePortInfo) -> JSON:
    host_port = f"{svc.hostname}:{port.number}"
    vs = select_virtual_service(ctx, svc.hostname)
    routes = translate_http_routes(ctx, vs, port.number, host_port) if vs is not None else []
    if vs is None:
        routes = [default_route(ctx, svc.hostname, port.number)]
    return {
        "name": host_port,
        "domains": sidecar_domains(svc, port.number, ctx.namespace),
        "routes": routes,
        "include_request_attempt_count": True,
    }


def _dedup_domains(vhosts: list[JSON]) -> list[JSON]:
    """A domain may appear once per route config (Envoy refuses duplicates): the first virtual
    host keeps it, as Istio does when it puts every port into one route config."""
    seen: set[str] = set()
    out = []
    for vh in vhosts:
        domains = [d for d in vh["domains"] if d not in seen]
        seen.update(domains)
        if domains:
            out.append({**vh, "domains": domains})
    return out


def _http_proxy_route_config(ctx: RouteContext, services: Sequence[MeshService]) -> JSON:
    vhosts = [
        _service_vhost(ctx, svc, port) for svc in services for port in svc.ports if port.is_http
    ]
    vhosts = _dedup_domains(vhosts)
    # REGISTRY_ONLY: an HTTP proxy has no original destination to pass unknown hosts through.
    vhosts.append(
        {
            "name": "block_all",
            "domains": ["*"],
            "routes": [
                {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}
            ],
            "include_request_attempt_count": True,
        }
    )
    return {"name": HTTP_PROXY_ROUTE, "virtual_hosts": vhosts, "validate_clusters": False}


def _tcp_destination(
    ctx: RouteContext, svc: MeshService, port: int
) -> tuple[str | None, list[JSON]]:
    vs = select_virtual_service(ctx, svc.hostname)
    default = cluster_name("outbound", port, None, svc.hostname)
    if vs is None:
        return default, []
    for route in vs.tcp:
        if route.match and not any(
            (mt.port is None or mt.port == port)
            and (not mt.source_labels or labels_match(mt.source_labels, ctx.labels))
            for mt in route.match
        ):
            continue
        dests = [
            (
                cluster_name(
                    "outbound",
                    d.destination.port or port,
                    d.destination.subset,
                    fqdn(d.destination.host, vs.meta.namespace),
                ),
                d.weight,
            )
            for d in route.route
        ]
        if len(dests) == 1:
            return dests[0][0], []
        return None, [{"name": n, "weight": w or 0} for n, w in dests if w]
    return default, []


# --- sidecar ---------------------------------------------------------------------------------


def sidecar_scope(config: MeshConfig, workload: Workload) -> m.Sidecar | None:
    """The Sidecar resource that applies to ``workload``: one in its namespace whose
    workloadSelector matches it, else the namespace's Sidecar without selector (Istio's
    order; the root namespace default is not modelled)."""
    own = [sc for sc in config.sidecars if sc.meta.namespace == workload.namespace]
    for sc in own:
        if sc.workload_selector and labels_match(sc.workload_selector, workload.labels):
            return sc
    return next((sc for sc in own if not sc.workload_selector), None)


def _egress_allows(hosts: Sequence[str], svc: MeshService, proxy_namespace: str) -> bool:
    """Istio's egress host syntax: ``ns/dnsName`` with ``.`` (the proxy's namespace), ``*``
    (any namespace) or ``~`` (none) as the namespace, ``*`` or ``*.suffix`` as the name."""
    for entry in hosts:
        ns, _, name = entry.rpartition("/")
        if ns == "~":
            continue
        if ns == ".":
            ns = proxy_namespace
        if ns not in ("*", svc.namespace):
            continue
        if host_matches(fqdn(name, svc.namespace), svc.hostname):
            return True
    return False


def visible_services(
    config: MeshConfig, services: Sequence[MeshService], workload: Workload
) -> list[MeshService]:
    """The services a sidecar knows: all, or those its Sidecar resource's egress hosts name
    (a port-specific egress listener narrows nothing here: the HTTP proxy is one listener)."""
    scope = sidecar_scope(config, workload)
    if scope is None or not scope.egress:
        return list(services)
    hosts = [h for egress in scope.egress for h in egress.hosts]
    return [s for s in services if _egress_allows(hosts, s, workload.namespace)]


def _inbound_port(
    services: Sequence[MeshService], config: MeshConfig, w: Workload
) -> tuple[int, MeshService | None, ServicePortInfo | None]:
    """The port of Istio's ``inbound|<port>||`` name: the target port of the first service
    port that selects the workload (the app's port if none)."""
    for svc_obj in config.services:
        if svc_obj.meta.namespace != w.namespace or not svc_obj.selector:
            continue
        if not labels_match(svc_obj.selector, w.labels):
            continue
        svc = next(
            (s for s in services if s.hostname == fqdn(svc_obj.meta.name, w.namespace)), None
        )
        if svc is None or not svc.ports:
            continue
        p = svc.ports[0]
        target = p.target_port if isinstance(p.target_port, int) else p.number
        return target, svc, p
    return w.app_port, None, None


def inbound_filters(
    stat_address: str,
    port: int,
    svc: MeshService | None,
    svc_port: ServicePortInfo | None,
    *,
    telemetry: bool = True,
) -> list[JSON]:
    """The network filters that hand a connection for port ``port`` to the app (cluster
    ``inbound|<port>||``): an HTTP connection manager, or a tcp_proxy for a TCP service port."""
    inbound_name = cluster_name("inbound", port, None, "")
    operation = f"{svc.hostname}:{svc_port.number}" if svc and svc_port else f":{port}"
    if svc_port is not None and not svc_port.is_http:
        filters = [*tcp_stats("INBOUND", telemetry), _tcp_proxy(inbound_name, inbound_name)]
    else:
        route_config = {
            "name": inbound_name,
            "virtual_hosts": [
                {
                    "name": f"inbound|http|{port}",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": "default",
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": inbound_name,
                                "timeout": "0s",
                                "max_stream_duration": {
                                    "max_stream_duration": "0s",
                                    "grpc_timeout_header_max": "0s",
                                },
                            },
                            "decorator": {"operation": f"{operation}/*"},
                        }
                    ],
                }
            ],
            "validate_clusters": False,
        }
        filters = [
            _hcm(
                f"inbound_{stat_address}_{port}",
                route_config=route_config,
                filters=http_filters("INBOUND", telemetry=telemetry),
                forward_client_cert_details="APPEND_FORWARD",
                set_current_client_cert_details={"subject": True, "dns": True, "uri": True},
            )
        ]
    return filters


def inbound_port_chains(
    config: MeshConfig,
    workload: Workload,
    stat_address: str,
    port: int,
    svc: MeshService | None,
    svc_port: ServicePortInfo | None,
    *,
    destination_port: int | None = None,
) -> InboundChains:
    """The filter chains (and the listener filters they need) of one inbound port under the
    workload's PeerAuthentication mode at that port. Loopback mode's inbound listener takes
    them as they are; capture mode's virtualInbound passes ``destination_port``."""
    filters = inbound_filters(stat_address, port, svc, svc_port, telemetry=config.istio_telemetry)
    name = f"{stat_address}_{port}"
    if not config.mtls:
        chain: JSON = {"name": name, "filters": filters}
        if destination_port is not None:
            chain["filter_chain_match"] = {"destination_port": destination_port}
        return InboundChains([chain], [])
    mode = workload_mtls(config, workload.namespace, workload.labels).mode_at(port)
    return inbound_filter_chains(
        mode,
        filters,
        http=svc_port is None or svc_port.is_http,
        name=name,
        destination_port=destination_port,
    )


def sidecar_config(
    config: MeshConfig, workloads: Sequence[Workload], workload: Workload
) -> ProxyConfig:
    """The resources of ``workload``'s sidecar, as Envoy JSON."""
    all_services = build_services(config, workloads)
    port, svc, svc_port = _inbound_port(all_services, config, workload)
    services = visible_services(config, all_services, workload)
    ctx = RouteContext(
        config, {s.hostname: s for s in services}, workload.namespace, workload.labels
    )
    clusters, endpoints = outbound_clusters(config, services, workload.namespace)
    clusters = [
        *clusters,
        inbound_cluster(
            port,
            workload.address,
            workload.app_port,
            (svc.hostname, svc.namespace) if svc is not None else None,
        ),
        static_blackhole(),
    ]

    listeners: list[JSON] = []
    routes: list[JSON] = []
    if workload.outbound_port:
        proxy_name = f"{workload.address}_{workload.outbound_port}"
        listeners.append(
            _listener(
                proxy_name,
                workload.address,
                workload.outbound_port,
                [
                    _hcm(
                        f"outbound_{proxy_name}",
                        rds=HTTP_PROXY_ROUTE,
                        filters=http_filters("OUTBOUND", telemetry=config.istio_telemetry),
                        http_protocol_options={"allow_absolute_url": True},
                    )
                ],
                "OUTBOUND",
            )
        )
        routes.append(_http_proxy_route_config(ctx, services))
    if workload.inbound_port:
        in_name = f"{workload.address}_{workload.inbound_port}"
        inbound = _listener(in_name, workload.address, workload.inbound_port, [], "INBOUND")
        chains = inbound_port_chains(config, workload, workload.address, port, svc, svc_port)
        inbound["filter_chains"] = chains.filter_chains
        if chains.listener_filters:
            inbound["listener_filters"] = chains.listener_filters
        listeners.append(inbound)
    by_host = {s.hostname: s for s in services}
    for key, local_port in sorted(workload.tcp_outbound.items()):
        host, _, port_text = key.rpartition(":")
        tcp_svc = by_host.get(host)
        if tcp_svc is None:
            continue
        cluster, weighted = _tcp_destination(ctx, tcp_svc, int(port_text))
        name = f"{workload.address}_{local_port}"
        listeners.append(
            _listener(
                name,
                workload.address,
                local_port,
                [
                    *tcp_stats("OUTBOUND", config.istio_telemetry),
                    _tcp_proxy(f"outbound|{port_text}||{host}", cluster, weighted),
                ],
                "OUTBOUND",
            )
        )
    return ProxyConfig(workload.node_id(), clusters, endpoints, listeners, routes)


def sidecar_resources(
    config: MeshConfig, workloads: Sequence[Workload], workload: Workload
) -> ProxyResources:
    """The resources of ``workload``'s sidecar, as protos."""
    return sidecar_config(config, workloads, workload).to_protos()


# --- gateway ---------------------------------------------------------------------------------


def _selected_gateways(config: MeshConfig, gw: GatewayProxy) -> list[m.Gateway]:
    return [g for g in config.gateways if g.selector and labels_match(g.selector, gw.labels)]


def _gateway_vhosts(ctx: RouteContext, servers: list[m.Server], port: int) -> list[JSON]:
    hosts = [h.split("/", 1)[-1] for s in servers for h in s.hosts]
    by_name: dict[str, JSON] = {}
    for vs in ctx.config.virtual_services:
        # ctx.gateway names one Gateway; the caller loops over the Gateways of the port.
        if not vs.http:
            continue
        if not is_bound(vs, ctx.gateway):
            continue
        for h in vs.hosts:
            vh = fqdn(h, vs.meta.namespace) if h != "*" else h
            for sh in hosts:
                if host_matches(sh, vh):
                    name = vh
                elif host_matches(vh, sh):
                    name = sh
                else:
                    continue
                vname = f"{name}:{port}"
                if vname not in by_name:
                    domains = ["*"] if name == "*" else [name, f"{name}:*"]
                    by_name[vname] = {
                        "name": vname,
                        "domains": domains,
                        "routes": [],
                        "include_request_attempt_count": True,
                    }
                by_name[vname]["routes"] += translate_http_routes(ctx, vs, port, vname)
                break
    return list(by_name.values())


def gateway_config(
    config: MeshConfig, workloads: Sequence[Workload], gateway: GatewayProxy
) -> ProxyConfig:
    """The resources of the ingress gateway, as Envoy JSON. Gateway server ports missing from
    ``gateway.ports`` are skipped; only HTTP servers are translated (HTTPS needs
    credentials, TCP/TLS servers are not done yet)."""
    services = build_services(config, workloads)
    by_host = {s.hostname: s for s in services}
    clusters, endpoints = outbound_clusters(config, services, gateway.namespace)
    clusters.append(static_blackhole())
    servers_by_port: dict[int, list[tuple[m.Gateway, m.Server]]] = {}
    for g in _selected_gateways(config, gateway):
        for s in g.servers:
            protocol = (s.port.protocol or "HTTP").upper()
            if protocol in ("HTTP", "HTTP2", "GRPC") and s.port.number in gateway.ports:
                servers_by_port.setdefault(s.port.number, []).append((g, s))
    listeners: list[JSON] = []
    routes: list[JSON] = []
    for port in sorted(servers_by_port):
        vhosts: list[JSON] = []
        for g, s in servers_by_port[port]:
            ctx = RouteContext(
                config,
                by_host,
                gateway.namespace,
                gateway.labels,
                f"{g.meta.namespace}/{g.meta.name}",
            )
            vhosts += _gateway_vhosts(ctx, [s], port)
        vhosts = _dedup_domains(vhosts)
        if not vhosts:
            vhosts = [
                {
                    "name": f"blackhole:{port}",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": "default",
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 404},
                        }
                    ],
                }
            ]
        route_name = f"http.{port}"
        routes.append({"name": route_name, "virtual_hosts": vhosts, "validate_clusters": False})
        local = gateway.ports[port]
        name = f"{gateway.address}_{local}"
        listeners.append(
            _listener(
                name,
                gateway.address,
                local,
                [
                    _hcm(
                        f"outbound_{gateway.address}_{port}",
                        rds=route_name,
                        filters=http_filters(
                            "OUTBOUND", telemetry=config.istio_telemetry, gateway=True
                        ),
                        use_remote_address=True,
                    )
                ],
                "OUTBOUND",
            )
        )
    return ProxyConfig(gateway.node_id(), clusters, endpoints, listeners, routes)


def mesh_resources(
    config: MeshConfig,
    workloads: Sequence[Workload],
    gateways: Sequence[GatewayProxy] = (),
) -> dict[str, ProxyResources]:
    """Every proxy's resources by node id (``Workload.node_id()``, ``GatewayProxy.node_id()``):
    one sidecar per workload, one per gateway."""
    out = {w.node_id(): sidecar_resources(config, workloads, w) for w in workloads}
    out.update({g.node_id(): gateway_resources(config, workloads, g) for g in gateways})
    return out


def gateway_resources(
    config: MeshConfig, workloads: Sequence[Workload], gateway: GatewayProxy
) -> ProxyResources:
    return gateway_config(config, workloads, gateway).to_protos()
