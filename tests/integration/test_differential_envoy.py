"""Differential test: the same bootstrap run by Envoy 1.40 and by pilotfish must answer alike.

One bootstrap (built below) is served by ONE Envoy and ONE pilotfish for the whole module, in
front of the same three EchoBackends (clusters ``A`` and ``B`` are STATIC, ``C`` is STRICT_DNS on
``localhost``), plus a cluster whose endpoint is a closed port and one without endpoints. Each
case in ``CASES`` sends exact bytes on a fresh connection, first to Envoy and then to
pilotfish, and records:

* every response: status line (code and reason phrase), headers (names, values, order and case),
  framing, body (local replies exactly; the backend's echo JSON parsed), trailers;
* what each backend received: request line, headers (order and case), body;
* whether the proxy closed the connection.

Values that change per request are compared for presence and format only: ``date`` (an
IMF-fixdate within a few minutes of now), ``x-request-id`` (a UUID v4),
``x-envoy-upstream-service-time`` (an integer), the echo JSON's ``connection_id`` and the
``content-length`` of echo JSON bodies (which depends on it; it must match the body).
Timing is compared loosely: Envoy delays the close after a local reply by
``delayed_close_timeout`` (1 s), pilotfish closes at once (docs/compatibility.md); only *whether*
the connection ends is compared, not when, nor FIN vs RST.

Whether a connection stays open is decided without waiting: after the responses, a second
request (``PROBE``, answered by a direct_response) is sent on it; an answer means open. A
response announcing ``connection: close`` is followed by a wait for the close instead. Envoy's
answers to all selected cases are gathered first, several at a time (its delayed closes then
overlap); the backends serve one case at a time.

A failure shows a unified diff of the two normalised transcripts (``envoy`` vs ``pilotfish``),
plus what pilotfish logged meanwhile. Nothing here is xfail: every case is Envoy's behaviour,
and a difference is either a pilotfish bug or belongs in docs/compatibility.md (and then in
the normalisation above).

    .venv/bin/pytest tests/integration/test_differential_envoy.py -q
    .venv/bin/pytest tests/integration/test_differential_envoy.py -k redirect -vv
"""

from __future__ import annotations

import difflib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.differential import (
    direct,
    echo_json,
    fraction,
    hv,
    mask_request_header,
    mask_response_header,
    vhost,
)
from tests.support.differential import route as r
from tests.support.echo_backend import EchoBackend, ReceivedRequest
from tests.support.proxies import (
    ENVOY_BIN,
    Exchange,
    ProxyProcess,
    RawResponse,
    bootstrap,
    free_port,
    http_exchange,
    http_listener,
    lb_endpoint,
    static_cluster,
)

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

H = "example.test"  # a Host that lands in the catch-all virtual host
PROBE = b"GET /__probe HTTP/1.1\r\nHost: probe.test\r\n\r\n"  # answered by a direct_response
CLOSE_WAIT = 2.0  # Envoy closes 1 s (delayed_close_timeout) after some local replies


# --- the bootstrap ---------------------------------------------------------------------------


def hm_route(name: str, prefix: str, *headers: dict[str, Any]) -> dict[str, Any]:
    """A header-matcher route answered by a direct_response naming it."""
    return r(name, {"prefix": prefix, "headers": list(headers)}, direct_response=direct(200, name))


def qp_route(name: str, prefix: str, *params: dict[str, Any]) -> dict[str, Any]:
    match = {"prefix": prefix, "query_parameters": list(params)}
    return r(name, match, direct_response=direct(200, name))


PROBE_VHOST = vhost(
    "probe",
    ["probe.test"],
    [r("probe", {"path": "/__probe"}, direct_response=direct(200, "probe"))],
)


