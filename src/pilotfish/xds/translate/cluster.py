"""envoy.config.cluster.v3.Cluster and envoy.config.endpoint.v3.ClusterLoadAssignment -> model."""

from __future__ import annotations

import socket
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category
from pilotfish.model.cluster import (
    CircuitBreakerThresholds,
    Cluster,
    ClusterLoadAssignment,
    ConsistentHashing,
    DiscoveryType,
    EndpointHealthCheckConfig,
    HealthStatus,
    HttpProtocolOptions,
    LbEndpoint,
    LbPolicy,
    LocalityLbEndpoints,
    OriginalDstConfig,
)
from pilotfish.model.common import Address, InternalAddress, Locality, SocketAddress
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.health_check import health_check
from pilotfish.xds.translate.outlier import outlier_detection

_TYPES = {
    0: DiscoveryType.STATIC,
    1: DiscoveryType.STRICT_DNS,
    2: DiscoveryType.LOGICAL_DNS,
    3: DiscoveryType.EDS,
    4: DiscoveryType.ORIGINAL_DST,
}
_LB = {
    0: LbPolicy.ROUND_ROBIN,
    1: LbPolicy.LEAST_REQUEST,
    2: LbPolicy.RING_HASH,
    3: LbPolicy.RANDOM,
    5: LbPolicy.MAGLEV,
    6: LbPolicy.CLUSTER_PROVIDED,
}
_SUPPORTED_LB = {
    LbPolicy.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST,
    LbPolicy.RANDOM,
    LbPolicy.RING_HASH,
    LbPolicy.MAGLEV,
    LbPolicy.CLUSTER_PROVIDED,
}
_MAX_RING_SIZE = 8 * 1024 * 1024  # RingHashLbConfig's validation (lte 8M)
_MAX_MAGLEV_TABLE = 5000011  # MaglevLbConfig.table_size's validation
_DNS_FAMILY = {0: "AUTO", 1: "V4_ONLY", 2: "V6_ONLY", 3: "V4_PREFERRED", 4: "ALL"}
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TCP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"


