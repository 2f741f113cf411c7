"""Checks of one object on its own, like ``istioctl validate`` (Istio's validation webhook).

Each check returns (field path, message) pairs. Regexes are compiled with RE2
(``pilotfish.regex``; no program size limit, Istio's bootstrap raises it): Envoy compiles them
with RE2, so what RE2 rejects (lookaround, back-references) must be rejected here, not at push
time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import MESH_GATEWAY, is_ip, is_valid_dns_name
from pilotfish.regex import RegexError, compile_regex
from pilotfish.xds.translate.route import RETRY_ON

__all__ = ["validate_object"]

Issues = list[tuple[str, str]]

SIMPLE_LB = frozenset(
    {"UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"}
)
CLIENT_TLS_MODES = frozenset({"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
SERVER_TLS_MODES = frozenset(
    {"PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"}
)
PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"}
)
# retryOn takes Envoy's retry_on policies (and HTTP status codes).
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123 subdomain
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def validate_object(obj: m.Resource) -> Issues:
    issues: Issues = []
    _meta(obj.meta, issues)
    check = _CHECKS.get(type(obj))
    if check is not None:
        check(obj, issues)
    return issues


# --- helpers ---------------------------------------------------------------------------------


def _meta(meta: m.ObjectMeta, out: Issues) -> None:
    if not meta.name:
        out.append(("metadata.name", "required field is missing"))
    elif len(meta.name) > 253 or not _NAME.match(meta.name):
        out.append(
            ("metadata.name", f"invalid name {meta.name!r}: lowercase letters, digits, '-' and '.'")
        )
    if len(meta.namespace) > 63 or not _NAMESPACE.match(meta.namespace):
        out.append(("metadata.namespace", f"invalid namespace {meta.namespace!r}"))
    _labels(meta.labels, "metadata.labels", out)


def _labels(labels: Mapping[str, str], path: str, out: Issues) -> None:
    for key, value in labels.items():
        if not key or len(value) > 63 or not _LABEL_VALUE.match(value):
            out.append((f"{path}.{key}", f"invalid label value {value!r}"))


def _port(number: int | None, path: str, out: Issues) -> None:
    if number is not None and not 1 <= number <= 65535:
        out.append((path, f"port number {number} is out of range 1..65535"))


def _percent(value: float | None, path: str, out: Issues) -> None:
    if value is not None and not (0.0 <= value <= 100.0 and math.isfinite(value)):
        out.append((path, f"percentage {value:g} must be between 0 and 100"))


def _duration(seconds: float | None, path: str, out: Issues, allow_zero: bool = False) -> None:
    """Istio's rule: at least 1ms and a whole number of milliseconds."""
    if seconds is None or (allow_zero and seconds == 0):
        return
    ms = seconds * 1000
    if ms < 1 - 1e-9:
        out.append((path, "duration must be at least 1ms"))
    elif abs(ms - round(ms)) > 1e-6:
        out.append((path, "only durations to ms precision are supported"))


def _regex(pattern: str, path: str, out: Issues) -> None:
    try:
        compile_regex(pattern, size_check=False)
    except RegexError as e:
        out.append((path, f"invalid regex {pattern!r}: {e}"))


def _string_match(
    match: m.StringMatch | None, path: str, out: Issues, allow_present: bool = False
) -> None:
    if match is None:
        return
    if match.kind == "present" and not allow_present:
        out.append((path, "one of exact, prefix or regex is required"))
    elif match.kind == "regex":
        _regex(match.value, f"{path}.regex", out)


def _host(host: str, path: str, out: Issues, wildcard: bool = True) -> None:
    if not host:
        out.append((path, "host is required"))
    elif not (is_ip(host) or is_valid_dns_name(host, wildcard)):
        out.append((path, f"invalid host {host!r}"))


def _enum(value: str | None, allowed: Iterable[str], path: str, out: Issues) -> None:
    allowed = sorted(allowed)
    if value is not None and value not in allowed:
        out.append((path, f"{value!r} is not one of {', '.join(allowed)}"))


# --- VirtualService --------------------------------------------------------------------------


def _destination(dest: m.Destination, path: str, out: Issues) -> None:
    _host(dest.host, f"{path}.host", out)
    _port(dest.port, f"{path}.port.number", out)
    if dest.subset is not None and not _NAMESPACE.match(dest.subset):
        out.append((f"{path}.subset", f"invalid subset name {dest.subset!r}"))


