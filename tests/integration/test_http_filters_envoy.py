"""Fault injection, CORS and request mirroring: Envoy 1.40 and pilotfish run one bootstrap.

The bootstrap is shaped as istiod shapes it: the HCM has ``envoy.filters.http.fault`` and
``envoy.filters.http.cors`` with empty configs (a second listener has a filter-level fault), and
the routes carry ``typed_per_filter_config`` (``HTTPFault``, ``CorsPolicy``) and
``request_mirror_policies``. Each case sends the same request to both proxies and compares
status, body, the headers that matter and, through a file access log, ``%RESPONSE_FLAGS%``.

    .venv/bin/pytest tests/integration/test_http_filters_envoy.py -q
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import (
    ENVOY_BIN,
    FLUSH_ACCESS_LOGS,
    ROUTER_FILTER,
    ProxyProcess,
    bootstrap,
    http_listener,
    http_request,
    static_cluster,
)

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"


def fault(
    *,
    abort: int | None = None,
    grpc: int | None = None,
    delay_ms: int | None = None,
    pct: int = 100,
    denominator: str = "HUNDRED",
    **extra: Any,
) -> dict[str, Any]:
    f: dict[str, Any] = {"@type": FAULT_TYPE, **extra}
    share = {"numerator": pct, "denominator": denominator}
    if abort is not None:
        f["abort"] = {"http_status": abort, "percentage": share}
    if grpc is not None:
        f["abort"] = {"grpc_status": grpc, "percentage": share}
    if delay_ms is not None:
        f["delay"] = {"fixed_delay": f"{delay_ms / 1000}s", "percentage": share}
    return f


def cors(**fields: Any) -> dict[str, Any]:
    return {"@type": CORS_TYPE, **fields}


def route(name: str, prefix: str, cluster: str = "backend", **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": prefix}, "route": {"cluster": cluster}, **extra}


def pfc(**configs: dict[str, Any]) -> dict[str, Any]:
    return {"typed_per_filter_config": {k.replace("_", "."): v for k, v in configs.items()}}


ISTIO_FILTERS = [
    {"name": FAULT, "typed_config": {"@type": FAULT_TYPE}},
    {
        "name": CORS,
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    },
    ROUTER_FILTER,
]

POLICY = cors(
    allow_origin_string_match=[{"exact": "https://good.test"}, {"prefix": "https://ok."}],
    allow_methods="GET,POST",
    allow_headers="x-a,x-b",
    expose_headers="x-exposed",
    max_age="600",
    allow_credentials=True,
)


def main_route_config() -> dict[str, Any]:
    fault_key = {FAULT: fault(abort=504, headers=[{"name": "x-table", "present_match": True}])}
    return {
        "name": "main",
        "typed_per_filter_config": fault_key,
        "virtual_hosts": [
            {
                "name": "faulty",
                "domains": ["faulty.test"],
                "typed_per_filter_config": {FAULT: fault(abort=503)},
                "routes": [
                    route(
                        "route_level",
                        "/route-level",
                        typed_per_filter_config={FAULT: fault(abort=555)},
                    ),
                    route("vhost_level", "/"),
                ],
            },
            {
                "name": "cors_vhost",
                "domains": ["cors.test"],
                "typed_per_filter_config": {
                    CORS: cors(
                        allow_origin_string_match=[{"exact": "https://vhost.test"}],
                        allow_methods="PUT",
                        max_age="60",
                    )
                },
                "routes": [
                    route(
                        "cors_route_merge",
                        "/merge",
                        typed_per_filter_config={
                            CORS: cors(
                                allow_origin_string_match=[{"exact": "https://route.test"}],
                                allow_headers="x-route",
                            )
                        },
                    ),
                    route("cors_vhost_only", "/"),
                ],
            },
            {
                "name": "all",
                "domains": ["*"],
                "routes": [
                    route("abort", "/abort", typed_per_filter_config={FAULT: fault(abort=555)}),
                    route("delay", "/delay", typed_per_filter_config={FAULT: fault(delay_ms=200)}),
                    route(
                        "delay_abort",
                        "/delay-abort",
                        typed_per_filter_config={FAULT: fault(delay_ms=100, abort=503)},
                    ),
                    route(
                        "half", "/half", typed_per_filter_config={FAULT: fault(abort=503, pct=50)}
                    ),
                    route(
                        "half_tenk",
                        "/tenk",
                        typed_per_filter_config={
                            FAULT: fault(abort=503, pct=5000, denominator="TEN_THOUSAND")
                        },
                    ),
                    route(
                        "matched",
                        "/matched",
                        typed_per_filter_config={
                            FAULT: fault(
                                abort=429, headers=[{"name": "x-fault", "exact_match": "yes"}]
                            )
                        },
                    ),
                    route(
                        "other_cluster",
                        "/other-cluster",
                        typed_per_filter_config={FAULT: fault(abort=503, upstream_cluster="nope")},
                    ),
                    route("cors", "/cors", typed_per_filter_config={CORS: POLICY}),
                    route(
                        "cors_strict",
                        "/strict",
                        typed_per_filter_config={
                            CORS: cors(
                                allow_origin_string_match=[{"exact": "https://good.test"}],
                                forward_not_matching_preflights=False,
                            )
                        },
                    ),
                    {
                        "name": "mirror",
                        "match": {"prefix": "/mirror"},
                        "route": {
                            "cluster": "backend",
                            "request_mirror_policies": [{"cluster": "mirror"}],
                        },
                    },
                    route("plain", "/"),
                ],
            },
        ],
    }


def access_log(path: Path) -> list[dict[str, Any]]:
    fmt = "%REQ(:PATH)% %RESPONSE_CODE% [%RESPONSE_FLAGS%] %RESPONSE_CODE_DETAILS%\n"
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"text_format_source": {"inline_string": fmt}},
            },
        }
    ]


def build(backend: int, mirror: int, log_path: Path) -> dict[str, Any]:
    main = http_listener(
        "main",
        route_config=main_route_config(),
        http_filters=ISTIO_FILTERS,
        hcm={"access_log": access_log(log_path)},
    )
    filter_level = http_listener(
        "filter_level",
        routes=[
            route("fl_default", "/default"),
            route("fl_override", "/override", typed_per_filter_config={FAULT: fault(abort=555)}),
        ],
        http_filters=[
            {"name": FAULT, "typed_config": fault(abort=418)},
            ROUTER_FILTER,
        ],
    )
    return bootstrap(
        [main, filter_level],
        [static_cluster("backend", backend), static_cluster("mirror", mirror)],
    )


class Pair:
    def __init__(self, procs: dict[str, ProxyProcess], logs: dict[str, Path]) -> None:
        self.procs = procs
        self.logs = logs

    def request(
        self, kind: str, path: str, host: str = "x.test", listener: str = "main", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        method = headers.pop("method", "GET")
        extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        raw = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode()
        return http_request(self.procs[kind].port(listener), raw)

    def log_line(self, kind: str, path: str) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.logs[kind].exists():
                for line in self.logs[kind].read_text().splitlines():
                    if line.startswith(path + " "):
                        return line
            time.sleep(0.05)
        raise AssertionError(f"{kind}: no access log line for {path}")


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[EchoBackend, EchoBackend]]:
    backend = EchoBackend("backend").start()
    mirror = EchoBackend("mirror").start()
    try:
        yield backend, mirror
    finally:
        backend.stop()
        mirror.stop()


@pytest.fixture(scope="module")
def pair(
    backends: tuple[EchoBackend, EchoBackend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    backend, mirror = backends
    tmp = tmp_path_factory.mktemp("http_filters")
    procs: dict[str, ProxyProcess] = {}
    logs: dict[str, Path] = {}
    try:
        for kind in ("envoy", "pilotfish"):
            logs[kind] = tmp / f"{kind}-access.log"
            config = build(backend.port, mirror.port, logs[kind])
            procs[kind] = ProxyProcess(kind, config, tmp, args=FLUSH_ACCESS_LOGS).start()
        yield Pair(procs, logs)
    finally:
        for p in procs.values():
            p.stop()


COMPARED = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-credentials",
    "content-type",
    "content-length",
)


def outcome(reply: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, str], bytes]:
    """Status, the compared headers, and the body unless it is the backend's echo."""
    status, headers, body = reply
    kept = {k: v for k, v in headers.items() if k in COMPARED}
    if body.startswith(b'{"backend"'):
        kept.pop("content-length", None)
        body = b"<echo " + json.loads(body)["backend"].encode() + b">"
    return status, kept, body