def _consistent_hashing(msg: Any, pre: str) -> ConsistentHashing:
    """ring_hash_lb_config, maglev_lb_config and common_lb_config.consistent_hashing_lb_config,
    validated as Envoy does."""
    min_ring, max_ring, murmur = 1024, _MAX_RING_SIZE, False
    if msg.HasField("ring_hash_lb_config"):
        rh = msg.ring_hash_lb_config
        rpath = f"{pre}ring_hash_lb_config"
        min_ring = c.uint32_value(rh, "minimum_ring_size", 1024)
        max_ring = c.uint32_value(rh, "maximum_ring_size", _MAX_RING_SIZE)
        for name, value in (("minimum_ring_size", min_ring), ("maximum_ring_size", max_ring)):
            if value > _MAX_RING_SIZE:
                raise ConfigError(
                    f"{rpath}.{name}", f"value must be less than or equal to {_MAX_RING_SIZE}"
                )
        if min_ring > max_ring:
            raise ConfigError(
                rpath, f"ring hash: minimum_ring_size ({min_ring}) > maximum_ring_size ({max_ring})"
            )
        if rh.hash_function not in (0, 1):  # XX_HASH, MURMUR_HASH_2
            raise ConfigError(
                f"{rpath}.hash_function", "value must be one of the defined enum values"
            )
        murmur = rh.hash_function == 1
    table_size = 65537
    if msg.HasField("maglev_lb_config"):
        table_size = c.uint32_value(msg.maglev_lb_config, "table_size", 65537)
        mpath = f"{pre}maglev_lb_config.table_size"
        if table_size > _MAX_MAGLEV_TABLE:
            raise ConfigError(mpath, f"value must be less than or equal to {_MAX_MAGLEV_TABLE}")
        if not _is_prime(table_size):
            raise ConfigError(mpath, "The table size of maglev must be prime number")
    use_hostname, balance = False, 0
    clb = msg.common_lb_config
    if clb.HasField("consistent_hashing_lb_config"):
        chc = clb.consistent_hashing_lb_config
        use_hostname = chc.use_hostname_for_hashing
        balance = c.uint32_value(chc, "hash_balance_factor", 0)
        if chc.HasField("hash_balance_factor") and balance < 100:
            raise ConfigError(
                f"{pre}common_lb_config.consistent_hashing_lb_config.hash_balance_factor",
                "value must be greater than or equal to 100",
            )
    return ConsistentHashing(
        minimum_ring_size=min_ring,
        maximum_ring_size=max_ring,
        murmur_hash_2=murmur,
        table_size=table_size,
        use_hostname_for_hashing=use_hostname,
        hash_balance_factor=balance,
    )


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def cluster(msg: Any, ctx: TranslateContext, path: str = "") -> Cluster:
    pre = f"{path}." if path else ""
    if not msg.name:
        raise ConfigError(f"{pre}name", "value length must be at least 1")
    kind = msg.WhichOneof("cluster_discovery_type")
    if kind == "cluster_type":
        raise ConfigError(
            f"{pre}cluster_type", f"custom cluster type '{msg.cluster_type.name}' is not supported"
        )
    dtype = _TYPES.get(msg.type)
    if dtype is None:
        raise ConfigError(f"{pre}type", f"unknown cluster type {msg.type}")
    if msg.lb_policy == 7 or msg.HasField("load_balancing_policy"):
        raise ConfigError(
            f"{pre}load_balancing_policy", "load_balancing_policy extensions are not supported"
        )
    lb = _LB.get(msg.lb_policy)
    if lb is None or lb not in _SUPPORTED_LB:
        raise ConfigError(
            f"{pre}lb_policy", f"lb_policy {lb.value if lb else msg.lb_policy} is not supported"
        )
    if dtype is DiscoveryType.ORIGINAL_DST and lb is not LbPolicy.CLUSTER_PROVIDED:
        raise ConfigError(
            f"{pre}lb_policy",
            f"cluster: LB policy {lb.value} is not valid for Cluster type ORIGINAL_DST. Only "
            "'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'",
        )
    if dtype is not DiscoveryType.ORIGINAL_DST and lb is LbPolicy.CLUSTER_PROVIDED:
        raise ConfigError(
            f"{pre}lb_policy",
            f"cluster: LB policy CLUSTER_PROVIDED is not valid for Cluster type {dtype.value}.",
        )
    connect_timeout = c.duration(msg, "connect_timeout", 5.0)
    if connect_timeout <= 0:
        raise ConfigError(f"{pre}connect_timeout", "value must be greater than 0s")
    for i, f in enumerate(msg.filters):
        # Istio puts its TCP metadata exchange here (telemetry-only: skipped with a warning).
        # Any filter that would run is refused: upstream filters are not implemented.
        fpath = f"{pre}filters[{i}]"
        if f.HasField("typed_config"):
            ext = ctx.extension(Category.NETWORK_FILTER, f.name, f.typed_config, fpath)
            if ext is not None:
                raise ConfigError(fpath, "upstream network filters are not supported")
        else:
            raise ConfigError(fpath, "upstream network filters are not supported")

    load_assignment = None
    if msg.HasField("load_assignment"):
        load_assignment = cluster_load_assignment(
            msg.load_assignment,
            f"{pre}load_assignment",
            resolve_names=dtype is not DiscoveryType.STATIC,
        )
        if not load_assignment.cluster_name:
            load_assignment = ClusterLoadAssignment(
                msg.name, load_assignment.endpoints, load_assignment.overprovisioning_factor
            )
    if dtype is DiscoveryType.LOGICAL_DNS:
        eps = load_assignment.endpoints if load_assignment else ()
        if len(eps) != 1 or len(eps[0].lb_endpoints) != 1:
            raise ConfigError(
                f"{pre}load_assignment",
                "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single "
                "lb_endpoint",
            )
    if dtype is DiscoveryType.ORIGINAL_DST and load_assignment and load_assignment.endpoints:
        raise ConfigError(
            f"{pre}load_assignment", "ORIGINAL_DST clusters must have no load assignment configured"
        )
    if dtype in (DiscoveryType.STRICT_DNS, DiscoveryType.LOGICAL_DNS) and load_assignment:
        for loc in load_assignment.endpoints:
            for ep in loc.lb_endpoints:
                if not isinstance(ep.address, SocketAddress):
                    raise ConfigError(f"{pre}load_assignment", "DNS clusters need socket addresses")

    eds_service_name = ""
    if dtype is DiscoveryType.EDS:
        if not msg.HasField("eds_cluster_config"):
            raise ConfigError(f"{pre}eds_cluster_config", "EDS clusters need eds_cluster_config")
        eds_service_name = msg.eds_cluster_config.service_name

    thresholds = [CircuitBreakerThresholds(), CircuitBreakerThresholds()]
    if msg.HasField("circuit_breakers"):
        for t in msg.circuit_breakers.thresholds:
            budget = None
            if t.HasField("retry_budget"):
                rb = t.retry_budget
                budget = (
                    rb.budget_percent.value if rb.HasField("budget_percent") else 20.0,
                    c.uint32_value(rb, "min_retry_concurrency", 3),
                )
            thresholds[1 if t.priority == 1 else 0] = CircuitBreakerThresholds(
                max_connections=c.uint32_value(t, "max_connections", 1024),
                max_pending_requests=c.uint32_value(t, "max_pending_requests", 1024),
                max_requests=c.uint32_value(t, "max_requests", 1024),
                max_retries=c.uint32_value(t, "max_retries", 3),
                retry_budget=budget,
                track_remaining=t.track_remaining,
            )

    transport_socket = None
    if msg.HasField("transport_socket"):
        transport_socket = ctx.extension(
            Category.TRANSPORT_SOCKET,
            msg.transport_socket.name,
            msg.transport_socket.typed_config,
            f"{pre}transport_socket",
        )
    matches = []
    for i, m in enumerate(msg.transport_socket_matches):
        mpath = f"{pre}transport_socket_matches[{i}]"
        ts = ctx.extension(
            Category.TRANSPORT_SOCKET,
            m.transport_socket.name,
            m.transport_socket.typed_config,
            f"{mpath}.transport_socket",
        )
        if ts is not None:
            matches.append((m.name, c.struct_to_dict(m.match), ts))

    original_dst = OriginalDstConfig()
    if msg.HasField("original_dst_lb_config"):
        od = msg.original_dst_lb_config
        original_dst = OriginalDstConfig(
            use_http_header=od.use_http_header,
            http_header_name=(od.http_header_name or "x-envoy-original-dst-host").lower().encode(),
            upstream_port_override=c.uint32_value(od, "upstream_port_override", 0),
        )

    bind = None
    if msg.HasField("upstream_bind_config") and msg.upstream_bind_config.HasField("source_address"):
        bind = c.socket_address(
            msg.upstream_bind_config.source_address, f"{pre}upstream_bind_config.source_address"
        )
    keepalive = None
    if msg.HasField("upstream_connection_options") and msg.upstream_connection_options.HasField(
        "tcp_keepalive"
    ):
        ka = msg.upstream_connection_options.tcp_keepalive
        keepalive = (
            c.uint32_value(ka, "keepalive_probes", 0),
            c.uint32_value(ka, "keepalive_time", 0),
            c.uint32_value(ka, "keepalive_interval", 0),
        )

    panic = 50.0
    locality_weighted = False
    if msg.HasField("common_lb_config"):
        clb = msg.common_lb_config
        if clb.HasField("healthy_panic_threshold"):
            panic = clb.healthy_panic_threshold.value
        locality_weighted = clb.HasField("locality_weighted_lb_config")
    choice_count = 2
    bias = 1.0
    if msg.HasField("least_request_lb_config"):
        lrc = msg.least_request_lb_config
        choice_count = c.uint32_value(lrc, "choice_count", 2)
        if choice_count < 2:
            raise ConfigError(f"{pre}least_request_lb_config.choice_count", "value must be >= 2")
        if lrc.HasField("active_request_bias"):
            bias = lrc.active_request_bias.default_value
            if not bias >= 0.0:  # negative or NaN: Envoy warns and uses 1.0
                ctx.warn(
                    f"{pre}least_request_lb_config.active_request_bias: invalid active request "
                    "bias supplied, using 1.0"
                )
                bias = 1.0

    hashing = _consistent_hashing(msg, pre)
    if hashing.use_hostname_for_hashing and dtype is not DiscoveryType.STRICT_DNS:
        raise ConfigError(
            f"{pre}common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing",
            "Cannot use hostname for consistent hashing loadbalancing for cluster of type: "
            f"'envoy.cluster.{dtype.name.lower()}'",
        )

    if len(msg.health_checks) > 1:
        raise ConfigError(f"{pre}health_checks", "Multiple health checks not supported")
    health_checks = tuple(
        health_check(hc, f"{pre}health_checks[{i}]") for i, hc in enumerate(msg.health_checks)
    )

    return Cluster(
        name=msg.name,
        type=dtype,
        connect_timeout=connect_timeout,
        lb_policy=lb,
        load_assignment=load_assignment,
        eds_service_name=eds_service_name,
        alt_stat_name=msg.alt_stat_name,
        dns_lookup_family=_DNS_FAMILY.get(msg.dns_lookup_family, "AUTO"),
        dns_refresh_rate=c.duration(msg, "dns_refresh_rate", 5.0),
        respect_dns_ttl=msg.respect_dns_ttl,
        circuit_breakers=(thresholds[0], thresholds[1]),
        per_connection_buffer_limit_bytes=c.uint32_value(
            msg, "per_connection_buffer_limit_bytes", 1024 * 1024
        ),
        http=http_protocol_options(msg, ctx, pre),
        transport_socket=transport_socket,
        transport_socket_matches=tuple(matches),
        least_request_choice_count=choice_count,
        least_request_active_request_bias=bias,
        consistent_hashing=hashing,
        healthy_panic_threshold=panic,
        locality_weighted_lb=locality_weighted,
        original_dst=original_dst,
        cleanup_interval=c.duration(msg, "cleanup_interval", 5.0),
        upstream_bind_address=bind,
        tcp_keepalive=keepalive,
        close_connections_on_host_health_failure=msg.close_connections_on_host_health_failure,
        ignore_health_on_host_removal=msg.ignore_health_on_host_removal,
        health_checks=health_checks,
        outlier_detection=outlier_detection(msg.outlier_detection, f"{pre}outlier_detection")
        if msg.HasField("outlier_detection")
        else None,
        metadata=c.metadata(msg, path),
    )