def _weights(weights: list[int | None], path: str, out: Issues) -> None:
    for i, w in enumerate(weights):
        if w is not None and w < 0:
            out.append((f"{path}[{i}].weight", f"weight {w} must not be negative"))
    if len(weights) > 1:
        total = sum(w or 0 for w in weights)
        if total != 100:
            out.append((path, f"weights of the destinations add up to {total}, not 100"))


def _header_ops(ops: m.HeaderOperations | None, path: str, out: Issues) -> None:
    if ops is None:
        return
    for name in [*ops.set, *ops.add, *ops.remove]:
        if not name:
            out.append((path, "empty header name"))


def _headers(headers: m.Headers | None, path: str, out: Issues) -> None:
    if headers is not None:
        _header_ops(headers.request, f"{path}.request", out)
        _header_ops(headers.response, f"{path}.response", out)


def _http_match(match: m.HTTPMatchRequest, path: str, out: Issues) -> None:
    for field in ("uri", "scheme", "method", "authority"):
        _string_match(getattr(match, field), f"{path}.{field}", out)
    for field, key in (
        ("headers", "headers"),
        ("query_params", "queryParams"),
        ("without_headers", "withoutHeaders"),
    ):
        for name, sm in getattr(match, field).items():
            if not name:
                out.append((f"{path}.{key}", "empty name"))
            _string_match(sm, f"{path}.{key}.{name}", out, allow_present=True)
    _port(match.port, f"{path}.port", out)
    _labels(match.source_labels, f"{path}.sourceLabels", out)


def _http_route(route: m.HTTPRoute, path: str, out: Issues) -> None:
    actions = [
        name
        for name, value in (
            ("route", route.route),
            ("redirect", route.redirect),
            ("directResponse", route.direct_response),
            ("delegate", route.delegate),
        )
        if value
    ]
    if not actions:
        out.append((path, "HTTP route needs one of route, redirect, directResponse or delegate"))
    elif len(actions) > 1:
        out.append((path, f"HTTP route may have only one of {' and '.join(actions)}"))
    if route.rewrite is not None and route.redirect is not None:
        out.append((f"{path}.rewrite", "rewrite may not be used with redirect"))
    for i, match in enumerate(route.match):
        _http_match(match, f"{path}.match[{i}]", out)
    for i, dest in enumerate(route.route):
        _destination(dest.destination, f"{path}.route[{i}].destination", out)
        _headers(dest.headers, f"{path}.route[{i}].headers", out)
    _weights([d.weight for d in route.route], f"{path}.route", out)
    if route.redirect is not None:
        r = route.redirect
        if r.redirect_code is not None and r.redirect_code not in (301, 302, 303, 307, 308):
            out.append(
                (f"{path}.redirect.redirectCode", f"unsupported redirect code {r.redirect_code}")
            )
        _port(r.port, f"{path}.redirect.port", out)
        _enum(
            r.derive_port,
            ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
            f"{path}.redirect.derivePort",
            out,
        )
    if route.direct_response is not None and not 200 <= route.direct_response.status <= 599:
        out.append(
            (f"{path}.directResponse.status", f"invalid HTTP status {route.direct_response.status}")
        )
    if route.rewrite is not None:
        rw = route.rewrite
        if rw.uri is not None and rw.uri_regex_rewrite is not None:
            out.append((f"{path}.rewrite", "uri and uriRegexRewrite may not both be set"))
        if rw.uri_regex_rewrite is not None:
            _regex(rw.uri_regex_rewrite.match, f"{path}.rewrite.uriRegexRewrite.match", out)
    _duration(route.timeout, f"{path}.timeout", out, allow_zero=True)  # 0s disables it
    if route.retries is not None:
        _retries(route.retries, f"{path}.retries", out)
    if route.fault is not None:
        _fault(route.fault, f"{path}.fault", out)
    if route.mirror is not None:
        _destination(route.mirror, f"{path}.mirror", out)
    _percent(route.mirror_percentage, f"{path}.mirrorPercentage.value", out)
    if route.mirror is not None and route.mirrors:
        out.append((f"{path}.mirrors", "mirror and mirrors may not both be set"))
    for i, mirror in enumerate(route.mirrors):
        _destination(mirror.destination, f"{path}.mirrors[{i}].destination", out)
        _percent(mirror.percentage, f"{path}.mirrors[{i}].percentage.value", out)
    if route.cors_policy is not None:
        _cors(route.cors_policy, f"{path}.corsPolicy", out)
    _headers(route.headers, f"{path}.headers", out)


