"""Route matching, table-driven: route configs written as Envoy YAML, translated by the real
translation code, matched against request headers (no sockets)."""

from __future__ import annotations

import pytest
import yaml
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from pilotfish.errors import ConfigError
from pilotfish.http.headers import RequestHeaders
from pilotfish.router.matcher import RouteTable
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.route import route_configuration

ROUTES = """
name: test
virtual_hosts:
- name: exact
  domains: ["example.com", "example.com:8080"]
  routes:
  - {name: ex-root, match: {path: "/"}, route: {cluster: c}}
- name: suffix-long
  domains: ["*.a.example.org"]
  routes: [{name: suffix-long, match: {prefix: "/"}, route: {cluster: c}}]
- name: suffix
  domains: ["*.example.org", "*-bar.example.net"]
  routes: [{name: suffix, match: {prefix: "/"}, route: {cluster: c}}]
- name: prefix
  domains: ["foo.*"]
  routes: [{name: prefix, match: {prefix: "/"}, route: {cluster: c}}]
- name: default
  domains: ["*"]
  routes:
  - {name: exact-path, match: {path: "/exact"}, route: {cluster: c}}
  - {name: exact-ci, match: {path: "/CaSe", case_sensitive: false}, route: {cluster: c}}
  - {name: regex, match: {safe_regex: {regex: "/re/[0-9]+"}}, route: {cluster: c}}
  - {name: sep, match: {path_separated_prefix: "/sep"}, route: {cluster: c}}
  - name: hdr-exact
    match:
      prefix: /h
      headers: [{name: x-user, string_match: {exact: jason}}]
    route: {cluster: c}
  - name: hdr-prefix-ci
    match:
      prefix: /h
      headers: [{name: x-user, string_match: {prefix: AD, ignore_case: true}}]
    route: {cluster: c}
  - name: hdr-range
    match:
      prefix: /h
      headers: [{name: x-n, range_match: {start: 10, end: 20}}]
    route: {cluster: c}
  - name: hdr-absent
    match:
      prefix: /h
      headers: [{name: x-gone, present_match: false}]
    route: {cluster: c}
  - name: hdr-fallback
    match: {prefix: /h}
    route: {cluster: c}
  - name: inverted
    match:
      prefix: /inv
      headers: [{name: x-v, string_match: {exact: "1"}, invert_match: true}]
    route: {cluster: c}
  - name: missing-empty
    match:
      prefix: /inv
      headers:
      - {name: x-e, string_match: {exact: ""}, treat_missing_header_as_empty: true}
    route: {cluster: c}
  - name: query
    match:
      prefix: /q
      query_parameters:
      - {name: debug, string_match: {exact: "1"}}
      - {name: flag, present_match: true}
    route: {cluster: c}
  - name: method
    match:
      prefix: /m
      headers: [{name: ":method", string_match: {exact: POST}}]
    route: {cluster: c}
  - name: grpc
    match: {prefix: /g, grpc: {}}
    route: {cluster: c}
  - name: never
    match:
      prefix: /frac
      runtime_fraction: {default_value: {numerator: 0}}
    route: {cluster: c}
  - name: always
    match:
      prefix: /frac
      runtime_fraction: {default_value: {numerator: 100}}
    route: {cluster: c}
  - name: prefix-ci
    match: {prefix: /Up, case_sensitive: false}
    route: {cluster: c}
  - {name: catch-all, match: {prefix: "/"}, route: {cluster: c}}
"""


def table(text: str = ROUTES) -> RouteTable:
    msg = json_format.ParseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())
    return RouteTable(route_configuration(msg, TranslateContext()))


TABLE = table()


def req(path: str, host: str = "x", method: str = "GET", **headers: str) -> RequestHeaders:
    items = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return RequestHeaders(method.encode(), path.encode(), host.encode(), items)


def matched(r: RequestHeaders) -> str | None:
    vh, route = TABLE.route(r)
    if vh is None:
        return None
    return route.name if route is not None else f"{vh.vhost.name}:no-route"


