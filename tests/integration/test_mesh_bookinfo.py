"""BookInfo end to end through the local mesh: `pilotfishctl up examples/bookinfo` (the four
services as six workloads, each with a pilotfish sidecar, and a pilotfish ingress gateway),
then Istio's own routing files applied with `pilotfishctl apply`, observed through the
gateway. Distributions are checked with binomial bounds (p < 0.001 of a false failure).

The mesh runs once for the module; each test leaves the routing as it found it or sets what
it needs first. Everything listens on 127.0.0.1 and `down` stops every process."""

from __future__ import annotations

import collections
import http.cookiejar
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.waiting import wait_for

from pilotfish.mesh.bookinfo.productpage import reviews_version_in_page

ROOT = Path(__file__).resolve().parents[2]
BOOKINFO = ROOT / "examples" / "bookinfo"
NET = BOOKINFO / "networking"
CTL = str(Path(sys.executable).with_name("pilotfishctl"))


class Mesh:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.url = ""

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [CTL, "--state", str(self.state), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
        if check and out.returncode != 0:
            raise AssertionError(f"pilotfishctl {args} failed: {out.stdout}{out.stderr}")
        return out

    def apply(self, *files: str) -> None:
        # `apply` returns when every proxy has ACKed the change.
        self.ctl("apply", *[a for f in files for a in ("-f", str(NET / f))])

    def status(self) -> list[dict[str, Any]]:
        payload = {"cmd": "status"}
        from pilotfish.mesh.ctl import request

        rows: list[dict[str, Any]] = request(self.state, payload)["rows"]
        return rows

    def ready(self, name: str) -> bool:
        from pilotfish.mesh.ctl import _ready

        return any(r["name"] == name and _ready(r) for r in self.status())

    def versions(self, n: int, user: str | None = None) -> collections.Counter[str]:
        opener = _opener()
        if user:
            form = urllib.parse.urlencode({"username": user, "passwd": "x"}).encode()
            opener.open(f"{self.url}/login", data=form, timeout=10).read()
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            with opener.open(f"{self.url}/productpage", timeout=15) as r:
                seen[reviews_version_in_page(r.read().decode()) or "none"] += 1
        return seen

    def page(self, user: str | None = None) -> tuple[int, str, float]:
        opener = _opener()
        if user:
            form = urllib.parse.urlencode({"username": user, "passwd": "x"}).encode()
            opener.open(f"{self.url}/login", data=form, timeout=10).read()
        started = time.monotonic()
        with opener.open(f"{self.url}/productpage", timeout=30) as r:
            return r.status, r.read().decode(), time.monotonic() - started


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        urllib.request.ProxyHandler({}),
    )


def binomial_bounds(n: int, p: float, z: float = 3.3) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("mesh") / "state")
    try:
        out = mesh.ctl("up", str(BOOKINFO)).stdout
        mesh.url = next(ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("gateway:"))
        yield mesh
    finally:
        mesh.ctl("down", check=False)


def test_up_starts_every_workload_with_a_live_sidecar(mesh: Mesh) -> None:
    rows = {r["name"]: r for r in mesh.status()}
    assert set(rows) == {
        "details-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "productpage-v1",
        "istio-ingressgateway",
    }
    assert all(r["proxy"] == "Running" for r in rows.values())
    # With no routing rule, Istio balances over every version.
    seen = mesh.versions(45)
    assert set(seen) == {"v1", "v2", "v3"}, seen


def test_bookinfo_routing_steps(mesh: Mesh) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    assert mesh.versions(30) == {"v1": 30}
    mesh.apply("virtual-service-reviews-50-v3.yaml")
    seen = mesh.versions(120)
    low, high = binomial_bounds(120, 0.5)
    assert set(seen) == {"v1", "v3"} and low <= seen["v1"] <= high, seen
    mesh.apply("virtual-service-reviews-test-v2.yaml")
    assert mesh.versions(20, user="jason") == {"v2": 20}
    assert mesh.versions(20) == {"v1": 20}
    assert mesh.versions(10, user="alice") == {"v1": 10}


