"""Istio's standard metrics, as istio-proxy's stats filter (``istio.stats``, config
``stats.PluginConfig``) records them: ``istio_requests_total``,
``istio_request_duration_milliseconds``, ``istio_request_bytes``, ``istio_response_bytes``
(HTTP, at the end of each stream), ``istio_tcp_connections_opened_total`` / ``closed_total``,
``istio_tcp_sent_bytes_total`` / ``received_bytes_total`` (TCP, at open, periodically and at
close), ``istio_build``; labels in istio-proxy's order (reporter, source_*, destination_*,
request_protocol, response_code, grpc_response_status, response_flags,
connection_security_policy).

Who the peer is comes from the peer metadata filter (filter state ``downstream_peer`` /
``upstream_peer``, a ``WorkloadMetadata``), else (client side) from the upstream endpoint's
``istio.workload`` metadata; the local workload from the node metadata. The destination service
is the cluster's ``istio.services[0]`` metadata, else the request's host (unless
``disable_host_header_fallback``).

Cost per request: the labels for a (peer, service, code, flags, ...) combination are built once
and their four series kept in a dict; a request then costs one tuple lookup and four
increments. Metric overrides (``metrics``/``definitions``: the Telemetry API's tag overrides)
evaluate their expressions per request (stats/expr.py) and take the slower path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.stats import expr
from pilotfish.stats.store import DEFAULT_BUCKETS
from pilotfish.stats.tagged import Family, Series, TaggedStats
from pilotfish.stats.workload import WorkloadMetadata, from_endpoint_metadata, from_node_metadata

NAMESPACE = "istiocustom"
SOURCE, DESTINATION, WAYPOINT = "source", "destination", "waypoint"
UNKNOWN = "unknown"

STANDARD_METRICS = (
    "requests_total",
    "request_duration_milliseconds",
    "request_bytes",
    "response_bytes",
    "request_messages_total",
    "response_messages_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
)
STANDARD_TAGS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
# Clusters whose name is the destination service name (Istio's passthrough/blackhole).
_SPECIAL_CLUSTERS = frozenset(
    (
        "BlackHoleCluster",
        "PassthroughCluster",
        "InboundPassthroughCluster",
        "InboundPassthroughClusterIpv4",
        "InboundPassthroughClusterIpv6",
    )
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
_METRIC_TYPES = {"COUNTER": "counter", "GAUGE": "gauge", "HISTOGRAM": "histogram"}

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MetricOverride:
    """One entry of ``metrics``: for ``name`` (all standard metrics if empty)."""

    name: str = ""
    drop: bool = False
    tags_to_remove: tuple[str, ...] = ()
    dimensions: tuple[tuple[str, str], ...] = ()  # (tag, expression), sorted by tag


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    value: str
    kind: str = "counter"


@dataclass(frozen=True, slots=True)
class IstioStatsConfig:
    """stats.PluginConfig, validated. ``reporter`` is resolved at translation from the
    config's ``reporter`` and the listener's traffic direction."""

    reporter: str = SOURCE
    disable_host_header_fallback: bool = False
    tcp_reporting_duration: float = 5.0
    rotation_interval: float = 0.0
    graceful_deletion_interval: float = 300.0
    metrics: tuple[MetricOverride, ...] = ()
    definitions: tuple[MetricDefinition, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)


def _duration(value: Any, path: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if m is None:
        raise ConfigError(path, f"invalid duration {value!r}")
    return float(m.group(1))


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(path, f"invalid boolean {value!r}")


# Fields of the old Wasm plugin's JSON config that the native filter no longer has.
_WASM_ONLY_FIELDS = frozenset(
    ("debug", "field_separator", "value_separator", "stat_prefix", "max_peer_cache_size")
)


def parse_config(
    doc: dict[str, Any], traffic_direction: str, path: str, *, wasm: bool = False
) -> IstioStatsConfig:
    """Validate a ``stats.PluginConfig`` given as JSON (a TypedStruct's value, or the Wasm
    plugin's configuration string). ``traffic_direction`` is the listener's."""
    known = {
        "reporter",
        "disable_host_header_fallback",
        "tcp_reporting_duration",
        "rotation_interval",
        "graceful_deletion_interval",
        "metrics",
        "definitions",
    }
    warnings = []
    for key in doc:
        if key not in known:
            if wasm and key in _WASM_ONLY_FIELDS:
                continue
            raise ConfigError(f"{path}.{key}", f"unknown field '{key}' in stats.PluginConfig")
    reporter_field = doc.get("reporter", "UNSPECIFIED")
    if reporter_field == "SERVER_GATEWAY":
        reporter = WAYPOINT
    elif reporter_field in ("UNSPECIFIED", 0, "CLIENT_GATEWAY"):
        reporter = DESTINATION if traffic_direction == "INBOUND" else SOURCE
    else:
        raise ConfigError(f"{path}.reporter", f"invalid reporter {reporter_field!r}")
    metrics = []
    for i, m in enumerate(doc.get("metrics") or ()):
        mpath = f"{path}.metrics[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(mpath, "expected an object")
        dims = m.get("dimensions") or {}
        if not isinstance(dims, dict):
            raise ConfigError(f"{mpath}.dimensions", "expected a map")
        for tag in m.get("tags_to_remove") or ():
            if tag not in STANDARD_TAGS:
                warnings.append(f"{mpath}.tags_to_remove: '{tag}' is not a standard tag; ignored")
        metrics.append(
            MetricOverride(
                name=str(m.get("name", "")),
                drop=_bool(m.get("drop", False), f"{mpath}.drop"),
                tags_to_remove=tuple(str(t) for t in m.get("tags_to_remove") or ()),
                dimensions=tuple(sorted((str(k), str(v)) for k, v in dims.items())),
            )
        )
    definitions = []
    for i, d in enumerate(doc.get("definitions") or ()):
        dpath = f"{path}.definitions[{i}]"
        kind = _METRIC_TYPES.get(str(d.get("type", "COUNTER")))
        if kind is None:
            raise ConfigError(f"{dpath}.type", f"invalid metric type {d.get('type')!r}")
        definitions.append(MetricDefinition(str(d.get("name", "")), str(d.get("value", "")), kind))
    return IstioStatsConfig(
        reporter=reporter,
        disable_host_header_fallback=_bool(
            doc.get("disable_host_header_fallback", False), f"{path}.disable_host_header_fallback"
        ),
        tcp_reporting_duration=_duration(
            doc.get("tcp_reporting_duration", "5s"), f"{path}.tcp_reporting_duration"
        ),
        rotation_interval=_duration(doc.get("rotation_interval", 0), f"{path}.rotation_interval"),
        graceful_deletion_interval=_duration(
            doc.get("graceful_deletion_interval", "300s"), f"{path}.graceful_deletion_interval"
        ),
        metrics=tuple(metrics),
        definitions=tuple(definitions),
        warnings=tuple(warnings),
    )


# --- overrides ---------------------------------------------------------------------------------


class _Overrides:
    """istio-proxy's MetricOverrides: dropped metrics, per-metric tag overrides (an expression
    index, or None: the tag is removed), tag additions, custom metrics."""

    def __init__(self, config: IstioStatsConfig, tagged: TaggedStats) -> None:
        self.exprs: list[tuple[expr.Expr, bool]] = []
        self._ids: dict[str, int] = {}
        self.drop: set[str] = set()
        self.tag_overrides: dict[str, dict[str, int | None]] = {}
        self.tag_additions: dict[str, list[tuple[str, int]]] = {}
        self.custom: dict[str, tuple[Family, int]] = {}
        self.warnings: list[str] = []
        for d in config.definitions:
            if d.name in STANDARD_METRICS:
                self.warnings.append(f"re-defining standard metric '{d.name}' is not allowed")
                continue
            eid = self._expr(d.value, True)
            if eid is None:
                continue
            family = tagged.family(f"{NAMESPACE}.istio_{d.name}", d.kind, DEFAULT_BUCKETS)
            self.custom[d.name] = (family, eid)
        for m in config.metrics:
            if m.drop:
                if m.name in STANDARD_METRICS:
                    self.drop.add(m.name)
                continue
            targets = [m.name] if m.name else list(STANDARD_METRICS)
            for tag in m.tags_to_remove:
                if tag not in STANDARD_TAGS:
                    continue
                for metric in targets:
                    if metric in STANDARD_METRICS:
                        self.tag_overrides.setdefault(metric, {})[tag] = None
            for tag, text in m.dimensions:
                eid = self._expr(text, False)
                customs = (
                    [m.name] if m.name in self.custom else ([] if m.name else list(self.custom))
                )
                if tag not in STANDARD_TAGS:
                    if eid is None:
                        continue
                    for metric in targets:
                        if metric in STANDARD_METRICS:
                            self.tag_additions.setdefault(metric, []).append((tag, eid))
                    for metric in customs:
                        self.tag_additions.setdefault(f"custom:{metric}", []).append((tag, eid))
                else:
                    for metric in targets:
                        if metric in STANDARD_METRICS:
                            self.tag_overrides.setdefault(metric, {})[tag] = eid
                    if eid is not None:
                        for metric in customs:
                            self.tag_additions.setdefault(f"custom:{metric}", []).append((tag, eid))

    def _expr(self, text: str, numeric: bool) -> int | None:
        eid = self._ids.get(text)
        if eid is not None:
            return eid
        try:
            compiled = expr.parse(text)
        except expr.ExprError as e:
            self.warnings.append(f"failed to parse expression: {e}")
            return None
        self.exprs.append((compiled, numeric))
        eid = self._ids[text] = len(self.exprs) - 1
        return eid

    def evaluate(self, resolve: Callable[[str], Any]) -> list[tuple[str, int]]:
        out = []
        for compiled, numeric in self.exprs:
            try:
                value = compiled(resolve)
            except Exception:  # an expression error is "unknown", never a failed request
                value = None
            text = expr.to_text(value)
            if text is None:
                out.append((UNKNOWN, 0))
            elif numeric:
                out.append(("", int(text) if text.isdigit() else 0))
            else:
                out.append((text, 0))
        return out

    def tags(self, metric: str, tags: Tags, values: list[tuple[str, int]]) -> Tags:
        overrides = self.tag_overrides.get(metric)
        if overrides is None:
            out = list(tags)
        else:
            out = []
            for key, val in tags:
                if key in overrides:
                    eid = overrides[key]
                    if eid is not None:
                        out.append((key, values[eid][0]))
                else:
                    out.append((key, val))
        for key, eid in self.tag_additions.get(metric, ()):
            out.append((key, values[eid][0]))
        return tuple(out)


# --- the recorder ------------------------------------------------------------------------------


def _namespace_of(principal: str) -> str:
    """``spiffe://td/ns/NAMESPACE/sa/SA`` -> NAMESPACE (Istio's getNamespace)."""
    begin = principal.find("/ns/")
    if begin < 0:
        return ""
    begin += 4
    end = principal.find("/", begin)
    return principal[begin:] if end < 0 else principal[begin:end]


