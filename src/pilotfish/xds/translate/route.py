"""envoy.config.route.v3.RouteConfiguration -> model.route."""

from __future__ import annotations

import os
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.filters.http import cors
from pilotfish.extensions.registry import Category
from pilotfish.model.common import StringMatcher, StringMatchKind
from pilotfish.model.route import (
    Action,
    Decorator,
    DirectResponseAction,
    HashPolicy,
    HeaderMatcher,
    HeaderMatchKind,
    MirrorPolicy,
    NonForwardingAction,
    PathMatchKind,
    QueryParameterMatcher,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualCluster,
    VirtualHost,
    WeightedCluster,
    WeightedClusters,
)
from pilotfish.regex import Regex, Substitution
from pilotfish.xds import protos
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.context import TranslateContext

_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


def _validate_clusters(msg: Any, known: set[str], pre: str) -> None:
    """Every cluster a route names must exist (Envoy refuses the table otherwise)."""
    for i, vh in enumerate(msg.virtual_hosts):
        for j, r in enumerate(vh.routes):
            if not r.HasField("route"):
                continue
            rpath = f"{pre}virtual_hosts[{i}].routes[{j}].route"
            action = r.route
            named = [(f"{rpath}.cluster", action.cluster)] if action.cluster else []
            named += [
                (f"{rpath}.weighted_clusters.clusters[{k}].name", wc.name)
                for k, wc in enumerate(action.weighted_clusters.clusters)
            ]
            named += [
                (f"{rpath}.request_mirror_policies[{k}].cluster", m.cluster)
                for k, m in enumerate(action.request_mirror_policies)
                if m.cluster
            ]
            for where, name in named:
                if name not in known:
                    raise ConfigError(where, f"route: unknown cluster '{name}'")


_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"


def per_filter_config(configs: Any, ctx: TranslateContext, path: str) -> dict[str, Any]:
    """``typed_per_filter_config``: filter name -> the config parsed by the filter that takes
    that type (``ExtensionFactory.parse_per_route``). A config no pilotfish filter takes would
    be silently ignored: it is refused, unless it belongs to a telemetry-only filter (not run
    anyway) or is marked optional (``FilterConfig.is_optional``, which Envoy also skips when it
    does not know the type)."""
    out: dict[str, Any] = {}
    for key, value in configs.items():
        kpath = (
            f"{path}.typed_per_filter_config[{key}]" if path else f"typed_per_filter_config[{key}]"
        )
        tname = protos.type_name(protos.opaque_type_url(value) or value.type_url)
        optional = False
        any_msg = value
        if tname == _FILTER_CONFIG:
            wrapper = ctx.unpack(value, kpath)
            optional = bool(wrapper.is_optional)  # type: ignore[attr-defined]
            if wrapper.disabled:  # type: ignore[attr-defined]
                raise ConfigError(
                    f"{kpath}.disabled", "disabling a filter per route is not supported"
                )
            any_msg = wrapper.config  # type: ignore[attr-defined]
            tname = protos.type_name(protos.opaque_type_url(any_msg) or any_msg.type_url)
        factory = ctx.registry.per_route(tname)
        if factory is not None:
            out[key] = factory.parse_per_route(ctx.unpack(any_msg, kpath), ctx, kpath)
            continue
        factory = ctx.registry.by_type(Category.HTTP_FILTER, tname)
        if factory is not None and factory.telemetry_only:
            continue
        if optional:
            ctx.warn(f"{kpath}: optional per-route config '{tname}' is not supported; skipped")
            continue
        raise ConfigError(
            kpath, f"per-route config for filter '{key}' ({tname}) is not supported by pilotfish"
        )
    return out