@pytest.mark.parametrize(
    ("path", "host", "headers"),
    [
        ("/abort", "x.test", {}),
        ("/plain", "x.test", {}),
        ("/plain-table", "x.test", {"x_table": "1"}),
        ("/matched", "x.test", {}),
        ("/matched-yes", "x.test", {"x_fault": "yes"}),
        ("/other-cluster", "x.test", {}),
        ("/route-level", "faulty.test", {}),
        ("/vhost-level", "faulty.test", {}),
    ],
)
def test_abort_and_precedence(pair: Pair, path: str, host: str, headers: dict[str, str]) -> None:
    got = {kind: outcome(pair.request(kind, path, host, **dict(headers))) for kind in pair.procs}
    assert got["pilotfish"] == got["envoy"]


@pytest.mark.parametrize("path", ["/default", "/override"])
def test_filter_level_fault(pair: Pair, path: str) -> None:
    got = {kind: outcome(pair.request(kind, path, listener="filter_level")) for kind in pair.procs}
    assert got["pilotfish"] == got["envoy"]
    assert got["envoy"][0] == (418 if path == "/default" else 555)


def test_abort_flags_in_access_log(pair: Pair) -> None:
    for kind in pair.procs:
        pair.request(kind, "/abort-logged")
    lines = {kind: pair.log_line(kind, "/abort-logged") for kind in pair.procs}
    assert lines["pilotfish"] == lines["envoy"]
    assert "[FI]" in lines["envoy"]