def _retries(retry: m.HTTPRetry, path: str, out: Issues) -> None:
    if retry.attempts is not None and retry.attempts < 0:
        out.append((f"{path}.attempts", "attempts must not be negative"))
    _duration(retry.per_try_timeout, f"{path}.perTryTimeout", out)
    for policy in (retry.retry_on or "").split(","):
        policy = policy.strip()
        if (
            policy
            and policy not in RETRY_ON
            and not (policy.isdigit() and 100 <= int(policy) <= 599)
        ):
            out.append((f"{path}.retryOn", f"unknown retry condition {policy!r}"))


def _fault(fault: m.HTTPFaultInjection, path: str, out: Issues) -> None:
    if fault.delay is None and fault.abort is None:
        out.append((path, "fault needs a delay or an abort"))
    if fault.delay is not None:
        _duration(fault.delay.fixed_delay, f"{path}.delay.fixedDelay", out)
        _percent(fault.delay.percentage, f"{path}.delay.percentage.value", out)
    if fault.abort is not None:
        abort = fault.abort
        if (abort.http_status is None) == (abort.grpc_status is None):
            out.append((f"{path}.abort", "exactly one of httpStatus or grpcStatus is required"))
        if abort.http_status is not None and not 200 <= abort.http_status <= 599:
            out.append(
                (f"{path}.abort.httpStatus", f"invalid HTTP status {abort.http_status} (200..599)")
            )
        _percent(abort.percentage, f"{path}.abort.percentage.value", out)


def _cors(cors: m.CorsPolicy, path: str, out: Issues) -> None:
    for i, origin in enumerate(cors.allow_origins):
        _string_match(origin, f"{path}.allowOrigins[{i}]", out)
    for method in cors.allow_methods:
        if method not in HTTP_METHODS:
            out.append((f"{path}.allowMethods", f"invalid HTTP method {method!r}"))
    if cors.max_age is not None and cors.max_age < 0:
        out.append((f"{path}.maxAge", "maxAge must not be negative"))


def _l4_routes(routes: Iterable[m.TCPRoute | m.TLSRoute], path: str, out: Issues) -> None:
    for i, route in enumerate(routes):
        if not route.route:
            out.append((f"{path}[{i}].route", "at least one destination is required"))
        for j, dest in enumerate(route.route):
            _destination(dest.destination, f"{path}[{i}].route[{j}].destination", out)
        _weights([d.weight for d in route.route], f"{path}[{i}].route", out)
        matches: Sequence[m.L4MatchAttributes | m.TLSMatchAttributes] = route.match
        for j, match in enumerate(matches):
            _port(match.port, f"{path}[{i}].match[{j}].port", out)
            if isinstance(match, m.TLSMatchAttributes) and not match.sni_hosts:
                out.append((f"{path}[{i}].match[{j}].sniHosts", "TLS match needs sniHosts"))


def _virtual_service(vs: m.VirtualService, out: Issues) -> None:
    if not vs.hosts:
        out.append(("spec.hosts", "at least one host is required"))
    on_mesh = not vs.gateways or MESH_GATEWAY in vs.gateways
    for i, host in enumerate(vs.hosts):
        _host(host, f"spec.hosts[{i}]", out)
        if host == "*" and on_mesh:
            out.append(
                (
                    f"spec.hosts[{i}]",
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                )
            )
    for i, gw in enumerate(vs.gateways):
        if not gw or gw.count("/") > 1:
            out.append((f"spec.gateways[{i}]", f"invalid gateway name {gw!r}"))
    if not (vs.http or vs.tcp or vs.tls):
        out.append(("spec", "at least one of http, tcp or tls routes is required"))
    for i, route in enumerate(vs.http):
        _http_route(route, f"spec.http[{i}]", out)
    _l4_routes(vs.tcp, "spec.tcp", out)
    _l4_routes(vs.tls, "spec.tls", out)


# --- DestinationRule -------------------------------------------------------------------------