def main_routes() -> list[dict[str, Any]]:
    ow = "OVERWRITE_IF_EXISTS_OR_ADD"
    return [
        # path matching
        r("exact", {"path": "/exact"}, route={"cluster": "B"}),
        r(
            "path_ci",
            {"path": "/Case/Insensitive", "case_sensitive": False},
            route={"cluster": "B"},
        ),
        r("prefix_ci", {"prefix": "/ci/", "case_sensitive": False}, route={"cluster": "A"}),
        r("regex", {"safe_regex": {"regex": "^/re/[0-9]+$"}}, route={"cluster": "B"}),
        r("psp", {"path_separated_prefix": "/psp"}, route={"cluster": "B"}),
        r("vhost_star", {"path": "/vhost"}, direct_response=direct(200, "vhost=star")),
        # header matchers
        hm_route("hm_exact", "/hm/exact", {"name": "x-m", "string_match": {"exact": "Yes"}}),
        hm_route("hm_legacy_exact", "/hm/legacy", {"name": "x-m", "exact_match": "v1"}),
        hm_route("hm_prefix", "/hm/prefix", {"name": "x-m", "string_match": {"prefix": "pre"}}),
        hm_route("hm_suffix", "/hm/suffix", {"name": "x-m", "string_match": {"suffix": "fix"}}),
        hm_route(
            "hm_contains", "/hm/contains", {"name": "x-m", "string_match": {"contains": "mid"}}
        ),
        hm_route(
            "hm_ignore_case",
            "/hm/ignore-case",
            {"name": "x-m", "string_match": {"exact": "MiXeD", "ignore_case": True}},
        ),
        hm_route(
            "hm_regex",
            "/hm/regex",
            {"name": "x-m", "string_match": {"safe_regex": {"regex": "^v[0-9]+$"}}},
        ),
        hm_route("hm_present", "/hm/present", {"name": "x-m", "present_match": True}),
        hm_route("hm_absent", "/hm/absent", {"name": "x-m", "present_match": False}),
        hm_route("hm_range", "/hm/range", {"name": "x-m", "range_match": {"start": 10, "end": 20}}),
        hm_route(
            "hm_invert",
            "/hm/invert",
            {"name": "x-m", "string_match": {"exact": "bad"}, "invert_match": True},
        ),
        hm_route(
            "hm_missing_empty",
            "/hm/missing-empty",
            {"name": "x-m", "string_match": {"exact": ""}, "treat_missing_header_as_empty": True},
        ),
        hm_route(
            "hm_and",
            "/hm/and",
            {"name": "x-a", "string_match": {"exact": "1"}},
            {"name": "x-b", "present_match": True},
        ),
        hm_route("hm_method", "/hm/method", {"name": ":method", "string_match": {"exact": "POST"}}),
        r("hm_fallback", {"prefix": "/hm/"}, direct_response=direct(200, "hm_fallback")),
        # query parameter matchers
        qp_route("qp_string", "/qp/string", {"name": "debug", "string_match": {"exact": "1"}}),
        qp_route(
            "qp_ignore_case",
            "/qp/ignore-case",
            {"name": "lang", "string_match": {"prefix": "EN", "ignore_case": True}},
        ),
        qp_route("qp_present", "/qp/present", {"name": "flag", "present_match": True}),
        r("qp_fallback", {"prefix": "/qp/"}, direct_response=direct(200, "qp_fallback")),
        # runtime fractions
        r(
            "rf_zero",
            {"prefix": "/rf/zero", "runtime_fraction": fraction(0, "pf.rf.zero")},
            direct_response=direct(200, "rf_zero"),
        ),
        r(
            "rf_all",
            {"prefix": "/rf/all", "runtime_fraction": fraction(100, "pf.rf.all")},
            direct_response=direct(200, "rf_all"),
        ),
        r("rf_fallback", {"prefix": "/rf/"}, direct_response=direct(200, "rf_fallback")),
        # cluster specifiers
        r(
            "weighted",
            {"prefix": "/wc"},
            route={
                "weighted_clusters": {
                    "header_name": "x-wc-value",
                    "clusters": [
                        {
                            "name": "A",
                            "weight": 30,
                            "request_headers_to_add": [hv("x-wc", "A", ow)],
                            "response_headers_to_add": [hv("x-wc-resp", "A")],
                        },
                        {
                            "name": "B",
                            "weight": 70,
                            "host_rewrite_literal": "b.weighted.test",
                            "request_headers_to_add": [hv("x-wc", "B", ow)],
                            "request_headers_to_remove": ["x-wc-drop"],
                            "response_headers_to_add": [hv("x-wc-resp", "B")],
                        },
                    ],
                }
            },
        ),
        r("cluster_header", {"prefix": "/ch"}, route={"cluster_header": "x-cluster"}),
        # rewrites
        r("prefix_rewrite", {"prefix": "/pr/"}, route={"cluster": "A", "prefix_rewrite": "/rw/"}),
        r("strip", {"prefix": "/strip/"}, route={"cluster": "A", "prefix_rewrite": "/"}),
        r(
            "regex_rewrite",
            {"prefix": "/rr/"},
            route={
                "cluster": "A",
                "regex_rewrite": {
                    "pattern": {"regex": "^/rr/([^/]+)/([^/]+)$"},
                    "substitution": "/swapped/\\2/\\1",
                },
            },
        ),
        r(
            "regex_rewrite_all",
            {"prefix": "/rr-all/"},
            route={
                "cluster": "A",
                "regex_rewrite": {"pattern": {"regex": "o"}, "substitution": "0"},
            },
        ),
        r(
            "host_rewrite",
            {"prefix": "/hr"},
            route={"cluster": "A", "host_rewrite_literal": "rewritten.example"},
        ),
        r("auto_host", {"prefix": "/auto-dns"}, route={"cluster": "C", "auto_host_rewrite": True}),
        r(
            "auto_host_static",
            {"prefix": "/auto-static"},
            route={"cluster": "A", "auto_host_rewrite": True},
        ),
        # timeouts and retries
        r("timeout", {"prefix": "/to/"}, route={"cluster": "A", "timeout": "0.3s"}),
        r("timeout_none", {"prefix": "/to-none"}, route={"cluster": "A", "timeout": "0s"}),
        r(
            "retry",
            {"prefix": "/retry"},
            route={
                "cluster": "A",
                "retry_policy": {
                    "retry_on": "5xx",
                    "num_retries": 1,
                    "retry_back_off": {"base_interval": "0.01s"},
                },
            },
        ),
        # direct responses
        r("direct", {"path": "/direct"}, direct_response=direct(200, "hi")),
        r("direct_empty", {"path": "/direct-empty"}, direct_response=direct(503)),
        r("direct_404", {"path": "/direct-404"}, direct_response=direct(404, "nope\n")),
        # redirects
        r("redir_https", {"path": "/redir/https"}, redirect={"https_redirect": True}),
        r("redir_path", {"path": "/redir/path"}, redirect={"path_redirect": "/new/path"}),
        r(
            "redir_host",
            {"path": "/redir/host"},
            redirect={"host_redirect": "new.example.com", "response_code": "PERMANENT_REDIRECT"},
        ),
        r(
            "redir_strip",
            {"path": "/redir/strip"},
            redirect={"path_redirect": "/stripped", "strip_query": True},
        ),
        r("redir_prefix", {"prefix": "/redir/prefix/"}, redirect={"prefix_rewrite": "/np/"}),
        r(
            "redir_port",
            {"path": "/redir/port"},
            redirect={"scheme_redirect": "https", "port_redirect": 8443},
        ),
        r(
            "redir_regex",
            {"prefix": "/redir/regex/"},
            redirect={
                "regex_rewrite": {
                    "pattern": {"regex": "^/redir/regex/([a-z]+)$"},
                    "substitution": "/got/\\1",
                },
                "response_code": "FOUND",
            },
        ),
        r(
            "redir_303",
            {"path": "/redir/303"},
            redirect={"path_redirect": "/other", "response_code": "SEE_OTHER"},
        ),
        r(
            "redir_307",
            {"path": "/redir/307"},
            redirect={"host_redirect": "t.example", "response_code": "TEMPORARY_REDIRECT"},
        ),
        # failures
        r("no_endpoints", {"prefix": "/no-endpoints"}, route={"cluster": "empty"}),
        r("connect_fail", {"prefix": "/connect-fail"}, route={"cluster": "closed"}),
        # plain proxying
        r("prefix_a", {"prefix": "/a"}, route={"cluster": "A"}),
        r("prefix_b", {"prefix": "/b"}, route={"cluster": "B"}),
        # no catch-all: anything else is 404 (no route)
    ]


