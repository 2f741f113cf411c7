"""Compiled route tables: virtual host by domain, then the first matching route.

Everything that can be decided at config time is: each route's match becomes one closure
specialised for its kind (a prefix-only route is a single ``startswith``), domain lookups are
cached per authority.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pilotfish.http.headers import RequestHeaders
from pilotfish.model.route import (
    HeaderMatcher,
    HeaderMatchKind,
    PathMatchKind,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from pilotfish.regex import ANCHOR_BOTH, Regex

Predicate = Callable[[RequestHeaders], bool]
_AUTHORITY_CACHE_MAX = 4096


def _path_only(path: bytes) -> bytes:
    q = path.find(b"?")
    return path if q < 0 else path[:q]


def _regex_path_match(regex: Regex) -> Predicate:
    """A safe_regex path: RE2 full match, called from here (one Python frame less per route);
    a path outside RE2's PossibleMatchRange bounds cannot match and skips the call."""
    match = regex.match
    bounds = regex.bounds
    if bounds is None:

        def unbounded(h: RequestHeaders) -> bool:
            p = _path_only(h.path)
            return match(ANCHOR_BOTH, p, 0, len(p))[0][0] >= 0

        return unbounded
    lo, hi = bounds

    def bounded(h: RequestHeaders) -> bool:
        p = _path_only(h.path)
        return lo <= p <= hi and match(ANCHOR_BOTH, p, 0, len(p))[0][0] >= 0

    return bounded


def compile_header_matcher(m: HeaderMatcher) -> Predicate:
    """Envoy's HeaderUtility::matchHeaders for one matcher."""
    name = m.name
    kind = m.kind
    invert = m.invert
    # A missing header matches only a presence check that expects absence (or, inverted, one
    # that expects presence) -- unless treat_missing_as_empty makes it "".
    if kind is HeaderMatchKind.PRESENT:
        missing_result = m.present if invert else not m.present
    else:
        missing_result = False
    treat_missing = m.treat_missing_as_empty

    if kind is HeaderMatchKind.PRESENT:
        present = m.present

        def value_match(v: bytes) -> bool:
            return present
    elif kind is HeaderMatchKind.RANGE:
        start, end = m.range_start, m.range_end

        def value_match(v: bytes) -> bool:
            try:
                n = int(v)
            except ValueError:
                return False
            return start <= n < end
    elif kind is HeaderMatchKind.EXACT:
        assert m.string is not None
        expected = m.string.value.encode()

        def value_match(v: bytes) -> bool:
            # An empty exact_match matches any value (Envoy).
            return not expected or v == expected
    else:
        assert m.string is not None
        string_match = m.string.matches

        def value_match(v: bytes) -> bool:
            return string_match(v)

    def match(headers: RequestHeaders) -> bool:
        # A header sent more than once matches if any one of its values does (Envoy 1.40).
        values = headers.get_all(name)
        if not values:
            if not treat_missing:
                return missing_result
            return value_match(b"") != invert
        if len(values) == 1:
            return value_match(values[0]) != invert
        return any(value_match(v) for v in values) != invert

    return match


def _query_params(path: bytes) -> dict[bytes, bytes]:
    q = path.find(b"?")
    out: dict[bytes, bytes] = {}
    if q < 0:
        return out
    for part in path[q + 1 :].split(b"&"):
        if not part:
            continue
        k, _, v = part.partition(b"=")
        out.setdefault(k, v)  # Envoy uses the first value of a repeated parameter
    return out


def compile_query_matcher(m: QueryParameterMatcher) -> Callable[[dict[bytes, bytes]], bool]:
    name = m.name.encode()
    if m.string is None:
        present = m.present

        def present_match(params: dict[bytes, bytes]) -> bool:
            return (name in params) == present

        return present_match
    value_match = m.string.matches

    def string_match(params: dict[bytes, bytes]) -> bool:
        v = params.get(name)
        return v is not None and value_match(v)

    return string_match


