"""What is known about one request or TCP connection, for access logs, header formatters and
stats: Envoy's StreamInfo.

``StreamInfo`` is a plain class with class-level defaults, so a new instance costs nothing for the
fields a request never touches (the HTTP stream object is itself a StreamInfo).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from mypy_extensions import mypyc_attr


class ResponseFlag:
    """Envoy's response flags as bits, in Envoy's order (the order %RESPONSE_FLAGS% prints)."""

    FAILED_LOCAL_HEALTH_CHECK: Final = 1 << 0  # LH
    NO_HEALTHY_UPSTREAM: Final = 1 << 1  # UH
    UPSTREAM_REQUEST_TIMEOUT: Final = 1 << 2  # UT
    LOCAL_RESET: Final = 1 << 3  # LR
    UPSTREAM_REMOTE_RESET: Final = 1 << 4  # UR
    UPSTREAM_CONNECTION_FAILURE: Final = 1 << 5  # UF
    UPSTREAM_CONNECTION_TERMINATION: Final = 1 << 6  # UC
    UPSTREAM_OVERFLOW: Final = 1 << 7  # UO
    NO_ROUTE_FOUND: Final = 1 << 8  # NR
    DELAY_INJECTED: Final = 1 << 9  # DI
    FAULT_INJECTED: Final = 1 << 10  # FI
    RATE_LIMITED: Final = 1 << 11  # RL
    UNAUTHORIZED_EXTERNAL_SERVICE: Final = 1 << 12  # UAEX
    RATE_LIMIT_SERVICE_ERROR: Final = 1 << 13  # RLSE
    DOWNSTREAM_CONNECTION_TERMINATION: Final = 1 << 14  # DC
    UPSTREAM_RETRY_LIMIT_EXCEEDED: Final = 1 << 15  # URX
    STREAM_IDLE_TIMEOUT: Final = 1 << 16  # SI
    INVALID_ENVOY_REQUEST_HEADERS: Final = 1 << 17  # IH
    DOWNSTREAM_PROTOCOL_ERROR: Final = 1 << 18  # DPE
    UPSTREAM_MAX_STREAM_DURATION_REACHED: Final = 1 << 19  # UMSDR
    RESPONSE_FROM_CACHE_FILTER: Final = 1 << 20  # RFCF
    NO_FILTER_CONFIG_FOUND: Final = 1 << 21  # NFCF
    DURATION_TIMEOUT: Final = 1 << 22  # DT
    UPSTREAM_PROTOCOL_ERROR: Final = 1 << 23  # UPE
    NO_CLUSTER_FOUND: Final = 1 << 24  # NC
    OVERLOAD_MANAGER: Final = 1 << 25  # OM
    DNS_RESOLUTION_FAILED: Final = 1 << 26  # DF
    DROP_OVERLOAD: Final = 1 << 27  # DO
    DOWNSTREAM_REMOTE_RESET: Final = 1 << 28  # DR
    UNCONDITIONAL_DROP_OVERLOAD: Final = 1 << 29  # UDO


RESPONSE_FLAG_SHORT = (
    "LH",
    "UH",
    "UT",
    "LR",
    "UR",
    "UF",
    "UC",
    "UO",
    "NR",
    "DI",
    "FI",
    "RL",
    "UAEX",
    "RLSE",
    "DC",
    "URX",
    "SI",
    "IH",
    "DPE",
    "UMSDR",
    "RFCF",
    "NFCF",
    "DT",
    "UPE",
    "NC",
    "OM",
    "DF",
    "DO",
    "DR",
    "UDO",
)
RESPONSE_FLAG_LONG = (
    "FailedLocalHealthCheck",
    "NoHealthyUpstream",
    "UpstreamRequestTimeout",
    "LocalReset",
    "UpstreamRemoteReset",
    "UpstreamConnectionFailure",
    "UpstreamConnectionTermination",
    "UpstreamOverflow",
    "NoRouteFound",
    "DelayInjected",
    "FaultInjected",
    "RateLimited",
    "UnauthorizedExternalService",
    "RateLimitServiceError",
    "DownstreamConnectionTermination",
    "UpstreamRetryLimitExceeded",
    "StreamIdleTimeout",
    "InvalidEnvoyRequestHeaders",
    "DownstreamProtocolError",
    "UpstreamMaxStreamDurationReached",
    "ResponseFromCacheFilter",
    "NoFilterConfigFound",
    "DurationTimeout",
    "UpstreamProtocolError",
    "NoClusterFound",
    "OverloadManager",
    "DnsResolutionFailed",
    "DropOverload",
    "DownstreamRemoteReset",
    "UnconditionalDropOverload",
)


def _flag_indexes(flags: int, order: list[int] | None) -> list[int]:
    """Bit indexes of ``flags`` in the order they were set (Envoy prints them so)."""
    if order:
        return order
    return [i for i in range(len(RESPONSE_FLAG_SHORT)) if flags >> i & 1]


def response_flags_short(flags: int, order: list[int] | None = None) -> str:
    """``%RESPONSE_FLAGS%``: comma-separated short names, or ``-`` if none."""
    if not flags:
        return "-"
    return ",".join(RESPONSE_FLAG_SHORT[i] for i in _flag_indexes(flags, order))


def response_flags_long(flags: int, order: list[int] | None = None) -> str:
    if not flags:
        return "-"
    return ",".join(RESPONSE_FLAG_LONG[i] for i in _flag_indexes(flags, order))


class HeaderLookup(Protocol):
    """Read access to a header map: ``get`` takes a lower-case name (``:path`` etc. allowed)."""

    def get(self, name: bytes) -> bytes | None: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamInfo:
    """Times are ``time.monotonic()`` seconds except ``start_time`` (``time.time()``)."""

    start_time: float = 0.0  # wall clock, epoch seconds
    start_monotonic: float = 0.0
    end_monotonic: float | None = None  # set when the stream completes
    first_upstream_tx: float | None = None
    last_upstream_tx: float | None = None
    first_upstream_rx: float | None = None
    last_upstream_rx: float | None = None
    first_downstream_tx: float | None = None
    last_downstream_tx: float | None = None
    last_downstream_rx: float | None = None

    protocol: str = "HTTP/1.1"  # "" for TCP
    response_code: int = 0  # 0: no response (yet)
    response_code_details: str = ""
    connection_termination_details: str = ""
    response_flags: int = 0
    response_flag_order: list[int] | None = None  # bit indexes, in the order set
    bytes_received: int = 0  # downstream body bytes (TCP: all bytes)
    bytes_sent: int = 0
    upstream_bytes_sent: int = 0
    upstream_bytes_received: int = 0
    upstream_header_bytes_sent: int = 0
    upstream_header_bytes_received: int = 0
    downstream_header_bytes_received: int = 0
    downstream_header_bytes_sent: int = 0

    # Addresses as "ip:port" strings (a pipe path for Unix sockets), "" if unknown.
    downstream_remote_address: str = ""
    downstream_direct_remote_address: str = ""
    downstream_local_address: str = ""
    upstream_host: str = ""  # the selected host
    upstream_local_address: str = ""
    upstream_cluster: str = ""
    upstream_cluster_observability_name: str = ""
    upstream_transport_failure_reason: str = ""
    upstream_request_attempt_count: int = 0
    requested_server_name: str = ""
    route_name: str = ""
    virtual_cluster_name: str = ""
    connection_id: int = 0
    stream_id: int = 0
    request_id: str = ""
    downstream_tls: Any = None  # TLS session info when there is one
    upstream_tls: Any = None
    filter_state: dict[str, Any] | None = None
    dynamic_metadata: dict[str, Any] | None = None

    # Read by access-log commands when set (defaults print "-").
    upstream_protocol: str = ""
    upstream_host_name: str = ""
    upstream_remote_address: str = ""
    upstream_connection_id: int = 0
    downstream_direct_local_address: str = ""
    filter_chain_name: str = ""
    local_reply_body: str = ""
    access_log_type: str = "NotSet"
    downstream_transport_failure_reason: str = ""
    downstream_wire_bytes_received: int = 0
    downstream_wire_bytes_sent: int = 0
    downstream_handshake_complete: float | None = None
    upstream_handshake_complete: float | None = None
    upstream_connect_start: float | None = None
    upstream_connect_complete: float | None = None
    first_upstream_rx_body: float | None = None
    upstream_cluster_metadata: dict[str, Any] | None = None
    upstream_host_metadata: dict[str, Any] | None = None

    # HeaderLookup objects (RequestHeaders, ResponseHeaders, HeaderMap) or None.
    request_headers: Any = None
    response_headers: Any = None
    response_trailers: Any = None

    def set_response_flag(self, flag: int) -> None:
        if self.response_flags & flag:
            return
        self.response_flags |= flag
        if self.response_flag_order is None:
            self.response_flag_order = []
        self.response_flag_order.append(flag.bit_length() - 1)

    def duration(self) -> float | None:
        """Seconds from the start to the end (or None if not ended)."""
        if self.end_monotonic is None:
            return None
        return self.end_monotonic - self.start_monotonic
