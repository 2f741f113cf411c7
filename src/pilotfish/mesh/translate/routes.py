"""RDS in Istio's shape: VirtualService HTTP routes → Envoy routes, in order, one Envoy route
per match; the default route to the service when no VirtualService applies; virtual hosts
with Istio's domain lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import MESH_GATEWAY, fqdn, gateway_ref, host_matches
from pilotfish.mesh.translate.clusters import destination_rule_for, effective_policy
from pilotfish.mesh.translate.common import JSON, cluster_name, duration, million_percent
from pilotfish.mesh.translate.services import MeshConfig, MeshService
from pilotfish.mesh.translate.workload import labels_match

__all__ = [
    "DEFAULT_RETRY",
    "RouteContext",
    "default_route",
    "is_bound",
    "select_virtual_service",
    "sidecar_domains",
    "translate_http_routes",
]

_PREVIOUS_HOSTS: JSON = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
        "PreviousHostsPredicate"
    },
}
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY: JSON = {
    "retry_on": DEFAULT_RETRY_ON,
    "num_retries": 2,
    "retry_host_predicate": [_PREVIOUS_HOSTS],
    "host_selection_retry_max_attempts": "5",
    "retriable_status_codes": [503],
}
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
_GRPC_NAMES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
)
_GRPC_CODES = {name: i for i, name in enumerate(_GRPC_NAMES.split())}


@dataclass(frozen=True, slots=True)
class RouteContext:
    """Who the routes are for: ``gateway`` is ``mesh`` for sidecars or ``ns/name`` of the
    Gateway; ``labels``/``namespace`` are the proxy's (for sourceLabels, sourceNamespace and
    the DestinationRule lookup)."""

    config: MeshConfig
    services: Mapping[str, MeshService]
    namespace: str
    labels: Mapping[str, str]
    gateway: str = MESH_GATEWAY


def sidecar_domains(svc: MeshService, port: int, proxy_namespace: str) -> list[str]:
    """Istio's domains of a service's virtual host, each with and without ``:port``."""
    names = [svc.hostname]
    if svc.kubernetes and svc.hostname.endswith(f".{svc.namespace}.svc.cluster.local"):
        short = svc.short_name
        if svc.namespace == proxy_namespace:
            names.append(short)
        names += [f"{short}.{svc.namespace}.svc", f"{short}.{svc.namespace}"]
    if svc.cluster_ip:
        names.append(svc.cluster_ip)
    out: list[str] = []
    for name in names:
        out += [name, f"{name}:{port}"]
    return out


def select_virtual_service(ctx: RouteContext, host: str) -> m.VirtualService | None:
    """The VirtualService bound to ``ctx.gateway`` for ``host``: an exact host before the
    longest wildcard, then the first by namespace/name."""
    best: tuple[tuple[int, int, str, str], m.VirtualService] | None = None
    for vs in ctx.config.virtual_services:
        if not is_bound(vs, ctx.gateway):
            continue
        for h in vs.hosts:
            vh = fqdn(h, vs.meta.namespace)
            if vh == host:
                rank = (0, 0)
            elif host_matches(vh, host):
                rank = (1, -len(vh))
            else:
                continue
            key = (*rank, vs.meta.namespace, vs.meta.name)
            if best is None or key < best[0]:
                best = (key, vs)
    return None if best is None else best[1]


def is_bound(vs: m.VirtualService, gateway: str) -> bool:
    gateways = vs.gateways or (MESH_GATEWAY,)
    return gateway in {gateway_ref(g, vs.meta.namespace) for g in gateways}


# --- matches ---------------------------------------------------------------------------------


def _string_matcher(sm: m.StringMatch, ignore_case: bool = False) -> JSON:
    if sm.kind == "regex":
        return {"safe_regex": {"regex": sm.value}}
    out: JSON = {sm.kind: sm.value}
    if ignore_case:
        out["ignore_case"] = True
    return out


def _header(name: str, sm: m.StringMatch, invert: bool = False) -> JSON:
    out: JSON = {"name": name}
    if sm.kind == "present":
        out["present_match"] = True
    else:
        out["string_match"] = _string_matcher(sm)
    if invert:
        out["invert_match"] = True
    return out


def _match(match: m.HTTPMatchRequest | None) -> JSON:
    out: JSON = {}
    uri = match.uri if match else None
    if uri is None or uri.kind == "present":
        out["prefix"] = "/"
    elif uri.kind == "exact":
        out["path"] = uri.value
    elif uri.kind == "prefix":
        out["prefix"] = uri.value
    else:
        out["safe_regex"] = {"regex": uri.value}
    if match is None:
        return out
    if match.ignore_uri_case:
        out["case_sensitive"] = False
    headers = [_header(k.lower(), v) for k, v in match.headers.items()]
    if match.method is not None:
        headers.append(_header(":method", match.method))
    if match.authority is not None:
        headers.append(_header(":authority", match.authority))
    if match.scheme is not None:
        headers.append(_header(":scheme", match.scheme))
    headers += [_header(k.lower(), v, invert=True) for k, v in match.without_headers.items()]
    if headers:
        out["headers"] = headers
    params = []
    for name, sm in match.query_params.items():
        if sm.kind == "present":
            params.append({"name": name, "present_match": True})
        else:
            params.append({"name": name, "string_match": _string_matcher(sm)})
    if params:
        out["query_parameters"] = params
    return out


def _match_applies(match: m.HTTPMatchRequest, ctx: RouteContext, vs_ns: str, port: int) -> bool:
    if match.port is not None and port and match.port != port:
        return False
    if match.gateways and ctx.gateway not in {gateway_ref(g, vs_ns) for g in match.gateways}:
        return False
    if match.source_labels and not labels_match(match.source_labels, ctx.labels):
        return False
    return not (match.source_namespace and match.source_namespace != ctx.namespace)


# --- actions ---------------------------------------------------------------------------------


def _header_ops(ops: m.HeaderOperations | None, prefix: str) -> JSON:
    if ops is None:
        return {}
    add = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in ops.set.items()
    ] + [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in ops.add.items()
    ]
    out: JSON = {}
    if add:
        out[f"{prefix}_headers_to_add"] = add
    if ops.remove:
        out[f"{prefix}_headers_to_remove"] = list(ops.remove)
    return out


def _headers(h: m.Headers | None) -> JSON:
    if h is None:
        return {}
    return {**_header_ops(h.request, "request"), **_header_ops(h.response, "response")}


def _destination_cluster(
    ctx: RouteContext, dest: m.Destination, vs_ns: str, port: int
) -> tuple[str, str]:
    """(cluster name, host) for a destination; a missing port is the service's only port,
    else the port of the virtual host."""
    host = fqdn(dest.host, vs_ns)
    number = dest.port
    if number is None:
        svc = ctx.services.get(host)
        if svc is not None and (len(svc.ports) == 1 or (not port and svc.ports)):
            number = svc.ports[0].number
        else:
            number = port
    return cluster_name("outbound", number or 80, dest.subset, host), host


def _retry(retries: m.HTTPRetry | None) -> JSON | None:
    if retries is None:
        return dict(DEFAULT_RETRY)
    if not retries.attempts:
        return None
    policy: JSON = {
        "num_retries": retries.attempts,
        "retry_host_predicate": [_PREVIOUS_HOSTS],
        "host_selection_retry_max_attempts": "5",
    }
    retry_on = DEFAULT_RETRY_ON if retries.retry_on is None else retries.retry_on
    words, codes = [], []
    for word in (w.strip() for w in retry_on.split(",")):
        if word.isdigit():
            codes.append(int(word))
        elif word:
            words.append(word)
    if retries.retry_on is None:
        codes = [503]
    if codes and "retriable-status-codes" not in words:
        words.append("retriable-status-codes")
    policy["retry_on"] = ",".join(words)
    if codes:
        policy["retriable_status_codes"] = codes
    if retries.per_try_timeout is not None:
        policy["per_try_timeout"] = duration(retries.per_try_timeout)
    return policy


def _hash_policy(
    ctx: RouteContext, host: str, destination: m.Destination | None, port: int
) -> list[JSON]:
    """Istio's consistentHashToHashPolicy for the destination's consistentHash: the subset's
    port-level setting, else the subset's, else the rule's port-level, else the rule's."""
    dr = destination_rule_for(ctx.config, host, ctx.namespace)
    subset = None
    if dr is not None and destination is not None and destination.subset:
        subset = next((s for s in dr.subsets if s.name == destination.subset), None)
    if destination is not None and destination.port:
        port = destination.port
    lb = effective_policy(dr, subset, port).load_balancer
    ch = lb.consistent_hash if lb else None
    if ch is None:
        return []
    if ch.http_header_name:
        return [{"header": {"header_name": ch.http_header_name}}]
    if ch.http_cookie is not None:
        cookie: JSON = {"name": ch.http_cookie.name}
        if ch.http_cookie.path:
            cookie["path"] = ch.http_cookie.path
        if ch.http_cookie.ttl is not None:
            cookie["ttl"] = duration(ch.http_cookie.ttl)
        if ch.http_cookie.attributes:
            cookie["attributes"] = [
                {"name": name, "value": value} if value else {"name": name}
                for name, value in ch.http_cookie.attributes
            ]
        return [{"cookie": cookie}]
    if ch.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    if ch.http_query_parameter_name:
        return [{"query_parameter": {"name": ch.http_query_parameter_name}}]
    return []


