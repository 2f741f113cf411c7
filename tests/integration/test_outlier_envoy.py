"""Outlier detection, pilotfish and real Envoy on the same bootstrap with scripted faulty
backends (tests/support/faulty_backend.py): the same ejections at the same request counts, the
same ``outlier_detection.*`` stats, the same host state in /clusters and the same event log,
un-ejection after the same time (within a timer tick), and the same shares afterwards.

One proxy of each kind serves the module; a listener routes ``/<cluster>/`` to the cluster of
that name and each test owns its cluster and its three backends (round robin, so the request
counts are exact). Times are short: intervals of 0.1-0.2 s, ejections of 1 s.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.faulty_backend import FaultyBackend
from tests.support.loopback import RefusedPort
from tests.support.pairs import each_proxy
from tests.support.proxies import (
    ProxyProcess,
    bootstrap,
    get,
    http_listener,
    lb_endpoint,
    static_cluster,
)
from tests.support.waiting import wait_for, wait_until

BASE_EJECTION_S = 1.0
INTERVAL_S = 0.2
OUTLIER: dict[str, dict[str, Any]] = {
    # Three consecutive 5xx eject a host (Istio's consecutive5xxErrors).
    "c5xx": {"consecutive_5xx": 3},
    # Resets count as 503s: gateway failures (detected, not enforced by default) and 5xx.
    "creset": {"consecutive_5xx": 3, "consecutive_gateway_failure": 3},
    # max_ejection_percent's default (10 %) allows no ejection among three hosts.
    "coverflow": {"consecutive_5xx": 3, "max_ejection_percent": None},
    # Errors split by origin: a timeout is a local-origin failure, but the connection's
    # success before it resets the count, so timeouts alone never eject.
    "csplit": {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "consecutive_5xx": 1000,
    },
    # ... while refused connections do (the third endpoint refuses).
    "crefused": {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
    },
    # Failure percentage over the interval's buckets.
    "cfp": {
        "consecutive_5xx": 1000,
        "consecutive_gateway_failure": 1000,
        "failure_percentage_minimum_hosts": 3,
        "failure_percentage_request_volume": 10,
        "failure_percentage_threshold": 50,
        "enforcing_failure_percentage": 100,
        "interval": "0.5s",
    },
}
ROUTE_TIMEOUT = {"csplit": "0.3s"}


class Stack:
    def __init__(self, tmp: Path, kind: str) -> None:
        self.kind = kind
        self.backends = {
            name: [FaultyBackend(f"{name}-{i}").start() for i in range(3)] for name in OUTLIER
        }
        self.refused = RefusedPort()
        self.event_log = tmp / kind / "outlier.log"
        clusters = []
        routes = []
        for name, extra in OUTLIER.items():
            od: dict[str, Any] = {
                "interval": f"{INTERVAL_S}s",
                "base_ejection_time": f"{BASE_EJECTION_S}s",
                "max_ejection_percent": 100,
            }
            od.update(extra)
            od = {k: v for k, v in od.items() if v is not None}
            ports = [b.port for b in self.backends[name]]
            if name == "crefused":
                ports[2] = self.refused.port
            clusters.append(
                static_cluster(
                    name, endpoints=[lb_endpoint(p) for p in ports], outlier_detection=od
                )
            )
            action: dict[str, Any] = {"cluster": name}
            if name in ROUTE_TIMEOUT:
                action["timeout"] = ROUTE_TIMEOUT[name]
            routes.append({"match": {"prefix": f"/{name}/"}, "route": action})
        config = bootstrap([http_listener("in", routes)], clusters)
        config["cluster_manager"] = {"outlier_detection": {"event_log_path": str(self.event_log)}}
        # The event log is written at once (Envoy flushes its files every 10 s by default).
        flush = ["--file-flush-interval-msec", "20"]
        self.proxy = ProxyProcess(kind, config, tmp, args=flush).start()

    def close(self) -> None:
        self.proxy.stop()
        for backends in self.backends.values():
            for b in backends:
                b.stop()
        self.refused.close()

    def request(self, cluster: str) -> tuple[int, str]:
        status, headers, _ = get(self.proxy.port("in"), f"/{cluster}/x")
        lower = {k.lower(): v for k, v in headers.items()}
        return status, lower.get("x-backend", "")

    def od_stats(self, cluster: str) -> dict[str, int]:
        return {
            k: v for k, v in self.proxy.stats(f"cluster.{cluster}.outlier_detection.").items() if v
        }

    def events(self, cluster: str, count: int) -> list[dict[str, Any]]:
        """The event log's events of ``cluster``, once there are ``count`` of them."""

        def read() -> list[dict[str, Any]]:
            if not self.event_log.exists():
                return []
            lines = self.event_log.read_text().splitlines()
            return [e for e in map(json.loads, lines) if e["cluster_name"] == cluster]

        wait_until(lambda: len(read()) >= count, 3)
        return [_mask(e) for e in read()]

    def host_json(self, cluster: str, port: int) -> dict[str, Any]:
        data = self.proxy.call("/clusters?format=json").json()
        for c in data["cluster_statuses"]:
            if c["name"] == cluster:
                for h in c["host_statuses"]:
                    if h["address"]["socket_address"]["port_value"] == port:
                        return dict(h)
        raise AssertionError(f"no host {port} in {cluster}")

    def health_flags_text(self, cluster: str, port: int) -> str:
        key = f"{cluster}::127.0.0.1:{port}::health_flags::"
        for line in self.proxy.call("/clusters").text.splitlines():
            if line.startswith(key):
                return line[len(key) :]
        raise AssertionError(key)


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("outlier"), request.param)
    try:
        yield stack
    finally:
        stack.close()