def _load_balancer(lb: m.LoadBalancerSettings | None, path: str, out: Issues) -> None:
    if lb is None:
        return
    if lb.simple is not None and lb.consistent_hash is not None:
        out.append((path, "only one of simple or consistentHash may be set"))
    _enum(lb.simple, SIMPLE_LB, f"{path}.simple", out)
    ch = lb.consistent_hash
    if ch is not None:
        keys = [
            k
            for k, v in (
                ("httpHeaderName", ch.http_header_name),
                ("httpCookie", ch.http_cookie),
                ("useSourceIp", ch.use_source_ip),
                ("httpQueryParameterName", ch.http_query_parameter_name),
            )
            if v
        ]
        if len(keys) != 1:
            out.append(
                (
                    f"{path}.consistentHash",
                    "exactly one of httpHeaderName, httpCookie, useSourceIp or "
                    "httpQueryParameterName is required",
                )
            )
        if ch.http_cookie is not None:
            if not ch.http_cookie.name:
                out.append((f"{path}.consistentHash.httpCookie.name", "required field is missing"))
            _duration(
                ch.http_cookie.ttl, f"{path}.consistentHash.httpCookie.ttl", out, allow_zero=True
            )


def _policy_parts(policy: m.TrafficPolicy | m.PortTrafficPolicy, path: str, out: Issues) -> None:
    _load_balancer(policy.load_balancer, f"{path}.loadBalancer", out)
    pool = policy.connection_pool
    if pool is not None and pool.tcp is not None:
        tcp, p = pool.tcp, f"{path}.connectionPool.tcp"
        if tcp.max_connections is not None and tcp.max_connections <= 0:
            out.append((f"{p}.maxConnections", "must be greater than 0"))
        _duration(tcp.connect_timeout, f"{p}.connectTimeout", out)
        _duration(tcp.max_connection_duration, f"{p}.maxConnectionDuration", out)
        _duration(tcp.idle_timeout, f"{p}.idleTimeout", out, allow_zero=True)
    if pool is not None and pool.http is not None:
        http, p = pool.http, f"{path}.connectionPool.http"
        for name, value in (
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ):
            if value is not None and value < 0:
                out.append((f"{p}.{name}", "must not be negative"))
        _duration(http.idle_timeout, f"{p}.idleTimeout", out)
        _enum(
            http.h2_upgrade_policy,
            ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
            f"{p}.h2UpgradePolicy",
            out,
        )
    od = policy.outlier_detection
    if od is not None:
        p = f"{path}.outlierDetection"
        _duration(od.interval, f"{p}.interval", out)
        _duration(od.base_ejection_time, f"{p}.baseEjectionTime", out)
        for name, value in (
            ("maxEjectionPercent", od.max_ejection_percent),
            ("minHealthPercent", od.min_health_percent),
        ):
            if value is not None and not 0 <= value <= 100:
                out.append((f"{p}.{name}", f"{value} must be between 0 and 100"))
        for name, value in (
            ("consecutiveErrors", od.consecutive_errors),
            ("consecutive5xxErrors", od.consecutive_5xx_errors),
            ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
        ):
            if value is not None and value < 0:
                out.append((f"{p}.{name}", "must not be negative"))
    tls = policy.tls
    if tls is not None:
        _enum(tls.mode, CLIENT_TLS_MODES, f"{path}.tls.mode", out)
        if (
            tls.mode == "MUTUAL"
            and not tls.credential_name
            and not (tls.client_certificate and tls.private_key)
        ):
            out.append(
                (f"{path}.tls", "MUTUAL needs credentialName or clientCertificate and privateKey")
            )


def _traffic_policy(policy: m.TrafficPolicy | None, path: str, out: Issues) -> None:
    if policy is None:
        return
    _policy_parts(policy, path, out)
    seen: set[int] = set()
    for i, pls in enumerate(policy.port_level_settings):
        p = f"{path}.portLevelSettings[{i}]"
        if pls.port is None:
            out.append((f"{p}.port", "port is required"))
        elif pls.port in seen:
            out.append((f"{p}.port", f"port {pls.port} has settings twice"))
        else:
            seen.add(pls.port)
            _port(pls.port, f"{p}.port.number", out)
        _policy_parts(pls, p, out)


def _destination_rule(dr: m.DestinationRule, out: Issues) -> None:
    _host(dr.host, "spec.host", out)
    _traffic_policy(dr.traffic_policy, "spec.trafficPolicy", out)
    names: set[str] = set()
    for i, subset in enumerate(dr.subsets):
        p = f"spec.subsets[{i}]"
        if not subset.name or not _NAMESPACE.match(subset.name):
            out.append((f"{p}.name", f"invalid subset name {subset.name!r}"))
        elif subset.name in names:
            out.append((f"{p}.name", f"duplicate subset name {subset.name!r}"))
        names.add(subset.name)
        _labels(subset.labels, f"{p}.labels", out)
        _traffic_policy(subset.traffic_policy, f"{p}.trafficPolicy", out)