def _fault(fault: m.HTTPFaultInjection) -> JSON:
    out: JSON = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    if fault.delay is not None:
        out["delay"] = {
            "fixed_delay": duration(fault.delay.fixed_delay),
            "percentage": million_percent(fault.delay.percentage),
        }
    if fault.abort is not None:
        abort: JSON = {"percentage": million_percent(fault.abort.percentage)}
        if fault.abort.grpc_status is not None:
            abort["grpc_status"] = _GRPC_CODES.get(fault.abort.grpc_status, 2)
        else:
            abort["http_status"] = fault.abort.http_status or 500
        out["abort"] = abort
    return out


def _cors(cors: m.CorsPolicy) -> JSON:
    out: JSON = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "filter_enabled": {"default_value": {"numerator": 100}},
    }
    if cors.allow_origins:
        out["allow_origin_string_match"] = [_string_matcher(o) for o in cors.allow_origins]
    if cors.allow_methods:
        out["allow_methods"] = ",".join(cors.allow_methods)
    if cors.allow_headers:
        out["allow_headers"] = ",".join(cors.allow_headers)
    if cors.expose_headers:
        out["expose_headers"] = ",".join(cors.expose_headers)
    if cors.max_age is not None:
        out["max_age"] = str(int(cors.max_age))
    if cors.allow_credentials is not None:
        out["allow_credentials"] = cors.allow_credentials
    if cors.unmatched_preflights is not None:
        out["forward_not_matching_preflights"] = cors.unmatched_preflights != "IGNORE"
    return out