def _mask(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its timestamp (checked to be RFC 3339 UTC)."""
    event = dict(event)
    assert event.pop("timestamp").endswith("Z")
    return event


@each_proxy()
def test_consecutive_5xx_ejects_then_returns_after_base_ejection_time(proxy: Stack) -> None:
    bad = proxy.backends["c5xx"][1]
    bad.mode = "503"
    seen = [proxy.request("c5xx") for _ in range(15)]
    ejected_at = time.monotonic()
    failures = [i for i, (status, _) in enumerate(seen) if status == 503]
    # Three 503s, then no request reaches the ejected host.
    assert len(failures) == 3, seen
    assert all(backend != bad.name for _, backend in seen[failures[-1] + 1 :]), seen
    assert proxy.od_stats("c5xx") == {
        "ejections_active": 1,
        "ejections_consecutive_5xx": 1,
        "ejections_detected_consecutive_5xx": 1,
        "ejections_enforced_consecutive_5xx": 1,
        "ejections_enforced_total": 1,
        "ejections_total": 1,
    }
    assert proxy.health_flags_text("c5xx", bad.port) == "/failed_outlier_check"
    assert proxy.host_json("c5xx", bad.port)["health_status"] == {
        "failed_outlier_check": True,
        "eds_health_status": "HEALTHY",
    }
    assert proxy.proxy.stats("cluster.c5xx.")["membership_healthy"] == 2
    bad.mode = "ok"
    wait_for(lambda: proxy.od_stats("c5xx").get("ejections_active", 0) == 0, "un-ejection", 5)
    ejected_for = time.monotonic() - ejected_at
    # The first interval tick at or after base_ejection_time x 1 (plus polling slack).
    assert BASE_EJECTION_S - 0.05 <= ejected_for <= BASE_EJECTION_S + INTERVAL_S + 0.3
    assert proxy.health_flags_text("c5xx", bad.port) == "healthy"
    shares = collections.Counter(proxy.request("c5xx")[1] for _ in range(30))
    assert sorted(shares.values()) == [10, 10, 10], shares
    events = proxy.events("c5xx", 2)
    url = f"127.0.0.1:{bad.port}"
    # Fields in Envoy's order (the proto's field numbers).
    assert list(events[1]) == [
        "type",
        "secs_since_last_action",
        "cluster_name",
        "upstream_url",
        "action",
        "num_ejections",
        "enforced",
    ]
    assert events == [
        {
            "type": "CONSECUTIVE_5XX",
            "cluster_name": "c5xx",
            "upstream_url": url,
            "action": "EJECT",
            "num_ejections": 1,
            "enforced": True,
            "eject_consecutive_event": {},
        },
        {
            "type": "CONSECUTIVE_5XX",
            "secs_since_last_action": "1",
            "cluster_name": "c5xx",
            "upstream_url": url,
            "action": "UNEJECT",
            "num_ejections": 1,
            "enforced": False,
        },
    ]


@each_proxy()
def test_resets_are_gateway_failures_detected_but_not_enforced_by_default(proxy: Stack) -> None:
    bad = proxy.backends["creset"][0]
    bad.mode = "reset"
    seen = [proxy.request("creset") for _ in range(12)]
    failures = [i for i, (status, _) in enumerate(seen) if status == 503]
    # Envoy posts an ejection to its main thread: on a busy machine the worker can send the
    # bad host one more request before it lands (seen once in a full run). pilotfish ejects
    # at once.
    assert len(failures) == 3 or (proxy.kind == "envoy" and len(failures) == 4), seen
    assert all(s == 200 for s, _ in seen[failures[-1] + 1 :]), seen
    assert proxy.od_stats("creset") == {
        "ejections_active": 1,
        "ejections_consecutive_5xx": 1,
        "ejections_detected_consecutive_5xx": 1,
        "ejections_detected_consecutive_gateway_failure": 1,
        "ejections_enforced_consecutive_5xx": 1,
        "ejections_enforced_total": 1,
        "ejections_total": 1,
    }
    events = proxy.events("creset", 2)
    assert [(e["type"], e["action"], e["enforced"]) for e in events] == [
        ("CONSECUTIVE_GATEWAY_FAILURE", "EJECT", False),
        ("CONSECUTIVE_5XX", "EJECT", True),
    ]
    bad.mode = "ok"


@each_proxy()
def test_max_ejection_percent_overflow(proxy: Stack) -> None:
    bad = proxy.backends["coverflow"][2]
    bad.mode = "503"
    seen = [proxy.request("coverflow") for _ in range(18)]
    bad.mode = "ok"
    # Never ejected: every third request fails, and each bout of three counts an overflow.
    assert sum(1 for s, _ in seen if s == 503) == 6
    # 503 is also a gateway failure: its count (5 by default) reaches the limit once. Each
    # detection tries to eject and overflows, enforced or not.
    assert proxy.od_stats("coverflow") == {
        "ejections_consecutive_5xx": 2,
        "ejections_detected_consecutive_5xx": 2,
        "ejections_detected_consecutive_gateway_failure": 1,
        "ejections_overflow": 3,
    }
    assert proxy.health_flags_text("coverflow", bad.port) == "healthy"


@each_proxy()
def test_split_local_origin_timeouts_do_not_eject(proxy: Stack) -> None:
    bad = proxy.backends["csplit"][0]
    bad.mode = "blackhole"
    seen = [proxy.request("csplit") for _ in range(9)]
    bad.mode = "ok"
    assert [s for s, _ in seen].count(504) == 3, seen
    assert proxy.od_stats("csplit") == {}


@each_proxy()
def test_split_refused_connections_eject(proxy: Stack) -> None:
    seen = [proxy.request("crefused") for _ in range(9)]
    failures = [i for i, (status, _) in enumerate(seen) if status == 503]
    assert len(failures) == 2, seen
    assert all(s == 200 for s, _ in seen[failures[-1] + 1 :]), seen
    assert proxy.od_stats("crefused") == {
        "ejections_active": 1,
        "ejections_detected_consecutive_local_origin_failure": 1,
        "ejections_enforced_consecutive_local_origin_failure": 1,
        "ejections_enforced_total": 1,
    }


@each_proxy()
def test_failure_percentage_ejects_on_the_interval(proxy: Stack) -> None:
    bad = proxy.backends["cfp"][1]
    bad.mode = "503"
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        proxy.request("cfp")
        if proxy.od_stats("cfp").get("ejections_active"):
            break
    bad.mode = "ok"
    assert proxy.od_stats("cfp") == {
        "ejections_active": 1,
        "ejections_detected_failure_percentage": 1,
        "ejections_enforced_failure_percentage": 1,
        "ejections_enforced_total": 1,
    }
    events = proxy.events("cfp", 1)
    assert [(e["type"], e["action"], e["enforced"]) for e in events] == [
        ("FAILURE_PERCENTAGE", "EJECT", True)
    ]
    assert events[0]["eject_failure_percentage_event"] == {"host_success_rate": 0}
