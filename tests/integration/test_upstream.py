"""Clusters and upstream behaviour, pilotfish and real Envoy on the same bootstrap.

Every test runs twice, against pilotfish and against Envoy 1.40 (the oracle): a test states what
Envoy does, and a pilotfish parameter that differs is marked ``xfail(strict=True)`` with the
difference as its reason.

One bootstrap serves the whole module (one process of each kind, started on first use): a single
HTTP listener routes ``/<cluster>/...`` to the cluster of that name, and every test owns its
clusters and echo backends, so counts and stats never mix between tests. A file access log keyed
by an ``x-test-id`` request header gives each request's response flags, attempt count and
details.

Upstream failures are made on loopback only: a bound socket that never listens (connection
refused) and a listening socket whose accept queue is full (SYNs are dropped: connect timeout).
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.loopback import Blackhole, RefusedPort
from tests.support.pairs import kinds
from tests.support.proxies import (
    FLUSH_ACCESS_LOGS,
    LOCALHOST,
    Exchange,
    ProxyProcess,
    RawResponse,
    bootstrap,
    http_exchange,
    http_listener,
    lb_endpoint,
    static_cluster,
)
from tests.support.rawconn import RawConn
from tests.support.waiting import wait_for

ACCESS_LOG_FORMAT = (
    "%REQ(X-TEST-ID)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% "
    "%RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"
)
RESET_BODY = b"upstream connect error or disconnect/reset before headers. "
CONNECT_TIMEOUT_S = 0.5
ROUTE_TIMEOUTS = {"rq_timeout": "0.3s", "per_try": "5s"}
# Route hash_policy of the consistent-hash clusters.
HASH_POLICIES: dict[str, list[dict[str, Any]]] = {
    "ring": [{"header": {"header_name": "x-user"}}],
    "maglev": [{"header": {"header_name": "x-user"}}],
    "ring_ip": [{"connection_properties": {"source_ip": True}}],
    "ring_cookie": [{"cookie": {"name": "sess"}}],
    "ring_cookie_ttl": [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}],
    "ring_query": [{"query_parameter": {"name": "user"}}],
}

# --- the bootstrap ---------------------------------------------------------------------------


def _cluster(name: str, lb_endpoints: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    extra.setdefault("connect_timeout", "2s")
    return static_cluster(name, endpoints=lb_endpoints, **extra)


def _thresholds(**limits: int) -> dict[str, Any]:
    return {"thresholds": [limits]}


@dataclass
class Result:
    test_id: str
    exchange: Exchange
    elapsed: float

    @property
    def response(self) -> RawResponse:
        finals = self.exchange.finals
        assert finals, f"no response: {self.exchange}"
        return finals[-1]


@dataclass
class LogEntry:
    code: str
    flags: str
    attempts: str
    details: str
    failure_reason: str


class Stack:
    """Backends, failure makers and one proxy process of ``kind`` serving every cluster."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.backends: dict[str, EchoBackend] = {}
        self.refused = RefusedPort()
        self.blackhole: Blackhole | None = None
        self.access_log = workdir / "access.log"
        self.proxy: ProxyProcess | None = None
        try:
            self.blackhole = Blackhole()
            clusters, retry_policies = self._clusters()
            routes = []
            for c in clusters:
                route: dict[str, Any] = {"cluster": c["name"]}
                if c["name"] in retry_policies:
                    route["retry_policy"] = retry_policies[c["name"]]
                if c["name"] in ROUTE_TIMEOUTS:
                    route["timeout"] = ROUTE_TIMEOUTS[c["name"]]
                if c["name"] in HASH_POLICIES:
                    route["hash_policy"] = HASH_POLICIES[c["name"]]
                routes.append({"match": {"prefix": f"/{c['name']}/"}, "route": route})
            self.proxy = ProxyProcess(
                kind, self._bootstrap(clusters, routes), workdir, args=FLUSH_ACCESS_LOGS
            )
            self.proxy.start()
        except BaseException:
            self.close()
            raise
        self.port = self.proxy.port("main")

    def backend(self, name: str) -> EchoBackend:
        if name not in self.backends:
            self.backends[name] = EchoBackend(name).start()
        return self.backends[name]

    def _ports(self, *names: str) -> list[int]:
        return [self.backend(n).port for n in names]

    def _clusters(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        assert self.blackhole is not None
        ep, cl, p = lb_endpoint, _cluster, self._ports
        refused, blackhole = self.refused.port, self.blackhole.port
        three = ("0", "1", "2")
        clusters = [
            cl("rr", [ep(x) for x in p(*(f"rr{i}" for i in three))]),
            cl("rr_ka", [ep(x) for x in p(*(f"rr_ka{i}" for i in three))]),
            cl("reuse", [ep(x) for x in p("reuse0")]),
            cl(
                "sdns",
                [ep(x, host="localhost") for x in p("sdns0", "sdns1")],
                type="STRICT_DNS",
                dns_lookup_family="V4_ONLY",
            ),
            cl(
                "ldns",
                [ep(x, host="localhost") for x in p("ldns0")],
                type="LOGICAL_DNS",
                dns_lookup_family="V4_ONLY",
            ),
            {
                "name": "odst_hdr",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "2s",
                "original_dst_lb_config": {"use_http_header": True},
            },
            {
                "name": "odst_bad",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "2s",
                "original_dst_lb_config": {"use_http_header": True},
            },
            {
                "name": "odst_port",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "2s",
                "original_dst_lb_config": {"upstream_port_override": p("odst_port0")[0]},
            },
            cl("weighted", [ep(p("weighted0")[0], 1), ep(p("weighted1")[0], 3)]),
            cl("random", [ep(x) for x in p(*(f"random{i}" for i in three))], lb_policy="RANDOM"),
            cl(
                "least",
                [ep(x) for x in p(*(f"least{i}" for i in three))],
                lb_policy="LEAST_REQUEST",
            ),
            cl(
                "least_weighted",
                [ep(p("least_weighted0")[0], 1), ep(p("least_weighted1")[0], 3)],
                lb_policy="LEAST_REQUEST",
            ),
            cl("timeout", [ep(blackhole)], connect_timeout=f"{CONNECT_TIMEOUT_S}s"),
            cl("timeout_body", [ep(blackhole)], connect_timeout=f"{CONNECT_TIMEOUT_S}s"),
            cl("refused", [ep(refused)]),
            cl("refused_reason", [ep(refused)]),
            cl("refused_stats", [ep(refused)]),
            cl("empty", []),
            cl("empty_open", []),
            cl("empty_stats", []),
            cl(
                "cb_cx",
                [ep(x) for x in p("cb_cx0")],
                circuit_breakers=_thresholds(max_connections=1),
            ),
            cl(
                "cb_pending",
                [ep(x) for x in p("cb_pending0")],
                circuit_breakers=_thresholds(max_connections=1, max_pending_requests=1),
            ),
            cl(
                "cb_pending_hdr",
                [ep(x) for x in p("cb_pending_hdr0")],
                circuit_breakers=_thresholds(max_connections=1, max_pending_requests=1),
            ),
            cl("cb_rq", [ep(x) for x in p("cb_rq0")], circuit_breakers=_thresholds(max_requests=1)),
            cl(
                "cb_rq_stats",
                [ep(x) for x in p("cb_rq_stats0")],
                circuit_breakers=_thresholds(max_requests=1),
            ),
            cl("retry_5xx", [ep(x) for x in p("retry_5xx0")]),
            cl("retry_5xx_stats", [ep(x) for x in p("retry_5xx_stats0")]),
            cl("retry_reset", [ep(x) for x in p("retry_reset0")]),
            cl("retry_cf", [ep(refused), ep(p("retry_cf0")[0])]),
            cl("retry_dead", [ep(refused)]),
            cl("stats", [ep(x) for x in p("stats0")]),
            cl("log_timeout", [ep(blackhole)], connect_timeout=f"{CONNECT_TIMEOUT_S}s"),
            cl("log_refused", [ep(refused)]),
            cl("log_empty", []),
            cl("log_reset", [ep(x) for x in p("log_reset0")]),
            cl("log_dead", [ep(refused)]),
            cl("rq_timeout", [ep(x) for x in p("rq_timeout0")]),
            cl("per_try", [ep(x) for x in p("per_try0")]),
            cl("names", [ep(x) for x in p("names0")]),
        ]
        for name in HASH_POLICIES:
            policy = "MAGLEV" if name == "maglev" else "RING_HASH"
            endpoints = [ep(x) for x in p(*(f"{name}{i}" for i in three))]
            clusters.append(cl(name, endpoints, lb_policy=policy))
        for name, weighted in (("locality", True), ("locality_off", False)):
            # Zone a (weight 1) has one host, zone b (weight 3) two.
            hosts = p(f"{name}0", f"{name}1", f"{name}2")
            cluster = cl(name, [], lb_policy="ROUND_ROBIN")
            cluster["load_assignment"]["endpoints"] = [
                {
                    "locality": {"zone": "a"},
                    "load_balancing_weight": 1,
                    "lb_endpoints": [ep(hosts[0])],
                },
                {
                    "locality": {"zone": "b"},
                    "load_balancing_weight": 3,
                    "lb_endpoints": [ep(hosts[1]), ep(hosts[2])],
                },
            ]
            if weighted:
                cluster["common_lb_config"] = {"locality_weighted_lb_config": {}}
            clusters.append(cluster)
        retry_policies = {
            "retry_5xx": {"retry_on": "5xx", "num_retries": 2},
            "retry_5xx_stats": {"retry_on": "5xx", "num_retries": 2},
            "retry_reset": {"retry_on": "reset", "num_retries": 1},
            "retry_cf": {"retry_on": "connect-failure", "num_retries": 3},
            "retry_dead": {"retry_on": "connect-failure", "num_retries": 2},
            "log_reset": {"retry_on": "reset", "num_retries": 1},
            "log_dead": {"retry_on": "connect-failure", "num_retries": 2},
            "per_try": {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s"},
        }
        return clusters, retry_policies

    def _bootstrap(
        self, clusters: list[dict[str, Any]], routes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        access_log = {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                "FileAccessLog",
                "path": str(self.access_log),
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            },
        }
        route_config = {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        }
        hcm = {"access_log": [access_log]}
        return bootstrap([http_listener("main", route_config=route_config, hcm=hcm)], clusters)

    # -- requests --------------------------------------------------------------------------------

    @staticmethod
    def request_bytes(path: str, test_id: str, headers: dict[str, str] | None = None) -> bytes:
        lines = [f"GET {path} HTTP/1.1", "host: upstream.test", f"x-test-id: {test_id}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def get(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        probe: bool = False,
        timeout: float = 10.0,
    ) -> Result:
        """One request on a new connection; with ``probe``, a second request then tells
        whether the connection stayed open."""
        test_id = uuid.uuid4().hex
        data = self.request_bytes(path, test_id, headers)
        started = time.monotonic()
        exchange = http_exchange(
            self.port,
            data,
            timeout=timeout,
            probe=self.request_bytes(path, test_id + "-probe", headers) if probe else None,
        )
        return Result(test_id, exchange, time.monotonic() - started)

    def pipelined(self, path: str, count: int) -> list[RawResponse]:
        """``count`` requests written at once on one connection."""
        data = b"".join(self.request_bytes(path, f"p{i}") for i in range(count))
        exchange = http_exchange(self.port, data, expect=count, timeout=20.0)
        finals = exchange.finals
        assert len(finals) == count, f"{len(finals)} of {count} responses: {exchange.raw[-300:]!r}"
        return finals

    def in_flight(self, path: str, headers: dict[str, str] | None = None) -> RawConn:
        """A request written on its own connection, its response read later."""
        conn = RawConn((LOCALHOST, self.port))
        conn.send(self.request_bytes(path, uuid.uuid4().hex, headers))
        return conn

    # -- observations ------------------------------------------------------------------------------

    def log_entry(self, test_id: str, timeout: float = 10.0) -> LogEntry:
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log.read_text() if self.access_log.exists() else ""
            for line in text.splitlines():
                fields = line.split(" ")
                if fields[0] == test_id and len(fields) == 6:
                    return LogEntry(*fields[1:])
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log line for {test_id}: {text[-1000:]}")
            time.sleep(0.05)

    def stats(self, cluster: str) -> dict[str, int]:
        """Counters and gauges ``cluster.<cluster>.*``, without the prefix."""
        assert self.proxy is not None
        return self.proxy.stats(f"cluster.{cluster}.")

    def wait_stat(self, cluster: str, name: str, value: int, timeout: float = 10.0) -> None:
        wait_for(
            lambda: self.stats(cluster).get(name) == value, f"{cluster}.{name} == {value}", timeout
        )

    def clusters_text(self) -> list[str]:
        assert self.proxy is not None
        reply = self.proxy.call("/clusters")
        assert reply.status == 200
        return reply.text.splitlines()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for backend in self.backends.values():
            backend.stop()
        self.refused.close()
        if self.blackhole is not None:
            self.blackhole.close()


class Stacks:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: dict[str, Stack] = {}

    def get(self, kind: str) -> Stack:
        if kind not in self.started:
            self.started[kind] = Stack(kind, self.tmp / kind)
        return self.started[kind]

    def close(self) -> None:
        for stack in self.started.values():
            stack.close()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    pool = Stacks(tmp_path_factory.mktemp("upstream"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def stack(stacks: Stacks, kind: str) -> Stack:
    return stacks.get(kind)


def backends_of(responses: Sequence[RawResponse]) -> dict[str, int]:
    return dict(collections.Counter(r.header("x-backend") or "-" for r in responses))


# --- cluster types -----------------------------------------------------------------------------


@kinds()
def test_static_round_robin_splits_fresh_connections_exactly(stack: Stack) -> None:
    responses = [stack.get("/rr/x").response for _ in range(30)]
    assert all(r.status == 200 for r in responses)
    assert backends_of(responses) == {"rr0": 10, "rr1": 10, "rr2": 10}


@kinds()
def test_round_robin_on_one_downstream_connection_keeps_one_upstream_connection_per_host(
    stack: Stack,
) -> None:
    responses = stack.pipelined("/rr_ka/x", 30)
    assert all(r.status == 200 for r in responses)
    assert backends_of(responses) == {"rr_ka0": 10, "rr_ka1": 10, "rr_ka2": 10}
    assert [stack.backends[f"rr_ka{i}"].connections_accepted for i in range(3)] == [1, 1, 1]
    assert stack.stats("rr_ka")["upstream_cx_total"] == 3


@kinds()
def test_sequential_requests_reuse_one_keepalive_upstream_connection(stack: Stack) -> None:
    bodies = []
    for _ in range(10):
        response = stack.get("/reuse/x").response  # a new downstream connection each time
        assert response.status == 200
        bodies.append(json.loads(response.body))
    assert stack.backends["reuse0"].connections_accepted == 1
    assert {b["connection_id"] for b in bodies} == {1}
    stats = stack.stats("reuse")
    assert (stats["upstream_cx_total"], stats["upstream_rq_total"]) == (1, 10)


@kinds()
def test_strict_dns_resolves_every_endpoint_of_localhost(stack: Stack) -> None:
    responses = [stack.get("/sdns/x").response for _ in range(4)]
    assert all(r.status == 200 for r in responses)
    assert backends_of(responses) == {"sdns0": 2, "sdns1": 2}
    lines = stack.clusters_text()
    for name in ("sdns0", "sdns1"):
        port = stack.backends[name].port
        assert f"sdns::127.0.0.1:{port}::hostname::localhost" in lines


@kinds()
def test_logical_dns_resolves_localhost_to_one_logical_host(stack: Stack) -> None:
    responses = [stack.get("/ldns/x").response for _ in range(3)]
    assert all(r.status == 200 for r in responses)
    assert backends_of(responses) == {"ldns0": 3}
    assert stack.backends["ldns0"].connections_accepted == 1
    port = stack.backends["ldns0"].port
    hosts = {line.split("::")[1] for line in stack.clusters_text() if line.startswith("ldns::")}
    assert f"127.0.0.1:{port}" in hosts
    assert f"ldns::127.0.0.1:{port}::hostname::localhost" in stack.clusters_text()


@kinds()
def test_original_dst_takes_the_host_from_the_http_header(stack: Stack) -> None:
    for name in ("odst0", "odst1", "odst0"):
        port = stack.backend(name).port  # started now: not in the bootstrap
        response = stack.get(
            "/odst_hdr/x", {"x-envoy-original-dst-host": f"127.0.0.1:{port}"}
        ).response
        assert (response.status, response.header("x-backend")) == (200, name)
    # The header is passed on to the upstream, and each destination became a host.
    echoed = json.loads(response.body)["headers"]
    assert ["x-envoy-original-dst-host", f"127.0.0.1:{stack.backends['odst0'].port}"] in echoed
    hosts = {line.split("::")[1] for line in stack.clusters_text() if line.startswith("odst_hdr::")}
    assert {f"127.0.0.1:{stack.backends[n].port}" for n in ("odst0", "odst1")} <= hosts


@kinds()
def test_original_dst_without_or_with_a_bad_header_has_no_host(stack: Stack) -> None:
    for headers in ({}, {"x-envoy-original-dst-host": "not-an-address"}):
        result = stack.get("/odst_hdr/missing", headers)
        response = result.response
        assert (response.status, response.body) == (503, b"no healthy upstream")
        assert stack.log_entry(result.test_id).flags == "UH"


@kinds()
def test_original_dst_bad_header_counts_original_dst_host_invalid(stack: Stack) -> None:
    for value in ("not-an-address", "127.0.0.1", "127.0.0.1:x"):
        response = stack.get("/odst_bad/x", {"x-envoy-original-dst-host": value}).response
        assert response.status == 503
    assert stack.stats("odst_bad")["original_dst_host_invalid"] == 3


@kinds()
def test_original_dst_needs_a_restored_destination_address(stack: Stack) -> None:
    result = stack.get("/odst_port/x")
    assert (result.response.status, result.response.body) == (503, b"no healthy upstream")
    assert stack.log_entry(result.test_id).flags == "UH"
    assert stack.backends["odst_port0"].connections_accepted == 0


# --- load balancing ----------------------------------------------------------------------------


@kinds()
def test_round_robin_honours_endpoint_weights(stack: Stack) -> None:
    counts = backends_of(stack.pipelined("/weighted/x", 40))
    assert set(counts) == {"weighted0", "weighted1"}
    assert abs(counts["weighted0"] - 10) <= 1, counts  # weights 1:3


@kinds()
def test_locality_weighted_lb_config_splits_by_locality_weight(stack: Stack) -> None:
    # Locality a (weight 1) has one host, locality b (weight 3) two: 1/4, 3/8, 3/8.
    counts = backends_of(stack.pipelined("/locality/x", 120))
    assert abs(counts.get("locality0", 0) - 30) <= 3, counts
    assert abs(counts.get("locality1", 0) - 45) <= 3, counts
    assert abs(counts.get("locality2", 0) - 45) <= 3, counts


@kinds()
def test_locality_weights_are_ignored_without_locality_weighted_lb_config(stack: Stack) -> None:
    counts = backends_of(stack.pipelined("/locality_off/x", 120))
    assert counts == {"locality_off0": 40, "locality_off1": 40, "locality_off2": 40}


@kinds()
def test_random_spreads_over_every_host(stack: Stack) -> None:
    counts = backends_of(stack.pipelined("/random/x", 60))
    assert set(counts) == {"random0", "random1", "random2"}
    assert min(counts.values()) >= 5, counts  # 20 expected each


@kinds()
def test_least_request_spreads_over_every_host(stack: Stack) -> None:
    counts = backends_of(stack.pipelined("/least/x", 60))
    assert set(counts) == {"least0", "least1", "least2"}
    assert min(counts.values()) >= 5, counts


@kinds()
def test_least_request_honours_endpoint_weights(stack: Stack) -> None:
    counts = backends_of(stack.pipelined("/least_weighted/x", 60))
    assert 8 <= counts.get("least_weighted0", 0) <= 22, counts  # weights 1:3, 15 expected


# --- connection failures -----------------------------------------------------------------------


@kinds()
def test_connect_timeout_is_503_uf_connection_timeout(stack: Stack) -> None:
    result = stack.get("/timeout/x")
    response = result.response
    assert response.status == 503
    assert response.header("content-type") == "text/plain"
    assert CONNECT_TIMEOUT_S - 0.1 <= result.elapsed < CONNECT_TIMEOUT_S + 4
    assert stack.log_entry(result.test_id).flags == "UF"
    stats = stack.stats("timeout")
    assert (stats["upstream_cx_connect_timeout"], stats["upstream_cx_connect_fail"]) == (1, 1)
    assert stats["upstream_rq_pending_total"] == 1


@kinds()
def test_connect_timeout_reply_says_connection_timeout(stack: Stack) -> None:
    result = stack.get("/timeout_body/x")
    assert result.response.status == 503
    assert result.response.body == RESET_BODY + b"reset reason: connection timeout"
    entry = stack.log_entry(result.test_id)
    assert entry.details == "upstream_reset_before_response_started{connection_timeout}"


@kinds()
def test_connection_refused_is_503_uf_remote_connection_failure(stack: Stack) -> None:
    result = stack.get("/refused/x")
    response = result.response
    assert response.status == 503
    assert response.body == RESET_BODY + b"reset reason: remote connection failure"
    assert stack.log_entry(result.test_id).flags == "UF"
    stats = stack.stats("refused")
    assert (stats["upstream_cx_total"], stats["upstream_cx_connect_fail"]) == (1, 1)
    assert stats["upstream_cx_connect_timeout"] == 0


@kinds()
def test_connection_refused_transport_failure_reason_names_the_error(stack: Stack) -> None:
    entry = stack.log_entry(stack.get("/refused_reason/x").test_id)
    assert entry.failure_reason == "delayed_connect_error:_Connection_refused"
    assert entry.details == (
        "upstream_reset_before_response_started"
        "{remote_connection_failure|delayed_connect_error:_Connection_refused}"
    )


@kinds()
def test_local_503s_count_in_response_code_stats_but_not_as_upstream_requests(
    stack: Stack,
) -> None:
    assert stack.get("/refused_stats/x").response.status == 503
    assert stack.get("/empty_stats/x").response.status == 503
    refused = stack.stats("refused_stats")
    assert refused["upstream_rq_pending_total"] == 1
    assert refused["upstream_rq_total"] == 0  # never bound to a connection
    assert (refused["upstream_rq_503"], refused["upstream_rq_5xx"]) == (1, 1)
    assert refused["upstream_rq_completed"] == 1
    empty = stack.stats("empty_stats")
    assert (
        empty["upstream_rq_total"],
        empty["upstream_rq_503"],
        empty["upstream_cx_none_healthy"],
    ) == (0, 1, 1)


@kinds()
def test_empty_cluster_is_503_uh_no_healthy_upstream(stack: Stack) -> None:
    result = stack.get("/empty/x")
    response = result.response
    assert (response.status, response.body) == (503, b"no healthy upstream")
    assert response.header("content-type") == "text/plain"
    assert stack.log_entry(result.test_id).flags == "UH"
    stats = stack.stats("empty")
    assert (stats["upstream_cx_none_healthy"], stats["upstream_cx_total"]) == (1, 0)
    assert stats["membership_total"] == 0


@kinds()
def test_no_healthy_upstream_keeps_the_downstream_connection_open(stack: Stack) -> None:
    exchange = stack.get("/empty_open/x", probe=True).exchange
    assert exchange.finals[0].status == 503
    assert "close" not in exchange.finals[0].connection_tokens()
    assert not exchange.closed
    assert exchange.probe_response is not None and exchange.probe_response.status == 503


# --- circuit breakers --------------------------------------------------------------------------


@kinds()
def test_max_connections_queues_the_extra_request_on_the_busy_connection(stack: Stack) -> None:
    first = stack.in_flight("/cb_cx/slow", {"x-echo-delay-ms": "1000"})
    try:
        wait_for(lambda: len(stack.backends["cb_cx0"].requests) == 1, "the first request")
        second = stack.get("/cb_cx/x").response  # waits for the only connection
        assert (second.status, second.header("x-backend")) == (200, "cb_cx0")
        first_response = first.response()
        assert first_response is not None and first_response.status == 200
    finally:
        first.close()
    assert stack.backends["cb_cx0"].connections_accepted == 1
    stats = stack.stats("cb_cx")
    assert stats["upstream_cx_overflow"] >= 1
    assert (stats["upstream_cx_total"], stats["upstream_rq_total"]) == (1, 2)
    assert stats["upstream_rq_pending_overflow"] == 0


def _fill_pending(stack: Stack, cluster: str) -> tuple[RawConn, RawConn]:
    """One hanging request on the only connection, one more waiting for it."""
    holder = stack.in_flight(f"/{cluster}/hang", {"x-echo-behavior": "hang"})
    wait_for(lambda: len(stack.backends[f"{cluster}0"].requests) == 1, "the hanging request")
    waiting = stack.in_flight(f"/{cluster}/x")
    stack.wait_stat(cluster, "upstream_rq_pending_active", 1)
    return holder, waiting


@kinds()
def test_max_pending_requests_overflow_is_503_uo(stack: Stack) -> None:
    holder, waiting = _fill_pending(stack, "cb_pending")
    try:
        result = stack.get("/cb_pending/x")
        response = result.response
        assert response.status == 503
        assert response.body == RESET_BODY + b"reset reason: overflow"
        entry = stack.log_entry(result.test_id)
        assert (entry.flags, entry.details) == (
            "UO",
            "upstream_reset_before_response_started{overflow}",
        )
        assert stack.stats("cb_pending")["upstream_rq_pending_overflow"] == 1
        holder.close()  # the hanging request goes away: the waiting one gets the connection
        waited = waiting.response()
        assert waited is not None and waited.status == 200
    finally:
        holder.close()
        waiting.close()


@kinds()
def test_overflow_reply_says_x_envoy_overloaded_and_keeps_the_connection(stack: Stack) -> None:
    holder, waiting = _fill_pending(stack, "cb_pending_hdr")
    try:
        exchange = stack.get("/cb_pending_hdr/x", probe=True).exchange
        assert exchange.finals[0].status == 503
        assert exchange.finals[0].header("x-envoy-overloaded") == "true"
        assert exchange.probe_response is not None and not exchange.closed
    finally:
        holder.close()
        waiting.close()


def _hold_one_request(stack: Stack, cluster: str) -> RawConn:
    holder = stack.in_flight(f"/{cluster}/hang", {"x-echo-behavior": "hang"})
    wait_for(lambda: len(stack.backends[f"{cluster}0"].requests) == 1, "the hanging request")
    return holder


@kinds()
def test_max_requests_overflow_is_503_uo(stack: Stack) -> None:
    holder = _hold_one_request(stack, "cb_rq")
    try:
        result = stack.get("/cb_rq/x")
        assert result.response.status == 503
        assert result.response.body == RESET_BODY + b"reset reason: overflow"
        assert stack.log_entry(result.test_id).flags == "UO"
    finally:
        holder.close()
    assert len(stack.backends["cb_rq0"].requests) == 1


@kinds()
def test_max_requests_overflow_counts_upstream_rq_active_overflow(stack: Stack) -> None:
    holder = _hold_one_request(stack, "cb_rq_stats")
    try:
        assert stack.get("/cb_rq_stats/x").response.status == 503
    finally:
        holder.close()
    stats = stack.stats("cb_rq_stats")
    assert stats.get("upstream_rq_active_overflow") == 1
    assert stats["upstream_rq_pending_overflow"] == 0


# --- retries -----------------------------------------------------------------------------------


@kinds()
def test_retry_on_5xx_until_num_retries_then_the_upstream_answer_with_urx(stack: Stack) -> None:
    result = stack.get("/retry_5xx/x", {"x-echo-status": "503"})
    response = result.response
    assert (response.status, response.header("x-backend")) == (503, "retry_5xx0")
    assert len(stack.backends["retry_5xx0"].requests) == 3
    entry = stack.log_entry(result.test_id)
    assert (entry.flags, entry.attempts, entry.details) == ("URX", "3", "via_upstream")
    stats = stack.stats("retry_5xx")
    assert (stats["upstream_rq_retry"], stats["upstream_rq_total"]) == (2, 3)
    assert stats["upstream_rq_retry_success"] == 0


@kinds()
def test_retries_running_out_count_upstream_rq_retry_limit_exceeded(stack: Stack) -> None:
    assert stack.get("/retry_5xx_stats/x", {"x-echo-status": "500"}).response.status == 500
    stats = stack.stats("retry_5xx_stats")
    assert stats["upstream_rq_retry_limit_exceeded"] == 1
    assert stats["upstream_rq_retry_backoff_exponential"] == 2
    # Retried responses are charged under retry.*, the last one as usual.
    assert (stats["retry.upstream_rq_500"], stats["retry.upstream_rq_completed"]) == (2, 2)
    assert (stats["upstream_rq_500"], stats["external.upstream_rq_500"]) == (1, 1)
    assert stats["upstream_rq_completed"] == 1


# --- timeouts ----------------------------------------------------------------------------------


@kinds()
def test_route_timeout_is_504_ut_charged_to_the_cluster(stack: Stack) -> None:
    result = stack.get("/rq_timeout/x", {"x-echo-delay-ms": "3000"})
    assert (result.response.status, result.response.body) == (504, b"upstream request timeout")
    entry = stack.log_entry(result.test_id)
    assert (entry.flags, entry.attempts, entry.details) == ("UT", "1", "response_timeout")
    stats = stack.stats("rq_timeout")
    assert (stats["upstream_rq_timeout"], stats["upstream_rq_504"]) == (1, 1)
    assert (stats["upstream_rq_completed"], stats["upstream_rq_total"]) == (1, 1)


@kinds()
def test_per_try_timeouts_are_retried_then_504_upstream_per_try_timeout(stack: Stack) -> None:
    result = stack.get("/per_try/x", {"x-echo-delay-ms": "3000"})
    assert (result.response.status, result.response.body) == (504, b"upstream request timeout")
    entry = stack.log_entry(result.test_id)
    assert (entry.flags, entry.attempts, entry.details) == (
        "URX,UT",
        "2",
        "upstream_per_try_timeout",
    )
    stats = stack.stats("per_try")
    assert (stats["upstream_rq_per_try_timeout"], stats["upstream_rq_timeout"]) == (2, 0)
    assert (stats["upstream_rq_retry"], stats["upstream_rq_retry_limit_exceeded"]) == (1, 1)
    assert (stats["upstream_rq_504"], stats["upstream_rq_total"]) == (1, 2)


@kinds()
def test_retry_on_connect_failure_reaches_the_live_host(stack: Stack) -> None:
    # Round robin over (refused, live): every request that starts on the refused host is
    # retried on the live one; at most the first request starts on the live host.
    results = [stack.get("/retry_cf/x") for _ in range(4)]
    assert [r.response.header("x-backend") for r in results] == ["retry_cf0"] * 4
    attempts = sorted(stack.log_entry(r.test_id).attempts for r in results)
    assert attempts[1:] == ["2", "2", "2"] and attempts[0] in ("1", "2")
    stats = stack.stats("retry_cf")
    retried = attempts.count("2")
    assert stats["upstream_rq_retry"] == retried
    assert stats["upstream_rq_retry_success"] == retried
    assert stats["upstream_cx_connect_fail"] == retried


@kinds()
def test_retry_on_reset_exhausted_is_503_with_retried_reset_reason(stack: Stack) -> None:
    result = stack.get("/retry_reset/x", {"x-echo-behavior": "reset"})
    response = result.response
    assert response.status == 503
    assert response.body == (
        RESET_BODY + b"retried and the latest reset reason: connection termination"
    )
    assert len(stack.backends["retry_reset0"].requests) == 2
    entry = stack.log_entry(result.test_id)
    assert set(entry.flags.split(",")) == {"URX", "UC"}
    assert entry.attempts == "2"
    assert stack.stats("retry_reset")["upstream_rq_retry"] == 1


@kinds()
def test_retry_on_connect_failure_exhausted_is_503_with_retried_reset_reason(
    stack: Stack,
) -> None:
    result = stack.get("/retry_dead/x")
    response = result.response
    assert response.status == 503
    assert response.body == (
        RESET_BODY + b"retried and the latest reset reason: remote connection failure"
    )
    entry = stack.log_entry(result.test_id)
    assert set(entry.flags.split(",")) == {"URX", "UF"}
    assert entry.attempts == "3"
    stats = stack.stats("retry_dead")
    assert (stats["upstream_rq_retry"], stats["upstream_cx_connect_fail"]) == (2, 3)


@kinds()
def test_access_log_lines_of_failed_requests(stack: Stack) -> None:
    cases = {
        "/log_timeout/x": (
            {},
            "503 UF 1 upstream_reset_before_response_started{connection_timeout} -",
        ),
        "/log_refused/x": (
            {},
            "503 UF 1 upstream_reset_before_response_started{remote_connection_failure|"
            "delayed_connect_error:_Connection_refused} delayed_connect_error:_Connection_refused",
        ),
        "/log_empty/x": ({}, "503 UH 1 no_healthy_upstream -"),
        "/log_reset/x": (
            {"x-echo-behavior": "reset"},
            "503 URX,UC 2 upstream_reset_before_response_started{connection_termination} -",
        ),
        "/log_dead/x": (
            {},
            "503 URX,UF 3 upstream_reset_before_response_started{remote_connection_failure|"
            "delayed_connect_error:_Connection_refused} delayed_connect_error:_Connection_refused",
        ),
    }
    seen = {}
    for path, (headers, _) in cases.items():
        entry = stack.log_entry(stack.get(path, headers).test_id)
        seen[path] = " ".join(
            (entry.code, entry.flags, entry.attempts, entry.details, entry.failure_reason)
        )
    assert seen == {path: line for path, (_, line) in cases.items()}


# --- stats -------------------------------------------------------------------------------------


@kinds()
def test_upstream_stats_names_and_values(stack: Stack) -> None:
    for status in ("200", "200", "200", "404"):
        assert stack.get("/stats/x", {"x-echo-status": status}).response.status == int(status)
    stats = stack.stats("stats")
    expected = {
        "upstream_rq_total": 4,
        "upstream_rq_completed": 4,
        "upstream_rq_200": 3,
        "upstream_rq_2xx": 3,
        "upstream_rq_404": 1,
        "upstream_rq_4xx": 1,
        "upstream_rq_pending_total": 1,
        "upstream_rq_active": 0,
        "upstream_cx_total": 1,
        "upstream_cx_http1_total": 1,
        "upstream_cx_active": 1,
        "upstream_cx_connect_fail": 0,
        "upstream_cx_connect_timeout": 0,
        "upstream_rq_retry": 0,
        "membership_total": 1,
        "membership_healthy": 1,
    }
    assert {name: stats.get(name) for name in expected} == expected


# Every stat Envoy 1.40 creates for a static cluster no request used yet (cluster.<name>.*).
ENVOY_CLUSTER_STATS = {
    "assignment_stale",
    "assignment_timeout_received",
    "assignment_use_cached",
    "bind_errors",
    "circuit_breakers.default.cx_open",
    "circuit_breakers.default.cx_pool_open",
    "circuit_breakers.default.rq_open",
    "circuit_breakers.default.rq_pending_open",
    "circuit_breakers.default.rq_retry_open",
    "circuit_breakers.high.cx_open",
    "circuit_breakers.high.cx_pool_open",
    "circuit_breakers.high.rq_open",
    "circuit_breakers.high.rq_pending_open",
    "circuit_breakers.high.rq_retry_open",
    "default.total_match_count",
    "lb_healthy_panic",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_subsets_active",
    "lb_subsets_created",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
    "lb_subsets_removed",
    "lb_subsets_selected",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "max_host_weight",
    "membership_change",
    "membership_degraded",
    "membership_excluded",
    "membership_healthy",
    "membership_total",
    "original_dst_host_invalid",
    "retry_or_shadow_abandoned",
    "update_attempt",
    "update_empty",
    "update_failure",
    "update_no_rebuild",
    "update_success",
    "upstream_cx_active",
    "upstream_cx_close_notify",
    "upstream_cx_connect_attempts_exceeded",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_connect_with_0_rtt",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_http3_total",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_duration_reached",
    "upstream_cx_max_requests",
    "upstream_cx_none_healthy",
    "upstream_cx_overflow",
    "upstream_cx_pool_overflow",
    "upstream_cx_preconnect_skipped",
    "upstream_cx_protocol_error",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_total",
    "upstream_cx_tx_bytes_buffered",
    "upstream_cx_tx_bytes_total",
    "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
    "upstream_http3_broken",
    "upstream_internal_redirect_failed_total",
    "upstream_internal_redirect_succeeded_total",
    "upstream_queue_overloaded",
    "upstream_rq_0rtt",
    "upstream_rq_active",
    "upstream_rq_active_overflow",
    "upstream_rq_cancelled",
    "upstream_rq_completed",
    "upstream_rq_maintenance_mode",
    "upstream_rq_max_duration_reached",
    "upstream_rq_pending_active",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_pending_overflow",
    "upstream_rq_pending_total",
    "upstream_rq_per_try_idle_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_backoff_exponential",
    "upstream_rq_retry_backoff_ratelimited",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_success",
    "upstream_rq_rx_reset",
    "upstream_rq_rx_reset_no_error",
    "upstream_rq_timeout",
    "upstream_rq_total",
    "upstream_rq_tx_reset",
    "version",
    "warming_state",
}


@kinds()
def test_a_static_cluster_has_envoys_stats(stack: Stack) -> None:
    stats = stack.stats("names")
    assert set(stats) == ENVOY_CLUSTER_STATS
    # Static hosts: a membership change and a transport socket match per host, no update_*.
    nonzero = {name: value for name, value in stats.items() if value}
    assert nonzero == {
        "default.total_match_count": 1,
        "membership_change": 1,
        "membership_healthy": 1,
        "membership_total": 1,
    }


# --- consistent hashing (RING_HASH, MAGLEV) ---------------------------------------------------
# The hash function differs from Envoy's (xxHash64 there, BLAKE2b here), so a key need not land
# on the same backend on both proxies: what is checked is stickiness and spread on each.


def _sticky_backends(stack: Stack, path: str, values: Sequence[str], header: str) -> list[str]:
    chosen = []
    for v in values:
        seen = {stack.get(path, {header: v}).response.header("x-backend") for _ in range(3)}
        assert len(seen) == 1, f"{header}: {v} went to {seen}"
        chosen.append(seen.pop() or "-")
    return chosen


@kinds()
@pytest.mark.parametrize("cluster", ["ring", "maglev"])
def test_consistent_hash_on_a_header_is_sticky_and_spread(stack: Stack, cluster: str) -> None:
    values = [f"user-{i}" for i in range(30)]
    chosen = _sticky_backends(stack, f"/{cluster}/x", values, "x-user")
    counts = collections.Counter(chosen)
    assert set(counts) == {f"{cluster}{i}" for i in range(3)}, counts
    assert max(counts.values()) <= 20, counts


@kinds()
def test_consistent_hash_without_a_hash_picks_at_random(stack: Stack) -> None:
    responses = [stack.get("/ring/x").response for _ in range(30)]
    assert all(r.status == 200 for r in responses)
    assert len(backends_of(responses)) > 1


@kinds()
def test_consistent_hash_on_a_query_parameter(stack: Stack) -> None:
    chosen = []
    for i in range(30):
        seen = {stack.get(f"/ring_query/x?a=1&user=u{i}").response.header("x-backend")}
        seen.add(stack.get(f"/ring_query/y?user=u{i}").response.header("x-backend"))
        assert len(seen) == 1, seen
        chosen.append(seen.pop())
    assert len(set(chosen)) == 3


@kinds()
def test_consistent_hash_on_the_source_ip_is_sticky(stack: Stack) -> None:
    responses = [stack.get("/ring_ip/x").response for _ in range(10)]
    assert len(backends_of(responses)) == 1


@kinds()
def test_consistent_hash_on_an_existing_cookie(stack: Stack) -> None:
    values = [f"s{i}" for i in range(30)]
    chosen = []
    for v in values:
        rs = [stack.get("/ring_cookie/x", {"cookie": f"a=b; sess={v}"}).response for _ in range(3)]
        assert all(r.header("set-cookie") is None for r in rs)
        seen = {r.header("x-backend") for r in rs}
        assert len(seen) == 1, seen
        chosen.append(seen.pop())
    assert len(set(chosen)) == 3


@kinds()
def test_consistent_hash_cookie_with_a_ttl_is_generated(stack: Stack) -> None:
    first = stack.get("/ring_cookie_ttl/x").response
    cookie = first.header("set-cookie")
    assert cookie is not None
    assert cookie.startswith('sticky="') and cookie.endswith('"; Max-Age=60; Path=/; HttpOnly')
    value = cookie.split('"')[1]
    again = [
        stack.get("/ring_cookie_ttl/x", {"cookie": f"sticky={value}"}).response for _ in range(5)
    ]
    assert all(r.header("set-cookie") is None for r in again)
    assert {r.header("x-backend") for r in again} == {first.header("x-backend")}