@pytest.mark.parametrize("path", ["/delay", "/delay-abort"])
def test_delay(pair: Pair, path: str) -> None:
    results = {}
    for kind in pair.procs:
        started = time.monotonic()
        reply = pair.request(kind, path)
        elapsed = time.monotonic() - started
        results[kind] = outcome(reply)
        want = 0.2 if path == "/delay" else 0.1
        assert elapsed >= want - 0.005, f"{kind} answered after {elapsed:.3f}s"
        assert elapsed < want + 1.0, f"{kind} answered after {elapsed:.3f}s"
    assert results["pilotfish"] == results["envoy"]
    lines = {kind: pair.log_line(kind, path) for kind in pair.procs}
    assert lines["pilotfish"] == lines["envoy"]
    assert "DI" in lines["envoy"]


@pytest.mark.parametrize("path", ["/half", "/tenk"])
def test_abort_percentage(pair: Pair, path: str) -> None:
    n = 200
    aborted = {}
    for kind in pair.procs:
        aborted[kind] = sum(pair.request(kind, path)[0] == 503 for _ in range(n))
    # Binomial(200, 0.5): mean 100, sd ~7.1; 5 sd either side.
    bound = 5 * math.sqrt(n * 0.25)
    for kind, count in aborted.items():
        assert abs(count - n / 2) < bound, f"{kind}: {count}/{n} aborted"


def test_fault_stats(pair: Pair) -> None:
    names = ("delays_injected", "aborts_injected", "faults_overflow", "active_faults")
    for kind, proc in pair.procs.items():
        stats = proc.stats("http.main.fault.")
        for name in names:
            assert name in stats, f"{kind}: no http.main.fault.{name} in {sorted(stats)}"
        assert stats["aborts_injected"] > 0 and stats["active_faults"] == 0