def route_configuration(
    msg: Any, ctx: TranslateContext, path: str = "", *, inline: bool = False
) -> RouteConfiguration:
    """``inline``: the table is part of a listener (not from RDS), so its clusters are
    validated by default, as Envoy does."""
    pre = f"{path}." if path else ""
    table_filter_configs = per_filter_config(msg.typed_per_filter_config, ctx, path)
    validate = c.bool_value(msg, "validate_clusters", inline)
    if validate and ctx.static_clusters is not None:
        _validate_clusters(msg, ctx.static_clusters, pre)
    vhosts = []
    seen_domains: dict[str, str] = {}
    seen_names: set[str] = set()
    for i, vh in enumerate(msg.virtual_hosts):
        vpath = f"{pre}virtual_hosts[{i}]"
        v = virtual_host(vh, ctx, vpath)
        if v.name in seen_names:
            raise ConfigError(f"{vpath}.name", f"virtual host name '{v.name}' is not unique")
        seen_names.add(v.name)
        for d in v.domains:
            key = d.lower()
            if key in seen_domains:
                raise ConfigError(
                    f"{vpath}.domains",
                    f"Only unique values for domains are permitted. Duplicate entry of domain {d} "
                    f"in route {msg.name}",
                )
            seen_domains[key] = v.name
        vhosts.append(v)
    return RouteConfiguration(
        name=msg.name,
        virtual_hosts=tuple(vhosts),
        request_headers=c.header_mutations(
            msg, "request_headers_to_add", "request_headers_to_remove", path or "route_config"
        ),
        response_headers=c.header_mutations(
            msg, "response_headers_to_add", "response_headers_to_remove", path or "route_config"
        ),
        internal_only_headers=c.header_names(
            msg.internal_only_headers, f"{pre}internal_only_headers"
        ),
        most_specific_header_mutations_wins=msg.most_specific_header_mutations_wins,
        validate_clusters=validate,
        ignore_port_in_host_matching=msg.ignore_port_in_host_matching,
        typed_per_filter_config=table_filter_configs,
        max_direct_response_body_size_bytes=c.uint32_value(
            msg, "max_direct_response_body_size_bytes", 4096
        ),
    )


def virtual_host(msg: Any, ctx: TranslateContext, path: str) -> VirtualHost:
    if not msg.name:
        raise ConfigError(f"{path}.name", "value length must be at least 1")
    if not msg.domains:
        raise ConfigError(f"{path}.domains", "value must contain at least 1 item(s)")
    for j, d in enumerate(msg.domains):
        if not d:
            raise ConfigError(f"{path}.domains[{j}]", "domain must not be empty")
        wildcard_inside = "*" in d and not (d.startswith("*") or d.endswith("*"))
        if wildcard_inside or d.count("*") > 1:
            raise ConfigError(
                f"{path}.domains[{j}]",
                f"Only a single wildcard at the start or end of a domain is allowed: {d}",
            )
    if msg.HasField("cors"):
        raise ConfigError(f"{path}.cors", cors.LEGACY_NOT_IMPLEMENTED)
    routes = tuple(route(r, ctx, f"{path}.routes[{k}]") for k, r in enumerate(msg.routes))
    vclusters = []
    for k, vc in enumerate(msg.virtual_clusters):
        vpath = f"{path}.virtual_clusters[{k}]"
        if not vc.name:
            raise ConfigError(f"{vpath}.name", "value length must be at least 1")
        vclusters.append(
            VirtualCluster(
                vc.name,
                tuple(header_matcher(h, f"{vpath}.headers[{n}]") for n, h in enumerate(vc.headers)),
            )
        )
    return VirtualHost(
        name=msg.name,
        domains=tuple(msg.domains),
        routes=routes,
        require_tls=("NONE", "EXTERNAL_ONLY", "ALL")[msg.require_tls],
        request_headers=c.header_mutations(
            msg, "request_headers_to_add", "request_headers_to_remove", path
        ),
        response_headers=c.header_mutations(
            msg, "response_headers_to_add", "response_headers_to_remove", path
        ),
        retry_policy=retry_policy(msg.retry_policy, f"{path}.retry_policy")
        if msg.HasField("retry_policy")
        else None,
        virtual_clusters=tuple(vclusters),
        include_request_attempt_count=msg.include_request_attempt_count,
        include_attempt_count_in_response=msg.include_attempt_count_in_response,
        typed_per_filter_config=per_filter_config(msg.typed_per_filter_config, ctx, path),
        metadata=c.metadata(msg, path),
    )