def http_protocol_options(msg: Any, ctx: TranslateContext, pre: str) -> HttpProtocolOptions:
    protocol = "HTTP2" if msg.HasField("http2_protocol_options") else "HTTP1"
    idle = 3600.0
    max_requests = c.uint32_value(msg, "max_requests_per_connection", 0)
    max_duration = 0.0
    max_headers = 100
    preserve = False
    # The deprecated inline Http1ProtocolOptions, overridden by the typed extension options.
    trailers = msg.http_protocol_options.enable_trailers
    for key, value in msg.typed_extension_protocol_options.items():
        opath = f"{pre}typed_extension_protocol_options[{key}]"
        if key == TCP_PROTOCOL_OPTIONS or value.type_url.endswith(TCP_PROTOCOL_OPTIONS):
            continue
        if key != HTTP_PROTOCOL_OPTIONS and not value.type_url.endswith(HTTP_PROTOCOL_OPTIONS):
            raise ConfigError(
                opath,
                "Didn't find a registered network or http filter or protocol options "
                f"implementation for name: '{key}'",
            )
        opts = ctx.unpack(value, opath)
        if opts.HasField("common_http_protocol_options"):
            chpo = opts.common_http_protocol_options  # type: ignore[attr-defined]
            idle = c.duration(chpo, "idle_timeout", 3600.0)
            max_duration = c.duration(chpo, "max_connection_duration", 0.0)
            max_headers = c.uint32_value(chpo, "max_headers_count", 100)
            if chpo.HasField("max_requests_per_connection"):
                max_requests = chpo.max_requests_per_connection.value
        which = opts.WhichOneof("upstream_protocol_options")
        if which == "explicit_http_config":
            ehc = opts.explicit_http_config  # type: ignore[attr-defined]
            pkind = ehc.WhichOneof("protocol_config")
            protocol = {
                "http_protocol_options": "HTTP1",
                "http2_protocol_options": "HTTP2",
                "http3_protocol_options": "HTTP3",
            }.get(pkind or "", "HTTP1")
            if pkind == "http_protocol_options":
                preserve = ehc.http_protocol_options.HasField("header_key_format")
                trailers = ehc.http_protocol_options.enable_trailers
        elif which == "use_downstream_protocol_config":
            protocol = "DOWNSTREAM"
        elif which == "auto_config":
            protocol = "AUTO"
    return HttpProtocolOptions(
        upstream_protocol=protocol,
        idle_timeout=idle,
        max_requests_per_connection=max_requests,
        max_connection_duration=max_duration,
        max_headers_count=max_headers,
        header_key_format_preserve=preserve,
        enable_trailers=trailers,
    )


