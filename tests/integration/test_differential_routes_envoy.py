"""Differential test of the route features: one bootstrap, run by Envoy 1.40 and by pilotfish.

ONE bootstrap (``build_bootstrap``) is served by ONE Envoy and ONE pilotfish process for the
whole module, both in front of the same three EchoBackends (``A`` and ``B`` behind STATIC
clusters, ``C`` behind a STRICT_DNS cluster on ``localhost``), plus a cluster without endpoints
and one whose endpoint is a closed port. Three listeners:

* ``main`` (HCM defaults): virtual hosts by domain, route matching, cluster specifiers,
  rewrites, timeouts, direct responses, redirects and the local replies;
* ``edge`` (``use_remote_address: true``): x-forwarded-for / -proto and x-request-id handling
  for an external client;
* ``hdrs``: request/response header additions and removals at route-config, virtual-host,
  route and weighted-cluster level, and a virtual host list without ``*`` (404, no vhost).

Each case (``CASES``, id -> request) is sent once to Envoy and once to pilotfish, on a fresh
connection; after the answer, a probe request on the same connection tells whether the proxy
kept it open. Five tests compare the two observations of every case, one aspect each, so that
one known difference does not hide the others:

* ``test_routing``: status line, which EchoBackend received the request, the request line it
  got (rewrites), the body of a local reply (a proxied answer's echo JSON without its
  ``connection_id``); it also checks that Envoy answers with the status and backend the case
  states, so a case that stops testing what its id says (a typo in the bootstrap) fails;
* ``test_upstream_request``: the headers (by name, the values of one name in order) and body
  the backend received;
* ``test_response_headers``: the response headers but ``connection`` (also by name);
* ``test_header_order``: the order of the header names, upstream and downstream;
* ``test_connection``: the ``connection`` response header and whether the connection was kept.

Values that vary per request are normalised: ``date`` (an IMF-fixdate near now),
``x-request-id`` (a UUID v4; any other value is kept), ``x-envoy-upstream-service-time`` (an
integer), the ``content-length`` of an echo JSON body (checked against the body). Both proxies
use the same backends, so upstream ports are the same; header names are compared lower-cased.
pilotfish's ``server`` header is ``envoy``, as Envoy's, and is compared as is.

Where pilotfish differs from Envoy the test is ``xfail(strict=True)`` with the difference as
its reason (``KNOWN_DIFFERENCES``, keyed by aspect and case): it still asserts Envoy's
behaviour and turns into a failure (XPASS) once pilotfish is fixed.

    .venv/bin/pytest -q tests/integration/test_differential_routes_envoy.py
    .venv/bin/pytest -q tests/integration/test_differential_routes_envoy.py -k redirect -vv
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.differential import (
    direct,
    echo_json,
    fraction,
    hv,
    mask_request_header,
    mask_response_header,
    route,
    vhost,
)
from tests.support.echo_backend import EchoBackend, ReceivedRequest
from tests.support.proxies import (
    ENVOY_BIN,
    LOCALHOST,
    ProxyProcess,
    RawResponse,
    bootstrap,
    free_port,
    http_listener,
    lb_endpoint,
    static_cluster,
)
from tests.support.rawconn import RawConn

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

OW = "OVERWRITE_IF_EXISTS_OR_ADD"
ADD_IF_ABSENT = "ADD_IF_ABSENT"
OVERWRITE_IF_EXISTS = "OVERWRITE_IF_EXISTS"
APPEND = "APPEND_IF_EXISTS_OR_ADD"
# Sent after each case's response on the same connection: answered means the proxy kept it.
PROBE = b"GET /probe HTTP/1.1\r\nHost: probe.test\r\n\r\n"


# --- the bootstrap ---------------------------------------------------------------------------


def to(cluster: str, **extra: Any) -> dict[str, Any]:
    """A RouteAction to ``cluster``."""
    return {"cluster": cluster, **extra}


def header_routes() -> list[dict[str, Any]]:
    """Header matchers: each route goes to B when it matches; ``/hm/`` falls back to A."""

    def hm(path: str, *headers: dict[str, Any]) -> dict[str, Any]:
        return route(f"hm{path}", {"path": f"/hm{path}", "headers": list(headers)}, route=to("B"))

    return [
        hm("/exact", {"name": "x-m", "string_match": {"exact": "Yes"}}),
        hm("/exact-legacy", {"name": "x-m", "exact_match": "Yes"}),
        hm("/prefix", {"name": "x-m", "string_match": {"prefix": "pre"}}),
        hm("/prefix-legacy", {"name": "x-m", "prefix_match": "pre"}),
        hm("/suffix", {"name": "x-m", "string_match": {"suffix": "fix"}}),
        hm("/suffix-legacy", {"name": "x-m", "suffix_match": "fix"}),
        hm("/contains", {"name": "x-m", "string_match": {"contains": "mid"}}),
        hm("/contains-legacy", {"name": "x-m", "contains_match": "mid"}),
        hm(
            "/ignore-case", {"name": "x-m", "string_match": {"exact": "MiXeD", "ignore_case": True}}
        ),
        hm("/regex", {"name": "x-m", "string_match": {"safe_regex": {"regex": "^v[0-9]+$"}}}),
        hm("/present", {"name": "x-m", "present_match": True}),
        hm("/absent", {"name": "x-m", "present_match": False}),
        hm("/range", {"name": "x-m", "range_match": {"start": 10, "end": 20}}),
        hm("/invert", {"name": "x-m", "string_match": {"exact": "bad"}, "invert_match": True}),
        hm(
            "/and",
            {"name": "x-a", "string_match": {"exact": "1"}},
            {"name": "x-b", "present_match": True},
        ),
        hm("/method", {"name": ":method", "string_match": {"exact": "POST"}}),
        route("hm_fallback", {"prefix": "/hm/"}, route=to("A")),
    ]


def query_routes() -> list[dict[str, Any]]:
    def qp(path: str, *params: dict[str, Any]) -> dict[str, Any]:
        match = {"path": f"/qp{path}", "query_parameters": list(params)}
        return route(f"qp{path}", match, route=to("B"))

    return [
        qp("/exact", {"name": "debug", "string_match": {"exact": "1"}}),
        qp("/ignore-case", {"name": "lang", "string_match": {"prefix": "EN", "ignore_case": True}}),
        qp("/present", {"name": "flag", "present_match": True}),
        qp(
            "/two",
            {"name": "a", "string_match": {"exact": "1"}},
            {"name": "b", "string_match": {"safe_regex": {"regex": "^[0-9]+$"}}},
        ),
        route("qp_fallback", {"prefix": "/qp/"}, route=to("A")),
    ]


def main_routes() -> list[dict[str, Any]]:
    return [
        # path matching
        route("path", {"path": "/exact"}, route=to("B")),
        route("path_ci", {"path": "/Case/Path", "case_sensitive": False}, route=to("B")),
        route("prefix_ci", {"prefix": "/ci/", "case_sensitive": False}, route=to("B")),
        route("regex", {"safe_regex": {"regex": "^/re/[0-9]+$"}}, route=to("B")),
        route("psp", {"path_separated_prefix": "/psp"}, route=to("B")),
        *header_routes(),
        *query_routes(),
        # runtime fractions
        route(
            "rf_zero",
            {"prefix": "/rf/zero", "runtime_fraction": fraction(0, "pf_diff.rf_zero")},
            route=to("B"),
        ),
        route(
            "rf_all",
            {"prefix": "/rf/all", "runtime_fraction": fraction(100, "pf_diff.rf_all")},
            route=to("B"),
        ),
        route("rf_fallback", {"prefix": "/rf/"}, route=to("A")),
        # cluster specifiers
        route(
            "weighted_b",
            {"prefix": "/wc/b"},
            route={
                "weighted_clusters": {
                    "clusters": [{"name": "A", "weight": 0}, {"name": "B", "weight": 100}]
                }
            },
        ),
        route(
            "weighted_total",
            {"prefix": "/wc/total"},
            route={
                "weighted_clusters": {
                    "total_weight": 100,
                    "clusters": [{"name": "A", "weight": 100}, {"name": "B", "weight": 0}],
                }
            },
        ),
        route("cluster_header", {"prefix": "/ch"}, route={"cluster_header": "x-cluster"}),
        # rewrites
        route("prefix_rewrite", {"prefix": "/pr/"}, route=to("A", prefix_rewrite="/rw/")),
        route("strip", {"prefix": "/strip/"}, route=to("A", prefix_rewrite="/")),
        route(
            "regex_rewrite",
            {"prefix": "/rr/"},
            route=to(
                "A",
                regex_rewrite={
                    "pattern": {"regex": "^/rr/([^/]+)/([^/]+)$"},
                    "substitution": "/swapped/\\2/\\1",
                },
            ),
        ),
        route(
            "regex_rewrite_all",
            {"prefix": "/rr-all/"},
            route=to("A", regex_rewrite={"pattern": {"regex": "o"}, "substitution": "0"}),
        ),
        route(
            "host_rewrite",
            {"prefix": "/hr"},
            route=to("A", host_rewrite_literal="rewritten.example"),
        ),
        route("auto_host_dns", {"prefix": "/auto-dns"}, route=to("C", auto_host_rewrite=True)),
        route(
            "auto_host_static", {"prefix": "/auto-static"}, route=to("A", auto_host_rewrite=True)
        ),
        # timeouts
        route("timeout", {"prefix": "/to/short"}, route=to("A", timeout="1s")),
        route("timeout_off", {"prefix": "/to/off"}, route=to("A", timeout="0s")),
        # direct responses
        route("direct", {"path": "/direct"}, direct_response=direct(200, "hello, direct\n")),
        route("direct_empty", {"path": "/direct-empty"}, direct_response=direct(503)),
        route("direct_418", {"path": "/direct-418"}, direct_response=direct(418, "teapot")),
        # redirects
        route("redir_https", {"path": "/redir/https"}, redirect={"https_redirect": True}),
        route(
            "redir_scheme_port",
            {"path": "/redir/scheme-port"},
            redirect={"scheme_redirect": "https", "port_redirect": 8443},
        ),
        route(
            "redir_host",
            {"path": "/redir/host"},
            redirect={"host_redirect": "new.example.com", "response_code": "PERMANENT_REDIRECT"},
        ),
        route("redir_port", {"path": "/redir/port"}, redirect={"port_redirect": 9090}),
        route("redir_path", {"path": "/redir/path"}, redirect={"path_redirect": "/new/path"}),
        route(
            "redir_strip",
            {"path": "/redir/strip"},
            redirect={"path_redirect": "/stripped", "strip_query": True, "response_code": "FOUND"},
        ),
        route(
            "redir_prefix",
            {"prefix": "/redir/prefix/"},
            redirect={"prefix_rewrite": "/np/", "response_code": "SEE_OTHER"},
        ),
        route(
            "redir_regex",
            {"prefix": "/redir/regex/"},
            redirect={
                "regex_rewrite": {
                    "pattern": {"regex": "^/redir/regex/([a-z]+)$"},
                    "substitution": "/got/\\1",
                },
                "response_code": "TEMPORARY_REDIRECT",
            },
        ),
        # failures
        route("no_endpoints", {"prefix": "/no-endpoints"}, route=to("empty")),
        route("connect_fail", {"prefix": "/connect-fail"}, route=to("closed")),
        # plain proxying
        route("prefix_a", {"prefix": "/a"}, route=to("A")),
        route("prefix_b", {"prefix": "/b"}, route=to("B")),
        # no catch-all: anything else is a 404 (no route)
    ]


def probe_vhost() -> dict[str, Any]:
    """Answers PROBE in every route configuration."""
    return vhost(
        "probe",
        ["probe.test"],
        [route("probe", {"path": "/probe"}, direct_response=direct(200, "probe"))],
    )


def main_route_config() -> dict[str, Any]:
    return {
        "name": "main_routes",
        "virtual_hosts": [
            probe_vhost(),
            vhost("exact", ["www.example.com"]),
            vhost("exact_port", ["ports.example.com:8080"]),
            vhost("suffix", ["*.example.com"]),
            vhost("suffix_longer", ["*.api.example.com"]),
            vhost("prefix", ["api.*"]),
            vhost("prefix_longer", ["api.internal.*"]),
            vhost("star", ["*"], main_routes()),
        ],
    }


def edge_route_config() -> dict[str, Any]:
    return {
        "name": "edge_routes",
        "virtual_hosts": [
            probe_vhost(),
            vhost(
                "edge",
                ["*"],
                [
                    route("edge_redirect", {"path": "/redir"}, redirect={"https_redirect": True}),
                    route("edge_a", {"prefix": "/"}, route=to("A")),
                ],
            ),
        ],
    }


def hdrs_route_config() -> dict[str, Any]:
    """Header mutations at route-config, virtual-host, route and weighted-cluster level; the
    only virtual host is ``hdrs.test`` (any other Host: 404, no virtual host)."""
    route_req_add = [
        hv("x-append", "route", APPEND),
        hv("x-default-action", "route"),
        hv("x-absent", "route", ADD_IF_ABSENT),
        hv("x-over", "route", OW),
        hv("x-over-exists", "route", OVERWRITE_IF_EXISTS),
        hv("x-level", "route", OW),
        hv("x-level-append", "route", APPEND),
        hv("x-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        hv("x-copied", "%REQ(x-source)%"),
        hv("x-literal", "100%%"),
    ]
    route_resp_add = [
        hv("x-resp-append", "route", APPEND),
        hv("x-resp-absent", "route", ADD_IF_ABSENT),
        hv("x-resp-over", "route", OW),
        hv("x-resp-over-exists", "route", OVERWRITE_IF_EXISTS),
        hv("x-resp-level", "route", OW),
        hv("x-resp-level-append", "route", APPEND),
        hv("x-resp-code", "%RESPONSE_CODE%"),
    ]
    route_mutations: dict[str, Any] = {
        "request_headers_to_add": route_req_add,
        "request_headers_to_remove": ["x-rm-route"],
        "response_headers_to_add": route_resp_add,
        "response_headers_to_remove": ["x-rm-resp-route"],
    }
    weighted = {
        "weighted_clusters": {
            "clusters": [
                {
                    "name": "B",
                    "weight": 100,
                    "request_headers_to_add": [
                        hv("x-wc", "wc"),
                        hv("x-level", "wc", OW),
                        hv("x-wc-absent", "wc", ADD_IF_ABSENT),
                    ],
                    "request_headers_to_remove": ["x-rm-wc"],
                    "response_headers_to_add": [
                        hv("x-wc-resp", "wc"),
                        hv("x-resp-level", "wc", OW),
                    ],
                    "response_headers_to_remove": ["x-rm-resp-wc"],
                }
            ]
        }
    }
    return {
        "name": "hdrs_routes",
        "request_headers_to_add": [
            hv("x-rc", "rc"),
            hv("x-level", "rc", OW),
            hv("x-level-append", "rc", APPEND),
        ],
        "request_headers_to_remove": ["x-rm-rc"],
        "response_headers_to_add": [
            hv("x-rc-resp", "rc"),
            hv("x-resp-level", "rc", OW),
            hv("x-resp-level-append", "rc", APPEND),
        ],
        "response_headers_to_remove": ["x-rm-resp-rc"],
        "virtual_hosts": [
            probe_vhost(),
            {
                "name": "hdrs",
                "domains": ["hdrs.test"],
                "request_headers_to_add": [
                    hv("x-vh", "vh"),
                    hv("x-level", "vh", OW),
                    hv("x-level-append", "vh", APPEND),
                ],
                "request_headers_to_remove": ["x-rm-vh"],
                "response_headers_to_add": [
                    hv("x-vh-resp", "vh"),
                    hv("x-resp-level", "vh", OW),
                    hv("x-resp-level-append", "vh", APPEND),
                ],
                "response_headers_to_remove": ["x-rm-resp-vh"],
                "routes": [
                    route("hdrs_route", {"path": "/route"}, route=to("A"), **route_mutations),
                    route("hdrs_plain", {"path": "/plain"}, route=to("A")),
                    route("hdrs_weighted", {"path": "/weighted"}, route=weighted),
                    route(
                        "hdrs_direct",
                        {"path": "/direct"},
                        direct_response=direct(200, "direct"),
                        **route_mutations,
                    ),
                    route(
                        "hdrs_redirect",
                        {"path": "/redirect"},
                        redirect={"path_redirect": "/elsewhere"},
                        **route_mutations,
                    ),
                    route(
                        "hdrs_connect_fail",
                        {"path": "/connect-fail"},
                        route=to("closed"),
                        **route_mutations,
                    ),
                ],
            },
        ],
    }


def build_bootstrap(ports: dict[str, int], closed_port: int) -> dict[str, Any]:
    """The one bootstrap both proxies run. Its listeners are on port 0: each proxy gives them
    a free port each (Envoy accepts several listeners on ``127.0.0.1:0``, pilotfish refuses
    them), in a copy of its own (both set SO_REUSEPORT, so two processes given the same port
    would share its connections)."""
    listeners = [
        http_listener("main", route_config=main_route_config()),
        http_listener("edge", route_config=edge_route_config(), hcm={"use_remote_address": True}),
        http_listener("hdrs", route_config=hdrs_route_config()),
    ]
    clusters = [
        static_cluster("A", ports["A"]),
        static_cluster("B", ports["B"]),
        static_cluster(
            "C",
            endpoints=[lb_endpoint(ports["C"], host="localhost")],
            type="STRICT_DNS",
            dns_lookup_family="V4_ONLY",
            dns_refresh_rate="60s",
        ),
        static_cluster("closed", closed_port),
        static_cluster("empty", endpoints=[]),
    ]
    return bootstrap(listeners, clusters)


# --- the cases ------------------------------------------------------------------------------


def request(
    target: str,
    *headers: tuple[str, str],
    host: str = "svc.test",
    method: str = "GET",
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Case:
    """One request and what Envoy answers to it: ``status``, ``backend`` (the EchoBackend
    that receives the request, None for a local reply) and, for some local replies, ``body``."""

    request: bytes
    status: int
    backend: str | None
    listener: str = "main"
    body: bytes | None = None  # a local reply's body, when it tells what the case tests


ECHO_HDRS = (
    ("x-echo-header", "x-rm-resp-rc=gone"),
    ("x-echo-header", "x-rm-resp-vh=gone"),
    ("x-echo-header", "x-rm-resp-route=gone"),
    ("x-echo-header", "x-rm-resp-wc=gone"),
    ("x-echo-header", "x-resp-append=upstream"),
    ("x-echo-header", "x-resp-absent=upstream"),
    ("x-echo-header", "x-resp-over=upstream"),
    ("x-echo-header", "x-resp-over-exists=upstream"),
    ("x-echo-header", "x-resp-level=upstream"),
    ("x-echo-header", "x-resp-level-append=upstream"),
)
CLIENT_HDRS = (
    ("x-append", "client"),
    ("x-default-action", "client"),
    ("x-absent", "client"),
    ("x-over", "client"),
    ("x-over-exists", "client"),
    ("x-level", "client"),
    ("x-level-append", "client"),
    ("x-wc-absent", "client"),
    ("x-rm-rc", "gone"),
    ("x-rm-vh", "gone"),
    ("x-rm-route", "gone"),
    ("x-rm-wc", "gone"),
    ("x-source", "copied"),
)

CASES: dict[str, Case] = {
    # -- virtual hosts ---------------------------------------------------------------------------
    "vhost-exact": Case(request("/", host="www.example.com"), 200, None, body=b"vhost=exact"),
    "vhost-exact-case-insensitive": Case(
        request("/", host="WWW.Example.COM"), 200, None, body=b"vhost=exact"
    ),
    "vhost-exact-with-port-not-stripped": Case(request("/a", host="www.example.com:80"), 200, "A"),
    "vhost-domain-with-port": Case(
        request("/", host="ports.example.com:8080"), 200, None, body=b"vhost=exact_port"
    ),
    "vhost-domain-with-port-other-port": Case(
        request("/a", host="ports.example.com:9090"), 200, "A"
    ),
    "vhost-suffix-wildcard": Case(
        request("/", host="foo.example.com"), 200, None, body=b"vhost=suffix"
    ),
    "vhost-suffix-wildcard-spans-labels": Case(
        request("/", host="a.b.example.com"), 200, None, body=b"vhost=suffix"
    ),
    "vhost-suffix-longest-wins": Case(
        request("/", host="x.api.example.com"), 200, None, body=b"vhost=suffix_longer"
    ),
    "vhost-suffix-needs-a-label": Case(request("/a", host="example.com"), 200, "A"),
    "vhost-prefix-wildcard": Case(
        request("/", host="api.other.org"), 200, None, body=b"vhost=prefix"
    ),
    "vhost-prefix-longest-wins": Case(
        request("/", host="api.internal.org"), 200, None, body=b"vhost=prefix_longer"
    ),
    "vhost-suffix-beats-prefix": Case(
        request("/", host="api.example.com"), 200, None, body=b"vhost=suffix"
    ),
    "vhost-star": Case(request("/a", host="unknown.test"), 200, "A"),
    "vhost-trailing-dot-not-removed": Case(request("/a", host="www.example.com."), 200, "A"),
    "vhost-from-absolute-form-authority": Case(
        b"GET http://www.example.com/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
        200,
        None,
        body=b"vhost=exact",
    ),
    # -- route matching --------------------------------------------------------------------------
    "prefix-plain": Case(request("/a/x?q=1"), 200, "A"),
    "prefix-post-with-body": Case(request("/b/post", method="POST", body=b"hello"), 200, "B"),
    "prefix-is-case-sensitive": Case(request("/A/x"), 404, None),
    "path-exact": Case(request("/exact"), 200, "B"),
    "path-exact-ignores-query": Case(request("/exact?x=1"), 200, "B"),
    "path-exact-no-trailing-slash": Case(request("/exact/"), 404, None),
    "path-case-insensitive": Case(request("/case/PATH"), 200, "B"),
    "prefix-case-insensitive": Case(request("/CI/Mixed"), 200, "B"),
    "safe-regex": Case(request("/re/123?q=x"), 200, "B"),
    "safe-regex-full-match-only": Case(request("/re/123x"), 404, None),
    "path-separated-prefix": Case(request("/psp"), 200, "B"),
    "path-separated-prefix-child": Case(request("/psp/child?x"), 200, "B"),
    "path-separated-prefix-not-a-segment": Case(request("/pspx"), 404, None),
    # -- header matchers ---------------------------------------------------------------------
    "hm-exact": Case(request("/hm/exact", ("x-m", "Yes")), 200, "B"),
    "hm-exact-is-case-sensitive": Case(request("/hm/exact", ("x-m", "yes")), 200, "A"),
    "hm-exact-legacy": Case(request("/hm/exact-legacy", ("x-m", "Yes")), 200, "B"),
    "hm-exact-any-of-several-values": Case(
        request("/hm/exact", ("x-m", "No"), ("x-m", "Yes")), 200, "B"
    ),
    "hm-prefix": Case(request("/hm/prefix", ("x-m", "prefixed")), 200, "B"),
    "hm-prefix-legacy": Case(request("/hm/prefix-legacy", ("x-m", "prefixed")), 200, "B"),
    "hm-prefix-no": Case(request("/hm/prefix", ("x-m", "xpre")), 200, "A"),
    "hm-suffix": Case(request("/hm/suffix", ("x-m", "a-suffix")), 200, "B"),
    "hm-suffix-legacy": Case(request("/hm/suffix-legacy", ("x-m", "a-suffix")), 200, "B"),
    "hm-contains": Case(request("/hm/contains", ("x-m", "amidb")), 200, "B"),
    "hm-contains-legacy": Case(request("/hm/contains-legacy", ("x-m", "amidb")), 200, "B"),
    "hm-contains-no": Case(request("/hm/contains", ("x-m", "nothing")), 200, "A"),
    "hm-ignore-case": Case(request("/hm/ignore-case", ("x-m", "mixed")), 200, "B"),
    "hm-regex": Case(request("/hm/regex", ("x-m", "v42")), 200, "B"),
    "hm-regex-full-match-only": Case(request("/hm/regex", ("x-m", "v42x")), 200, "A"),
    "hm-present": Case(request("/hm/present", ("x-m", "")), 200, "B"),
    "hm-present-missing": Case(request("/hm/present"), 200, "A"),
    "hm-present-false-absent": Case(request("/hm/absent"), 200, "B"),
    "hm-present-false-but-present": Case(request("/hm/absent", ("x-m", "1")), 200, "A"),
    "hm-range-in": Case(request("/hm/range", ("x-m", "10")), 200, "B"),
    "hm-range-end-excluded": Case(request("/hm/range", ("x-m", "20")), 200, "A"),
    "hm-range-negative-out": Case(request("/hm/range", ("x-m", "-15")), 200, "A"),
    "hm-range-not-a-number": Case(request("/hm/range", ("x-m", "12a")), 200, "A"),
    "hm-invert-other-value": Case(request("/hm/invert", ("x-m", "good")), 200, "B"),
    "hm-invert-same-value": Case(request("/hm/invert", ("x-m", "bad")), 200, "A"),
    "hm-invert-missing-header": Case(request("/hm/invert"), 200, "A"),
    "hm-and-both": Case(request("/hm/and", ("x-a", "1"), ("x-b", "z")), 200, "B"),
    "hm-and-only-one": Case(request("/hm/and", ("x-a", "1")), 200, "A"),
    "hm-pseudo-header-method": Case(request("/hm/method", method="POST"), 200, "B"),
    "hm-pseudo-header-method-no": Case(request("/hm/method"), 200, "A"),
    # -- query parameter matchers ------------------------------------------------------------
    "qp-exact": Case(request("/qp/exact?debug=1"), 200, "B"),
    "qp-exact-other-value": Case(request("/qp/exact?debug=10"), 200, "A"),
    "qp-name-is-case-sensitive": Case(request("/qp/exact?DEBUG=1"), 200, "A"),
    "qp-first-value-counts": Case(request("/qp/exact?debug=2&debug=1"), 200, "A"),
    "qp-ignore-case-prefix": Case(request("/qp/ignore-case?x=1&lang=en-US"), 200, "B"),
    "qp-present-without-value": Case(request("/qp/present?flag"), 200, "B"),
    "qp-present-missing": Case(request("/qp/present?flags=1"), 200, "A"),
    "qp-two-params": Case(request("/qp/two?b=42&a=1"), 200, "B"),
    "qp-two-params-one-wrong": Case(request("/qp/two?b=4x2&a=1"), 200, "A"),
    "qp-percent-encoded-value": Case(request("/qp/exact?debug=%31"), 200, "A"),
    # -- runtime fraction --------------------------------------------------------------------
    "runtime-fraction-0-percent": Case(request("/rf/zero"), 200, "A"),
    "runtime-fraction-100-percent": Case(request("/rf/all"), 200, "B"),
    # -- cluster specifiers ------------------------------------------------------------------
    "weighted-clusters-0-100": Case(request("/wc/b"), 200, "B"),
    "weighted-clusters-total-weight": Case(request("/wc/total"), 200, "A"),
    "cluster-header": Case(request("/ch", ("x-cluster", "B")), 200, "B"),
    "cluster-header-unknown-cluster": Case(request("/ch", ("x-cluster", "nope")), 503, None),
    "cluster-header-absent": Case(request("/ch"), 503, None),
    # -- rewrites ----------------------------------------------------------------------------
    "prefix-rewrite": Case(request("/pr/x/y?q=1"), 200, "A"),
    "prefix-rewrite-whole-prefix": Case(request("/pr/"), 200, "A"),
    "prefix-rewrite-to-root": Case(request("/strip/foo?q"), 200, "A"),
    "regex-rewrite-groups": Case(request("/rr/one/two?k=v"), 200, "A"),
    "regex-rewrite-no-match": Case(request("/rr/one"), 200, "A"),
    "regex-rewrite-every-match": Case(request("/rr-all/foo/boo"), 200, "A"),
    "host-rewrite-literal": Case(request("/hr/x"), 200, "A"),
    "auto-host-rewrite-strict-dns": Case(request("/auto-dns/x"), 200, "C"),
    "auto-host-rewrite-static-keeps-host": Case(request("/auto-static/x"), 200, "A"),
    # -- timeouts ----------------------------------------------------------------------------
    "timeout-default-15s": Case(request("/a/t"), 200, "A"),
    "timeout-route-1s": Case(request("/to/short"), 200, "A"),
    "timeout-disabled": Case(request("/to/off"), 200, "A"),
    "timeout-client-header-overwritten": Case(
        request("/to/short", ("x-envoy-expected-rq-timeout-ms", "5")), 200, "A"
    ),
    "timeout-client-upstream-rq-timeout-ignored": Case(
        request("/a/t", ("x-envoy-upstream-rq-timeout-ms", "100")), 200, "A"
    ),
    "upstream-timeout-504": Case(request("/to/short", ("x-echo-delay-ms", "4000")), 504, "A"),
    # -- direct responses ----------------------------------------------------------------------
    "direct-response-200": Case(request("/direct"), 200, None),
    "direct-response-503-no-body": Case(request("/direct-empty"), 503, None),
    "direct-response-418": Case(request("/direct-418"), 418, None),
    "direct-response-head": Case(request("/direct", method="HEAD"), 200, None),
    # -- redirects -----------------------------------------------------------------------------
    "redirect-https": Case(request("/redir/https?a=1", host="r.test"), 301, None),
    "redirect-https-keeps-port": Case(request("/redir/https", host="r.test:8080"), 301, None),
    "redirect-https-drops-port-80": Case(request("/redir/https", host="r.test:80"), 301, None),
    "redirect-scheme-and-port": Case(request("/redir/scheme-port", host="r.test:8080"), 301, None),
    "redirect-host-308": Case(request("/redir/host?x=1", host="r.test:8080"), 308, None),
    "redirect-port": Case(request("/redir/port", host="r.test"), 301, None),
    "redirect-path-keeps-query": Case(request("/redir/path?x=1", host="r.test"), 301, None),
    "redirect-strip-query-302": Case(request("/redir/strip?x=1", host="r.test"), 302, None),
    "redirect-prefix-rewrite-303": Case(request("/redir/prefix/a/b?x=1", host="r.test"), 303, None),
    "redirect-regex-rewrite-307": Case(request("/redir/regex/abc?k=v", host="r.test"), 307, None),
    "redirect-https-client-xfp-https": Case(
        request("/redir/https", ("x-forwarded-proto", "https"), host="r.test"), 301, None
    ),
    # -- forwarding headers, request id --------------------------------------------------------
    "request-id-generated": Case(request("/a/id"), 200, "A"),
    "request-id-kept": Case(request("/a/id", ("x-request-id", "client-id-1")), 200, "A"),
    "forwarded-proto-added": Case(request("/a/xfp"), 200, "A"),
    "forwarded-proto-client-kept": Case(
        request("/a/xfp", ("X-Forwarded-Proto", "https")), 200, "A"
    ),
    "forwarded-for-not-appended": Case(request("/a/xff", ("X-Forwarded-For", "1.2.3.4")), 200, "A"),
    "edge-plain": Case(request("/e"), 200, "A", "edge"),
    "edge-forwarded-for-appended": Case(
        request("/e", ("X-Forwarded-For", "1.2.3.4, 5.6.7.8")), 200, "A", "edge"
    ),
    "edge-forwarded-proto-overwritten": Case(
        request("/e", ("X-Forwarded-Proto", "https")), 200, "A", "edge"
    ),
    "edge-request-id-regenerated": Case(
        request("/e", ("x-request-id", "client-id-2")), 200, "A", "edge"
    ),
    "edge-envoy-headers-sanitised": Case(
        request(
            "/e",
            ("x-envoy-internal", "true"),
            ("x-envoy-original-path", "/evil"),
            ("x-envoy-external-address", "9.9.9.9"),
            ("x-envoy-foo", "kept"),
        ),
        200,
        "A",
        "edge",
    ),
    "edge-https-redirect-ignores-client-xfp": Case(
        request("/redir", ("X-Forwarded-Proto", "https"), host="r.test"), 301, None, "edge"
    ),
    # -- header mutations ----------------------------------------------------------------------
    "headers-all-levels": Case(
        request("/route", *CLIENT_HDRS, *ECHO_HDRS, host="hdrs.test"), 200, "A", "hdrs"
    ),
    "headers-all-levels-nothing-to-replace": Case(
        request("/route", host="hdrs.test"), 200, "A", "hdrs"
    ),
    "headers-vhost-and-route-config": Case(
        request("/plain", *CLIENT_HDRS, *ECHO_HDRS, host="hdrs.test"), 200, "A", "hdrs"
    ),
    "headers-weighted-cluster": Case(
        request("/weighted", *CLIENT_HDRS, *ECHO_HDRS, host="hdrs.test"), 200, "B", "hdrs"
    ),
    "headers-on-direct-response": Case(request("/direct", host="hdrs.test"), 200, None, "hdrs"),
    "headers-on-redirect": Case(request("/redirect", host="hdrs.test"), 301, None, "hdrs"),
    "headers-on-connect-failure": Case(
        request("/connect-fail", host="hdrs.test"), 503, None, "hdrs"
    ),
    # -- errors --------------------------------------------------------------------------------
    "no-route-404": Case(request("/nothing"), 404, None),
    "no-route-404-head": Case(request("/nothing", method="HEAD"), 404, None),
    "no-virtual-host-404": Case(request("/route", host="other.test"), 404, None, "hdrs"),
    "no-healthy-upstream-503": Case(request("/no-endpoints"), 503, None),
    "connect-failure-503": Case(request("/connect-fail"), 503, None),
    "upstream-5xx-passed-through": Case(request("/b/x", ("x-echo-status", "503")), 503, "B"),
}


# --- where pilotfish differs ---------------------------------------------------------------

# What each test compares (see the tests at the end).
ASPECTS = ("routing", "upstream_request", "response_headers", "header_order", "connection")

# (aspect, case id) -> how pilotfish differs: that test is xfail(strict=True) with this reason.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}


# --- observing one proxy ----------------------------------------------------------------------

NO_RESPONSE = "<connection closed without a response>"


def _final(conn: RawConn, head: bool = False) -> RawResponse:
    """The next final response on ``conn`` (interim 1xx skipped)."""
    while True:
        response = conn.response(head=head)
        if not response.informational:
            return response


def exchange(port: int, raw: bytes) -> tuple[RawResponse | None, str]:
    """Send one request on a new connection and read the answer; then send PROBE on the same
    connection to learn whether the proxy kept it open. Returns (the response or None when
    the connection ended first, "kept open" | "closed")."""
    with RawConn((LOCALHOST, port)) as conn:
        conn.send(raw)
        try:
            response = _final(conn, head=raw.startswith(b"HEAD "))
        except AssertionError:
            if conn.eof is None:
                raise  # neither an answer nor a close in time
            return None, "closed"
        try:
            conn.send(PROBE)
            probe = _final(conn)
        except OSError:
            return response, "closed"
        except AssertionError:
            if conn.eof is None:
                raise
            return response, "closed"
        if probe.body == b"probe":
            return response, "kept open"
        return response, f"probe answered {probe.status} {probe.body!r}"


@dataclass
class Observation:
    """What one proxy did with one case, normalised for comparison."""

    status: str  # "200 OK"
    backend: str | None  # the one EchoBackend that received the request
    upstream_line: str  # request line received upstream
    body: Any  # local reply: the bytes; proxied: the echo JSON without connection_id/headers
    upstream_headers: list[tuple[str, str]]
    upstream_body: bytes
    response_headers: list[tuple[str, str]]  # without `connection`
    connection: tuple[str | None, str]  # the `connection` response header; kept open / closed

    def render(self) -> str:
        lines = [f"status: {self.status}", "response headers:"]
        lines += [f"  {k}: {v}" for k, v in self.response_headers]
        lines.append(f"connection: {self.connection}")
        lines.append(f"body: {self.body!r}")
        lines.append(f"upstream {self.backend}: {self.upstream_line}")
        lines += [f"  {k}: {v}" for k, v in self.upstream_headers]
        lines.append(f"  body: {self.upstream_body!r}")
        return "\n".join(lines)


def observe(proxy: ProxyProcess, c: Case, backends: dict[str, EchoBackend]) -> Observation:
    for b in backends.values():
        b.clear()
    response, kept = exchange(proxy.port(c.listener), c.request)
    received: list[tuple[str, ReceivedRequest]] = []
    for name, b in backends.items():
        received += [(name, rq) for rq in list(b.requests)]
    if len(received) > 1:
        raise AssertionError(f"{proxy.kind}: more than one upstream request: {received}")
    backend, rq = received[0] if received else (None, None)
    status, headers, connection = NO_RESPONSE, [], None
    body: Any = b""
    if response is not None:
        status = f"{response.status} {response.reason}"
        echo = echo_json(response.body)
        body = (
            response.body
            if echo is None
            else {k: v for k, v in echo.items() if k not in ("connection_id", "headers")}
        )
        echo_body = None if echo is None else response.body
        fields = [(k.lower(), v) for k, v in response.headers]
        headers = [
            (k, mask_response_header(k, v, echo_body)) for k, v in fields if k != "connection"
        ]
        connection = ", ".join(v for k, v in fields if k == "connection") or None
    return Observation(
        status=status,
        backend=backend,
        upstream_line="" if rq is None else f"{rq.method} {rq.target} {rq.version}",
        body=body,
        upstream_headers=[]
        if rq is None
        else [(k, mask_request_header(k, v)) for k, v in rq.headers],
        upstream_body=b"" if rq is None else rq.body,
        response_headers=headers,
        connection=(connection, kept),
    )


# --- fixtures (``backends`` A, B and C, ``envoy`` and ``pilotfish``: conftest.py) ----------


@pytest.fixture(scope="module")
def differential_bootstrap(backends: dict[str, EchoBackend]) -> dict[str, Any]:
    return build_bootstrap({n: b.port for n, b in backends.items()}, closed_port=free_port())


class Observations:
    """Each case is sent once to each proxy; every aspect test compares the same pair."""

    def __init__(
        self, envoy: ProxyProcess, pilotfish: ProxyProcess, backends: dict[str, EchoBackend]
    ) -> None:
        self.envoy = envoy
        self.pilotfish = pilotfish
        self.backends = backends
        self.seen: dict[str, tuple[Observation, Observation]] = {}

    def __call__(self, cid: str) -> tuple[Observation, Observation]:
        if cid not in self.seen:
            c = CASES[cid]
            self.seen[cid] = (
                observe(self.envoy, c, self.backends),
                observe(self.pilotfish, c, self.backends),
            )
        return self.seen[cid]


@pytest.fixture(scope="module")
def observed(
    envoy: ProxyProcess, pilotfish: ProxyProcess, backends: dict[str, EchoBackend]
) -> Observations:
    return Observations(envoy, pilotfish, backends)


# --- the tests -------------------------------------------------------------------------------


def params(aspect: str) -> list[Any]:
    out = []
    for cid in CASES:
        reason = KNOWN_DIFFERENCES.get((aspect, cid))
        marks = [pytest.mark.xfail(reason=f"pilotfish: {reason}", strict=True)] if reason else []
        out.append(pytest.param(cid, id=cid, marks=marks))
    return out


def differ(cid: str, aspect: str, want: Any, got: Any, envoy: Observation, pf: Observation) -> str:
    diff = difflib.unified_diff(
        envoy.render().splitlines(), pf.render().splitlines(), "envoy", "pilotfish", lineterm=""
    )
    return (
        f"{cid}: pilotfish differs from Envoy in {aspect}:\n  envoy:     {want!r}\n"
        f"  pilotfish: {got!r}\nrequest: {CASES[cid].request!r}\n" + "\n".join(diff)
    )


def compare(
    cid: str, aspect: str, want: Any, got: Any, envoy: Observation, pf: Observation
) -> None:
    if want != got:
        pytest.fail(differ(cid, aspect, want, got, envoy, pf), pytrace=False)


def test_corpus() -> None:
    """Enough cases, and no KNOWN_DIFFERENCES entry for an unknown aspect or case."""
    assert len(CASES) >= 60
    unknown = {key for key in KNOWN_DIFFERENCES if key[0] not in ASPECTS or key[1] not in CASES}
    assert not unknown, unknown


@pytest.mark.parametrize("cid", params("routing"))
def test_routing(cid: str, observed: Observations) -> None:
    """Status line, the backend chosen, the request line it got, the local reply's body."""
    envoy, pf = observed(cid)
    c = CASES[cid]
    # The case tests what its id says: Envoy answers with the stated status and backend.
    said = (c.status, c.backend, c.body)
    answered = (int(envoy.status.split()[0]), envoy.backend, envoy.body if c.body else None)
    assert answered == said, f"{cid}: Envoy does not answer as the case says\n{envoy.render()}"

    def routing(o: Observation) -> tuple[Any, ...]:
        return (o.status, o.backend, o.upstream_line, o.body)

    compare(cid, "routing", routing(envoy), routing(pf), envoy, pf)