def route(msg: Any, ctx: TranslateContext, path: str) -> Route:
    if not msg.HasField("match"):
        raise ConfigError(f"{path}.match", "value is required")
    m = route_match(msg.match, f"{path}.match")
    action: Action
    kind = msg.WhichOneof("action")
    if kind == "route":
        action = route_action(msg.route, ctx, f"{path}.route")
    elif kind == "redirect":
        action = redirect_action(msg.redirect, f"{path}.redirect")
    elif kind == "direct_response":
        dr = msg.direct_response
        if not 200 <= dr.status <= 599:
            raise ConfigError(
                f"{path}.direct_response.status", "value must be inside range [200, 600)"
            )
        body = None
        if dr.HasField("body"):
            body = _data_source(dr.body, f"{path}.direct_response.body")
        action = DirectResponseAction(dr.status, body)
    elif kind == "non_forwarding_action":
        action = NonForwardingAction()
    elif kind is None:
        raise ConfigError(path, "action is required (route, redirect or direct_response)")
    else:
        raise ConfigError(f"{path}.{kind}", "this route action is not supported")
    decorator = None
    if msg.HasField("decorator"):
        decorator = Decorator(
            msg.decorator.operation, c.bool_value(msg.decorator, "propagate", True)
        )
    return Route(
        match=m,
        action=action,
        name=msg.name,
        request_headers=c.header_mutations(
            msg, "request_headers_to_add", "request_headers_to_remove", path
        ),
        response_headers=c.header_mutations(
            msg, "response_headers_to_add", "response_headers_to_remove", path
        ),
        metadata=c.metadata(msg, path),
        decorator=decorator,
        typed_per_filter_config=per_filter_config(msg.typed_per_filter_config, ctx, path),
        stat_prefix=msg.stat_prefix,
    )


def _data_source(msg: Any, path: str) -> bytes:
    kind = msg.WhichOneof("specifier")
    if kind == "inline_string":
        return str(msg.inline_string).encode()
    if kind == "inline_bytes":
        return bytes(msg.inline_bytes)
    if kind == "filename":
        try:
            with open(msg.filename, "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(
                f"{path}.filename", f"cannot read {msg.filename}: {e.strerror}"
            ) from None
    if kind == "environment_variable":
        value = os.environ.get(msg.environment_variable)
        if value is None:
            raise ConfigError(
                f"{path}.environment_variable",
                f"Environment variable doesn't exist: {msg.environment_variable}",
            )
        return value.encode()
    raise ConfigError(path, "a data source (inline_string, inline_bytes, filename) is required")


def route_match(msg: Any, path: str) -> RouteMatch:
    kind = msg.WhichOneof("path_specifier")
    case_sensitive = c.bool_value(msg, "case_sensitive", True)
    regex = None
    if kind in ("prefix", "path"):
        value = getattr(msg, kind)
    elif kind == "safe_regex":
        value = msg.safe_regex.regex
        regex = c.regex_matcher(msg.safe_regex, f"{path}.safe_regex")
    elif kind == "path_separated_prefix":
        value = msg.path_separated_prefix
        if not value.startswith("/") or value.endswith("/") or "?" in value or "#" in value:
            raise ConfigError(
                f"{path}.path_separated_prefix",
                "value must start with '/', must not end with '/' and must not contain '?' or '#'",
            )
    elif kind == "connect_matcher":
        value = ""
    elif kind is None:
        raise ConfigError(path, "path_specifier is required (prefix, path, safe_regex, ...)")
    else:
        raise ConfigError(f"{path}.{kind}", "this path match is not supported")
    if len(msg.dynamic_metadata):
        raise ConfigError(f"{path}.dynamic_metadata", "dynamic metadata matching is not supported")
    if len(msg.filter_state):
        raise ConfigError(f"{path}.filter_state", "filter state matching is not supported")
    headers = tuple(header_matcher(h, f"{path}.headers[{i}]") for i, h in enumerate(msg.headers))
    qps = []
    for i, q in enumerate(msg.query_parameters):
        qpath = f"{path}.query_parameters[{i}]"
        if not q.name or len(q.name) > 1024:
            raise ConfigError(f"{qpath}.name", "value length must be between 1 and 1024")
        qkind = q.WhichOneof("query_parameter_match_specifier")
        if qkind == "string_match":
            qps.append(
                QueryParameterMatcher(
                    q.name, c.string_matcher(q.string_match, f"{qpath}.string_match")
                )
            )
        elif qkind == "present_match":
            qps.append(QueryParameterMatcher(q.name, None, q.present_match))
        else:
            raise ConfigError(qpath, "string_match or present_match is required")
    tls_required = None
    if msg.HasField("tls_context") and msg.tls_context.HasField("presented"):
        tls_required = msg.tls_context.presented.value
    return RouteMatch(
        kind=PathMatchKind(kind),
        value=value,
        regex=regex,
        case_sensitive=case_sensitive,
        headers=headers,
        query_parameters=tuple(qps),
        runtime_fraction=c.runtime_fraction(msg.runtime_fraction)
        if msg.HasField("runtime_fraction")
        else None,
        grpc=msg.HasField("grpc"),
        tls_required=tls_required,
    )


