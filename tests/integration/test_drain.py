"""Drain strategies (``--drain-strategy gradual|immediate``, ``--drain-time-s``) and listener
``drain_type``: which responses close their connections while the server drains.

- ``/drain_listeners?graceful`` on Envoy and pilotfish: with ``gradual`` only a small share of
  the responses of the first seconds close their connection (Envoy's probability: elapsed
  seconds / drain time), with ``immediate`` all of them;
- ``/healthcheck/fail`` drain-closes connections of ``DEFAULT`` listeners, not of
  ``MODIFY_ONLY`` ones (Envoy and pilotfish);
- pilotfish under wrk load, SIGTERM with ``--drain-time-s 5 --drain-strategy gradual``: no
  failed request, and the closes spread over the drain window (a histogram is printed).
"""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.faulty_backend import FaultyBackend
from tests.support.pairs import kinds
from tests.support.proxies import (
    ProxyProcess,
    bootstrap,
    http_listener,
    lb_endpoint,
    static_cluster,
)


@pytest.fixture(scope="module")
def backend() -> Iterator[FaultyBackend]:
    with FaultyBackend("drain") as b:
        yield b


def _config(port: int, modify_only: bool = False) -> dict[str, Any]:
    route = [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}]
    default = http_listener("default", route)
    spared = http_listener("spared", route)
    if modify_only:
        spared["drain_type"] = "MODIFY_ONLY"
    return bootstrap([default, spared], [static_cluster("b", endpoints=[lb_endpoint(port)])])


def _closes(port: int, n: int) -> int:
    """How many of ``n`` requests, each on a new connection, were answered with
    ``connection: close`` (the client does not wait for the close itself: Envoy delays it)."""
    closed = 0
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/x", headers={"host": "svc"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            closed += (resp.getheader("connection") or "").lower() == "close"
        finally:
            conn.close()
    return closed


@kinds()
def test_graceful_drain_gradual_closes_a_growing_share(
    backend: FaultyBackend, tmp_path: Path, kind: str
) -> None:
    """--drain-time-s 4, gradual: no close in the first second, about half in the second,
    all from the third on."""
    with ProxyProcess(
        kind, _config(backend.port), tmp_path, drain_time_s=4, args=["--drain-strategy", "gradual"]
    ) as proxy:
        port = proxy.port("default")
        assert proxy.call("/drain_listeners?graceful", "POST").status == 200
        start = time.monotonic()
        first = _closes(port, 20)
        assert time.monotonic() - start < 0.9, "too slow to sample the first second"
        assert first == 0
        time.sleep(max(0.0, start + 1.1 - time.monotonic()))
        second = _closes(port, 40)
        assert time.monotonic() - start < 1.9, "too slow to sample the second second"
        assert 8 <= second <= 32, second
        time.sleep(max(0.0, start + 2.2 - time.monotonic()))
        assert _closes(port, 10) == 10


@kinds()
def test_graceful_drain_immediate_closes_every_connection(
    backend: FaultyBackend, tmp_path: Path, kind: str
) -> None:
    with ProxyProcess(
        kind,
        _config(backend.port),
        tmp_path,
        drain_time_s=30,
        args=["--drain-strategy", "immediate"],
    ) as proxy:
        port = proxy.port("default")
        assert _closes(port, 5) == 0
        assert proxy.call("/drain_listeners?graceful&skip_exit", "POST").status == 200
        assert _closes(port, 20) == 20


@kinds()
def test_failed_health_checks_spare_modify_only_listeners(
    backend: FaultyBackend, tmp_path: Path, kind: str
) -> None:
    with ProxyProcess(kind, _config(backend.port, modify_only=True), tmp_path) as proxy:
        assert proxy.call("/healthcheck/fail", "POST").status == 200
        assert _closes(proxy.port("default"), 3) == 3
        assert _closes(proxy.port("spared"), 3) == 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_sigterm_gradual_drain_under_load_fails_no_request(
    backend: FaultyBackend, tmp_path: Path
) -> None:
    drain_s = 5
    with ProxyProcess(
        "pilotfish",
        _config(backend.port),
        tmp_path,
        drain_time_s=drain_s,
        args=["--drain-strategy", "gradual"],
    ) as proxy:
        port = proxy.port("default")
        stat = "http.default.downstream_cx_drain_close"
        wrk = subprocess.Popen(
            ["wrk", "-t1", "-c8", f"-d{drain_s - 1}s", f"http://127.0.0.1:{port}/x"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(0.5)
            proxy.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Closes per second of the drain, read from the proxy's stats while it drains.
            per_second = [0] * (drain_s - 1)
            last = proxy.stats(stat).get("", 0)
            for i in range(len(per_second)):
                time.sleep(max(0.0, signalled + i + 1 - time.monotonic()))
                now = proxy.stats(stat).get("", 0)
                per_second[i], last = now - last, now
            out, _ = wrk.communicate(timeout=10)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
        print("connection closes per second of the drain:", per_second)
        print(out)
        assert "Socket errors" not in out, out
        assert "Non-2xx" not in out, out
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        assert requests > 100, out
        # Spread over the window as Envoy's probability rises: (almost) none in the first
        # second, some in every later one.
        assert all(n > 0 for n in per_second[1:]), per_second
        assert per_second[0] * 10 < sum(per_second), per_second
        assert proxy.wait_exit(drain_s + 5) == 0