@pytest.mark.parametrize("cid", params("upstream_request"))
def test_upstream_request(cid: str, observed: Observations) -> None:
    """The headers (compared by name; the values of one name in order) and body upstream."""
    envoy, pf = observed(cid)

    def upstream(o: Observation) -> tuple[Any, ...]:
        return (sorted(o.upstream_headers, key=lambda kv: kv[0]), o.upstream_body)

    compare(cid, "upstream_request", upstream(envoy), upstream(pf), envoy, pf)


@pytest.mark.parametrize("cid", params("response_headers"))
def test_response_headers(cid: str, observed: Observations) -> None:
    """The response headers but `connection` (by name; the values of one name in order)."""
    envoy, pf = observed(cid)

    def headers(o: Observation) -> list[tuple[str, str]]:
        return sorted(o.response_headers, key=lambda kv: kv[0])

    compare(cid, "response_headers", headers(envoy), headers(pf), envoy, pf)


@pytest.mark.parametrize("cid", params("header_order"))
def test_header_order(cid: str, observed: Observations) -> None:
    """The order of the header names, upstream and downstream."""
    envoy, pf = observed(cid)

    def order(o: Observation) -> tuple[list[str], list[str]]:
        return [k for k, _ in o.upstream_headers], [k for k, _ in o.response_headers]

    compare(cid, "header_order", order(envoy), order(pf), envoy, pf)


@pytest.mark.parametrize("cid", params("connection"))
def test_connection(cid: str, observed: Observations) -> None:
    """The `connection` response header and whether the connection serves another request."""
    envoy, pf = observed(cid)
    compare(cid, "connection", envoy.connection, pf.connection, envoy, pf)