# --- Gateway, ServiceEntry, WorkloadEntry, Sidecar -------------------------------------------


def _istio_port(port: m.Port, path: str, out: Issues, name_required: bool) -> None:
    _port(port.number, f"{path}.number", out)
    if port.number == 0:
        out.append((f"{path}.number", "port number is required"))
    _port(port.target_port, f"{path}.targetPort", out)
    protocol = (port.protocol or "").upper()
    if not protocol:
        out.append((f"{path}.protocol", "protocol is required"))
    elif protocol not in PROTOCOLS:
        out.append((f"{path}.protocol", f"unknown protocol {port.protocol!r}"))
    if name_required and not port.name:
        out.append((f"{path}.name", "port name is required"))


def _scoped_host(host: str, path: str, out: Issues) -> None:
    """``namespace/dnsName`` (Gateway hosts may omit the namespace, Sidecar hosts may not)."""
    ns, _, name = host.rpartition("/")
    if ns and ns not in ("*", ".", "~") and not _NAMESPACE.match(ns):
        out.append((path, f"invalid namespace {ns!r} in host {host!r}"))
    _host(name, path, out)


def _gateway(gw: m.Gateway, out: Issues) -> None:
    if not gw.servers:
        out.append(("spec.servers", "at least one server is required"))
    for i, server in enumerate(gw.servers):
        p = f"spec.servers[{i}]"
        _istio_port(server.port, f"{p}.port", out, name_required=True)
        if not server.hosts:
            out.append((f"{p}.hosts", "at least one host is required"))
        for j, host in enumerate(server.hosts):
            _scoped_host(host, f"{p}.hosts[{j}]", out)
        protocol = (server.port.protocol or "").upper()
        if server.tls is not None:
            _enum(server.tls.mode, SERVER_TLS_MODES, f"{p}.tls.mode", out)
        if protocol == "HTTPS" and (
            server.tls is None or (server.tls.mode is None and not server.tls.https_redirect)
        ):
            out.append((f"{p}.tls", "an HTTPS server needs tls settings"))
        if protocol in ("HTTPS", "TLS") and server.tls is not None and server.tls.mode == "SIMPLE":
            if not server.tls.credential_name and not (
                server.tls.server_certificate and server.tls.private_key
            ):
                out.append(
                    (
                        f"{p}.tls",
                        "SIMPLE TLS needs credentialName or serverCertificate and privateKey",
                    )
                )


def _workload(w: m.WorkloadEndpoint, path: str, out: Issues) -> None:
    for name, number in w.ports.items():
        _port(number, f"{path}.ports.{name}", out)
    _labels(w.labels, f"{path}.labels", out)
    if w.weight is not None and w.weight < 0:
        out.append((f"{path}.weight", "weight must not be negative"))