def test_weighted_80_20_and_jason_v2_else_v3(mesh: Mesh) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-reviews-80-20.yaml")
    seen = mesh.versions(150)
    low, high = binomial_bounds(150, 0.8)
    assert set(seen) <= {"v1", "v2"} and low <= seen["v1"] <= high, seen
    mesh.apply("virtual-service-reviews-jason-v2-v3.yaml")
    assert mesh.versions(15, user="jason") == {"v2": 15}
    assert mesh.versions(15) == {"v3": 15}


def test_fault_abort_on_details_page_still_renders(mesh: Mesh) -> None:
    """fault-injection-details-v1.yaml: details answers 555 to everyone; productpage shows
    its error text for the details and the rest of the page."""
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    mesh.apply("fault-injection-details-v1.yaml")
    status, page, _ = mesh.page()
    assert status == 200
    assert "Error fetching product details" in page, page[:2000]
    assert reviews_version_in_page(page) == "v1"
    mesh.apply("virtual-service-all-v1.yaml")  # details routed normally again
    status, page, _ = mesh.page()
    assert "Error fetching product details" not in page


def test_fault_delay_for_jason_hits_productpages_timeout(mesh: Mesh) -> None:
    """virtual-service-ratings-test-delay.yaml (Istio's "find the bug" task): a 7 s delay to
    ratings for jason; reviews v2 waits 10 s, but productpage gives up on reviews after 3 s and
    one retry, so jason sees the reviews error after about 6 s; others are not delayed."""
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    mesh.apply("virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-delay.yaml")
    status, page, elapsed = mesh.page()
    assert status == 200 and elapsed < 3 and reviews_version_in_page(page) == "v1"
    status, page, elapsed = mesh.page(user="jason")
    assert status == 200
    assert "Sorry, product reviews are currently unavailable" in page, page[:2000]
    assert 5.5 < elapsed < 9, elapsed
    mesh.apply("virtual-service-all-v1.yaml")


def test_fault_abort_for_jason_on_ratings(mesh: Mesh) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    mesh.apply("virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-abort.yaml")
    _, page, _ = mesh.page(user="jason")
    assert "Reviews served by: reviews-v2" in page  # no stars: ratings failed
    assert "Ratings service is currently unavailable" in page
    _, page, _ = mesh.page()
    assert "Ratings service is currently unavailable" not in page
    mesh.apply("virtual-service-all-v1.yaml")


FAULTY_RATINGS = """
apiVersion: pilotfish.io/v1alpha1
kind: Workload
metadata: {name: ratings-v2, labels: {app: ratings, version: v2}}
spec:
  serviceAccount: bookinfo-ratings
  command: ["{python}", -m, pilotfish.mesh.bookinfo.ratings, --port, "{port}", --quiet]
  env: {SERVICE_VERSION: v-faulty}
"""
RATINGS_V2_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v2}
    retries: {attempts: ATTEMPTS, retryOn: 5xx}
