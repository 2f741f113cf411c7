"""Clusters and endpoints: envoy.config.cluster.v3 and envoy.config.endpoint.v3."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pilotfish.model.common import NO_MUTATIONS, Address, HeaderMutations, Locality, TypedExtension


class DiscoveryType(enum.Enum):
    STATIC = "STATIC"
    STRICT_DNS = "STRICT_DNS"
    LOGICAL_DNS = "LOGICAL_DNS"
    EDS = "EDS"
    ORIGINAL_DST = "ORIGINAL_DST"


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"
    CLUSTER_PROVIDED = "CLUSTER_PROVIDED"


class HealthStatus(enum.Enum):
    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2
    DRAINING = 3
    TIMEOUT = 4
    DEGRADED = 5


@dataclass(frozen=True, slots=True)
class EndpointHealthCheckConfig:
    """Endpoint.HealthCheckConfig: where active health checks of this endpoint go."""

    port_value: int = 0  # 0: the endpoint's port
    address: Address | None = None  # None: the endpoint's address
    hostname: str = ""  # the Host header of HTTP checks (over the checker's own ``host``)
    disable_active_health_check: bool = False


@dataclass(frozen=True, slots=True)
class LbEndpoint:
    address: Address
    health_status: HealthStatus = HealthStatus.UNKNOWN
    load_balancing_weight: int = 1
    hostname: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    health_check: EndpointHealthCheckConfig | None = None


@dataclass(frozen=True, slots=True)
class LocalityLbEndpoints:
    lb_endpoints: tuple[LbEndpoint, ...]
    locality: Locality = Locality()
    load_balancing_weight: int = 0  # 0 = unset
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    cluster_name: str
    endpoints: tuple[LocalityLbEndpoints, ...] = ()
    overprovisioning_factor: int = 140  # percent


@dataclass(frozen=True, slots=True)
class CircuitBreakerThresholds:
    """Defaults are Envoy's."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget: tuple[float, int] | None = None  # (budget_percent, min_retry_concurrency)
    track_remaining: bool = False  # the remaining_* gauges exist only then


@dataclass(frozen=True, slots=True)
class HttpProtocolOptions:
    """envoy.extensions.upstreams.http.v3.HttpProtocolOptions plus the cluster's deprecated
    inline equivalents."""

    upstream_protocol: str = "HTTP1"  # HTTP1, HTTP2, AUTO (use_downstream_protocol: DOWNSTREAM)
    idle_timeout: float = 3600.0
    max_requests_per_connection: int = 0  # 0 = unlimited
    max_connection_duration: float = 0.0
    max_headers_count: int = 100
    header_key_format_preserve: bool = False
    enable_trailers: bool = False
    request_headers: HeaderMutations = NO_MUTATIONS


@dataclass(frozen=True, slots=True)
class OriginalDstConfig:
    use_http_header: bool = False
    http_header_name: bytes = b"x-envoy-original-dst-host"
    upstream_port_override: int = 0


@dataclass(frozen=True, slots=True)
class ConsistentHashing:
    """RING_HASH and MAGLEV settings: ``ring_hash_lb_config``, ``maglev_lb_config`` and
    ``common_lb_config.consistent_hashing_lb_config``."""

    minimum_ring_size: int = 1024
    maximum_ring_size: int = 8 * 1024 * 1024
    murmur_hash_2: bool = False  # ring_hash_lb_config.hash_function MURMUR_HASH_2 (else XX_HASH)
    table_size: int = 65537  # Maglev
    use_hostname_for_hashing: bool = False
    hash_balance_factor: int = 0  # bounded loads, in percent (0: off)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """envoy.config.cluster.v3.OutlierDetection; defaults are Envoy's (times in seconds,
    ``enforcing_*`` and thresholds in percent, ``success_rate_stdev_factor`` in thousandths)."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = False
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    failure_percentage_threshold: int = 85
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    successful_active_health_check_uneject_host: bool = True


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """envoy.config.core.v3.HealthCheck (HTTP or TCP); times in seconds. The optional
    intervals are resolved to Envoy's defaults at translation."""

    kind: str  # "HTTP" or "TCP"
    timeout: float
    interval: float
    unhealthy_threshold: int
    healthy_threshold: int
    initial_jitter: float = 0.0
    interval_jitter: float = 0.0
    interval_jitter_percent: int = 0
    no_traffic_interval: float = 60.0
    no_traffic_healthy_interval: float = 60.0
    unhealthy_interval: float = 0.0
    unhealthy_edge_interval: float = 0.0
    healthy_edge_interval: float = 0.0
    reuse_connection: bool = True
    alt_port: int = 0
    always_log_health_check_failures: bool = False
    always_log_health_check_success: bool = False
    event_log_path: str = ""
    # HTTP
    host: str = ""
    path: str = "/"
    method: str = "GET"
    request_headers_to_add: tuple[tuple[str, str, bool], ...] = ()  # (name, value, append)
    request_headers_to_remove: tuple[str, ...] = ()
    expected_statuses: tuple[tuple[int, int], ...] = ((200, 201),)  # [start, end)
    retriable_statuses: tuple[tuple[int, int], ...] = ()
    # TCP
    send: bytes = b""
    receive: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    type: DiscoveryType
    connect_timeout: float = 5.0
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    load_assignment: ClusterLoadAssignment | None = None
    eds_service_name: str = ""
    alt_stat_name: str = ""
    dns_lookup_family: str = "AUTO"  # AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED, ALL
    dns_refresh_rate: float = 5.0
    respect_dns_ttl: bool = False
    circuit_breakers: tuple[CircuitBreakerThresholds, CircuitBreakerThresholds] = (
        CircuitBreakerThresholds(),
        CircuitBreakerThresholds(),
    )  # (DEFAULT, HIGH)
    per_connection_buffer_limit_bytes: int = 1024 * 1024
    http: HttpProtocolOptions = HttpProtocolOptions()
    transport_socket: TypedExtension | None = None
    transport_socket_matches: tuple[tuple[str, dict[str, Any], TypedExtension], ...] = ()
    least_request_choice_count: int = 2
    least_request_active_request_bias: float = 1.0
    consistent_hashing: ConsistentHashing = ConsistentHashing()
    healthy_panic_threshold: float = 50.0
    locality_weighted_lb: bool = False
    original_dst: OriginalDstConfig = OriginalDstConfig()
    cleanup_interval: float = 5.0
    upstream_bind_address: Address | None = None
    tcp_keepalive: tuple[int, int, int] | None = None  # probes, time, interval
    close_connections_on_host_health_failure: bool = False
    ignore_health_on_host_removal: bool = False
    outlier_detection: OutlierDetection | None = None
    health_checks: tuple[HealthCheck, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def stat_name(self) -> str:
        return self.alt_stat_name or self.name