_HEALTH = {
    0: HealthStatus.UNKNOWN,
    1: HealthStatus.HEALTHY,
    2: HealthStatus.UNHEALTHY,
    3: HealthStatus.DRAINING,
    4: HealthStatus.TIMEOUT,
    5: HealthStatus.DEGRADED,
}


def _is_ip(text: str) -> bool:
    """An IPv4 or IPv6 literal (inet_pton: an EDS push checks a million of them; the
    ipaddress module is 20 times slower)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return "%" not in text  # no zone index (ipaddress refuses it too)
    return False


def _plain_socket_address(msg: Any) -> SocketAddress | None:
    """A TCP socket address with nothing unusual (no named port or resolver, a valid port),
    or None: the caller then translates it with the field paths for the error."""
    if msg.WhichOneof("address") != "socket_address":
        return None
    sa = msg.socket_address
    if sa.named_port or sa.resolver_name or not sa.address or sa.port_value > 65535:
        return None
    return SocketAddress(
        sa.address, sa.port_value, "UDP" if sa.protocol == 1 else "TCP", sa.ipv4_compat
    )


def _endpoint_health_check(ep: Any, path: str) -> EndpointHealthCheckConfig:
    hc = ep.health_check_config
    hpath = f"{path}.health_check_config"
    if hc.port_value > 65535:
        raise ConfigError(f"{hpath}.port_value", "value must be less than or equal to 65535")
    address = None
    if hc.HasField("address"):
        address = c.address(hc.address, f"{hpath}.address")
    return EndpointHealthCheckConfig(
        port_value=hc.port_value,
        address=address,
        hostname=hc.hostname,
        disable_active_health_check=hc.disable_active_health_check,
    )


def cluster_load_assignment(
    msg: Any, path: str, *, resolve_names: bool = True
) -> ClusterLoadAssignment:
    """``resolve_names``: hostnames are allowed (DNS clusters); else addresses must be IPs."""
    pre = f"{path}." if path else ""
    localities = []
    for i, loc in enumerate(msg.endpoints):
        lpath = f"{pre}endpoints[{i}]"
        eps = []
        # The common case (an IP socket address, no metadata) is built without the field
        # paths, which are only needed for an error: an EDS push can carry a million of them.
        for j, lbe in enumerate(loc.lb_endpoints):
            if lbe.WhichOneof("host_identifier") != "endpoint":
                raise ConfigError(
                    f"{lpath}.lb_endpoints[{j}]",
                    "named endpoints are not supported; an endpoint is required",
                )
            ep = lbe.endpoint
            plain = _plain_socket_address(ep.address)
            addr: Address = (
                plain
                if plain is not None
                else c.address(ep.address, f"{lpath}.lb_endpoints[{j}].endpoint.address")
            )
            if isinstance(addr, InternalAddress):
                raise ConfigError(
                    f"{lpath}.lb_endpoints[{j}].endpoint.address.envoy_internal_address",
                    "endpoints on internal listeners (Istio's HBONE tunnels: ambient, "
                    "waypoints) are not supported",
                )
            if isinstance(addr, SocketAddress) and not resolve_names:
                if not _is_ip(addr.address):
                    raise ConfigError(
                        f"{lpath}.lb_endpoints[{j}].endpoint.address.socket_address.address",
                        f"malformed IP address: {addr.address}",
                    ) from None
            weight = lbe.load_balancing_weight.value if lbe.HasField("load_balancing_weight") else 1
            if weight < 1:
                raise ConfigError(
                    f"{lpath}.lb_endpoints[{j}].load_balancing_weight",
                    "value must be greater than or equal to 1",
                )
            eps.append(
                LbEndpoint(
                    addr,
                    _HEALTH.get(lbe.health_status, HealthStatus.UNKNOWN),
                    weight,
                    ep.hostname,
                    c.metadata(lbe, f"{lpath}.lb_endpoints[{j}]")
                    if lbe.HasField("metadata")
                    else {},
                    _endpoint_health_check(ep, f"{lpath}.lb_endpoints[{j}].endpoint")
                    if ep.HasField("health_check_config")
                    else None,
                )
            )
        localities.append(
            LocalityLbEndpoints(
                lb_endpoints=tuple(eps),
                locality=c.locality(loc.locality) if loc.HasField("locality") else Locality(),
                load_balancing_weight=c.uint32_value(loc, "load_balancing_weight", 0),
                priority=loc.priority,
            )
        )
    factor = 140
    if msg.HasField("policy") and msg.policy.HasField("overprovisioning_factor"):
        factor = msg.policy.overprovisioning_factor.value
    return ClusterLoadAssignment(msg.cluster_name, tuple(localities), factor)