"""


def test_retries_hide_a_faulty_ratings_version(mesh: Mesh, tmp_path: Path) -> None:
    """A ratings version that answers 503 half of the time: with retries off, about half of
    the pages say ratings are unavailable; with 15 attempts on 5xx, none does."""
    workload = tmp_path / "faulty.yaml"
    workload.write_text(FAULTY_RATINGS)
    mesh.ctl("apply", "-f", str(workload))
    mesh.apply("destination-rule-all.yaml")
    try:
        assert mesh.ready("ratings-v2")  # `apply` waited for it
        rules = tmp_path / "rules.yaml"
        rules.write_text(RATINGS_V2_RETRIES.replace("ATTEMPTS", "0"))
        mesh.ctl("apply", "-f", str(rules))
        n = 40
        failed = sum("Ratings service is currently unavailable" in mesh.page()[1] for _ in range(n))
        low, high = binomial_bounds(n, 0.5)
        assert low <= failed <= high, failed
        rules.write_text(RATINGS_V2_RETRIES.replace("ATTEMPTS", "15"))
        mesh.ctl("apply", "-f", str(rules))
        pages = [mesh.page()[1] for _ in range(30)]
        assert not any("Ratings service is currently unavailable" in p for p in pages)
        assert all("text-black-500" in p for p in pages)  # v2's black stars: ratings answered
    finally:
        mesh.apply("virtual-service-all-v1.yaml")
        mesh.ctl("delete", "-f", str(workload), check=False)


def test_bad_config_is_rejected_and_changes_nothing(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (NET / "virtual-service-all-v1.yaml").read_text().replace("subset: v1", "subset: v9")
    )
    out = mesh.ctl("apply", "-f", str(bad), check=False)
    assert out.returncode == 1
    assert "v9" in out.stderr, out.stderr
    assert mesh.versions(10) == {"v1": 10}
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        (NET / "virtual-service-reviews-50-v3.yaml").read_text().replace("weight:", "wieght:")
    )
    out = mesh.ctl("apply", "-f", str(unknown), check=False)
    assert out.returncode == 1 and "wieght" in out.stderr, out.stderr
    assert mesh.versions(10) == {"v1": 10}


def test_delete_and_reapply(mesh: Mesh) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    mesh.ctl("delete", "-f", str(NET / "virtual-service-all-v1.yaml"))
    seen = mesh.versions(45)
    assert set(seen) == {"v1", "v2", "v3"}, seen  # back to round robin
    mesh.apply("virtual-service-all-v1.yaml")
    assert mesh.versions(10) == {"v1": 10}
    listed = mesh.ctl("get", "virtualservices").stdout
    assert "reviews" in listed and "bookinfo" in listed


def test_proxy_config_shows_istio_shaped_config(mesh: Mesh) -> None:
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    clusters = mesh.ctl("proxy-config", "clusters", "productpage-v1").stdout
    assert re.search(r"reviews\.default\.svc\.cluster\.local\s+9080\s+v2\s+outbound", clusters)
    routes = mesh.ctl("proxy-config", "routes", "productpage-v1").stdout
    assert "reviews.default.svc.cluster.local:9080" in routes, routes
    listeners = mesh.ctl("proxy-config", "listeners", "productpage-v1").stdout
    assert "Route: http_proxy" in listeners, listeners
    endpoints = mesh.ctl("proxy-config", "endpoints", "productpage-v1").stdout
    assert "outbound|9080|v3|reviews.default.svc.cluster.local" in endpoints, endpoints
    dump = json.loads(mesh.ctl("proxy-config", "all", "productpage-v1", "-o", "json").stdout)
    assert dump["configs"]
    # The mesh CA's certificates, from the sidecar's SDS secrets (istioctl pc secret's table).
    secrets = mesh.ctl("proxy-config", "secrets", "productpage-v1").stdout
    assert re.search(r"^default\s+Cert Chain\s+ACTIVE\s+true\s+[0-9a-f]+\s+\S+Z", secrets, re.M)
    assert re.search(r"^ROOTCA\s+CA\s+ACTIVE\s+true\s", secrets, re.M), secrets


def test_workload_crash_is_reported_by_status(mesh: Mesh) -> None:
    rows = {r["name"]: r for r in mesh.status()}
    os.kill(rows["ratings-v1"]["app_pid"], signal.SIGKILL)
    wait_for(
        lambda: {r["name"]: r for r in mesh.status()}["ratings-v1"]["app"].startswith("Exited"),
        "ratings-v1 reported as exited",
    )
    out = mesh.ctl("status").stdout
    assert "ratings-v1" in out and "Exited(-9)" in out, out


def test_control_plane_restart_keeps_config(mesh: Mesh) -> None:
    """`down` then `up` with no directory: config and workloads come back from the state."""
    mesh.apply("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml")
    mesh.ctl("down")
    out = mesh.ctl("up").stdout
    mesh.url = next(ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("gateway:"))
    # `up` returned only when the mesh serves: every proxy ACKed the current config and
    # every app passed its readiness probe (its port accepts). It used to return when each
    # app's process existed and each proxy was LIVE (its first config only): under load
    # reviews-v3's app could still be importing, and the first pages had no reviews.
    from pilotfish.mesh.ctl import synced

    rows = mesh.status()
    assert all(synced(r) and r["app_ready"] is not False for r in rows), rows
    assert mesh.versions(10, user="jason") == {"v2": 10}
    assert mesh.versions(10) == {"v3": 10}


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(url: str, *args: str) -> str:
    """Chromium, headless, on ``url``: the DOM after the page's scripts ran for a while."""
    chromium = _chromium()
    assert chromium is not None
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # tests run as root
            "--disable-gpu",
            "--window-size=1500,950",
            "--virtual-time-budget=15000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.stdout