CASES: list[tuple[str, RequestHeaders, str | None]] = [
    # Virtual hosts: exact, longest suffix, prefix, default; case-insensitive; with port.
    ("vh-exact", req("/", host="example.com"), "ex-root"),
    ("vh-exact-upper", req("/", host="EXAMPLE.com"), "ex-root"),
    ("vh-exact-port", req("/", host="example.com:8080"), "ex-root"),
    ("vh-exact-other-port", req("/", host="example.com:9090"), "catch-all"),
    ("vh-exact-no-route", req("/other", host="example.com"), "exact:no-route"),
    ("vh-longest-suffix", req("/", host="b.a.example.org"), "suffix-long"),
    ("vh-suffix", req("/", host="z.example.org"), "suffix"),
    ("vh-suffix-needs-one-char", req("/", host="example.org"), "catch-all"),
    ("vh-suffix-dash", req("/", host="foo-bar.example.net"), "suffix"),
    ("vh-prefix", req("/", host="foo.anything"), "prefix"),
    ("vh-suffix-beats-prefix", req("/", host="foo.example.org"), "suffix"),
    ("vh-default", req("/zzz", host="unknown"), "catch-all"),
    # Paths.
    ("path-exact", req("/exact"), "exact-path"),
    ("path-exact-ignores-query", req("/exact?a=b"), "exact-path"),
    ("path-exact-not-prefix", req("/exact/more"), "catch-all"),
    ("path-case-insensitive", req("/case"), "exact-ci"),
    ("regex-full-match", req("/re/123"), "regex"),
    ("regex-ignores-query", req("/re/123?x"), "regex"),
    ("regex-not-partial", req("/re/123x"), "catch-all"),
    ("separated-prefix-exact", req("/sep"), "sep"),
    ("separated-prefix-segment", req("/sep/x"), "sep"),
    ("separated-prefix-query", req("/sep?x=1"), "sep"),
    ("separated-prefix-not-substring", req("/separate"), "catch-all"),
    ("prefix-case-insensitive", req("/uP/x"), "prefix-ci"),
    # Headers, in route order.
    ("header-exact", req("/h", x_user="jason"), "hdr-exact"),
    ("header-prefix-ignore-case", req("/h", x_user="admin"), "hdr-prefix-ci"),
    ("header-range-in", req("/h", x_n="15"), "hdr-range"),
    ("header-range-end-excluded", req("/h", x_n="20", x_gone="1"), "hdr-fallback"),
    ("header-range-not-int", req("/h", x_n="abc", x_gone="1"), "hdr-fallback"),
    ("header-absent-matches-present-false", req("/h"), "hdr-absent"),
    ("header-inverted-differs", req("/inv", x_v="2"), "inverted"),
    ("header-inverted-missing-no-match", req("/inv"), "missing-empty"),
    ("header-inverted-equal", req("/inv", x_v="1", x_e="z"), "catch-all"),
    ("header-method-pseudo", req("/m", method="POST"), "method"),
    ("header-method-other", req("/m"), "catch-all"),
    # Query parameters.
    ("query-both", req("/q?debug=1&flag"), "query"),
    ("query-value-differs", req("/q?debug=2&flag"), "catch-all"),
    ("query-missing-flag", req("/q?debug=1"), "catch-all"),
    ("query-first-value-wins", req("/q?debug=1&debug=2&flag=x"), "query"),
    # gRPC and runtime fraction.
    ("grpc-content-type", req("/g", content_type="application/grpc+proto"), "grpc"),
    ("grpc-not", req("/g", content_type="text/plain"), "catch-all"),
    ("fraction-0-never-100-always", req("/frac"), "always"),
]


@pytest.mark.parametrize(
    ("request_headers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_route_matching(request_headers: RequestHeaders, expected: str | None) -> None:
    assert matched(request_headers) == expected


@pytest.mark.parametrize(
    ("matcher", "values", "expected"),
    [
        ('{exact: "2"}', [b"1", b"2"], True),  # any one value may match
        ('{exact: "1,2"}', [b"1", b"2"], False),  # not the joined value (Envoy 1.40)
        ('{prefix: "1"}', [b"2", b"1"], True),
        ('{safe_regex: {regex: "[3-9]"}}', [b"1", b"2"], False),
    ],
)
def test_multi_valued_header_matches_any_value(
    matcher: str, values: list[bytes], expected: bool
) -> None:
    t = table(f"""
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - name: any
    match: {{prefix: /, headers: [{{name: x-a, string_match: {matcher}}}]}}
    route: {{cluster: c}}
  - name: inverted
    match: {{prefix: /, headers: [{{name: x-a, string_match: {matcher}, invert_match: true}}]}}
    route: {{cluster: c}}
""")
    r = RequestHeaders(b"GET", b"/", b"h", [(b"x-a", v) for v in values])
    _, route = t.route(r)
    assert route is not None and route.name == ("any" if expected else "inverted")


def test_no_virtual_host_without_default() -> None:
    t = table("""
virtual_hosts:
- {name: v, domains: ["a.com"], routes: [{match: {prefix: /}, route: {cluster: c}}]}
""")
    assert t.route(req("/", host="b.com")) == (None, None)


BAD: list[tuple[str, str, str]] = [
    (
        "dup-domain",
        """
virtual_hosts:
- {name: a, domains: ["x.com"], routes: []}
- {name: b, domains: ["X.com"], routes: []}
""",
        "virtual_hosts[1].domains",
    ),
    (
        "bad-regex",
        """
virtual_hosts:
- name: a
  domains: ["*"]
  routes: [{match: {safe_regex: {regex: "(unclosed"}}, route: {cluster: c}}]
""",
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
    ),
    (
        "lookahead-not-re2",
        """
virtual_hosts:
- name: a
  domains: ["*"]
  routes: [{match: {safe_regex: {regex: "/(?=x)"}}, route: {cluster: c}}]
""",
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
    ),
    (
        "wildcard-middle",
        """
virtual_hosts:
- {name: a, domains: ["a.*.com"], routes: []}
""",
        "virtual_hosts[0].domains[0]",
    ),
    (
        "weights-zero",
        """
virtual_hosts:
- name: a
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route: {weighted_clusters: {clusters: [{name: c, weight: 0}]}}
""",
        "virtual_hosts[0].routes[0].route.weighted_clusters",
    ),
    (
        "no-action",
        """
virtual_hosts:
- name: a
  domains: ["*"]
  routes: [{match: {prefix: /}}]
""",
        "virtual_hosts[0].routes[0]",
    ),
    (
        "both-rewrites",
        """
virtual_hosts:
- name: a
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route: {cluster: c, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, substitution: b}}
""",
        "virtual_hosts[0].routes[0].route",
    ),
]


@pytest.mark.parametrize(("text", "path"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_route_configs_name_the_field(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        table(text)
    assert info.value.path == path


def test_weighted_total_is_the_sum_of_weights() -> None:
    from pilotfish.model.route import RouteAction

    t = table("""
virtual_hosts:
- name: a
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route:
      weighted_clusters:
        total_weight: 1000
        header_name: x-pick
        clusters: [{name: a, weight: 30}, {name: b, weight: 70}]
""")
    _, route = t.route(req("/"))
    assert route is not None and isinstance(route.action, RouteAction)
    wc = route.action.weighted_clusters
    assert wc is not None and wc.total_weight == 100  # total_weight is ignored (deprecated)
