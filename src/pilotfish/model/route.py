"""Route configuration: envoy.config.route.v3 as the data plane uses it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pilotfish.model.common import (
    NO_MUTATIONS,
    HeaderMutations,
    RuntimeFraction,
    StringMatcher,
)
from pilotfish.regex import Regex, Substitution

# regex_rewrite / host_rewrite_path_regex: an RE2 pattern and its rewrite (RE2::GlobalReplace).
RegexRewrite = tuple[Regex, Substitution]


class HeaderMatchKind(enum.Enum):
    EXACT = "exact"
    SAFE_REGEX = "safe_regex"
    RANGE = "range"
    PRESENT = "present"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    STRING_MATCH = "string_match"


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """envoy.config.route.v3.HeaderMatcher. ``name`` is lower-case; pseudo-headers such as
    ``:path`` and ``:method`` are allowed."""

    name: bytes
    kind: HeaderMatchKind
    string: StringMatcher | None = None  # every string kind is compiled to a StringMatcher
    range_start: int = 0  # RANGE: [start, end)
    range_end: int = 0
    present: bool = True  # PRESENT
    invert: bool = False
    treat_missing_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class QueryParameterMatcher:
    name: str
    string: StringMatcher | None = None  # None: present_match
    present: bool = True


class PathMatchKind(enum.Enum):
    PREFIX = "prefix"
    PATH = "path"
    SAFE_REGEX = "safe_regex"
    PATH_SEPARATED_PREFIX = "path_separated_prefix"
    CONNECT = "connect_matcher"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    kind: PathMatchKind
    value: str = ""  # prefix, path, separated prefix or regex pattern
    regex: Regex | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    runtime_fraction: RuntimeFraction | None = None
    grpc: bool = False
    tls_required: bool | None = None  # TlsContextMatchOptions.presented


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    cluster_header: bytes = b""
    headers: HeaderMutations = NO_MUTATIONS  # request side
    response_headers: HeaderMutations = NO_MUTATIONS
    host_rewrite_literal: str = ""
    metadata_match: dict[str, Any] | None = None
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WeightedClusters:
    clusters: tuple[WeightedCluster, ...]
    total_weight: int  # sum of the weights (Envoy's current semantics)
    header_name: bytes = b""  # the random value comes from this header if set
    runtime_key_prefix: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on: frozenset[str]
    num_retries: int = 1
    per_try_timeout: float = 0.0
    per_try_idle_timeout: float = 0.0
    retriable_status_codes: frozenset[int] = frozenset()
    retry_host_previous_hosts: bool = False
    host_selection_retry_max_attempts: int = 1
    base_interval: float = 0.025
    max_interval: float = 0.25
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    retriable_headers: tuple[HeaderMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One entry of RouteAction.hash_policy (consistent-hash load balancers; see
    pilotfish.http.hash_policy)."""

    kind: str  # "header", "cookie", "connection_properties", "query_parameter", "filter_state"
    name: str = ""  # header name (lower case), cookie name, query parameter, filter state key
    terminal: bool = False
    regex_rewrite: RegexRewrite | None = None
    cookie_ttl: int | None = None  # whole seconds; with a ttl, Envoy generates a missing cookie
    cookie_path: str = ""
    cookie_attributes: tuple[tuple[str, str], ...] = ()  # (name, value) for the Set-Cookie
    key: bytes = field(init=False, compare=False)  # ``name`` as bytes, for the request path

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.name.encode("latin-1"))


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """RouteAction.RequestMirrorPolicy (pilotfish.http.shadow)."""

    cluster: str
    fraction: float = 1.0  # runtime_fraction's default value
    append_shadow_suffix: bool = True  # not disable_shadow_host_suffix_append
    host_rewrite_literal: bytes = b""


@dataclass(frozen=True, slots=True)
class RouteAction:
    cluster: str = ""
    cluster_header: bytes = b""
    weighted_clusters: WeightedClusters | None = None
    cluster_not_found_response_code: int = 503
    prefix_rewrite: bytes | None = None
    regex_rewrite: RegexRewrite | None = None  # pattern, substitution
    host_rewrite_literal: bytes = b""
    auto_host_rewrite: bool = False
    host_rewrite_header: bytes = b""
    host_rewrite_path_regex: RegexRewrite | None = None
    append_x_forwarded_host: bool = False
    timeout: float = 15.0  # seconds, 0 = disabled
    idle_timeout: float | None = None
    max_stream_duration: float | None = None
    retry_policy: RetryPolicy | None = None
    hash_policy: tuple[HashPolicy, ...] = ()
    priority: int = 0  # RoutingPriority: 0 DEFAULT, 1 HIGH
    upgrade_configs: tuple[tuple[str, bool], ...] = ()  # (upgrade_type, enabled)
    include_vh_rate_limits: bool = False
    metadata_match: dict[str, Any] | None = None
    request_mirror_policies: tuple[MirrorPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class RedirectAction:
    scheme: str = ""  # "" = keep, else the scheme to redirect to
    host: bytes = b""
    port: int = 0
    path: bytes | None = None  # path_redirect (may include a query)
    prefix_rewrite: bytes | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponseAction:
    status: int
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class NonForwardingAction:
    pass


Action = RouteAction | RedirectAction | DirectResponseAction | NonForwardingAction


@dataclass(frozen=True, slots=True)
class Decorator:
    operation: str
    propagate: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    match: RouteMatch
    action: Action
    name: str = ""
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    metadata: dict[str, Any] = field(default_factory=dict)
    decorator: Decorator | None = None
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict)
    stat_prefix: str = ""


@dataclass(frozen=True, slots=True)
class VirtualCluster:
    name: str
    headers: tuple[HeaderMatcher, ...]


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    require_tls: str = "NONE"  # NONE, EXTERNAL_ONLY, ALL
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    retry_policy: RetryPolicy | None = None
    virtual_clusters: tuple[VirtualCluster, ...] = ()
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    internal_only_headers: tuple[bytes, ...] = ()
    most_specific_header_mutations_wins: bool = False
    validate_clusters: bool = False
    ignore_port_in_host_matching: bool = False
    max_direct_response_body_size_bytes: int = 4096
    # filter name -> per-route config as parsed by the filter (ExtensionFactory.parse_per_route)
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict)
