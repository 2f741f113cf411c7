"""envoy.config.core.v3.HealthCheck -> model: HTTP/1.1 and TCP checkers. What pilotfish does not
run (gRPC and custom checkers, HTTP/2 checks, TLS options, event services) is refused by name."""

from __future__ import annotations

from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import HealthCheck
from pilotfish.model.common import AppendAction
from pilotfish.xds.translate import common as c

_FILE_SINK = "envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink"


def _ranges(ranges: Any, path: str) -> tuple[tuple[int, int], ...]:
    out = []
    for i, r in enumerate(ranges):
        if not 100 <= r.start < 600 or not 100 < r.end <= 600 or r.start >= r.end:
            raise ConfigError(
                f"{path}[{i}]",
                f"Invalid http status range: expecting start < end, start >= 100 and end <= 600,"
                f" got [{r.start}, {r.end})",
            )
        out.append((int(r.start), int(r.end)))
    return tuple(out)


def _payload(p: Any, path: str) -> bytes:
    if p.WhichOneof("payload") == "text":
        try:
            return bytes.fromhex(p.text)
        except ValueError:
            raise ConfigError(f"{path}.text", f"invalid hex string '{p.text}'") from None
    return bytes(p.binary)


def health_check(msg: Any, path: str) -> HealthCheck:
    for name in ("timeout", "interval", "unhealthy_threshold", "healthy_threshold"):
        if not msg.HasField(name):
            raise ConfigError(f"{path}.{name}", "value is required")
    timeout = c.duration(msg, "timeout", 0.0)
    interval = c.duration(msg, "interval", 0.0)
    for name, value in (("timeout", timeout), ("interval", interval)):
        if value <= 0:
            raise ConfigError(f"{path}.{name}", "value must be greater than 0s")
    for name in (
        "no_traffic_interval",
        "no_traffic_healthy_interval",
        "unhealthy_interval",
        "unhealthy_edge_interval",
        "healthy_edge_interval",
    ):
        if msg.HasField(name) and c.duration(msg, name, 0.0) <= 0:
            raise ConfigError(f"{path}.{name}", "value must be greater than 0s")
    kind = msg.WhichOneof("health_checker")
    if kind is None:
        raise ConfigError(f"{path}.health_checker", "value is required")
    if kind == "grpc_health_check":
        raise ConfigError(
            f"{path}.grpc_health_check",
            "gRPC health checking is not supported (pilotfish has no upstream HTTP/2 yet)",
        )
    if kind == "custom_health_check":
        raise ConfigError(
            f"{path}.custom_health_check",
            f"custom health checker '{msg.custom_health_check.name}' is not supported",
        )
    for name in ("event_service", "tls_options", "transport_socket_match_criteria"):
        if msg.HasField(name):
            raise ConfigError(f"{path}.{name}", f"health check {name} is not supported")
    event_log_path = msg.event_log_path
    for i, ext in enumerate(msg.event_logger):
        epath = f"{path}.event_logger[{i}]"
        if not ext.typed_config.type_url.endswith(_FILE_SINK):
            raise ConfigError(epath, f"health check event sink '{ext.name}' is not supported")
        from envoy.extensions.health_check.event_sinks.file.v3 import file_pb2

        sink = file_pb2.HealthCheckEventFileSink()
        ext.typed_config.Unpack(sink)
        event_log_path = sink.event_log_path
    unhealthy_interval = c.duration(msg, "unhealthy_interval", interval)
    no_traffic = c.duration(msg, "no_traffic_interval", 60.0)
    fields: dict[str, Any] = {}
    if kind == "http_health_check":
        h = msg.http_health_check
        hpath = f"{path}.http_health_check"
        if not h.path:
            raise ConfigError(f"{hpath}.path", "value length must be at least 1 characters")
        if h.codec_client_type != 0:
            raise ConfigError(
                f"{hpath}.codec_client_type", "HTTP/2 and HTTP/3 health checks are not supported"
            )
        for name in ("send", "service_name_matcher"):
            if h.HasField(name):
                raise ConfigError(f"{hpath}.{name}", f"HTTP health check {name} is not supported")
        if len(h.receive):
            raise ConfigError(f"{hpath}.receive", "HTTP health check receive is not supported")
        method = "GET"
        if h.method:
            from envoy.config.core.v3 import base_pb2

            method = base_pb2.RequestMethod.Name(h.method)
            if method == "CONNECT":
                raise ConfigError(f"{hpath}.method", "Methods CONNECT is not allowed")
        adds = []
        for opt in c.header_value_options(
            h.request_headers_to_add, f"{hpath}.request_headers_to_add"
        ):
            if opt.render is not None:
                raise ConfigError(
                    f"{hpath}.request_headers_to_add",
                    "substitution formatters in health check headers are not supported",
                )
            append = opt.action is AppendAction.APPEND_IF_EXISTS_OR_ADD
            adds.append((opt.name.decode(), opt.value, append))
        fields = {
            "kind": "HTTP",
            "host": h.host,
            "path": h.path,
            "method": method,
            "request_headers_to_add": tuple(adds),
            "request_headers_to_remove": tuple(
                n.decode()
                for n in c.header_names(
                    h.request_headers_to_remove, f"{hpath}.request_headers_to_remove"
                )
            ),
            "expected_statuses": _ranges(h.expected_statuses, f"{hpath}.expected_statuses")
            or ((200, 201),),
            "retriable_statuses": _ranges(h.retriable_statuses, f"{hpath}.retriable_statuses"),
        }
    else:
        t = msg.tcp_health_check
        tpath = f"{path}.tcp_health_check"
        if t.HasField("proxy_protocol_config"):
            raise ConfigError(
                f"{tpath}.proxy_protocol_config", "PROXY protocol health checks are not supported"
            )
        fields = {
            "kind": "TCP",
            "send": _payload(t.send, f"{tpath}.send") if t.HasField("send") else b"",
            "receive": tuple(_payload(p, f"{tpath}.receive[{i}]") for i, p in enumerate(t.receive)),
        }
    return HealthCheck(
        timeout=timeout,
        interval=interval,
        unhealthy_threshold=int(msg.unhealthy_threshold.value),
        healthy_threshold=int(msg.healthy_threshold.value),
        initial_jitter=c.duration(msg, "initial_jitter", 0.0),
        interval_jitter=c.duration(msg, "interval_jitter", 0.0),
        interval_jitter_percent=msg.interval_jitter_percent,
        no_traffic_interval=no_traffic,
        no_traffic_healthy_interval=c.duration(msg, "no_traffic_healthy_interval", no_traffic),
        unhealthy_interval=unhealthy_interval,
        unhealthy_edge_interval=c.duration(msg, "unhealthy_edge_interval", unhealthy_interval),
        healthy_edge_interval=c.duration(msg, "healthy_edge_interval", interval),
        reuse_connection=c.bool_value(msg, "reuse_connection", True),
        alt_port=c.uint32_value(msg, "alt_port", 0),
        always_log_health_check_failures=msg.always_log_health_check_failures,
        always_log_health_check_success=msg.always_log_health_check_success,
        event_log_path=event_log_path,
        **fields,
    )