def _service_entry(se: m.ServiceEntry, out: Issues) -> None:
    if not se.hosts:
        out.append(("spec.hosts", "at least one host is required"))
    for i, host in enumerate(se.hosts):
        if host == "*":
            out.append((f"spec.hosts[{i}]", "wildcard host * is not allowed"))
        else:
            _host(host, f"spec.hosts[{i}]", out)
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(se.ports):
        _istio_port(port, f"spec.ports[{i}]", out, name_required=False)
        if port.name and port.name in names:
            out.append((f"spec.ports[{i}].name", f"duplicate port name {port.name!r}"))
        if port.number in numbers:
            out.append((f"spec.ports[{i}].number", f"duplicate port number {port.number}"))
        names.add(port.name or "")
        numbers.add(port.number)
    _enum(se.location, ("MESH_EXTERNAL", "MESH_INTERNAL"), "spec.location", out)
    _enum(se.resolution, ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"), "spec.resolution", out)
    if se.endpoints and se.workload_selector is not None:
        out.append(("spec", "endpoints and workloadSelector may not both be set"))
    if se.resolution == "STATIC" and not se.endpoints and se.workload_selector is None:
        out.append(("spec.endpoints", "STATIC resolution needs endpoints or a workloadSelector"))
    if se.resolution in ("DNS", "DNS_ROUND_ROBIN") and not se.endpoints:
        for i, host in enumerate(se.hosts):
            if host.startswith("*"):
                out.append(
                    (
                        f"spec.hosts[{i}]",
                        "DNS resolution without endpoints needs hosts without wildcards",
                    )
                )
    for i, ep in enumerate(se.endpoints):
        p = f"spec.endpoints[{i}]"
        _workload(ep, p, out)
        if not ep.address:
            out.append((f"{p}.address", "address is required"))
        elif (
            se.resolution == "STATIC"
            and not is_ip(ep.address)
            and not ep.address.startswith("unix://")
        ):
            out.append(
                (f"{p}.address", f"STATIC resolution needs an IP address, got {ep.address!r}")
            )
        for name in ep.ports:
            if name not in names:
                out.append((f"{p}.ports.{name}", f"no port named {name!r} in spec.ports"))


def _workload_entry(we: m.WorkloadEntry, out: Issues) -> None:
    if not we.spec.address and not we.spec.network:
        out.append(("spec.address", "address is required"))
    _workload(we.spec, "spec", out)


def _sidecar(sc: m.Sidecar, out: Issues) -> None:
    for i, egress in enumerate(sc.egress):
        p = f"spec.egress[{i}]"
        if not egress.hosts:
            out.append((f"{p}.hosts", "at least one host is required"))
        for j, host in enumerate(egress.hosts):
            if "/" not in host:
                out.append(
                    (
                        f"{p}.hosts[{j}]",
                        f"host {host!r} must be namespace/dnsName (e.g. ./{host} or */{host})",
                    )
                )
            else:
                _scoped_host(host, f"{p}.hosts[{j}]", out)
        if egress.port is not None:
            _istio_port(egress.port, f"{p}.port", out, name_required=False)
        _enum(egress.capture_mode, ("DEFAULT", "IPTABLES", "NONE"), f"{p}.captureMode", out)


def _service(svc: m.Service, out: Issues) -> None:
    names: set[str] = set()
    for i, port in enumerate(svc.ports):
        p = f"spec.ports[{i}]"
        _port(port.port, f"{p}.port", out)
        if port.port == 0:
            out.append((f"{p}.port", "port is required"))
        if isinstance(port.target_port, int):
            _port(port.target_port, f"{p}.targetPort", out)
        _enum(port.protocol, ("TCP", "UDP", "SCTP"), f"{p}.protocol", out)
        if len(svc.ports) > 1 and not port.name:
            out.append((f"{p}.name", "ports must be named when a Service has several"))
        if port.name and port.name in names:
            out.append((f"{p}.name", f"duplicate port name {port.name!r}"))
        names.add(port.name or "")
    _labels(svc.selector, "spec.selector", out)


def _deployment(dep: m.Deployment, out: Issues) -> None:
    if not dep.containers:
        out.append(("spec.template.spec.containers", "at least one container is required"))
    for i, container in enumerate(dep.containers):
        for j, number in enumerate(container.ports):
            _port(number, f"spec.template.spec.containers[{i}].ports[{j}].containerPort", out)
    _labels(dep.pod_labels, "spec.template.metadata.labels", out)


def _peer_authentication(pa: m.PeerAuthentication, out: Issues) -> None:
    # Istio's ValidatePeerAuthentication.
    _enum(pa.mode, m.MTLS_MODES, "spec.mtls.mode", out)
    if pa.selector is not None:
        _labels(pa.selector, "spec.selector.matchLabels", out)
    if pa.port_level_mtls and not pa.selector:
        out.append(
            (
                "spec.portLevelMtls",
                "portLevelMtls requires a workload selector (spec.selector.matchLabels): "
                "a mesh- or namespace-wide PeerAuthentication cannot set port-level mTLS",
            )
        )
    for port, mode in pa.port_level_mtls.items():
        _port(port, f"spec.portLevelMtls.{port}", out)
        _enum(mode, m.MTLS_MODES, f"spec.portLevelMtls.{port}.mode", out)


_CHECKS: dict[type, Callable[..., None]] = {
    m.VirtualService: _virtual_service,
    m.DestinationRule: _destination_rule,
    m.Gateway: _gateway,
    m.ServiceEntry: _service_entry,
    m.WorkloadEntry: _workload_entry,
    m.Sidecar: _sidecar,
    m.Service: _service,
    m.Deployment: _deployment,
    m.PeerAuthentication: _peer_authentication,
}
