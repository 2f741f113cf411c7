"""Typed, immutable view of the Kubernetes and Istio objects the local mesh reads.

Field names follow Istio's API (``networking.istio.io``) in snake_case; durations are float
seconds and percentages are floats in 0..100. ``None`` means "not set", so the translation can
apply Istio's defaults itself (e.g. a single destination without weight takes 100%).
Mappings are plain dicts: the dataclasses are frozen but not hashable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    # metadata.creationTimestamp as UTC ISO 8601, when given: Istio's "oldest wins" between
    # policies of the same scope (None sorts first, as Go's zero time).
    creation_timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Resource:
    """Base of every stored object: ``kind`` is the Kubernetes kind, ``meta`` its metadata."""

    kind: ClassVar[str] = ""
    meta: ObjectMeta

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.meta.namespace, self.meta.name)


# --- Kubernetes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str | None = None
    target_port: int | str | None = None  # None: same as port
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Service(Resource):
    kind: ClassVar[str] = "Service"
    selector: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"
    cluster_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str | None = None
    ports: tuple[int, ...] = ()  # containerPort values


@dataclass(frozen=True, slots=True)
class Deployment(Resource):
    """Only what the local mesh needs to declare workloads: the pod template's labels
    (``app``/``version``), its ports and its service account."""

    kind: ClassVar[str] = "Deployment"
    replicas: int = 1
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()
    service_account_name: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceAccount(Resource):
    kind: ClassVar[str] = "ServiceAccount"


# --- shared Istio pieces ---------------------------------------------------------------------

MatchKind = Literal["exact", "prefix", "regex", "present"]


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio's StringMatch; ``present`` is an empty match (``end-user: {}``: header present)."""

    kind: MatchKind
    value: str = ""


@dataclass(frozen=True, slots=True)
class PortSelector:
    number: int


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    subset: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Port:
    """Gateway server / ServiceEntry / Sidecar port."""

    number: int
    protocol: str | None = None
    name: str | None = None
    target_port: int | None = None


# --- VirtualService --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPMatchRequest:
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: Mapping[str, StringMatch] = field(default_factory=dict)
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    query_params: Mapping[str, StringMatch] = field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: Mapping[str, StringMatch] = field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


@dataclass(frozen=True, slots=True)
class HTTPRouteDestination:
    destination: Destination
    weight: int | None = None  # None: unset (a lone destination gets 100)
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class HTTPRedirect:
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: str | None = None
    scheme: str | None = None
    redirect_code: int | None = None  # None: 301


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    match: str
    rewrite: str


@dataclass(frozen=True, slots=True)
class HTTPRewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


@dataclass(frozen=True, slots=True)
class HTTPDirectResponse:
    status: int
    body: str | None = None  # body.string (or base64 body.bytes, kept as text)


@dataclass(frozen=True, slots=True)
class Delegate:
    name: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPRetry:
    attempts: int | None = None
    per_try_timeout: float | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed_delay: float
    percentage: float | None = None  # None: 100 (Istio's default)


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int | None = None
    grpc_status: str | None = None
    percentage: float | None = None


@dataclass(frozen=True, slots=True)
class HTTPFaultInjection:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class HTTPMirrorPolicy:
    destination: Destination
    percentage: float | None = None


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: float | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: float | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class L4MatchAttributes:
    destination_subnets: tuple[str, ...] = ()
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str | None = None


@dataclass(frozen=True, slots=True)
class TLSMatchAttributes:
    sni_hosts: tuple[str, ...] = ()
    destination_subnets: tuple[str, ...] = ()
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class TCPRoute:
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class TLSRoute:
    match: tuple[TLSMatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualService(Resource):
    kind: ClassVar[str] = "VirtualService"
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()  # empty: the implicit "mesh" gateway
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    export_to: tuple[str, ...] = ()


# --- DestinationRule -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPCookie:
    name: str
    path: str | None = None
    ttl: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()  # (name, value) of the Set-Cookie


@dataclass(frozen=True, slots=True)
class ConsistentHashLB:
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool = False
    http_query_parameter_name: str | None = None
    minimum_ring_size: int | None = None  # ringHash.minimumRingSize or the legacy field
    maglev_table_size: int | None = None  # set when maglev was chosen


@dataclass(frozen=True, slots=True)
class LoadBalancerSettings:
    simple: str | None = None  # ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH, ...
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: Mapping[str, Any] | None = None  # kept raw
    warmup_duration_secs: float | None = None


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    probes: int | None = None
    time: float | None = None
    interval: float | None = None


@dataclass(frozen=True, slots=True)
class TCPSettings:
    max_connections: int | None = None
    connect_timeout: float | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: float | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    h2_upgrade_policy: str | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPoolSettings:
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_errors: int | None = None  # deprecated alias kept for old configs
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    mode: str = "DISABLE"  # DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    sni: str | None = None
    insecure_skip_verify: bool | None = None


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    port: int | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule(Resource):
    kind: ClassVar[str] = "DestinationRule"
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()
    workload_selector: Mapping[str, str] | None = None


# --- Gateway ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerTLSSettings:
    https_redirect: bool = False
    mode: str | None = None  # PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, ...
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    port: Port
    hosts: tuple[str, ...] = ()
    tls: ServerTLSSettings | None = None
    name: str | None = None
    bind: str | None = None
    default_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Gateway(Resource):
    kind: ClassVar[str] = "Gateway"
    selector: Mapping[str, str] = field(default_factory=dict)
    servers: tuple[Server, ...] = ()


# --- ServiceEntry / WorkloadEntry ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    """A WorkloadEntry's spec, also a ServiceEntry endpoint."""

    address: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: int | None = None
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceEntry(Resource):
    kind: ClassVar[str] = "ServiceEntry"
    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    location: str = "MESH_EXTERNAL"
    resolution: str = "NONE"
    endpoints: tuple[WorkloadEndpoint, ...] = ()
    workload_selector: Mapping[str, str] | None = None
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadEntry(Resource):
    kind: ClassVar[str] = "WorkloadEntry"
    spec: WorkloadEndpoint = field(default_factory=WorkloadEndpoint)


# --- Sidecar ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IstioEgressListener:
    hosts: tuple[str, ...]  # "namespace/dnsName", e.g. "./*", "istio-system/*"
    port: Port | None = None
    bind: str | None = None
    capture_mode: str | None = None


@dataclass(frozen=True, slots=True)
class Sidecar(Resource):
    kind: ClassVar[str] = "Sidecar"
    workload_selector: Mapping[str, str] | None = None
    egress: tuple[IstioEgressListener, ...] = ()
    ingress: tuple[Mapping[str, Any], ...] = ()  # kept raw for now
    outbound_traffic_policy: Mapping[str, Any] | None = None  # kept raw for now


# --- PeerAuthentication (security.istio.io) --------------------------------------------------

MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


@dataclass(frozen=True, slots=True)
class PeerAuthentication(Resource):
    """``selector`` is ``selector.matchLabels`` (None or empty: namespace-wide, or mesh-wide in
    the root namespace); ``mode`` is ``mtls.mode``; ``port_level_mtls`` maps a workload port to
    its mode."""

    kind: ClassVar[str] = "PeerAuthentication"
    selector: Mapping[str, str] | None = None
    mode: str = "UNSET"
    port_level_mtls: Mapping[int, str] = field(default_factory=dict)


KINDS: tuple[type[Resource], ...] = (
    Service,
    Deployment,
    ServiceAccount,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
)