def header_matcher(msg: Any, path: str) -> HeaderMatcher:
    name = msg.name
    if not c._valid_header_name(name):
        raise ConfigError(f"{path}.name", f"invalid header name '{name}'")
    kind = msg.WhichOneof("header_match_specifier")
    common: dict[str, Any] = {
        "name": name.lower().encode(),
        "invert": msg.invert_match,
        "treat_missing_as_empty": msg.treat_missing_header_as_empty,
    }
    if kind is None:  # no specifier: presence match
        return HeaderMatcher(kind=HeaderMatchKind.PRESENT, present=True, **common)
    if kind == "exact_match":
        return HeaderMatcher(
            kind=HeaderMatchKind.EXACT,
            string=StringMatcher(StringMatchKind.EXACT, msg.exact_match),
            **common,
        )
    if kind == "safe_regex_match":
        compiled = c.regex_matcher(msg.safe_regex_match, f"{path}.safe_regex_match")
        return HeaderMatcher(
            kind=HeaderMatchKind.SAFE_REGEX,
            string=StringMatcher(StringMatchKind.SAFE_REGEX, compiled.pattern, regex=compiled),
            **common,
        )
    if kind == "range_match":
        return HeaderMatcher(
            kind=HeaderMatchKind.RANGE,
            range_start=msg.range_match.start,
            range_end=msg.range_match.end,
            **common,
        )
    if kind == "present_match":
        return HeaderMatcher(kind=HeaderMatchKind.PRESENT, present=msg.present_match, **common)
    if kind in ("prefix_match", "suffix_match", "contains_match"):
        value = getattr(msg, kind)
        if not value:
            raise ConfigError(f"{path}.{kind}", "value length must be at least 1")
        skind = StringMatchKind(kind.removesuffix("_match"))
        return HeaderMatcher(
            kind=HeaderMatchKind(skind.value), string=StringMatcher(skind, value), **common
        )
    if kind == "string_match":
        return HeaderMatcher(
            kind=HeaderMatchKind.STRING_MATCH,
            string=c.string_matcher(msg.string_match, f"{path}.string_match"),
            **common,
        )
    raise ConfigError(f"{path}.{kind}", "unsupported header match")


# The field naming each hash policy's key (protoc-gen-validate: min_len 1).
_HASH_KEY_FIELDS = {
    "header": "header_name",
    "cookie": "name",
    "query_parameter": "name",
    "filter_state": "key",
}


def _require_hash_key(hp: Any, kind: str | None, path: str) -> None:
    field_name = _HASH_KEY_FIELDS.get(kind or "")
    if field_name and not getattr(getattr(hp, kind or ""), field_name):
        raise ConfigError(
            f"{path}.{kind}.{field_name}", "value length must be at least 1 characters"
        )
    if kind == "cookie":
        for j, attribute in enumerate(hp.cookie.attributes):
            if not attribute.name:
                raise ConfigError(
                    f"{path}.cookie.attributes[{j}].name",
                    "value length must be at least 1 characters",
                )