def service_of(cluster_name: str, cluster_metadata: dict[str, Any] | None) -> tuple[str, str]:
    """(destination service host, name) from the upstream cluster, ("", "") if unknown."""
    if cluster_name in _SPECIAL_CLUSTERS:
        return "", cluster_name
    istio = (cluster_metadata or {}).get("istio")
    services = istio.get("services") if isinstance(istio, dict) else None
    if isinstance(services, list) and services and isinstance(services[0], dict):
        svc = services[0]
        host = str(svc.get("host", ""))
        name = svc.get("name")
        return host, str(name) if name is not None else host.split(".", 1)[0]
    return "", ""


def endpoint_peer(host_metadata: dict[str, Any] | None) -> WorkloadMetadata | None:
    istio = (host_metadata or {}).get("istio")
    if isinstance(istio, dict) and isinstance(istio.get("workload"), str):
        return from_endpoint_metadata(istio["workload"])
    return None


class SeriesSet:
    """The series one label set records into (HTTP: 4, TCP: 4)."""

    __slots__ = ("a", "b", "c", "d")

    def __init__(self, a: Series | None, b: Series | None, c: Series | None, d: Series | None):
        self.a, self.b, self.c, self.d = a, b, c, d


class IstioStats:
    """What one ``istio.stats`` filter config shares across its streams and connections."""

    def __init__(
        self,
        config: IstioStatsConfig,
        tagged: TaggedStats,
        node_metadata: dict[str, Any],
        accepts: Callable[[str], bool] = lambda name: True,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.config = config
        self.reporter = config.reporter
        self.local = from_node_metadata(node_metadata)
        self.node_metadata_view = node_metadata  # what CEL's xds.node.metadata reads
        self.tagged = tagged

        def fam(name: str, kind: str) -> Family | None:
            full = f"{NAMESPACE}.istio_{name}"
            return tagged.family(full, kind, buckets) if accepts(full) else None

        self.requests_total = fam("requests_total", "counter")
        self.request_duration = fam("request_duration_milliseconds", "histogram")
        self.request_bytes = fam("request_bytes", "histogram")
        self.response_bytes = fam("response_bytes", "histogram")
        self.tcp_opened = fam("tcp_connections_opened_total", "counter")
        self.tcp_closed = fam("tcp_connections_closed_total", "counter")
        self.tcp_sent = fam("tcp_sent_bytes_total", "counter")
        self.tcp_received = fam("tcp_received_bytes_total", "counter")
        build = fam("build", "gauge")
        if build is not None:
            version = node_metadata.get("ISTIO_VERSION")
            tag = version if isinstance(version, str) and version else UNKNOWN
            build.get((("component", "proxy"), ("tag", tag))).set(1)
        self.overrides = (
            _Overrides(config, tagged) if config.metrics or config.definitions else None
        )
        self.warnings = list(config.warnings) + (self.overrides.warnings if self.overrides else [])
        self._peer_tags: dict[tuple[Any, ...], tuple[Any, Tags]] = {}
        # cluster name -> (its config object, (service host, name)): see istio_stats.py.
        self.service_cache: dict[str, tuple[Any, tuple[str, str]]] = {}
        self._series: dict[tuple[Any, ...], SeriesSet] = {}
        tagged.on_rotate(self._forget)

    def _forget(self) -> None:
        self._peer_tags.clear()
        self._series.clear()

    # -- labels -------------------------------------------------------------------------------

    def peer_tags(
        self,
        peer: WorkloadMetadata | None,
        service_host: str,
        service_name: str,
        peer_san: str,
        local_san: str,
    ) -> Tags:
        """reporter .. destination_cluster (istio-proxy's populatePeerInfo)."""
        # Keyed by the peer's identity (cheap); the entry keeps the peer alive so that its id
        # is not reused while cached.
        key = (id(peer), service_host, service_name, peer_san, local_san)
        cached = self._peer_tags.get(key)
        if cached is not None:
            return cached[1]
        p = peer or WorkloadMetadata()
        local = self.local
        peer_ns = _namespace_of(peer_san) if peer_san else ""
        peer_ns = peer_ns or p.namespace_name
        u = UNKNOWN
        if self.reporter == SOURCE:
            tags: Tags = (
                ("reporter", SOURCE),
                ("source_workload", local.workload_name),
                ("source_canonical_service", local.canonical_name),
                ("source_canonical_revision", local.canonical_revision),
                ("source_workload_namespace", local.namespace_name),
                ("source_principal", local_san or u),
                ("source_app", local.app_name),
                ("source_version", local.app_version),
                ("source_cluster", local.cluster_name),
                ("destination_workload", p.workload_name or u),
                ("destination_workload_namespace", peer_ns or u),
                ("destination_principal", peer_san or u),
                ("destination_app", p.app_name or u),
                ("destination_version", p.app_version or u),
                ("destination_service", service_host or u),
                ("destination_canonical_service", p.canonical_name or u),
                ("destination_canonical_revision", p.canonical_revision or "latest"),
                ("destination_service_name", service_name or u),
                ("destination_service_namespace", peer_ns or u),
                ("destination_cluster", p.cluster_name or u),
            )
        else:
            src: Tags = (
                ("reporter", self.reporter),
                ("source_workload", p.workload_name or u),
                ("source_canonical_service", p.canonical_name or u),
                ("source_canonical_revision", p.canonical_revision or "latest"),
                ("source_workload_namespace", peer_ns or u),
                ("source_principal", peer_san or u),
                ("source_app", p.app_name or u),
                ("source_version", p.app_version or u),
                ("source_cluster", p.cluster_name or u),
            )
            dst: Tags = (
                ("destination_workload", local.workload_name),
                ("destination_workload_namespace", local.namespace_name),
                ("destination_principal", local_san or u),
                ("destination_app", local.app_name),
                ("destination_version", local.app_version),
                ("destination_service", service_host or local.canonical_name),
                ("destination_canonical_service", local.canonical_name),
                ("destination_canonical_revision", local.canonical_revision),
                ("destination_service_name", service_name or local.canonical_name),
            )
            tags = (
                src
                + dst
                + (
                    ("destination_service_namespace", local.namespace_name),
                    ("destination_cluster", local.cluster_name),
                )
            )
        if len(self._peer_tags) > 10_000:  # bounded: label sets come from requests
            self._peer_tags.clear()
        self._peer_tags[key] = (peer, tags)
        return tags

    # -- HTTP ---------------------------------------------------------------------------------

    def record_http(
        self,
        peer_tags: Tags,
        protocol: str,
        code: int,
        grpc_status: str,
        flags: str,
        security: str,
        duration_ms: float | None,
        request_bytes: int,
        response_bytes: int,
        resolve: Callable[[str], Any] | None = None,
    ) -> None:
        if self.overrides is not None and resolve is not None:
            tags = peer_tags + self._tail(protocol, code, grpc_status, flags, security)
            self._record_overridden(tags, duration_ms, request_bytes, response_bytes, resolve)
            return
        key = (peer_tags, protocol, code, grpc_status, flags, security)
        s = self._series.get(key)
        if s is None:
            tags = peer_tags + self._tail(protocol, code, grpc_status, flags, security)
            s = SeriesSet(
                *(
                    f.get(tags) if f is not None else None
                    for f in (
                        self.requests_total,
                        self.request_duration,
                        self.request_bytes,
                        self.response_bytes,
                    )
                )
            )
            if len(self._series) > 10_000:
                self._series.clear()
            self._series[key] = s
        if s.a is not None:
            s.a.value += 1
        if s.b is not None and duration_ms is not None:
            s.b.record(duration_ms)
        if s.c is not None:
            s.c.record(request_bytes)
        if s.d is not None:
            s.d.record(response_bytes)

    @staticmethod
    def _tail(protocol: str, code: int, grpc_status: str, flags: str, security: str) -> Tags:
        return (
            ("request_protocol", protocol),
            ("response_code", str(code)),
            ("grpc_response_status", grpc_status),
            ("response_flags", flags),
            ("connection_security_policy", security),
        )

    def _record_overridden(
        self,
        tags: Tags,
        duration_ms: float | None,
        request_bytes: int,
        response_bytes: int,
        resolve: Callable[[str], Any],
    ) -> None:
        ov = self.overrides
        assert ov is not None
        values = ov.evaluate(resolve)
        for metric, family, amount in (
            ("requests_total", self.requests_total, 1),
            ("request_duration_milliseconds", self.request_duration, duration_ms),
            ("request_bytes", self.request_bytes, request_bytes),
            ("response_bytes", self.response_bytes, response_bytes),
        ):
            if family is None or metric in ov.drop or amount is None:
                continue
            series = family.get(ov.tags(metric, tags, values))
            if family.kind == "counter":
                series.value += int(amount)
            else:
                series.record(amount)
        self._record_custom(values)

    def _record_custom(self, values: list[tuple[str, int]]) -> None:
        ov = self.overrides
        assert ov is not None
        for name, (family, eid) in ov.custom.items():
            series = family.get(ov.tags(f"custom:{name}", (), values))
            amount = values[eid][1]
            if family.kind == "counter":
                series.value += amount
            elif family.kind == "gauge":
                series.set(amount)
            else:
                series.record(amount)

    # -- TCP ----------------------------------------------------------------------------------

    def tcp_series(
        self, peer_tags: Tags, flags: str, security: str, resolve: Callable[[str], Any] | None
    ) -> SeriesSet:
        """opened, closed, sent, received series of one connection (evaluated once, as
        istio-proxy evaluates TCP overrides once per connection)."""
        tags = (
            *peer_tags,
            ("request_protocol", "tcp"),
            ("response_flags", flags),
            ("connection_security_policy", security),
        )
        families = (self.tcp_opened, self.tcp_closed, self.tcp_sent, self.tcp_received)
        metrics = (
            "tcp_connections_opened_total",
            "tcp_connections_closed_total",
            "tcp_sent_bytes_total",
            "tcp_received_bytes_total",
        )
        ov = self.overrides
        if ov is not None and resolve is not None:
            values = ov.evaluate(resolve)
            return SeriesSet(
                *(
                    f.get(ov.tags(m, tags, values)) if f is not None and m not in ov.drop else None
                    for f, m in zip(families, metrics, strict=True)
                )
            )
        return SeriesSet(*(f.get(tags) if f is not None else None for f in families))