def main_route_config() -> dict[str, Any]:
    return {
        "name": "main_routes",
        "virtual_hosts": [
            vhost("exact", ["example.com"]),
            vhost("exact_port", ["example.net:8080"]),
            vhost("suffix", ["*.example.org"]),
            vhost("suffix_longer", ["*.api.example.org"]),
            vhost("prefix", ["foo.*"]),
            PROBE_VHOST,
            vhost("star", ["*"], main_routes()),
        ],
    }


def hdrs_route_config() -> dict[str, Any]:
    """Header mutations at route-config, virtual-host, route and weighted-cluster level."""
    ow = "OVERWRITE_IF_EXISTS_OR_ADD"
    req_add = [
        hv("x-append", "route", "APPEND_IF_EXISTS_OR_ADD"),
        hv("x-add-if-absent", "route", "ADD_IF_ABSENT"),
        hv("x-overwrite", "route", ow),
        hv("x-overwrite-if-exists", "route", "OVERWRITE_IF_EXISTS"),
        hv("x-default-action", "route"),
        hv("x-level-req", "route", ow),
        hv("x-level-req-append", "route"),
        hv("x-downstream-noport", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        hv("x-upstream-in-req", "%UPSTREAM_REMOTE_ADDRESS%"),
        hv("x-req-copy", "%REQ(x-source)%"),
        hv("x-req-copy-missing", "%REQ(x-not-there)%"),
        hv("x-protocol", "%PROTOCOL%"),
        hv("x-literal-percent", "100%%"),
        hv("x-empty", ""),
        hv("x-empty-kept", "", keep_empty_value=True),
        hv("X-Upper-Case", "Mixed"),
    ]
    resp_add = [
        hv("x-resp-append", "route", "APPEND_IF_EXISTS_OR_ADD"),
        hv("x-resp-add-if-absent", "route", "ADD_IF_ABSENT"),
        hv("x-resp-overwrite", "route", ow),
        hv("x-resp-overwrite-if-exists", "route", "OVERWRITE_IF_EXISTS"),
        hv("x-level-resp", "route", ow),
        hv("x-level-resp-append", "route"),
        hv("x-upstream", "%UPSTREAM_REMOTE_ADDRESS%"),
        hv("x-resp-code", "%RESPONSE_CODE%"),
        hv("x-resp-req-copy", "%REQ(x-source)%"),
        hv("x-resp-flags", "%RESPONSE_FLAGS%"),
    ]
    route_resp = [hv("x-route-resp", "route")]
    return {
        "name": "hdrs_routes",
        "request_headers_to_add": [
            hv("x-rc", "rc"),
            hv("x-level-req", "rc", ow),
            hv("x-level-req-append", "rc"),
        ],
        "response_headers_to_add": [
            hv("x-rc-resp", "rc"),
            hv("x-level-resp", "rc", ow),
            hv("x-level-resp-append", "rc"),
        ],
        "request_headers_to_remove": ["x-remove-rc"],
        "response_headers_to_remove": ["x-remove-resp-rc"],
        "virtual_hosts": [
            PROBE_VHOST,
            {
                "name": "hdrs",
                "domains": ["*"],
                "request_headers_to_add": [
                    hv("x-vh", "vh"),
                    hv("x-level-req", "vh", ow),
                    hv("x-level-req-append", "vh"),
                ],
                "response_headers_to_add": [
                    hv("x-vh-resp", "vh"),
                    hv("x-level-resp", "vh", ow),
                    hv("x-level-resp-append", "vh"),
                ],
                "request_headers_to_remove": ["x-remove-vh"],
                "response_headers_to_remove": ["x-remove-resp-vh"],
                "routes": [
                    r(
                        "hdrs",
                        {"prefix": "/hdrs"},
                        route={"cluster": "A"},
                        request_headers_to_add=req_add,
                        request_headers_to_remove=["x-remove-route"],
                        response_headers_to_add=resp_add,
                        response_headers_to_remove=["x-remove-resp-route"],
                    ),
                    r(
                        "wc_hdrs",
                        {"prefix": "/wc-hdrs"},
                        route={
                            "weighted_clusters": {
                                "clusters": [
                                    {
                                        "name": "B",
                                        "weight": 100,
                                        "request_headers_to_add": [
                                            hv("x-wc-append", "wc"),
                                            hv("x-wc-absent", "wc", "ADD_IF_ABSENT"),
                                            hv("x-level-req", "wc", ow),
                                            hv("x-wc-if-exists", "wc", "OVERWRITE_IF_EXISTS"),
                                        ],
                                        "request_headers_to_remove": ["x-wc-remove"],
                                        "response_headers_to_add": [
                                            hv("x-wc-resp", "wc"),
                                            hv("x-level-resp", "wc", ow),
                                        ],
                                        "response_headers_to_remove": ["x-wc-resp-remove"],
                                    }
                                ]
                            }
                        },
                        request_headers_to_add=[hv("x-route", "route")],
                        response_headers_to_add=route_resp,
                    ),
                    r(
                        "direct_hdrs",
                        {"path": "/direct"},
                        direct_response=direct(200, "hi"),
                        response_headers_to_add=route_resp,
                    ),
                    r(
                        "connect_fail_hdrs",
                        {"path": "/connect-fail"},
                        route={"cluster": "closed"},
                        response_headers_to_add=route_resp,
                    ),
                    r(
                        "redirect_hdrs",
                        {"path": "/redirect"},
                        redirect={"path_redirect": "/elsewhere"},
                        response_headers_to_add=route_resp,
                    ),
                ],
            },
        ],
    }


def build_bootstrap(ports: dict[str, int], closed_port: int) -> dict[str, Any]:
    """The one bootstrap both proxies run. Listeners and admin bind port 0."""
    listeners = [
        http_listener("main", route_config=main_route_config(), hcm={"stat_prefix": "ingress"}),
        http_listener(
            "hdrs", route_config=hdrs_route_config(), hcm={"stat_prefix": "ingress_hdrs"}
        ),
    ]
    clusters = [
        static_cluster("A", ports["A"]),
        static_cluster("B", ports["B"]),
        static_cluster(
            "C",
            endpoints=[lb_endpoint(ports["C"], host="localhost")],
            type="STRICT_DNS",
            dns_lookup_family="V4_ONLY",
        ),
        static_cluster("closed", closed_port),
        static_cluster("empty", endpoints=[]),
    ]
    return bootstrap(listeners, clusters)


# --- the cases ------------------------------------------------------------------------------


def req(
    method: str = "GET",
    target: str = "/a",
    host: str | None = H,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    """Request bytes; ``headers`` are written as given (case, order, duplicates)."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(target: str, *headers: tuple[str, str], host: str | None = H) -> bytes:
    return req("GET", target, host, list(headers))


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    out = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
    return out + b"0\r\n" + trailers + b"\r\n"


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[bytes | float, ...]  # bytes to send; float = seconds to wait (reading)
    listener: str = "main"
    expect: int = 1  # final responses to wait for
    head: tuple[bool, ...] = ()  # per final response: answers a HEAD
    timeout: float = 4.0
    settle: float = 0.0  # wait before reading what the backends got (asynchronous upstream)
    mask_upstream: tuple[str, ...] = ()  # upstream header values that vary per request


def case(cid: str, *steps: bytes | float, head: bool | tuple[bool, ...] = False, **kw: Any) -> Case:
    flags = head if isinstance(head, tuple) else (head,) * kw.get("expect", 1)
    return Case(cid, steps, head=flags, **kw)


def malformed(cid: str, *steps: bytes | float, **kw: Any) -> Case:
    """A request the proxy must refuse: wait a little to see whether anything went upstream."""
    return case(cid, *steps, settle=0.15, **kw)


LONG_HEADER = "x" * (61 * 1024)

CASES: list[Case] = [
    # -- plain proxying ------------------------------------------------------------------------
    case("basic-get", get("/a/basic?q=1", ("User-Agent", "probe/1.0"), ("Accept", "*/*"))),
    case(
        "basic-header-case-order-dups",
        req(
            target="/a",
            host="Example.TEST",
            headers=[
                ("X-Mixed-Case", "Value"),
                ("x-dup", "1"),
                ("Zz-Last", "z"),
                ("X-Dup", "2"),
                ("x-echo-header", "X-Resp-Mixed=Val"),
                ("x-echo-header", "Server=backend-server"),
                ("x-echo-header", "Date=Mon, 01 Jan 2001 00:00:00 GMT"),
                ("x-echo-header", "x-resp-dup=1"),
                ("x-echo-header", "x-resp-dup=2"),
            ],
        ),
    ),
    case(
        "basic-host-last",
        b"GET /a/hl HTTP/1.1\r\nX-First: 1\r\nUser-Agent: ua\r\nHost: h.test\r\n\r\n",
    ),
    case(
        "basic-post-content-length",
        req("POST", "/a/post", headers=[("Content-Length", "11")], body=b"hello world"),
    ),
    case(
        "basic-post-chunked-trailers",
        req("POST", "/a/chunked", headers=[("Transfer-Encoding", "chunked")])
        + chunked(b"hello", b" world", trailers=b"X-Trailer: t\r\n"),
    ),
    case("basic-post-no-body", req("POST", "/a/empty")),
    case("basic-head", req("HEAD", "/a/head", headers=[("x-echo-body-size", "1000")]), head=True),
    case("basic-upstream-404", get("/a/x", ("x-echo-status", "404"))),
    case("basic-upstream-204", get("/a/x", ("x-echo-status", "204"))),
    case(
        "basic-upstream-chunked-trailers",
        get("/a/x", ("x-echo-chunked", "1"), ("x-echo-trailer", "t=1")),
    ),
    case("basic-upstream-close-delimited", get("/a/x", ("x-echo-behavior", "no-length"))),
    case("basic-upstream-unsolicited-100", get("/a/x", ("x-echo-behavior", "100-continue"))),
    case("basic-upstream-connection-close", get("/a/x", ("x-echo-close", "1"))),
    case("basic-pipelined-two", get("/a/1") + get("/b/2"), expect=2),
    case(
        "basic-pipelined-404-then-proxied",
        get("/nothing")
        + req("POST", "/a/p", headers=[("Content-Length", "3")], body=b"abc")
        + get("/b/3"),
        expect=3,
    ),
    case("basic-connection-close", get("/a/x", ("Connection", "close"))),
    case(
        "basic-hop-by-hop-request-headers",
        get(
            "/a/hop",
            ("Connection", "x-foo, Keep-Alive"),
            ("Keep-Alive", "timeout=5"),
            ("x-foo", "bar"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ),
    ),
    case(
        "basic-hop-by-hop-response-headers",
        get(
            "/a/hop",
            ("x-echo-header", "Keep-Alive=timeout=5"),
            ("x-echo-header", "Proxy-Connection=keep-alive"),
            ("x-echo-header", "x-envoy-upstream-service-time=999"),
        ),
    ),
    case(
        "basic-client-forwarding-headers",
        get(
            "/a/fwd",
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "not-a-uuid"),
            ("X-Envoy-Internal", "true"),
            ("X-Envoy-Expected-Rq-Timeout-Ms", "5"),
            ("X-Envoy-Foo", "kept"),
        ),
    ),
    case("basic-absolute-form", req(target="http://example.test/a/abs?x=1", host="other.test")),
    case(
        "basic-two-host-headers",
        req(target="/vhost", host="example.com", headers=[("Host", "foo.bar")]),
    ),
    case(
        "basic-expect-100-continue",
        req("POST", "/a/expect", headers=[("Content-Length", "4"), ("Expect", "100-continue")]),
        0.2,
        b"body",
    ),
    case("basic-large-response", get("/a/large", ("x-echo-body-size", "100000"))),
    case(
        "basic-head-upstream-chunked",
        req("HEAD", "/a/head", headers=[("x-echo-chunked", "1")]),
        head=True,
    ),
    case(
        "basic-upstream-connection-named-header",
        get(
            "/a/x",
            ("x-echo-header", "Connection=x-hop"),
            ("x-echo-header", "x-hop=1"),
            ("x-echo-header", "Upgrade=foo"),
            ("x-echo-header", "x-envoy-other=kept"),
        ),
    ),
    case("basic-te-gzip-removed", get("/a/te", ("TE", "gzip"), ("Connection", "TE"))),
    case(
        "basic-h2c-upgrade-ignored",
        get(
            "/a/h2c",
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ),
    ),
    case(
        "basic-header-value-whitespace",
        b"GET /a/ws HTTP/1.1\r\nHost: example.test\r\nx-pad:  \t padded \t \r\nx-empty:\r\nx_under: 1\r\nx-obs-text: caf\xe9\r\n\r\n",
    ),
    # Bare LF after header lines; after the request line it is a documented difference
    # (docs/compatibility.md: llhttp rejects it).
    case("basic-bare-lf", b"GET /a/lf HTTP/1.1\r\nHost: example.test\nx-a: 1\n\n"),
    case("basic-leading-crlf", b"\r\n\r\nGET /a/crlf HTTP/1.1\r\nHost: example.test\r\n\r\n"),
    case("basic-options-star", b"OPTIONS * HTTP/1.1\r\nHost: example.test\r\n\r\n"),
    malformed(
        "malformed-connect-without-route",
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    ),
    malformed(
        "malformed-websocket-not-configured",
        get(
            "/a/ws",
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ),
    ),
    # -- path matching -------------------------------------------------------------------------
    case("path-exact", get("/exact")),
    case("path-exact-ignores-query", get("/exact?x=1")),
    case("path-exact-trailing-slash-no-route", get("/exact/")),
    case("path-case-insensitive", get("/case/INSENSITIVE")),
    case("prefix-case-insensitive", get("/CI/Mixed/Path")),
    case("prefix-case-sensitive-no-route", get("/A/upper")),
    case("safe-regex-match", get("/re/123?q=1")),
    case("safe-regex-no-match", get("/re/12a")),
    case("path-separated-prefix-exact", get("/psp")),
    case("path-separated-prefix-child", get("/psp/child")),
    case("path-separated-prefix-query", get("/psp?x=1")),
    case("path-separated-prefix-not-segment", get("/pspx")),
    case("path-not-normalised", get("/a/../a/./x//y%2Fz")),
    # -- header matchers ----------------------------------------------------------------------
    case("hm-exact-match", get("/hm/exact", ("x-m", "Yes"))),
    case("hm-exact-wrong-case", get("/hm/exact", ("x-m", "yes"))),
    case("hm-legacy-exact-match", get("/hm/legacy", ("x-m", "v1"))),
    case("hm-prefix", get("/hm/prefix", ("x-m", "prefixed"))),
    case("hm-suffix", get("/hm/suffix", ("x-m", "a-suffix"))),
    case("hm-contains", get("/hm/contains", ("x-m", "amidb"))),
    case("hm-contains-no", get("/hm/contains", ("x-m", "nothing"))),
    case("hm-ignore-case", get("/hm/ignore-case", ("x-m", "mixed"))),
    case("hm-regex", get("/hm/regex", ("x-m", "v42"))),
    case("hm-regex-no", get("/hm/regex", ("x-m", "v42x"))),
    case("hm-present", get("/hm/present", ("x-m", ""))),
    case("hm-present-missing", get("/hm/present")),
    case("hm-absent", get("/hm/absent")),
    case("hm-absent-but-present", get("/hm/absent", ("x-m", "1"))),
    case("hm-range-in", get("/hm/range", ("x-m", "15"))),
    case("hm-range-end-excluded", get("/hm/range", ("x-m", "20"))),
    case("hm-range-not-a-number", get("/hm/range", ("x-m", "abc"))),
    case("hm-invert-other-value", get("/hm/invert", ("x-m", "good"))),
    case("hm-invert-same-value", get("/hm/invert", ("x-m", "bad"))),
    case("hm-invert-missing", get("/hm/invert")),
    case("hm-missing-as-empty", get("/hm/missing-empty")),
    case("hm-and-both", get("/hm/and", ("x-a", "1"), ("x-b", "z"))),
    case("hm-and-one", get("/hm/and", ("x-a", "1"))),
    case("hm-multiple-values-joined", get("/hm/exact", ("x-m", "Yes"), ("x-m", "Yes"))),
    case("hm-method-post", req("POST", "/hm/method", headers=[("Content-Length", "0")])),
    case("hm-method-get", get("/hm/method")),
    # -- query parameter matchers -------------------------------------------------------------
    case("qp-string", get("/qp/string?debug=1")),
    case("qp-string-other-value", get("/qp/string?debug=2")),
    case("qp-string-name-case", get("/qp/string?Debug=1")),
    case("qp-ignore-case", get("/qp/ignore-case?x=1&lang=en-US")),
    case("qp-present-no-value", get("/qp/present?flag")),
    case("qp-present-empty", get("/qp/present?a=1&flag=")),
    case("qp-present-missing", get("/qp/present?flagx=1")),
    # -- runtime fraction ----------------------------------------------------------------------
    case("runtime-fraction-0", get("/rf/zero")),
    case("runtime-fraction-100", get("/rf/all")),
    # -- cluster specifiers ------------------------------------------------------------------
    case("weighted-header-picks-a", get("/wc/x", ("x-wc-value", "29"), ("x-wc-drop", "1"))),
    case("weighted-header-picks-b", get("/wc/x", ("x-wc-value", "30"), ("x-wc-drop", "1"))),
    case("weighted-header-modulo", get("/wc/x", ("x-wc-value", "110"))),
    case("cluster-header-b", get("/ch", ("x-cluster", "B"))),
    case("cluster-header-unknown", get("/ch", ("x-cluster", "nope"))),
    case("cluster-header-absent", get("/ch")),
    case("cluster-header-no-endpoints", get("/ch", ("x-cluster", "empty"))),
    # -- rewrites -------------------------------------------------------------------------------
    case("prefix-rewrite", get("/pr/x/y?q=1")),
    case("prefix-rewrite-whole-prefix", get("/pr/")),
    case("prefix-rewrite-strip", get("/strip/foo?q")),
    case("regex-rewrite-groups", get("/rr/one/two?k=v")),
    case("regex-rewrite-no-match", get("/rr/only-one")),
    case("regex-rewrite-all-occurrences", get("/rr-all/foo/boo?o=o")),
    case("host-rewrite-literal", get("/hr/x", host="orig.example:1234")),
    case("auto-host-rewrite-strict-dns", get("/auto-dns/x", host="orig.example")),
    case("auto-host-rewrite-static", get("/auto-static/x", host="orig.example")),
    # -- timeouts and retries ---------------------------------------------------------------
    case("route-timeout-504", get("/to/slow", ("x-echo-delay-ms", "1000"))),
    case("route-timeout-fast", get("/to/fast")),
    case("route-timeout-disabled", get("/to-none")),
    case(
        "retry-5xx-then-503",
        get("/retry", ("x-echo-status", "503")),
        mask_upstream=("x-envoy-expected-rq-timeout-ms",),
    ),
    case(
        "retry-reset-exhausted",
        get("/retry", ("x-echo-behavior", "reset")),
        mask_upstream=("x-envoy-expected-rq-timeout-ms",),
    ),
    # -- direct responses -----------------------------------------------------------------------
    case("direct-200", get("/direct")),
    case("direct-query", get("/direct?x=1")),
    case("direct-503-empty", get("/direct-empty")),
    case("direct-404-body", get("/direct-404")),
    case("direct-head", req("HEAD", "/direct"), head=True),
    case("direct-connection-close", get("/direct", ("Connection", "close"))),
    # -- redirects ------------------------------------------------------------------------------
    case("redirect-https", get("/redir/https?a=1", host="redirect.test")),
    case("redirect-https-port-8080", get("/redir/https", host="redirect.test:8080")),
    case("redirect-https-port-80", get("/redir/https", host="redirect.test:80")),
    case("redirect-path-keeps-query", get("/redir/path?keep=1")),
    case("redirect-host-308", get("/redir/host?x", host="old.test:99")),
    case("redirect-strip-query", get("/redir/strip?gone=1")),
    case("redirect-prefix-rewrite", get("/redir/prefix/rest?q=1")),
    case("redirect-scheme-port", get("/redir/port", host="redirect.test:8080")),
    case("redirect-regex-302", get("/redir/regex/abc")),
    case("redirect-303", get("/redir/303")),
    case("redirect-307", get("/redir/307")),
    case("redirect-head", req("HEAD", "/redir/https"), head=True),
    # -- virtual host selection (GET /vhost) ------------------------------------------------
    case("vhost-exact", get("/vhost", host="example.com")),
    case("vhost-exact-case-insensitive", get("/vhost", host="EXAMPLE.Com")),
    case("vhost-exact-port-not-stripped", get("/vhost", host="example.com:80")),
    case("vhost-domain-with-port", get("/vhost", host="example.net:8080")),
    case("vhost-domain-with-port-without", get("/vhost", host="example.net")),
    case("vhost-suffix-wildcard", get("/vhost", host="a.example.org")),
    case("vhost-suffix-wildcard-labels", get("/vhost", host="b.a.example.org")),
    case("vhost-suffix-longest-wins", get("/vhost", host="x.api.example.org")),
    case("vhost-suffix-needs-prefix", get("/vhost", host="example.org")),
    case("vhost-prefix-wildcard", get("/vhost", host="foo.bar")),
    case("vhost-suffix-beats-prefix", get("/vhost", host="foo.example.org")),
    case("vhost-trailing-dot", get("/vhost", host="example.com.")),
    case("vhost-star", get("/vhost", host="unknown.test")),
    # -- header mutations (listener "hdrs") ------------------------------------------------------
    case(
        "hdrs-client-sends-targets",
        get(
            "/hdrs",
            ("x-append", "client"),
            ("x-add-if-absent", "client"),
            ("x-overwrite", "client"),
            ("x-overwrite-if-exists", "client"),
            ("x-default-action", "client"),
            ("x-level-req", "client"),
            ("x-level-req-append", "client"),
            ("x-remove-rc", "gone"),
            ("x-remove-vh", "gone"),
            ("x-remove-route", "gone"),
            ("x-source", "copied"),
            ("x-echo-header", "x-resp-append=upstream"),
            ("x-echo-header", "x-resp-add-if-absent=upstream"),
            ("x-echo-header", "x-resp-overwrite=upstream"),
            ("x-echo-header", "x-resp-overwrite-if-exists=upstream"),
            ("x-echo-header", "x-level-resp=upstream"),
            ("x-echo-header", "x-level-resp-append=upstream"),
            ("x-echo-header", "x-remove-resp-rc=gone"),
            ("x-echo-header", "x-remove-resp-vh=gone"),
            ("x-echo-header", "x-remove-resp-route=gone"),
        ),
        listener="hdrs",
    ),
    case("hdrs-nothing-to-replace", get("/hdrs"), listener="hdrs"),
    case(
        "hdrs-weighted-cluster-level",
        get(
            "/wc-hdrs",
            ("x-wc-absent", "client"),
            ("x-wc-if-exists", "client"),
            ("x-wc-remove", "gone"),
            ("x-level-req", "client"),
            ("x-echo-header", "x-wc-resp-remove=gone"),
            ("x-echo-header", "x-level-resp=upstream"),
        ),
        listener="hdrs",
    ),
    case("hdrs-direct-response", get("/direct"), listener="hdrs"),
    case("hdrs-connect-failure", get("/connect-fail"), listener="hdrs"),
    case("hdrs-redirect", get("/redirect?q=1"), listener="hdrs"),
    case("hdrs-no-route", get("/nothing"), listener="hdrs"),
    # -- errors -------------------------------------------------------------------------------
    case("error-no-route", get("/nothing")),
    case("error-no-route-head", req("HEAD", "/nothing"), head=True),
    case(
        "error-no-route-post-body",
        req("POST", "/nothing", headers=[("Content-Length", "5")], body=b"hello"),
    ),
    case("error-no-healthy-upstream", get("/no-endpoints")),
    case("error-connect-failure", get("/connect-fail")),
    case("error-connect-failure-head", req("HEAD", "/connect-fail"), head=True),
    case("error-upstream-reset", get("/a/x", ("x-echo-behavior", "reset"))),
    case("error-upstream-close", get("/a/x", ("x-echo-behavior", "close"))),
    case("error-upstream-garbage", get("/a/x", ("x-echo-behavior", "garbage"))),
    case("error-upstream-partial-body", get("/a/x", ("x-echo-behavior", "partial"))),
    # -- malformed requests ------------------------------------------------------------------
    malformed("malformed-request-line", b"GARBAGE\r\n\r\n"),
    malformed("malformed-http10-not-accepted", req(target="/a", version="HTTP/1.0")),
    malformed("malformed-http12", req(target="/a", version="HTTP/1.2")),
    malformed("malformed-lowercase-method", req("get", "/a")),
    malformed("malformed-space-in-header-name", get("/a", ("Bad Header", "x"))),
    malformed("malformed-space-before-colon", b"GET /a HTTP/1.1\r\nHost: h\r\nX-Foo : bar\r\n\r\n"),
    malformed("malformed-nul-in-header-value", get("/a", ("x-bad", "a\x00b"))),
    malformed("malformed-missing-host", get("/a", host=None)),
    malformed("malformed-fragment", get("/a#frag")),
    malformed("malformed-target-without-slash", get("a/x")),
    malformed(
        "malformed-bad-chunk-size",
        req("POST", "/a/x", headers=[("Transfer-Encoding", "chunked")])
        + b"zz\r\nhello\r\n0\r\n\r\n",
    ),
    # -- request smuggling -------------------------------------------------------------------
    malformed(
        "smuggling-cl-and-te",
        req("POST", "/a/s", headers=[("Content-Length", "4"), ("Transfer-Encoding", "chunked")])
        + b"0\r\n\r\n"
        + get("/b/smuggled"),
    ),
    malformed(
        "smuggling-two-content-lengths",
        req("POST", "/a/s", headers=[("Content-Length", "3"), ("Content-Length", "30")]) + b"abc",
    ),
    malformed(
        "smuggling-content-length-list",
        req("POST", "/a/s", headers=[("Content-Length", "3, 3")]) + b"abc",
    ),
    malformed(
        "smuggling-content-length-plus",
        req("POST", "/a/s", headers=[("Content-Length", "+3")]) + b"abc",
    ),
    malformed(
        "smuggling-te-gzip-chunked",
        req("POST", "/a/s", headers=[("Transfer-Encoding", "gzip, chunked")]) + chunked(b"abc"),
    ),
    malformed(
        "smuggling-te-chunked-then-identity",
        req(
            "POST",
            "/a/s",
            headers=[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")],
        )
        + chunked(b"abc"),
    ),
    malformed(
        "smuggling-te-uppercase-chunked",
        req("POST", "/a/s", headers=[("Transfer-Encoding", "CHUNKED")]) + chunked(b"abc"),
    ),
    malformed(
        "smuggling-chunk-size-overflow",
        req("POST", "/a/s", headers=[("Transfer-Encoding", "chunked")])
        + b"ffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    ),
    malformed(
        "smuggling-te-identity",
        req("POST", "/a/s", headers=[("Transfer-Encoding", "identity"), ("Content-Length", "3")])
        + b"abc",
    ),
    malformed(
        "smuggling-te-space-before-colon",
        b"POST /a/s HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
    ),
    # -- limits -------------------------------------------------------------------------------
    malformed("oversized-header-61k", get("/a", ("x-big", LONG_HEADER))),
    malformed("too-many-headers-101", get("/a", *[(f"x-h{i}", "v") for i in range(100)])),
    case("long-url-8k", get("/a/" + "u" * 8192)),
]


# --- observing one proxy -------------------------------------------------------------------


@dataclass
class Observation:
    exchange: Exchange
    upstream: list[tuple[str, ReceivedRequest]] = field(default_factory=list)
    log: str = ""  # what the proxy logged meanwhile


def _esc(text: str) -> str:
    """Printable rendering of a header value (control and non-ASCII bytes escaped)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{o:02x}")
    return "".join(out)


def _render_body(body: bytes) -> list[str]:
    echo = echo_json(body)
    if echo is not None:
        shown = {k: v for k, v in echo.items() if k not in ("connection_id", "headers")}
        return [f"  body: echo JSON {json.dumps(shown)} (headers: see upstream)"]
    if len(body) > 400:
        distinct = sorted(set(body))
        if len(distinct) == 1:
            return [f"  body: {len(body)} x {bytes(distinct)!r}"]
        return [f"  body: {len(body)} bytes, starting {body[:120]!r}"]
    return [f"  body: {body!r}"]


def _render_response(i: int, resp: RawResponse) -> list[str]:
    echo_body = resp.body if echo_json(resp.body) is not None else None
    lines = [f"response {i}: {_esc(resp.status_line) if resp.version else '<not HTTP>'}"]
    if not resp.version:
        return [*lines, f"  bytes: {resp.raw[:300]!r}"]
    lines += [
        f"  {_esc(k)}: {_esc(mask_response_header(k, v, echo_body))}" for k, v in resp.headers
    ]
    lines.append(f"  framing: {resp.framing}{'' if resp.complete else ' (INCOMPLETE)'}")
    if not resp.informational:
        lines += _render_body(resp.body)
    lines += [f"  trailer {_esc(k)}: {_esc(v)}" for k, v in resp.trailers]
    return lines


def render(obs: Observation, c: Case) -> list[str]:
    """A normalised, line-oriented transcript of what happened: what gets diffed."""
    ex = obs.exchange
    lines: list[str] = []
    for i, resp in enumerate(ex.responses, 1):
        lines += _render_response(i, resp)
    if not ex.responses:
        lines.append("no response")
    if ex.timed_out:
        lines.append(f"(fewer than {c.expect} complete responses within {c.timeout}s)")
    for backend, rq in obs.upstream:
        lines.append(f"upstream {backend}: {_esc(rq.method)} {_esc(rq.target)} {rq.version}")
        lines += [
            f"  {_esc(k)}: {_esc(mask_request_header(k, v, c.mask_upstream))}"
            for k, v in rq.headers
        ]
        lines.append(f"  body: {rq.body!r}")
        lines += [f"  trailer {_esc(k)}: {_esc(v)}" for k, v in rq.trailers]
    if not obs.upstream:
        lines.append("upstream: nothing received")
    if ex.closed:
        lines.append("connection: closed by the proxy")
    elif ex.probe_response is not None:
        probe = ex.probe_response
        lines.append(f"connection: kept open (next request answered {probe.status} {probe.body!r})")
    else:
        lines.append("connection: kept open (next request not answered)")
    return lines


def _log_size(proxy: ProxyProcess) -> int:
    try:
        return proxy.log_path.stat().st_size
    except OSError:
        return 0


def _log_since(proxy: ProxyProcess, offset: int) -> str:
    try:
        with proxy.log_path.open("rb") as f:
            f.seek(offset)
            return f.read(20000).decode("utf-8", "replace")
    except OSError:
        return ""


def observe(
    proxy: ProxyProcess,
    c: Case,
    backends: dict[str, EchoBackend],
    backend_lock: threading.Lock | None = None,
) -> Observation:
    """Run one case on ``proxy``. With ``backend_lock``, the backends are only used (cleared,
    sent to, read) while it is held; it is released as soon as the responses are in, so that
    several cases may wait for their connection to close at the same time."""
    held = False
    obs = Observation(Exchange([], b"", False))

    def capture() -> None:
        nonlocal held
        if c.settle:
            time.sleep(c.settle)  # anything sent upstream asynchronously arrives
        obs.upstream = [(name, rq) for name, b in backends.items() for rq in list(b.requests)]
        obs.log = _log_since(proxy, log_offset)
        if held and backend_lock is not None:
            backend_lock.release()
            held = False

    if backend_lock is not None:
        backend_lock.acquire()
        held = True
    try:
        for b in backends.values():
            b.clear()
        log_offset = _log_size(proxy)
        obs.exchange = http_exchange(
            proxy.port(c.listener),
            list(c.steps),
            expect=c.expect,
            head=c.head,
            timeout=c.timeout,
            close_wait=CLOSE_WAIT,
            probe=PROBE,
            on_responses=capture,
        )
    finally:
        if held and backend_lock is not None:
            backend_lock.release()
    return obs


def observe_all(
    proxy: ProxyProcess, cases: list[Case], backends: dict[str, EchoBackend]
) -> dict[str, Observation]:
    """Every case on ``proxy``, their close-waits overlapping (Envoy closes 1 s after some
    local replies); the backends see one case at a time."""
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="diff") as pool:
        futures = {c.id: pool.submit(observe, proxy, c, backends, lock) for c in cases}
        return {cid: f.result() for cid, f in futures.items()}


def sections(lines: list[str]) -> dict[str, list[str]]:
    """Group transcript lines by their top-level heading (for the summary of a failure)."""
    out: dict[str, list[str]] = {}
    key = ""
    for line in lines:
        if not line.startswith(" "):
            key = line.split(":", 1)[0]
        out.setdefault(key, []).append(line)
    return out


def diff_report(
    c: Case, envoy: list[str], pilotfish: list[str], logs: dict[str, str] | None = None
) -> str:
    es, ps = sections(envoy), sections(pilotfish)
    differing = [k for k in dict.fromkeys([*es, *ps]) if es.get(k) != ps.get(k)]
    sent = b"".join(s for s in c.steps if isinstance(s, bytes))
    shown = sent if len(sent) < 600 else sent[:600] + b"..."
    diff = difflib.unified_diff(envoy, pilotfish, "envoy", "pilotfish", lineterm="", n=2)
    report = (
        f"pilotfish differs from Envoy in: {', '.join(differing)}\n"
        f"request on listener {c.listener!r}: {shown!r}\n" + "\n".join(diff)
    )
    for kind, text in (logs or {}).items():
        if text.strip():
            tail = text if len(text) < 3000 else "...\n" + text[-3000:]
            report += f"\n--- {kind} logged during this case:\n{tail.rstrip()}"
    return report


# --- fixtures (``backends`` A, B and C, ``envoy`` and ``pilotfish``: conftest.py) ----------


@pytest.fixture(scope="module")
def differential_bootstrap(backends: dict[str, EchoBackend]) -> dict[str, Any]:
    return build_bootstrap({n: b.port for n, b in backends.items()}, closed_port=free_port())


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["envoy", "pilotfish"])
def test_two_listeners_on_port_zero(
    kind: str, differential_bootstrap: dict[str, Any], tmp_path: Path
) -> None:
    """The bootstrap exactly as built (both listeners on 127.0.0.1:0) starts, and each listener
    gets its own port. (The other tests give each listener a probed free port instead.)"""
    with ProxyProcess(kind, differential_bootstrap, tmp_path, free_ports=False) as proxy:
        ports = proxy.listener_ports()
    assert sorted(ports) == ["hdrs", "main"]
    assert 0 not in ports.values() and ports["hdrs"] != ports["main"], ports