def _rewrite(msg: Any, path: str) -> tuple[Regex, Substitution]:
    """envoy.type.matcher.v3.RegexMatchAndSubstitute -> (pattern, RE2 rewrite)."""
    return c.regex_matcher(msg.pattern, f"{path}.pattern"), Substitution(msg.substitution)


def route_action(msg: Any, ctx: TranslateContext, path: str) -> RouteAction:
    kind = msg.WhichOneof("cluster_specifier")
    kw: dict[str, Any] = {}
    if kind == "cluster":
        if not msg.cluster:
            raise ConfigError(f"{path}.cluster", "value length must be at least 1")
        kw["cluster"] = msg.cluster
    elif kind == "cluster_header":
        if not c._valid_header_name(msg.cluster_header):
            raise ConfigError(f"{path}.cluster_header", "invalid header name")
        kw["cluster_header"] = msg.cluster_header.lower().encode()
    elif kind == "weighted_clusters":
        kw["weighted_clusters"] = weighted_clusters(
            msg.weighted_clusters, ctx, f"{path}.weighted_clusters"
        )
    elif kind is None:
        raise ConfigError(
            path, "cluster_specifier is required (cluster, cluster_header or weighted_clusters)"
        )
    else:
        raise ConfigError(f"{path}.{kind}", "cluster specifier plugins are not supported")
    if msg.HasField("cors"):
        raise ConfigError(f"{path}.cors", cors.LEGACY_NOT_IMPLEMENTED)
    if msg.prefix_rewrite and msg.HasField("regex_rewrite"):
        raise ConfigError(path, "Cannot specify both prefix_rewrite and regex_rewrite")
    if msg.prefix_rewrite:
        kw["prefix_rewrite"] = msg.prefix_rewrite.encode()
    if msg.HasField("regex_rewrite"):
        kw["regex_rewrite"] = _rewrite(msg.regex_rewrite, f"{path}.regex_rewrite")
    if msg.HasField("path_rewrite_policy"):
        raise ConfigError(f"{path}.path_rewrite_policy", "path rewrite policies are not supported")
    host_kind = msg.WhichOneof("host_rewrite_specifier")
    if host_kind == "host_rewrite_literal":
        kw["host_rewrite_literal"] = msg.host_rewrite_literal.encode()
    elif host_kind == "auto_host_rewrite":
        kw["auto_host_rewrite"] = msg.auto_host_rewrite.value
    elif host_kind == "host_rewrite_header":
        kw["host_rewrite_header"] = msg.host_rewrite_header.lower().encode()
    elif host_kind == "host_rewrite_path_regex":
        kw["host_rewrite_path_regex"] = _rewrite(
            msg.host_rewrite_path_regex, f"{path}.host_rewrite_path_regex"
        )
    code = msg.cluster_not_found_response_code
    kw["cluster_not_found_response_code"] = {0: 503, 1: 404, 2: 500}[code]
    kw["append_x_forwarded_host"] = msg.append_x_forwarded_host
    kw["timeout"] = c.duration(msg, "timeout", 15.0)
    if msg.HasField("idle_timeout"):
        kw["idle_timeout"] = c.duration(msg, "idle_timeout", 0.0)
    if msg.HasField("max_stream_duration") and msg.max_stream_duration.HasField(
        "max_stream_duration"
    ):
        kw["max_stream_duration"] = c.duration(msg.max_stream_duration, "max_stream_duration", 0.0)
    if msg.HasField("retry_policy"):
        kw["retry_policy"] = retry_policy(msg.retry_policy, f"{path}.retry_policy")
    hps = []
    for i, hp in enumerate(msg.hash_policy):
        hkind = hp.WhichOneof("policy_specifier")
        hpath = f"{path}.hash_policy[{i}]"
        _require_hash_key(hp, hkind, hpath)
        if hkind == "header":
            rr = (
                _rewrite(hp.header.regex_rewrite, f"{hpath}.header.regex_rewrite")
                if hp.header.HasField("regex_rewrite")
                else None
            )
            hps.append(HashPolicy("header", hp.header.header_name.lower(), hp.terminal, rr))
        elif hkind == "cookie":
            ck = hp.cookie
            # Envoy keeps the ttl's whole seconds; a ttl of 0 makes a session cookie.
            ttl = ck.ttl.seconds if ck.HasField("ttl") else None
            attributes = tuple((a.name, a.value) for a in ck.attributes)
            hps.append(
                HashPolicy(
                    "cookie",
                    ck.name,
                    hp.terminal,
                    cookie_ttl=ttl,
                    cookie_path=ck.path,
                    cookie_attributes=attributes,
                )
            )
        elif hkind == "connection_properties":
            # Envoy adds no hash method when source_ip is false.
            if hp.connection_properties.source_ip:
                hps.append(HashPolicy("connection_properties", "source_ip", hp.terminal))
        elif hkind == "query_parameter":
            hps.append(HashPolicy("query_parameter", hp.query_parameter.name, hp.terminal))
        elif hkind == "filter_state":
            hps.append(HashPolicy("filter_state", hp.filter_state.key, hp.terminal))
        else:
            raise ConfigError(hpath, "policy_specifier is required")
    kw["hash_policy"] = tuple(hps)
    kw["priority"] = msg.priority
    kw["upgrade_configs"] = tuple(
        (u.upgrade_type.lower(), c.bool_value(u, "enabled", True)) for u in msg.upgrade_configs
    )
    mirrors = []
    for i, mp in enumerate(msg.request_mirror_policies):
        if not mp.cluster:
            raise ConfigError(f"{path}.request_mirror_policies[{i}].cluster", "cluster is required")
        fraction = 1.0
        if mp.HasField("runtime_fraction"):
            fraction = c.runtime_fraction(mp.runtime_fraction).default.ratio
        if len(mp.request_headers_mutations):
            raise ConfigError(
                f"{path}.request_mirror_policies[{i}].request_headers_mutations",
                "header mutations of mirrored requests are not supported",
            )
        mirrors.append(
            MirrorPolicy(
                mp.cluster,
                fraction,
                not mp.disable_shadow_host_suffix_append,
                mp.host_rewrite_literal.encode(),
            )
        )
    kw["request_mirror_policies"] = tuple(mirrors)
    if msg.HasField("metadata_match"):
        kw["metadata_match"] = {
            k: c.struct_to_dict(v) for k, v in msg.metadata_match.filter_metadata.items()
        }
    return RouteAction(**kw)