def compile_path_match(m: RouteMatch) -> Predicate:
    kind = m.kind
    if kind is PathMatchKind.PREFIX:
        prefix = m.value.encode()
        if not prefix:
            return lambda h: True
        if m.case_sensitive:
            return lambda h: h.path.startswith(prefix)
        lower = prefix.lower()
        return lambda h: h.path[: len(lower)].lower() == lower
    if kind is PathMatchKind.PATH:
        exact = m.value.encode()
        if m.case_sensitive:
            return lambda h: _path_only(h.path) == exact
        lower = exact.lower()
        return lambda h: _path_only(h.path).lower() == lower
    if kind is PathMatchKind.SAFE_REGEX:
        assert m.regex is not None
        return _regex_path_match(m.regex)
    if kind is PathMatchKind.PATH_SEPARATED_PREFIX:
        prefix = m.value.encode()
        cs = m.case_sensitive
        plen = len(prefix)
        if not cs:
            prefix = prefix.lower()

        def separated(h: RequestHeaders) -> bool:
            p = _path_only(h.path)
            if not cs:
                p = p.lower()
            return p.startswith(prefix) and (len(p) == plen or p[plen : plen + 1] == b"/")

        return separated
    if kind is PathMatchKind.CONNECT:
        return lambda h: h.method == b"CONNECT"
    raise ValueError(kind)


class CompiledRoute:
    """A route ready for requests: its match as one closure, and what the router would
    otherwise work out per request (header mutations of every level in order, retry policy,
    the expected-timeout header)."""

    __slots__ = (
        "action",
        "cluster",
        "expected_timeout",
        "host_rewrite",
        "is_connect",
        "match",
        "most_specific_wins",
        "name",
        "needs_random",
        "path_rewrite",
        "per_filter_config",
        "per_filter_levels",
        "request_mutations",
        "response_mutations",
        "retry_policy",
        "route",
    )

    def __init__(
        self,
        route: Route,
        vhost: VirtualHost | None = None,
        config: RouteConfiguration | None = None,
    ) -> None:
        self.route = route
        self.name = route.name
        self.action = route.action
        m = route.match
        checks: list[Predicate] = [compile_path_match(m)]
        checks.extend(compile_header_matcher(hm) for hm in m.headers)
        if m.grpc:
            checks.append(lambda h: (h.get(b"content-type") or b"").startswith(b"application/grpc"))
        if m.query_parameters:
            qms = [compile_query_matcher(q) for q in m.query_parameters]

            def query_ok(h: RequestHeaders) -> bool:
                params = _query_params(h.path)
                return all(q(params) for q in qms)

            checks.append(query_ok)
        if m.tls_required is not None:
            # Plain-text listeners only, for now: a request is never over TLS.
            want = m.tls_required
            checks.append(lambda h: not want)
        self.needs_random = m.runtime_fraction is not None
        self.is_connect = m.kind is PathMatchKind.CONNECT
        if len(checks) == 1:
            self.match = checks[0]
        elif len(checks) == 2:
            a, b = checks
            self.match = lambda h: a(h) and b(h)
        else:
            self.match = lambda h: all(c(h) for c in checks)
        # Header mutations: most specific first, so that a less specific OVERWRITE wins
        # (Envoy), unless most_specific_header_mutations_wins.
        req = [
            route.request_headers,
            vhost.request_headers if vhost else None,
            config.request_headers if config else None,
        ]
        resp = [
            route.response_headers,
            vhost.response_headers if vhost else None,
            config.response_headers if config else None,
        ]
        # Per-filter configs: the most specific level that has one for a filter wins (Envoy's
        # mostSpecificPerFilterConfig); resolved here, once per table, not per request.
        # Every level's config is kept too, most specific first, for filters that merge them
        # field by field (CORS).
        levels: dict[str, tuple[Any, ...]] = {}
        for level in (
            config.typed_per_filter_config if config is not None else None,
            vhost.typed_per_filter_config if vhost is not None else None,
            route.typed_per_filter_config,
        ):
            if level:
                for name, value in level.items():
                    levels[name] = (value, *levels.get(name, ()))
        self.per_filter_levels = levels
        self.per_filter_config = {name: values[0] for name, values in levels.items()}
        self.most_specific_wins = bool(config and config.most_specific_header_mutations_wins)
        if self.most_specific_wins:
            req.reverse()
            resp.reverse()
        self.request_mutations = tuple(x for x in req if x)
        self.response_mutations = tuple(x for x in resp if x)
        action = route.action
        if isinstance(action, RouteAction):
            self.cluster = action.cluster
            self.retry_policy = action.retry_policy or (vhost.retry_policy if vhost else None)
            per_try = self.retry_policy.per_try_timeout if self.retry_policy else 0.0
            expected = per_try or action.timeout
            self.expected_timeout = b"%d" % round(expected * 1000) if expected else b""
            self.path_rewrite = (
                action.prefix_rewrite is not None or action.regex_rewrite is not None
            )
            self.host_rewrite = bool(
                action.host_rewrite_literal
                or action.auto_host_rewrite
                or action.host_rewrite_header
                or action.host_rewrite_path_regex
                or (
                    action.weighted_clusters
                    and any(wc.host_rewrite_literal for wc in action.weighted_clusters.clusters)
                )
            )
        else:
            self.cluster = ""
            self.retry_policy = None
            self.expected_timeout = b""
            self.path_rewrite = False
            self.host_rewrite = False