def test_corpus_is_large_and_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]


@pytest.fixture(scope="module")
def envoy_observations(
    request: pytest.FixtureRequest, envoy: ProxyProcess, backends: dict[str, EchoBackend]
) -> dict[str, Observation]:
    """What Envoy does for every selected case, gathered up front (in parallel: most of the
    time is Envoy's delayed close after local replies)."""
    selected: list[Case] = []
    for item in request.session.items:
        if isinstance(item, pytest.Function) and item.module is sys.modules[__name__]:
            param = item.callspec.params.get("c") if hasattr(item, "callspec") else None
            if isinstance(param, Case):
                selected.append(param)
    return observe_all(envoy, selected, backends)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_same_as_envoy(
    c: Case,
    envoy_observations: dict[str, Observation],
    envoy: ProxyProcess,
    pilotfish: ProxyProcess,
    backends: dict[str, EchoBackend],
) -> None:
    from_envoy = envoy_observations.get(c.id) or observe(envoy, c, backends)
    from_pilotfish = observe(pilotfish, c, backends)
    want, got = render(from_envoy, c), render(from_pilotfish, c)
    if want != got:
        logs = {"envoy": from_envoy.log, "pilotfish": from_pilotfish.log}
        pytest.fail(diff_report(c, want, got, logs), pytrace=False)