def _weighted_cluster_filter_configs(cw: Any, ctx: TranslateContext, path: str) -> dict[str, Any]:
    """A weighted cluster's ``typed_per_filter_config``: the cluster is picked by the router,
    after the HTTP filters ran, so a filter could not see it; refused unless skippable."""
    configs = per_filter_config(cw.typed_per_filter_config, ctx, path)
    if configs:
        key = next(iter(configs))
        raise ConfigError(
            f"{path}.typed_per_filter_config[{key}]",
            "per-filter config on a weighted cluster is not supported by pilotfish",
        )
    return configs


def weighted_clusters(msg: Any, ctx: TranslateContext, path: str) -> WeightedClusters:
    clusters = []
    total = 0
    for i, cw in enumerate(msg.clusters):
        cpath = f"{path}.clusters[{i}]"
        if bool(cw.name) == bool(cw.cluster_header):
            raise ConfigError(
                cpath,
                "At least one of name or cluster_header need to be specified"
                if not cw.name
                else "Only one of name or cluster_header can be specified",
            )
        if not cw.HasField("weight"):
            raise ConfigError(f"{cpath}.weight", "weight is required")
        w = cw.weight.value
        total += w
        clusters.append(
            WeightedCluster(
                name=cw.name,
                weight=w,
                cluster_header=cw.cluster_header.lower().encode(),
                headers=c.header_mutations(
                    cw, "request_headers_to_add", "request_headers_to_remove", cpath
                ),
                response_headers=c.header_mutations(
                    cw, "response_headers_to_add", "response_headers_to_remove", cpath
                ),
                host_rewrite_literal=cw.host_rewrite_literal,
                typed_per_filter_config=_weighted_cluster_filter_configs(cw, ctx, cpath),
            )
        )
    if not clusters:
        raise ConfigError(f"{path}.clusters", "value must contain at least 1 item(s)")
    if total == 0:
        raise ConfigError(path, "Sum of weights in the weighted_cluster must be greater than 0.")
    if total > 0xFFFFFFFF:
        raise ConfigError(path, "The sum of weights of all weighted clusters exceeds 4294967295")
    # total_weight is deprecated: Envoy uses the sum of the weights and ignores it.
    return WeightedClusters(
        clusters=tuple(clusters),
        total_weight=total,
        header_name=msg.header_name.lower().encode(),
        runtime_key_prefix=msg.runtime_key_prefix,
    )