class VirtualHostEntry:
    __slots__ = ("connect_routes", "routes", "vhost")

    def __init__(self, vhost: VirtualHost, config: RouteConfiguration | None = None) -> None:
        self.vhost = vhost
        compiled = [CompiledRoute(r, vhost, config) for r in vhost.routes]
        # CONNECT requests only match connect_matcher routes, and those match nothing else.
        self.routes = tuple(cr for cr in compiled if not cr.is_connect)
        self.connect_routes = tuple(cr for cr in compiled if cr.is_connect)

    def find_route(
        self, headers: RequestHeaders, random_value: int | None = None
    ) -> CompiledRoute | None:
        routes = self.connect_routes if headers.method == b"CONNECT" else self.routes
        for cr in routes:
            if cr.match(headers):
                if cr.needs_random:
                    frac = cr.route.match.runtime_fraction
                    assert frac is not None
                    if random_value is None:
                        random_value = random.getrandbits(64)
                    d = frac.default
                    if random_value % d.denominator >= d.numerator:
                        continue
                return cr
        return None


def strip_port(host: bytes) -> bytes:
    colon = host.rfind(b":")
    if colon < 0 or host.rfind(b"]") > colon:
        return host
    return host[:colon]


class RouteConfigProvider:
    """The current route table of one name: inline in a listener (never changes) or from RDS
    (the xDS manager swaps ``table``; connection managers read it per request)."""

    def __init__(self, name: str, table: RouteTable | None = None) -> None:
        self.name = name
        self.table = table


class RouteTable:
    """A RouteConfiguration ready for matching."""

    def __init__(self, config: RouteConfiguration) -> None:
        self.config = config
        self._exact: dict[bytes, VirtualHostEntry] = {}
        suffixes: list[tuple[bytes, VirtualHostEntry]] = []
        prefixes: list[tuple[bytes, VirtualHostEntry]] = []
        self._default: VirtualHostEntry | None = None
        for vh in config.virtual_hosts:
            entry = VirtualHostEntry(vh, config)
            for domain in vh.domains:
                d = domain.lower().encode()
                if d == b"*":
                    self._default = entry
                elif d.startswith(b"*"):
                    suffixes.append((d[1:], entry))
                elif d.endswith(b"*"):
                    prefixes.append((d[:-1], entry))
                else:
                    self._exact[d] = entry
        # Longest wildcard first, as Envoy's ordered maps do.
        self._suffixes = sorted(suffixes, key=lambda s: -len(s[0]))
        self._prefixes = sorted(prefixes, key=lambda p: -len(p[0]))
        self._cache: dict[bytes, VirtualHostEntry | None] = {}
        self._ignore_port = config.ignore_port_in_host_matching

    def find_virtual_host(self, authority: bytes) -> VirtualHostEntry | None:
        hit = self._cache.get(authority, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        entry = self._lookup(authority)
        if len(self._cache) >= _AUTHORITY_CACHE_MAX:
            self._cache.clear()
        self._cache[authority] = entry
        return entry

    def _lookup(self, authority: bytes) -> VirtualHostEntry | None:
        host = authority.lower()
        if self._ignore_port:
            host = strip_port(host)
        entry = self._exact.get(host)
        if entry is not None:
            return entry
        # The wildcard must stand for at least one character.
        for suffix, e in self._suffixes:
            if len(host) > len(suffix) and host.endswith(suffix):
                return e
        for prefix, e in self._prefixes:
            if len(host) > len(prefix) and host.startswith(prefix):
                return e
        return self._default

    def route(
        self, headers: RequestHeaders
    ) -> tuple[VirtualHostEntry | None, CompiledRoute | None]:
        vh = self.find_virtual_host(headers.authority)
        if vh is None:
            return None, None
        return vh, vh.find_route(headers)


_MISS = object()
