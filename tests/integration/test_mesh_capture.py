"""BookInfo in iptables capture mode: `pilotfishctl up --capture iptables examples/bookinfo`
(root; skipped otherwise). Each workload is a pod (network namespace on a bridge) with
istio-iptables' rules, the unchanged BookInfo apps call ``http://reviews:9080`` with no proxy
settings, the sidecars (pilotfish, uid 1337) get Istio's capture-mode config. The routing
steps are test_mesh_bookinfo.py's own, run against this mesh."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_mesh_bookinfo import BOOKINFO, Mesh
from tests.integration.test_mesh_bookinfo import (
    test_bookinfo_routing_steps as bookinfo_routing_steps,
)
from tests.support.waiting import wait_for

from pilotfish.mesh.capture import pods
from pilotfish.mesh.capture.iptables import render
from pilotfish.mesh.capture.supervisor import ISTIO_DEFAULTS, PROXY_UID
from pilotfish.mesh.ctl import gateway_url

_WHY_NOT = pods.available()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"capture mode: {_WHY_NOT}")

REVIEWS = "reviews.default.svc.cluster.local"


def _productpage_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/productpage", timeout=5) as r:
            return bool(r.status == 200 and b"Reviews served by" in r.read())
    except OSError:
        return False


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("capture") / "state")
    try:
        out = mesh.ctl("up", "--capture", "iptables", str(BOOKINFO)).stdout
        mesh.url = next(ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("gateway:"))
        # The apps are up when their process is; give them time to listen.
        wait_for(lambda: _productpage_ok(mesh.url), "productpage through the gateway", timeout=30)
        yield mesh
    finally:
        mesh.ctl("down", check=False)


def rows(mesh: Mesh) -> dict[str, dict[str, object]]:
    return {str(r["name"]): r for r in mesh.status()}


def stats(admin: object) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{admin}/stats", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(": ")
        if value.isdigit():
            out[name] = int(value)
    return out


def capture_record(mesh: Mesh) -> dict[str, list[str] | str]:
    data: dict[str, list[str] | str] = json.loads((mesh.state / "capture.json").read_text())
    return data


def test_bookinfo_in_pods_through_the_gateway(mesh: Mesh) -> None:
    status = rows(mesh)
    assert set(status) == {
        "details-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "productpage-v1",
        "istio-ingressgateway",
    }
    addresses = {r["address"] for r in status.values()}
    assert len(addresses) == 7 and all(str(a).startswith("10.244.") for a in addresses)
    seen = mesh.versions(30)
    assert set(seen) == {"v1", "v2", "v3"}, seen


def test_bookinfo_routing_steps_in_capture_mode(mesh: Mesh) -> None:
    """All v1; 50/50 v1/v3; jason -> v2 (test_mesh_bookinfo's steps, unchanged)."""
    bookinfo_routing_steps(mesh)


def test_pod_rules_are_istio_iptables_defaults(mesh: Mesh) -> None:
    """The nat table in a pod is what iptables-restore makes of render(Istio's defaults) in
    an empty network namespace."""
    ns = next(n for n in capture_record(mesh)["namespaces"] if n.endswith("-reviews-v1"))

    def rules(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith(("-A", ":ISTIO"))]

    in_pod = subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    reference = subprocess.run(
        ["unshare", "--net", "sh", "-c", "iptables-restore && iptables-save -t nat"],
        input=render(ISTIO_DEFAULTS),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rules(in_pod) == rules(reference)
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules(in_pod)


def test_sidecar_runs_as_1337_and_the_app_not(mesh: Mesh) -> None:
    def uid(pid: object) -> int:
        line = next(
            ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln[:4] == "Uid:"
        )
        return int(line.split()[1])

    for name, row in rows(mesh).items():
        assert uid(row["proxy_pid"]) == PROXY_UID, name
        if row["app_pid"]:
            assert uid(row["app_pid"]) not in (PROXY_UID, 0), name


def test_traffic_goes_through_both_sidecars(mesh: Mesh) -> None:
    """productpage's plain call to http://reviews:9080 is captured to its sidecar's
    0.0.0.0_9080 listener; reviews' sidecar takes it in on virtualInbound's 9080 chain."""
    mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    status = rows(mesh)
    pp, rv = status["productpage-v1"]["admin"], status["reviews-v1"]["admin"]
    before_pp, before_rv = stats(pp), stats(rv)
    assert mesh.versions(5) == {"v1": 5}
    after_pp, after_rv = stats(pp), stats(rv)

    def moved(before: dict[str, int], after: dict[str, int], name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    assert moved(before_pp, after_pp, "http.outbound_0.0.0.0_9080.downstream_rq_2xx") >= 10
    assert moved(before_pp, after_pp, f"cluster.outbound|9080|v1|{REVIEWS}.upstream_rq_2xx") == 5
    assert moved(before_pp, after_pp, "http.inbound_0.0.0.0_9080.downstream_rq_2xx") == 5
    assert moved(before_rv, after_rv, "http.inbound_0.0.0.0_9080.downstream_rq_2xx") == 5
    assert moved(before_rv, after_rv, "cluster.inbound|9080||.upstream_rq_2xx") == 5
    # Nothing went around the mesh's services.
    assert moved(before_pp, after_pp, "cluster.PassthroughCluster.upstream_cx_total") == 0


def test_proxy_config_and_logs_work_in_capture_mode(mesh: Mesh) -> None:
    listeners = mesh.ctl("proxy-config", "listeners", "productpage-v1").stdout
    # istioctl's table: virtualOutbound, 0.0.0.0_9080, virtualInbound's chains.
    for row in (
        r"0\.0\.0\.0\s+15001\s+ALL\s+Cluster: PassthroughCluster",
        r"0\.0\.0\.0\s+9080\s+ALL\s+Route: 9080",
        r"0\.0\.0\.0\s+15006\s+ALL\s+Inline Route: inbound\|9080\|\|",
    ):
        assert re.search(row, listeners), listeners
    routes = mesh.ctl("proxy-config", "routes", "productpage-v1").stdout
    assert f"{REVIEWS}:9080" in routes, routes
    logs = mesh.ctl("logs", "productpage-v1").stdout
    assert "listening on 0.0.0.0:9080" in logs


def test_down_leaves_no_namespace_dir_or_process(mesh: Mesh) -> None:
    record = capture_record(mesh)
    pids = [p for r in rows(mesh).values() for p in (r["app_pid"], r["proxy_pid"]) if p]
    mesh.ctl("down")
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not set(record["namespaces"]) & set(listed)
    assert not any(Path(d).exists() for d in record["etc_dirs"])
    assert not Path(str(record["runtime_dir"])).exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not (mesh.state / "capture.json").exists()


def test_down_after_a_crash_removes_the_leftovers(mesh: Mesh) -> None:
    """A control plane killed with SIGKILL leaves its pods and processes: `down` removes
    them from the state's record."""
    import os
    import signal

    mesh.ctl("up")  # the same state: capture mode again, workloads from the state
    url = gateway_url(mesh.status())
    assert url is not None
    wait_for(lambda: _productpage_ok(url), "productpage", timeout=30)
    record = capture_record(mesh)
    pid = int((mesh.state / "controlplane.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), "control plane gone")
    out = mesh.ctl("down").stdout
    assert "removed" in out, out
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not set(record["namespaces"]) & set(listed)
    assert not any(Path(d).exists() for d in record["etc_dirs"])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
