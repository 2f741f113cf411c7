"""istio.stats (``stats.PluginConfig``, an Istio type carried as a TypedStruct; also the null-VM
Wasm plugin ``envoy.wasm.stats``): Istio's standard metrics (pilotfish.stats.istio).

The HTTP filter records each stream when it is destroyed (the end of the exchange: Envoy runs
it as an access log handler): the peer from the filter state the peer metadata filter set,
the upstream endpoint seen when the response headers came, status, flags, bytes and duration
from the stream. The network filter form (TCP, in front of tcp_proxy) is served by
``TcpIstioStats`` below, which the TCP proxy calls at open, periodically and at close.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.http import filter as hf
from pilotfish.http.headers import RequestHeaders, ResponseHeaders
from pilotfish.stats.istio import (
    SOURCE,
    UNKNOWN,
    IstioStats,
    IstioStatsConfig,
    endpoint_peer,
    parse_config,
    service_of,
)
from pilotfish.stats.workload import WorkloadMetadata
from pilotfish.stream_info import response_flags_short

TYPE_NAME = "stats.PluginConfig"
DOWNSTREAM_PEER = "downstream_peer"
UPSTREAM_PEER = "upstream_peer"


def parse_struct(msg: Any, ctx: Any, path: str) -> IstioStatsConfig:
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(msg, preserving_proto_field_name=True)
    config = parse_config(doc, getattr(ctx, "traffic_direction", ""), f"{path}.typed_config")
    for w in config.warnings:
        ctx.warn(f"{path}: {w}")
    return config


def parse_wasm_configuration(configuration: Any, ctx: Any, path: str) -> IstioStatsConfig:
    """The null-VM plugin's ``configuration``: a StringValue holding the config as JSON."""
    text = ""
    if configuration is not None and configuration.type_url.endswith("google.protobuf.StringValue"):
        from google.protobuf.wrappers_pb2 import StringValue

        sv = StringValue()
        configuration.Unpack(sv)
        text = sv.value
    try:
        doc = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}.configuration", f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}.configuration", "expected a JSON object")
    config = parse_config(
        doc, getattr(ctx, "traffic_direction", ""), f"{path}.configuration", wasm=True
    )
    for w in config.warnings:
        ctx.warn(f"{path}: {w}")
    return config


def runtime(config: IstioStatsConfig, ctx: Any) -> IstioStats:
    stats = ctx.stats
    rt = IstioStats(
        config,
        ctx.tagged_stats,
        ctx.node_metadata,
        accepts=stats.accepts,
        buckets=stats.buckets,
    )
    if config.rotation_interval > 0:
        _schedule_rotation(ctx, config.rotation_interval)
    return rt


def _schedule_rotation(ctx: Any, interval: float) -> None:
    """Forget every labelled series each ``rotation_interval`` (one timer per server)."""
    tagged = ctx.tagged_stats
    if tagged.rotation_timer is not None:
        return

    def rotate() -> None:
        tagged.rotate()
        tagged.rotation_timer = ctx.loop.call_later(interval, rotate)

    tagged.rotation_timer = ctx.loop.call_later(interval, rotate)


class IstioStatsFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "istio.stats"
    type_names = (TYPE_NAME,)

    def parse(self, msg: Any, ctx: Any, path: str) -> IstioStatsConfig:
        return parse_struct(msg, ctx, path)

    def build_filter(
        self, config: IstioStatsConfig, ctx: Any, name: str, scope: Any
    ) -> tuple[Callable[[], hf.HttpFilter], bool]:
        rt = runtime(config, ctx)
        cm = ctx.cluster_manager
        return (lambda: IstioStatsFilter(rt, cm)), False


class IstioStatsNetworkFactory(ExtensionFactory):
    """The network filter form: config only; tcp_proxy records through TcpIstioStats."""

    category = Category.NETWORK_FILTER
    name = "istio.stats"
    type_names = (TYPE_NAME,)

    def parse(self, msg: Any, ctx: Any, path: str) -> IstioStatsConfig:
        return parse_struct(msg, ctx, path)

    def build_tcp_observer(self, config: IstioStatsConfig, ctx: Any) -> TcpIstioStats:
        return TcpIstioStats(config, ctx)


def _service_cached(rt: IstioStats, cluster_name: str, config: Any) -> tuple[str, str]:
    """service_of, computed once per cluster config object (a CDS update replaces it)."""
    cache = rt.service_cache
    cached = cache.get(cluster_name)
    if cached is not None and cached[0] is config:
        return cached[1]
    result = service_of(cluster_name, config.metadata if config is not None else None)
    if len(cache) > 10_000:
        cache.clear()
    cache[cluster_name] = (config, result)
    return result