# The retry_on policies Envoy knows (Istio's retryOn takes the same, plus status codes).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


def retry_policy(msg: Any, path: str) -> RetryPolicy:
    retry_on = frozenset(x.strip() for x in msg.retry_on.split(",") if x.strip())
    for x in retry_on:
        if x not in RETRY_ON:
            raise ConfigError(f"{path}.retry_on", f"unknown retry condition '{x}'")
    base = (
        c.duration(msg.retry_back_off, "base_interval", 0.025)
        if msg.HasField("retry_back_off")
        else 0.025
    )
    max_iv = (
        c.duration(msg.retry_back_off, "max_interval", base * 10)
        if msg.HasField("retry_back_off")
        else base * 10
    )
    if max_iv < base:
        raise ConfigError(
            f"{path}.retry_back_off.max_interval", "max_interval must be >= base_interval"
        )
    previous_hosts = False
    for i, pred in enumerate(msg.retry_host_predicate):
        if (
            pred.name == "envoy.retry_host_predicates.previous_hosts"
            or pred.typed_config.type_url.endswith("PreviousHostsPredicate")
        ):
            previous_hosts = True
        else:
            raise ConfigError(
                f"{path}.retry_host_predicate[{i}]", f"unsupported predicate '{pred.name}'"
            )
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=c.uint32_value(msg, "num_retries", 1),
        per_try_timeout=c.duration(msg, "per_try_timeout", 0.0),
        per_try_idle_timeout=c.duration(msg, "per_try_idle_timeout", 0.0),
        retriable_status_codes=frozenset(msg.retriable_status_codes),
        retry_host_previous_hosts=previous_hosts,
        host_selection_retry_max_attempts=msg.host_selection_retry_max_attempts or 1,
        base_interval=base,
        max_interval=max_iv,
        retriable_request_headers=tuple(
            header_matcher(h, f"{path}.retriable_request_headers[{i}]")
            for i, h in enumerate(msg.retriable_request_headers)
        ),
        retriable_headers=tuple(
            header_matcher(h, f"{path}.retriable_headers[{i}]")
            for i, h in enumerate(msg.retriable_headers)
        ),
    )


def redirect_action(msg: Any, path: str) -> RedirectAction:
    scheme = ""
    skind = msg.WhichOneof("scheme_rewrite_specifier")
    if skind == "https_redirect" and msg.https_redirect:
        scheme = "https"
    elif skind == "scheme_redirect":
        scheme = msg.scheme_redirect.lower()
    pkind = msg.WhichOneof("path_rewrite_specifier")
    kw: dict[str, Any] = {}
    if pkind == "path_redirect":
        kw["path"] = msg.path_redirect.encode()
    elif pkind == "prefix_rewrite":
        kw["prefix_rewrite"] = msg.prefix_rewrite.encode()
    elif pkind == "regex_rewrite":
        kw["regex_rewrite"] = _rewrite(msg.regex_rewrite, f"{path}.regex_rewrite")
    return RedirectAction(
        scheme=scheme,
        host=msg.host_redirect.encode(),
        port=msg.port_redirect,
        response_code=_REDIRECT_CODES.get(msg.response_code, 301),
        strip_query=msg.strip_query,
        **kw,
    )