@pytest.mark.parametrize(
    ("path", "host", "headers"),
    [
        # preflight, allowed origins (exact and prefix)
        (
            "/cors",
            "x.test",
            {
                "method": "OPTIONS",
                "origin": "https://good.test",
                "access_control_request_method": "POST",
            },
        ),
        (
            "/cors",
            "x.test",
            {
                "method": "OPTIONS",
                "origin": "https://ok.example",
                "access_control_request_method": "GET",
            },
        ),
        # preflight, origin not allowed: forwarded
        (
            "/cors",
            "x.test",
            {
                "method": "OPTIONS",
                "origin": "https://evil.test",
                "access_control_request_method": "POST",
            },
        ),
        # OPTIONS without access-control-request-method: not a preflight
        ("/cors", "x.test", {"method": "OPTIONS", "origin": "https://good.test"}),
        # simple requests
        ("/cors", "x.test", {"origin": "https://good.test"}),
        ("/cors", "x.test", {"origin": "https://evil.test"}),
        ("/cors", "x.test", {}),
        # forward_not_matching_preflights: false
        (
            "/strict",
            "x.test",
            {
                "method": "OPTIONS",
                "origin": "https://evil.test",
                "access_control_request_method": "POST",
            },
        ),
        (
            "/strict",
            "x.test",
            {
                "method": "OPTIONS",
                "origin": "https://good.test",
                "access_control_request_method": "POST",
            },
        ),
        # route and virtual host policies merged field by field
        (
            "/merge",
            "cors.test",
            {
                "method": "OPTIONS",
                "origin": "https://vhost.test",
                "access_control_request_method": "PUT",
            },
        ),
        (
            "/merge",
            "cors.test",
            {
                "method": "OPTIONS",
                "origin": "https://route.test",
                "access_control_request_method": "PUT",
            },
        ),
        ("/vhost", "cors.test", {"origin": "https://vhost.test"}),
        ("/vhost", "cors.test", {"origin": "https://route.test"}),
    ],
)
def test_cors(pair: Pair, path: str, host: str, headers: dict[str, str]) -> None:
    got = {kind: outcome(pair.request(kind, path, host, **dict(headers))) for kind in pair.procs}
    assert got["pilotfish"] == got["envoy"]


def test_cors_stats(pair: Pair) -> None:
    for kind, proc in pair.procs.items():
        stats = proc.stats("http.main.cors.")
        assert stats.get("origin_valid", 0) > 0, (kind, stats)
        assert stats.get("origin_invalid", 0) > 0, (kind, stats)


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("body", [b"", b"hello mirror"])
def test_mirror(pair: Pair, backends: tuple[EchoBackend, EchoBackend], body: bytes) -> None:
    _, mirror = backends
    seen: dict[str, Any] = {}
    for kind in pair.procs:
        mirror.clear()
        method = "POST" if body else "GET"
        raw = (
            f"{method} /mirror/{kind} HTTP/1.1\r\nhost: main.test:8080\r\n"
            f"content-length: {len(body)}\r\nx-check: 1\r\n\r\n"
        ).encode() + body
        status, _, rbody = http_request(pair.procs[kind].port("main"), raw)
        assert status == 200 and b'"backend": "backend"' in rbody.replace(b'":"', b'": "')
        assert wait_for(lambda: len(mirror.requests) >= 1), f"{kind}: nothing mirrored"
        req = mirror.requests[0]
        seen[kind] = (req.method, req.target, req.header("host"), req.header("x-check"), req.body)
    assert seen["envoy"][2] == "main-shadow.test:8080" or seen["envoy"][2].endswith("-shadow:8080")
    assert seen["pilotfish"][0] == seen["envoy"][0]
    assert seen["pilotfish"][2:] == seen["envoy"][2:]
    assert seen["pilotfish"][1] == "/mirror/pilotfish"
