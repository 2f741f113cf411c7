"""A sidecar's xDS resources in iptables capture mode, the shape istiod gives a pod whose
traffic istio-iptables redirects (``-p 15001 -z 15006``):

* ``virtualOutbound`` 0.0.0.0:15001, ``use_original_dst``: hands each redirected connection to
  the listener of its original destination; its own chain (nothing matched) is a tcp_proxy to
  ``PassthroughCluster`` (ORIGINAL_DST: outboundTrafficPolicy ALLOW_ANY).
* ``0.0.0.0_<port>`` per HTTP service port (``bind_to_port: false``): HTTP connection manager
  with RDS route config ``<port>``: a virtual host ``<host>:<port>`` per service with that
  port (domains: short names, FQDN and VIP, as in loopback mode) and ``allow_any`` (``*`` to
  ``PassthroughCluster``).
* ``<VIP>_<port>`` per TCP service port (``bind_to_port: false``): tcp_proxy to the service.
* ``virtualInbound`` 0.0.0.0:15006 (original_dst, tls_inspector, http_inspector): a
  blackhole chain for 15006 itself, then ``0.0.0.0_<port>`` chains per workload port, made by
  ``proxy.inbound_filter_chains`` (the same as loopback mode's inbound listener) with a
  ``destination_port`` match, to ``inbound|<port>||`` (ORIGINAL_DST, from 127.0.0.6); any
  other port goes to ``InboundPassthroughCluster`` (ORIGINAL_DST, from 127.0.0.6).
* EDS endpoints are the pods' addresses and the app's port (``Workload.address`` and
  ``inbound_port``: in capture mode the pod's port is the app's, the rules do the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pilotfish.mesh.config.hosts import fqdn
from pilotfish.mesh.translate.authn import workload_mtls
from pilotfish.mesh.translate.clusters import (
    CONNECT_TIMEOUT,
    outbound_clusters,
    unlimited_circuit_breakers,
)
from pilotfish.mesh.translate.common import JSON, cluster_name
from pilotfish.mesh.translate.inbound import inbound_filter_chains
from pilotfish.mesh.translate.proxy import (
    ProxyConfig,
    ProxyResources,
    _dedup_domains,
    _hcm,
    _service_vhost,
    _tcp_destination,
    _tcp_proxy,
    inbound_port_chains,
    visible_services,
)
from pilotfish.mesh.translate.routes import RouteContext
from pilotfish.mesh.translate.services import (
    MeshConfig,
    MeshService,
    ServicePortInfo,
    build_services,
)
from pilotfish.mesh.translate.telemetry import http_filters, tcp_stats
from pilotfish.mesh.translate.vips import with_vips
from pilotfish.mesh.translate.workload import Workload, labels_match

__all__ = [
    "INBOUND_CAPTURE_PORT",
    "OUTBOUND_CAPTURE_PORT",
    "capture_sidecar_config",
    "capture_sidecar_resources",
]

OUTBOUND_CAPTURE_PORT = 15001  # istio-iptables -p
INBOUND_CAPTURE_PORT = 15006  # istio-iptables -z
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
# Istio's inbound source address: the app sees 127.0.0.6, which the rules never capture.
INBOUND_SOURCE = {"source_address": {"address": "127.0.0.6", "port_value": 0}}
ANY = "0.0.0.0"

_LISTENER_FILTER = "type.googleapis.com/envoy.extensions.filters.listener.{0}.v3.{1}"
_INBOUND_LISTENER_FILTERS: list[JSON] = [
    {
        "name": f"envoy.filters.listener.{name}",
        "typed_config": {"@type": _LISTENER_FILTER.format(name, message)},
    }
    for name, message in (
        ("original_dst", "OriginalDst"),
        ("tls_inspector", "TlsInspector"),
        ("http_inspector", "HttpInspector"),
    )
]


def _address(host: str, port: int) -> JSON:
    return {"socket_address": {"address": host, "port_value": port}}


def _original_dst_cluster(name: str, **extra: object) -> JSON:
    return {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT,
        "circuit_breakers": unlimited_circuit_breakers(),
        **extra,
    }


def _inbound_ports(
    services: Sequence[MeshService], config: MeshConfig, w: Workload
) -> list[tuple[int, MeshService | None, ServicePortInfo | None]]:
    """Each port the workload serves, once: the target port of every service port that
    selects it (named target ports resolve to the app's port), else the app's port."""
    by_host = {s.hostname: s for s in services}
    out: dict[int, tuple[int, MeshService | None, ServicePortInfo | None]] = {}
    for svc_obj in config.services:
        if svc_obj.meta.namespace != w.namespace or not svc_obj.selector:
            continue
        if not labels_match(svc_obj.selector, w.labels):
            continue
        svc = by_host.get(fqdn(svc_obj.meta.name, w.namespace))
        if svc is None:
            continue
        for p in svc.ports:
            target = p.target_port if isinstance(p.target_port, int) else w.app_port
            out.setdefault(target, (target, svc, p))
    if not out:
        out[w.app_port] = (w.app_port, None, None)
    return [out[p] for p in sorted(out)]


def _virtual_outbound() -> JSON:
    return {
        "name": "virtualOutbound",
        "address": _address(ANY, OUTBOUND_CAPTURE_PORT),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {
                "name": "virtualOutbound-catchall-tcp",
                "filters": [_tcp_proxy(PASSTHROUGH, PASSTHROUGH)],
            }
        ],
    }


def _outbound_http(
    ctx: RouteContext, services: Sequence[MeshService]
) -> tuple[list[JSON], list[JSON]]:
    """``0.0.0.0_<port>`` listeners and their route configs ``<port>``."""
    by_port: dict[int, list[JSON]] = {}
    for svc in services:
        for port in svc.ports:
            if port.is_http:
                by_port.setdefault(port.number, []).append(_service_vhost(ctx, svc, port))
    listeners: list[JSON] = []
    routes: list[JSON] = []
    for number in sorted(by_port):
        vhosts = _dedup_domains(by_port[number])
        vhosts.append(
            {
                "name": "allow_any",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "allow_any",
                        "match": {"prefix": "/"},
                        "route": {"cluster": PASSTHROUGH, "timeout": "0s"},
                    }
                ],
                "include_request_attempt_count": True,
            }
        )
        routes.append({"name": str(number), "virtual_hosts": vhosts, "validate_clusters": False})
        name = f"{ANY}_{number}"
        listeners.append(
            {
                "name": name,
                "address": _address(ANY, number),
                "bind_to_port": False,
                "traffic_direction": "OUTBOUND",
                "filter_chains": [
                    {
                        "filters": [
                            _hcm(
                                f"outbound_{name}",
                                rds=str(number),
                                filters=http_filters(
                                    "OUTBOUND", telemetry=ctx.config.istio_telemetry
                                ),
                            )
                        ]
                    }
                ],
            }
        )
    return listeners, routes


def _outbound_tcp(ctx: RouteContext, services: Sequence[MeshService]) -> list[JSON]:
    """``<VIP>_<port>`` per TCP port of a service with a VIP."""
    listeners: list[JSON] = []
    for svc in services:
        if not svc.cluster_ip:
            continue
        for port in svc.ports:
            if port.is_http:
                continue
            cluster, weighted = _tcp_destination(ctx, svc, port.number)
            name = f"{svc.cluster_ip}_{port.number}"
            stat = cluster_name("outbound", port.number, None, svc.hostname)
            listeners.append(
                {
                    "name": name,
                    "address": _address(svc.cluster_ip, port.number),
                    "bind_to_port": False,
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [
                        {
                            "filters": [
                                *tcp_stats("OUTBOUND", ctx.config.istio_telemetry),
                                _tcp_proxy(stat, cluster, weighted),
                            ]
                        }
                    ],
                }
            )
    return listeners


def _virtual_inbound(
    config: MeshConfig,
    workload: Workload,
    ports: Sequence[tuple[int, MeshService | None, ServicePortInfo | None]],
) -> JSON:
    chains: list[JSON] = [
        {
            "name": "virtualInbound-blackhole",
            "filter_chain_match": {"destination_port": INBOUND_CAPTURE_PORT},
            "filters": [_tcp_proxy(BLACKHOLE, BLACKHOLE)],
        }
    ]
    for port, svc, svc_port in ports:
        port_chains = inbound_port_chains(
            config, workload, ANY, port, svc, svc_port, destination_port=port
        )
        chains.extend(port_chains.filter_chains)
    # Ports no service declares pass through to the app, under the workload's mTLS mode as
    # Istio's catch-all chains: a default chain would let plain text past STRICT.
    passthrough = [_tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH)]
    mode = workload_mtls(config, workload.namespace, workload.labels).mode
    default_chain: JSON | None = None
    if not config.mtls or mode == "DISABLE":
        default_chain = {"name": "virtualInbound-catchall-tcp", "filters": passthrough}
    else:
        catchall = inbound_filter_chains(
            mode, passthrough, http=False, name="virtualInbound-catchall-tcp"
        )
        chains.extend(catchall.filter_chains)
    listener: JSON = {
        "name": "virtualInbound",
        "address": _address(ANY, INBOUND_CAPTURE_PORT),
        "traffic_direction": "INBOUND",
        "listener_filters": _INBOUND_LISTENER_FILTERS,
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": True,
        "filter_chains": chains,
    }
    if default_chain is not None:
        listener["default_filter_chain"] = default_chain
    return listener


def capture_sidecar_config(
    config: MeshConfig,
    workloads: Sequence[Workload],
    workload: Workload,
    vips: Mapping[str, str],
) -> ProxyConfig:
    """The resources of ``workload``'s sidecar in capture mode, as Envoy JSON; ``vips``
    (``vips.service_vips``) are the services' cluster IPs, ``workload.address`` its pod IP."""
    all_services = with_vips(build_services(config, workloads), vips)
    services = visible_services(config, all_services, workload)
    ctx = RouteContext(
        config, {s.hostname: s for s in services}, workload.namespace, workload.labels
    )
    ports = _inbound_ports(all_services, config, workload)
    clusters, endpoints = outbound_clusters(config, services, workload.namespace)
    clusters += [
        _original_dst_cluster(PASSTHROUGH),
        _original_dst_cluster(INBOUND_PASSTHROUGH, upstream_bind_config=INBOUND_SOURCE),
        {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT},
    ]
    clusters += [
        _original_dst_cluster(
            cluster_name("inbound", port, None, ""), upstream_bind_config=INBOUND_SOURCE
        )
        for port, _, _ in ports
    ]
    http_listeners, routes = _outbound_http(ctx, services)
    listeners = [
        _virtual_outbound(),
        *http_listeners,
        *_outbound_tcp(ctx, services),
        _virtual_inbound(config, workload, ports),
    ]
    return ProxyConfig(workload.node_id(), clusters, endpoints, listeners, routes)


def capture_sidecar_resources(
    config: MeshConfig,
    workloads: Sequence[Workload],
    workload: Workload,
    vips: Mapping[str, str],
) -> ProxyResources:
    """The same as protos, for ``XdsServer.set_resources``."""
    return capture_sidecar_config(config, workloads, workload, vips).to_protos()
