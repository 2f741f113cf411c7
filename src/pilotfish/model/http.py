"""The HTTP connection manager's config (envoy.filters.network.http_connection_manager)."""

from __future__ import annotations

from dataclasses import dataclass

from pilotfish.model.common import TypedExtension
from pilotfish.model.route import HashPolicy, RouteConfiguration


@dataclass(frozen=True, slots=True)
class RdsSource:
    route_config_name: str
    config_source: object  # the proto ConfigSource, kept for the xDS layer


@dataclass(frozen=True, slots=True)
class UpgradeConfig:
    upgrade_type: bytes  # lower case, e.g. b"websocket", b"connect"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class HttpConnectionManagerConfig:
    stat_prefix: str
    codec_type: str = "AUTO"
    route_config: RouteConfiguration | None = None
    rds: RdsSource | None = None
    http_filters: tuple[TypedExtension, ...] = ()
    access_log: tuple[TypedExtension, ...] = ()
    server_name: bytes = b"envoy"
    server_header_transformation: str = "OVERWRITE"  # OVERWRITE, APPEND_IF_ABSENT, PASS_THROUGH
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    via: bytes = b""
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    idle_timeout: float = 3600.0  # 0 = disabled
    max_connection_duration: float = 0.0
    max_requests_per_connection: int = 0
    max_headers_count: int = 100
    max_request_headers_kb: int = 60
    headers_with_underscores_action: str = "ALLOW"  # ALLOW, REJECT_REQUEST, DROP_HEADER
    stream_idle_timeout: float = 300.0
    request_timeout: float = 0.0
    request_headers_timeout: float = 0.0
    drain_timeout: float = 5.0
    delayed_close_timeout: float = 1.0
    accept_http_10: bool = False
    default_host_for_http_10: bytes = b""
    allow_absolute_url: bool = True
    allow_chunked_length: bool = False
    enable_trailers: bool = False
    preserve_header_case: bool = False
    upgrade_configs: tuple[UpgradeConfig, ...] = ()
    proxy_100_continue: bool = False
    normalize_path: bool = False
    merge_slashes: bool = False
    path_with_escaped_slashes_action: str = "KEEP_UNCHANGED"
    strip_matching_host_port: bool = False
    strip_any_host_port: bool = False
    forward_client_cert_details: str = "SANITIZE"
    # x-forwarded-client-cert fields of the client's certificate (cert, chain, subject, uri,
    # dns), in Envoy's order.
    set_current_client_cert_details: tuple[str, ...] = ()
    add_user_agent: bool = False
    append_x_forwarded_port: bool = False
    internal_address_cidrs: tuple[str, ...] | None = None  # None: Envoy's default (RFC 1918)


@dataclass(frozen=True, slots=True)
class TcpProxyConfig:
    stat_prefix: str
    cluster: str = ""
    weighted_clusters: tuple[tuple[str, int], ...] = ()
    idle_timeout: float = 3600.0  # 0 = disabled
    max_connect_attempts: int = 1
    max_downstream_connection_duration: float = 0.0
    access_log: tuple[TypedExtension, ...] = ()
    access_log_flush_interval: float = 0.0
    # source_ip or filter_state, for a RING_HASH/MAGLEV cluster (pilotfish.http.hash_policy)
    hash_policy: tuple[HashPolicy, ...] = ()