def _mirrors(ctx: RouteContext, route: m.HTTPRoute, vs_ns: str, port: int) -> list[JSON]:
    mirrors = list(route.mirrors)
    if route.mirror is not None:
        mirrors.insert(0, m.HTTPMirrorPolicy(route.mirror, route.mirror_percentage))
    out = []
    for mirror in mirrors:
        cluster, _ = _destination_cluster(ctx, mirror.destination, vs_ns, port)
        out.append(
            {
                "cluster": cluster,
                "runtime_fraction": {"default_value": million_percent(mirror.percentage)},
                "trace_sampled": False,
            }
        )
    return out


def _route_action(
    ctx: RouteContext, route: m.HTTPRoute, vs_ns: str, port: int
) -> tuple[JSON, JSON]:
    """(``route`` action, extra route fields such as headers) for a route with destinations."""
    action: JSON = {}
    extra: JSON = {}
    dests = [d for d in route.route if d.weight is None or d.weight > 0 or len(route.route) == 1]
    if len(dests) == 1:
        d = dests[0]
        name, _ = _destination_cluster(ctx, d.destination, vs_ns, port)
        action["cluster"] = name
        extra.update(_headers(d.headers))
    else:
        clusters = []
        for d in dests:
            name, _ = _destination_cluster(ctx, d.destination, vs_ns, port)
            wc: JSON = {"name": name, "weight": d.weight or 0}
            wc.update(_headers(d.headers))
            clusters.append(wc)
        action["weighted_clusters"] = {"clusters": clusters}
    first_host = fqdn(dests[0].destination.host, vs_ns) if dests else ""
    timeout = duration(route.timeout) if route.timeout is not None else "0s"
    action["timeout"] = timeout
    retry = _retry(route.retries)
    if retry is not None:
        action["retry_policy"] = retry
    if route.rewrite is not None:
        rw = route.rewrite
        if rw.uri is not None:
            action["prefix_rewrite"] = rw.uri
        if rw.uri_regex_rewrite is not None:
            action["regex_rewrite"] = {
                "pattern": {"regex": rw.uri_regex_rewrite.match},
                "substitution": rw.uri_regex_rewrite.rewrite,
            }
        if rw.authority is not None:
            action["host_rewrite_literal"] = rw.authority
    mirrors = _mirrors(ctx, route, vs_ns, port)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    hash_policy = _hash_policy(ctx, first_host, dests[0].destination, port) if first_host else []
    if hash_policy:
        action["hash_policy"] = hash_policy
    action["max_stream_duration"] = {
        "max_stream_duration": "0s",
        "grpc_timeout_header_max": timeout,
    }
    return action, extra