@pytest.mark.skipif(
    shutil.which("prometheus") is None or _chromium() is None,
    reason="needs Debian's prometheus and chromium",
)
def test_prometheus_and_dashboard_show_the_mesh(mesh: Mesh, tmp_path: Path) -> None:
    """`pilotfishctl up` started a real Prometheus scraping every proxy; it holds Istio's
    standard series for the BookInfo traffic (the same label sets the sidecar serves); the
    dashboard, loaded in headless Chromium, draws the graph's nodes and edges (with mTLS
    locks when STRICT) and a screenshot is saved."""
    from pilotfish.mesh.ctl import request

    status = request(mesh.state, {"cmd": "status"})
    prometheus, dashboard = status["prometheus"], status["dashboard"]
    assert prometheus.startswith("http://127.0.0.1:") and dashboard.startswith("http://")
    for _ in range(30):
        assert mesh.page()[0] == 200

    def prom(query: str) -> list[dict[str, Any]]:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with _opener().open(url, timeout=10) as r:
            result: list[dict[str, Any]] = json.load(r)["data"]["result"]
            return result

    ingress = (
        'istio_requests_total{reporter="destination",source_workload="istio-ingressgateway",'
        'destination_workload="productpage-v1",response_code="200"}'
    )
    wait_for(
        lambda: sum(float(s["value"][1]) for s in prom(ingress)) >= 30,
        "Prometheus to scrape the gateway's requests from productpage's sidecar",
        timeout=40,
    )
    # The series Prometheus holds for this traffic are the ones productpage's sidecar serves
    # (label for label; other tests of the module may have left older series, e.g. from
    # before a control plane restart, which Prometheus keeps for its 5-minute lookback).
    row = next(r for r in mesh.status() if r["name"] == "productpage-v1")
    with _opener().open(f"http://{row['admin']}/stats/prometheus", timeout=10) as r:
        served = r.read().decode()
    scraped = prom(ingress)
    assert scraped
    for s in scraped:
        labels = {
            k: v
            for k, v in s["metric"].items()
            if k
            not in ("__name__", "instance", "job", "pod", "namespace", "kind", "app", "version")
        }
        assert all(f'{k}="{v}"' in served for k, v in labels.items()), labels

    def graph_edges() -> list[dict[str, Any]]:
        with _opener().open(f"{dashboard}api/graph", timeout=10) as r:
            edges: list[dict[str, Any]] = json.load(r)["edges"]
            return [e["data"] for e in edges if e["data"]["rps"] > 0]

    def traffic_and_edges() -> bool:
        # rate() needs traffic between two scrapes: keep some flowing while waiting.
        for _ in range(3):
            mesh.page()
        return len(graph_edges()) >= 4

    wait_for(traffic_and_edges, "the dashboard's graph to have edges", timeout=60)
    screenshot = tmp_path / "dashboard.png"
    _headless(dashboard, f"--screenshot={screenshot}")
    dom = _headless(dashboard, "--dump-dom")
    nodes = re.findall(r'<li class="node" data-id="wl:([^"]+)"', dom)
    edges = set(
        re.findall(r'<li class="edge" data-source="wl:([^"]+)" data-target="wl:([^"]+)"', dom)
    )
    where = f"(screenshot: {screenshot})"
    assert {"istio-ingressgateway", "productpage-v1", "details-v1", "ratings-v1"} <= set(nodes), (
        nodes,
        where,
    )
    assert ("istio-ingressgateway", "productpage-v1") in edges, (edges, where)
    assert ("productpage-v1", "details-v1") in edges, (edges, where)
    assert any(src == "productpage-v1" and dst.startswith("reviews-") for src, dst in edges), where
    assert 'data-loaded="true"' in dom, where
    assert screenshot.stat().st_size > 10_000, where
    print(f"dashboard screenshot: {screenshot}")
