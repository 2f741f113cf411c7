"""Every built-in extension, listed explicitly (no import-time registration magic)."""

from __future__ import annotations

from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory, Refused, TelemetryOnly


class _AcceptedConfig(ExtensionFactory):
    """An extension whose config is validated and kept, and whose effect pilotfish provides
    elsewhere or does not need (documented in docs/compatibility.md)."""

    def __init__(self, category: Category, name: str, *type_names: str) -> None:
        self.category = category  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self.type_names = type_names  # type: ignore[misc]


class DownstreamConnectionsMonitor(ExtensionFactory):
    """envoy.resource_monitors.global_downstream_max_connections: the listener manager refuses
    connections beyond the limit."""

    category = Category.RESOURCE_MONITOR
    name = "envoy.resource_monitors.global_downstream_max_connections"
    type_names = (
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
    )

    def parse(self, msg: Any, ctx: Any, path: str) -> int:
        limit = int(msg.max_active_downstream_connections)
        if limit <= 0:
            raise ConfigError(
                f"{path}.typed_config.max_active_downstream_connections",
                "value must be greater than 0",
            )
        return limit


class UuidRequestId(ExtensionFactory):
    category = Category.REQUEST_ID
    name = "envoy.request_id.uuid"
    type_names = ("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",)


def builtin_factories() -> list[ExtensionFactory]:
    from pilotfish.extensions.access_loggers.file import FileAccessLogFactory
    from pilotfish.extensions.access_loggers.stream import (
        StderrAccessLogFactory,
        StdoutAccessLogFactory,
    )
    from pilotfish.extensions.filters.http.compressor import (
        CompressorFactory,
        compressor_libraries,
    )
    from pilotfish.extensions.filters.http.cors import CorsFactory
    from pilotfish.extensions.filters.http.fault import FaultFactory
    from pilotfish.extensions.filters.http.istio_stats import (
        IstioStatsFactory,
        IstioStatsNetworkFactory,
    )
    from pilotfish.extensions.filters.http.peer_metadata import PeerMetadataFactory
    from pilotfish.extensions.filters.http.router import RouterFactory
    from pilotfish.extensions.filters.listener.http_inspector import HttpInspectorFactory
    from pilotfish.extensions.filters.listener.original_dst import OriginalDstFactory
    from pilotfish.extensions.filters.listener.tls_inspector import TlsInspectorFactory
    from pilotfish.extensions.filters.network.http_connection_manager import (
        HttpConnectionManagerFactory,
    )
    from pilotfish.extensions.filters.network.tcp_proxy import TcpProxyFactory
    from pilotfish.extensions.istio import IstioAuthnFactory, WasmHttpFactory, WasmNetworkFactory
    from pilotfish.extensions.transport_sockets import transport_socket_factories

    T = TelemetryOnly
    C = Category
    telemetry: list[ExtensionFactory] = [
        # Tracers: spans are not produced (docs/compatibility.md).
        T(C.TRACER, "envoy.tracers.zipkin", "envoy.config.trace.v3.ZipkinConfig"),
        T(C.TRACER, "envoy.tracers.datadog", "envoy.config.trace.v3.DatadogConfig"),
        T(C.TRACER, "envoy.tracers.lightstep", "envoy.config.trace.v3.LightstepConfig"),
        T(C.TRACER, "envoy.tracers.opentelemetry", "envoy.config.trace.v3.OpenTelemetryConfig"),
        T(C.TRACER, "envoy.tracers.skywalking", "envoy.config.trace.v3.SkyWalkingConfig"),
        T(C.TRACER, "envoy.tracers.dynamic_ot", "envoy.config.trace.v3.DynamicOtConfig"),
        # Stats sinks: stats are served on the admin API instead of pushed.
        T(C.STAT_SINK, "envoy.stat_sinks.statsd", "envoy.config.metrics.v3.StatsdSink"),
        T(C.STAT_SINK, "envoy.stat_sinks.dog_statsd", "envoy.config.metrics.v3.DogStatsdSink"),
        T(
            C.STAT_SINK,
            "envoy.stat_sinks.metrics_service",
            "envoy.config.metrics.v3.MetricsServiceConfig",
        ),
        T(C.STAT_SINK, "envoy.stat_sinks.hystrix", "envoy.config.metrics.v3.HystrixSink"),
        T(
            C.STAT_SINK,
            "envoy.stat_sinks.open_telemetry",
            "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
        ),
        # Istio's TCP metadata exchange (the MX protocol after ALPN istio-peer-exchange):
        # not run; TCP metrics then know the peer from endpoint metadata only.
        T(
            C.NETWORK_FILTER,
            "istio.metadata_exchange",
            "envoy.tcp.metadataexchange.config.MetadataExchange",
        ),
        T(
            C.HTTP_FILTER,
            "envoy.filters.http.grpc_stats",
            "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
        ),
        T(C.BOOTSTRAP, "metadata_discovery", "istio.workload.BootstrapExtension"),
        # Memory-based overload actions: there is no Envoy heap to watch.
        T(
            C.RESOURCE_MONITOR,
            "envoy.resource_monitors.fixed_heap",
            "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        ),
    ]
    accepted: list[ExtensionFactory] = [
        # Internal listeners are refused where they are used (listener address); the
        # bootstrap extension that enables them is harmless on its own.
        _AcceptedConfig(
            C.BOOTSTRAP,
            "envoy.bootstrap.internal_listener",
            "envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
        ),
        # ALPN override for Istio's upstream mTLS: no effect on plain-text upstreams.
        _AcceptedConfig(
            C.HTTP_FILTER, "istio.alpn", "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
        ),
    ]
    # Known to Envoy, deliberately not implemented, and unsafe to skip: they decide which
    # requests or connections are let through (Istio's AuthorizationPolicy).
    authz = "it decides which requests are allowed (Istio AuthorizationPolicy), and skipping it "
    authz += "would allow everything"
    refused: list[ExtensionFactory] = [
        Refused(
            C.HTTP_FILTER,
            "envoy.filters.http.rbac",
            authz,
            "envoy.extensions.filters.http.rbac.v3.RBAC",
        ),
        Refused(
            C.NETWORK_FILTER,
            "envoy.filters.network.rbac",
            authz,
            "envoy.extensions.filters.network.rbac.v3.RBAC",
        ),
        Refused(
            C.HTTP_FILTER,
            "envoy.filters.http.ext_authz",
            authz,
            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        ),
        Refused(
            C.NETWORK_FILTER,
            "envoy.filters.network.ext_authz",
            authz,
            "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
        ),
        Refused(
            C.TRANSPORT_SOCKET,
            "envoy.transport_sockets.internal_upstream",
            "internal listeners (Istio's HBONE tunnels: ambient, waypoints) are not supported",
            "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
        ),
    ]
    return [
        HttpConnectionManagerFactory(),
        TcpProxyFactory(),
        RouterFactory(),
        CompressorFactory(),
        *compressor_libraries(),
        OriginalDstFactory(),
        TlsInspectorFactory(),
        HttpInspectorFactory(),
        FileAccessLogFactory(),
        StdoutAccessLogFactory(),
        StderrAccessLogFactory(),
        *transport_socket_factories(),
        DownstreamConnectionsMonitor(),
        UuidRequestId(),
        # Istio's own types (not in xds-protos; parsed from their TypedStruct form).
        IstioStatsFactory(),
        IstioStatsNetworkFactory(),
        PeerMetadataFactory(),
        *telemetry,
        *accepted,
        # In the form istiod emits them, these do nothing (see each module); other forms are
        # refused.
        FaultFactory(),
        CorsFactory(),
        WasmHttpFactory(),
        WasmNetworkFactory(),
        IstioAuthnFactory(),
        *refused,
    ]