def _destination_service(
    rt: IstioStats, cluster_name: str, cluster: Any, route_name: str, request_headers: Any
) -> tuple[str, str]:
    """(destination_service, destination_service_name): the request's host (if the host
    fallback is on), overridden by the route (``block_all``/``allow_any``) or the upstream
    cluster (Istio's passthrough clusters by name; ``istio.services[0]`` metadata)."""
    host = name = ""
    if request_headers is not None and request_headers.authority:
        host = name = request_headers.authority.decode("latin-1")
    if route_name == "block_all":
        return host, "BlackHoleCluster"
    if route_name == "allow_any":
        return host, "PassthroughCluster"
    if cluster_name:
        svc_host, svc_name = _service_cached(
            rt, cluster_name, cluster.config if cluster is not None else None
        )
        if svc_host:
            host = svc_host
        if svc_name:
            name = svc_name
    return host, name


def _principals(stream_info: Any, reporter: str, downstream_tls: Any) -> tuple[str, str, str]:
    """(peer SAN, local SAN, connection_security_policy)."""
    if reporter == SOURCE:
        return "", "", UNKNOWN
    peer_san = local_san = ""
    if downstream_tls is not None:
        cert = downstream_tls.peer_certificate
        if cert is not None:
            uris = cert.uri_sans()
            peer_san = uris[0] if uris else ""
        local = downstream_tls.local_uri_sans
        local_san = local[0] if local else ""
    return peer_san, local_san, "mutual_tls" if peer_san and local_san else "none"


def _grpc_status(stream: Any) -> str:
    for headers in (stream.response_trailers, stream.response_headers):
        if headers is not None:
            v = headers.get(b"grpc-status")
            if v is not None:
                return v.decode("latin-1")
    return ""


class IstioStatsFilter(hf.HttpFilter):
    __slots__ = ("cm", "host_metadata", "is_grpc", "rt")

    def __init__(self, rt: IstioStats, cm: Any) -> None:
        self.rt = rt
        self.cm = cm
        self.is_grpc = False
        self.host_metadata: dict[str, Any] | None = None

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        ct = headers.get(b"content-type")
        if ct is not None and ct.startswith(b"application/grpc"):
            self.is_grpc = True
        return hf.CONTINUE

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> int:
        router = self.stream.router
        up = getattr(router, "upstream", None) if router is not None else None
        host = getattr(up, "host", None) if up is not None else None
        if host is not None:
            self.host_metadata = host.metadata
        return hf.CONTINUE

    def on_destroy(self) -> None:
        stream = self.stream
        rt = self.rt
        reporter = rt.reporter
        fs = stream.filter_state
        peer: WorkloadMetadata | None = None
        if fs is not None:
            peer = fs.get(DOWNSTREAM_PEER if reporter != SOURCE else UPSTREAM_PEER)
        if peer is None and reporter == SOURCE and self.host_metadata:
            peer = endpoint_peer(self.host_metadata)
        cluster_name = stream.upstream_cluster
        router = stream.router
        cluster = getattr(router, "cluster", None) if router is not None else None
        if cluster is None and cluster_name:
            cluster = self.cm.get(cluster_name)
        host, name = _destination_service(
            rt,
            cluster_name,
            cluster,
            stream.route_name,
            None if rt.config.disable_host_header_fallback else stream.request_headers,
        )
        tls = stream.conn.info.tls if reporter != SOURCE else None
        peer_san, local_san, security = _principals(stream, reporter, tls)
        peer_tags = rt.peer_tags(peer, host, name, peer_san, local_san)
        end = stream.end_monotonic
        duration = (end - stream.start_monotonic) * 1000 if end is not None else None
        req_headers = stream.request_headers
        resp_headers = stream.response_headers
        request_bytes = stream.bytes_received + (
            req_headers.byte_size() if req_headers is not None else 0
        )
        response_bytes = stream.bytes_sent + (
            resp_headers.byte_size() if resp_headers is not None else 0
        )
        flags = stream.response_flags
        rt.record_http(
            peer_tags,
            "grpc" if self.is_grpc else "http",
            stream.response_code,
            _grpc_status(stream) if self.is_grpc else "",
            response_flags_short(flags, stream.response_flag_order) if flags else "-",
            security,
            duration,
            request_bytes,
            response_bytes,
            _resolver(stream, self.cm, rt) if rt.overrides is not None else None,
        )