def _redirect(r: m.HTTPRedirect) -> JSON:
    out: JSON = {}
    if r.uri is not None:
        out["path_redirect"] = r.uri
    if r.authority is not None:
        out["host_redirect"] = r.authority
    if r.port is not None:
        out["port_redirect"] = r.port
    if r.scheme is not None:
        out["scheme_redirect"] = r.scheme
    code = r.redirect_code or 301
    out["response_code"] = _REDIRECT_CODES.get(code, "MOVED_PERMANENTLY")
    return out


def translate_http_routes(
    ctx: RouteContext, vs: m.VirtualService, port: int, operation_host: str
) -> list[JSON]:
    """Envoy routes of a VirtualService's ``http`` section for a virtual host on ``port``
    (0: any port, as on a gateway that names the port in each destination)."""
    vs_ns = vs.meta.namespace
    out: list[JSON] = []
    meta = {
        "filter_metadata": {
            "istio": {
                "config": f"/apis/networking.istio.io/v1/namespaces/{vs_ns}"
                f"/virtual-service/{vs.meta.name}"
            }
        }
    }
    for route in vs.http:
        matches: Sequence[m.HTTPMatchRequest | None] = route.match or (None,)
        for match in matches:
            if match is not None and not _match_applies(match, ctx, vs_ns, port):
                continue
            envoy: JSON = {"match": _match(match)}
            operation = operation_host
            name = route.name
            if match is not None and match.name:
                name = f"{route.name}.{match.name}" if route.name else match.name
            if name:
                envoy["name"] = name
            if route.redirect is not None:
                envoy["redirect"] = _redirect(route.redirect)
            elif route.direct_response is not None:
                dr: JSON = {"status": route.direct_response.status}
                if route.direct_response.body is not None:
                    dr["body"] = {"inline_string": route.direct_response.body}
                envoy["direct_response"] = dr
            elif route.route:
                action, extra = _route_action(ctx, route, vs_ns, port)
                envoy["route"] = action
                envoy.update(extra)
                if ctx.gateway != MESH_GATEWAY:
                    # A gateway names the operation by the (first) destination service.
                    first = (
                        action.get("cluster") or action["weighted_clusters"]["clusters"][0]["name"]
                    )
                    _, dest_port, _, dest_host = first.split("|")
                    operation = f"{dest_host}:{dest_port}"
            else:
                continue  # a delegate: not supported yet
            envoy["metadata"] = meta
            envoy["decorator"] = {"operation": f"{operation}/*"}
            for key, value in _headers(route.headers).items():
                envoy.setdefault(key, []).extend(value)
            per_filter: JSON = {}
            if route.fault is not None:
                per_filter[FAULT] = _fault(route.fault)
            if route.cors_policy is not None:
                per_filter[CORS] = _cors(route.cors_policy)
            if per_filter:
                envoy["typed_per_filter_config"] = per_filter
            out.append(envoy)
    return out


def default_route(ctx: RouteContext, host: str, port: int) -> JSON:
    """Istio's route when no VirtualService applies: everything to the service's cluster."""
    cluster = cluster_name("outbound", port, None, host)
    operation_host = f"{host}:{port}"
    route: JSON = {
        "name": "default",
        "match": {"prefix": "/"},
        "route": {
            "cluster": cluster,
            "timeout": "0s",
            "retry_policy": dict(DEFAULT_RETRY),
            "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
        },
        "decorator": {"operation": f"{operation_host}/*"},
    }
    hash_policy = _hash_policy(ctx, host, None, port)
    if hash_policy:
        route["route"]["hash_policy"] = hash_policy
    return route
