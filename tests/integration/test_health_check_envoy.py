"""Active health checks, pilotfish and real Envoy on the same bootstrap with scripted backends
(tests/support/faulty_backend.py): the same healthy/unhealthy transitions in the same order (the
event logs), the same host state in /clusters, the same stats, and traffic that follows.

One proxy of each kind serves the module: ``hc_http`` checks ``/healthz`` over HTTP/1.1 (a bad
status is unhealthy at once; two successes make a host healthy again), ``hc_tcp`` sends an HTTP
request as a TCP payload and expects ``200 OK`` back (a missing answer times out; two timeouts
make a host unhealthy). Intervals are 0.1-0.2 s; ``no_traffic_interval`` is set as small so that
no traffic is needed first.
"""

from __future__ import annotations

import collections
import json
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
from tests.support.waiting import wait_for

INTERVAL = "0.1s"


def _hc(log: Path, **checker: Any) -> dict[str, Any]:
    return {
        "timeout": "0.3s",
        "interval": INTERVAL,
        "no_traffic_interval": INTERVAL,
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
        "event_log_path": str(log),
        **checker,
    }


class Stack:
    def __init__(self, tmp: Path, kind: str) -> None:
        self.http = [FaultyBackend(f"http-{i}").start() for i in range(2)]
        self.tcp = [FaultyBackend(f"tcp-{i}").start() for i in range(2)]
        self.refused = RefusedPort()
        self.logs = {"hc_http": tmp / kind / "hc_http.log", "hc_tcp": tmp / kind / "hc_tcp.log"}
        probe = b"GET /healthz HTTP/1.1\r\nhost: probe\r\n\r\n".hex()
        clusters = [
            static_cluster(
                "hc_http",
                endpoints=[lb_endpoint(b.port) for b in self.http],
                health_checks=[
                    _hc(
                        self.logs["hc_http"],
                        http_health_check={
                            "path": "/healthz",
                            "request_headers_to_add": [
                                {"header": {"key": "x-probe", "value": "1"}}
                            ],
                        },
                    )
                ],
            ),
            static_cluster(
                "hc_tcp",
                endpoints=[
                    lb_endpoint(p) for p in (self.tcp[0].port, self.tcp[1].port, self.refused.port)
                ],
                health_checks=[
                    _hc(
                        self.logs["hc_tcp"],
                        tcp_health_check={
                            "send": {"text": probe},
                            "receive": [{"text": b"200 OK".hex()}],
                        },
                    )
                ],
            ),
        ]
        routes = [
            {"match": {"prefix": f"/{c}/"}, "route": {"cluster": c}} for c in ("hc_http", "hc_tcp")
        ]
        flush = ["--file-flush-interval-msec", "20"]
        self.proxy = ProxyProcess(
            kind, bootstrap([http_listener("in", routes)], clusters), tmp, args=flush
        ).start()

    def close(self) -> None:
        self.proxy.stop()
        for b in self.http + self.tcp:
            b.stop()
        self.refused.close()

    def events(self, cluster: str, port: int) -> list[tuple[str, Any]]:
        """(event kind, its body) of the host on ``port``, in order."""
        path = self.logs[cluster]
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            event = json.loads(line)
            assert event.pop("health_checker_type") == ("HTTP" if cluster == "hc_http" else "TCP")
            assert event.pop("cluster_name") == cluster
            assert event.pop("timestamp").endswith("Z")
            assert event.pop("locality") == {"region": "", "zone": "", "sub_zone": ""}
            host = event.pop("host")
            if host["socket_address"]["port_value"] != port:
                continue
            ((kind, body),) = event.items()
            out.append((kind, body))
        return out

    def flags(self, cluster: str, port: int) -> str:
        key = f"{cluster}::127.0.0.1:{port}::health_flags::"
        for line in self.proxy.call("/clusters").text.splitlines():
            if line.startswith(key):
                return line[len(key) :]
        raise AssertionError(key)

    def hc_stats(self, cluster: str) -> dict[str, int]:
        return self.proxy.stats(f"cluster.{cluster}.health_check.")


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("hc"), request.param)
    try:
        yield stack
    finally:
        stack.close()


@each_proxy()
def test_http_checks_eject_at_once_and_restore_after_healthy_threshold(proxy: Stack) -> None:
    good, bad = proxy.http
    first = ("add_healthy_event", {"first_check": True})
    wait_for(lambda: proxy.events("hc_http", bad.port) == [first], "first check")
    assert proxy.flags("hc_http", bad.port) == "healthy"
    assert proxy.hc_stats("hc_http")["healthy"] == 2
    assert good.served["ok"] >= 1
    bad.mode = "503"
    wait_for(lambda: len(proxy.events("hc_http", bad.port)) == 2, "ejection")
    assert proxy.events("hc_http", bad.port)[1] == (
        "eject_unhealthy_event",
        {"failure_type": "ACTIVE", "http_status_code": 503},
    )
    assert proxy.flags("hc_http", bad.port) == "/failed_active_hc"
    assert proxy.hc_stats("hc_http")["healthy"] == 1
    # Traffic goes to the healthy host only.
    seen = collections.Counter(get(proxy.proxy.port("in"), "/hc_http/x")[0] for _ in range(6))
    assert seen == {200: 6}
    bad.mode = "ok"
    wait_for(lambda: len(proxy.events("hc_http", bad.port)) == 3, "return")
    assert proxy.events("hc_http", bad.port)[2] == ("add_healthy_event", {"first_check": False})
    stats = proxy.hc_stats("hc_http")
    assert stats["healthy"] == 2
    assert stats["failure"] >= 1 and stats["network_failure"] == 0
    assert stats["attempt"] >= stats["success"] + stats["failure"] - 2
    assert proxy.flags("hc_http", bad.port) == "healthy"


@each_proxy()
def test_tcp_checks_time_out_to_unhealthy_and_refused_hosts_never_pass(proxy: Stack) -> None:
    bad = proxy.tcp[1]
    refused = proxy.refused.port
    wait_for(lambda: len(proxy.events("hc_tcp", refused)) >= 1, "first checks")
    # A host that never passed: one failure event (its first check), no ejection.
    assert proxy.events("hc_tcp", refused)[0] == (
        "health_check_failure_event",
        {"failure_type": "NETWORK", "first_check": True, "http_status_code": 0},
    )
    assert proxy.flags("hc_tcp", refused) == "/failed_active_hc"
    wait_for(lambda: len(proxy.events("hc_tcp", bad.port)) == 1, "first check of the host")
    bad.mode = "503"
    wait_for(lambda: len(proxy.events("hc_tcp", bad.port)) == 2, "ejection", 5)
    assert proxy.events("hc_tcp", bad.port) == [
        ("add_healthy_event", {"first_check": True}),
        ("eject_unhealthy_event", {"failure_type": "NETWORK_TIMEOUT", "http_status_code": 0}),
    ]
    assert "/failed_active_hc" in proxy.flags("hc_tcp", bad.port)
    bad.mode = "ok"
    wait_for(lambda: len(proxy.events("hc_tcp", bad.port)) == 3, "return", 5)
    assert proxy.events("hc_tcp", bad.port)[2] == ("add_healthy_event", {"first_check": False})
    assert proxy.hc_stats("hc_tcp")["network_failure"] >= 2