def peer_dict(peer: WorkloadMetadata | None) -> dict[str, Any] | None:
    """A peer as CEL sees ``filter_state.upstream_peer`` (istio-proxy's field names)."""
    if peer is None:
        return None
    return {
        "namespace": peer.namespace_name,
        "cluster": peer.cluster_name,
        "service": peer.canonical_name,
        "revision": peer.canonical_revision,
        "app": peer.app_name,
        "version": peer.app_version,
        "workload": peer.workload_name,
        "type": peer.workload_type,
        "name": peer.instance_name,
        "identity": peer.identity,
        "labels": dict(peer.labels),
    }


def _headers_dict(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    out = {n.decode("latin-1"): v.decode("latin-1") for n, v in headers}
    return out


def _resolver(info: Any, cm: Any, rt: IstioStats) -> Callable[[str], Any]:
    """CEL's attributes (Envoy's attribute vocabulary) over a stream or TCP session, computed
    on first use."""

    def resolve(root: str) -> Any:
        if root == "request":
            h = getattr(info, "request_headers", None)
            if h is None:
                return {}
            return {
                "protocol": info.protocol,
                "host": h.authority.decode("latin-1"),
                "path": h.path.decode("latin-1"),
                "url_path": h.path.split(b"?", 1)[0].decode("latin-1"),
                "method": h.method.decode("latin-1"),
                "headers": _headers_dict(h),
                "id": info.request_id,
            }
        if root == "response":
            return {
                "code": info.response_code,
                "flags": info.response_flags,
                "code_details": info.response_code_details,
                "headers": _headers_dict(getattr(info, "response_headers", None)),
            }
        if root == "xds":
            cluster = cm.get(info.upstream_cluster) if info.upstream_cluster else None
            return {
                "node": {"metadata": rt.node_metadata_view},
                "route_name": info.route_name,
                "cluster_name": info.upstream_cluster,
                "cluster_metadata": {
                    "filter_metadata": cluster.config.metadata if cluster is not None else {}
                },
            }
        if root == "node":
            return {"metadata": rt.node_metadata_view}
        if root == "filter_state":
            fs = info.filter_state or {}
            return {
                k: (peer_dict(v) if isinstance(v, WorkloadMetadata) else v) for k, v in fs.items()
            }
        if root == "connection":
            return {"mtls": False, "requested_server_name": info.requested_server_name}
        if root == "upstream":
            return {"address": info.upstream_host}
        if root == "source":
            return {"address": info.downstream_remote_address}
        if root == "destination":
            return {"address": info.downstream_local_address}
        return None

    return resolve


class TcpIstioStats:
    """istio.stats in front of tcp_proxy: opened at the first report (istio-proxy reports when
    the peer is known or at close; with no TCP metadata exchange, at the first timer tick or
    at close), bytes at each tick and at close, closed at close."""

    def __init__(self, config: IstioStatsConfig, ctx: Any) -> None:
        self.rt = runtime(config, ctx)
        self.cm = ctx.cluster_manager
        self.loop = ctx.loop

    def open(self, session: Any) -> TcpConnectionStats:
        return TcpConnectionStats(self, session)


class TcpConnectionStats:
    __slots__ = ("owner", "received", "sent", "series", "session", "timer")

    def __init__(self, owner: TcpIstioStats, session: Any) -> None:
        self.owner = owner
        self.session = session
        self.series: Any = None
        self.sent = 0
        self.received = 0
        self.timer: Any = None
        period = owner.rt.config.tcp_reporting_duration
        if period > 0:
            self.timer = owner.loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.report()
        period = self.owner.rt.config.tcp_reporting_duration
        self.timer = self.owner.loop.call_later(period, self._tick)

    def _labels(self) -> Any:
        owner = self.owner
        rt = owner.rt
        s = self.session
        peer = None
        if rt.reporter == SOURCE:
            host = getattr(s, "host", None)
            peer = endpoint_peer(host.metadata) if host is not None else None
        svc_host, svc_name = _destination_service(rt, s.upstream_cluster, s.cluster, "", None)
        tls = s.info.tls if rt.reporter != SOURCE else None
        peer_san, local_san, security = _principals(s, rt.reporter, tls)
        tags = rt.peer_tags(peer, svc_host, svc_name, peer_san, local_san)
        flags = s.response_flags
        return rt.tcp_series(
            tags,
            response_flags_short(flags, s.response_flag_order) if flags else "-",
            security,
            _resolver(s, owner.cm, rt) if rt.overrides is not None else None,
        )

    def report(self) -> None:
        s = self.session
        if self.series is None:
            self.series = self._labels()
            if self.series.a is not None:
                self.series.a.value += 1
        series = self.series
        sent, received = s.bytes_sent, s.bytes_received
        if series.c is not None:
            series.c.value += sent - self.sent
        if series.d is not None:
            series.d.value += received - self.received
        self.sent, self.received = sent, received

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.report()
        if self.series.b is not None:
            self.series.b.value += 1
