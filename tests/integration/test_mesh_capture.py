"""BookInfo in iptables capture mode: `pilotfishctl up --capture iptables examples/bookinfo`
(root; skipped otherwise). Each workload is a pod (network namespace on a bridge) with
istio-iptables' rules, the unchanged BookInfo apps call ``http://reviews:9080`` with no proxy
settings, the sidecars (pilotfish, uid 1337) get Istio's capture-mode config. The routing
steps are test_mesh_bookinfo.py's own, run against this mesh."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_mesh_bookinfo import BOOKINFO, Mesh
from tests.integration.test_mesh_bookinfo import (
    test_bookinfo_routing_steps as bookinfo_routing_steps,
)
from tests.support import pcap
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
        # `up` returned: every app passed its readiness probe, every proxy ACKed its config.
        assert _productpage_ok(mesh.url)
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


def in_pod(mesh: Mesh, name: str, script: str) -> tuple[str, float]:
    """Run ``script`` in workload ``name``'s pod as its app runs (UTS and network namespace,
    /etc/hosts and resolv.conf, user nobody); its output and how long it took."""
    ns = next(n for n in capture_record(mesh)["namespaces"] if n.endswith(f"-{name}"))
    argv = ["nsenter", f"--uts={pods.UTS_DIR / ns}", "ip", "netns", "exec", ns]
    argv += ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    started = time.monotonic()
    out = subprocess.run(
        [*argv, "sh", "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return out, time.monotonic() - started


def test_pod_has_its_hostname_hosts_and_the_cluster_dns(mesh: Mesh) -> None:
    """As the kubelet makes a pod: its own hostname, /etc/hosts naming it, resolv.conf with
    Kubernetes' search path to the mesh's DNS, which answers a Service by each of its names
    with its VIP and says NXDOMAIN at once for the rest (nothing waits for a timeout)."""
    row = rows(mesh)["reviews-v1"]
    out, took = in_pod(
        mesh,
        "reviews-v1",
        "hostname; getent hosts $(hostname); cat /etc/resolv.conf; "
        "getent ahostsv4 ratings | head -1; getent ahostsv4 ratings.default | head -1; "
        "getent ahostsv4 ratings.default.svc.cluster.local | head -1; "
        "getent hosts nosuch.example.com || echo nxdomain",
    )
    lines = out.splitlines()
    assert lines[0] == "reviews-v1"
    assert lines[1].split() == [str(row["address"]), "reviews-v1"]
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in lines
    assert "options ndots:5" in lines and "nameserver 10.244.0.1" in lines
    vips = {ln.split()[0] for ln in lines if "STREAM" in ln}
    assert len(vips) == 1 and next(iter(vips)).startswith("10.96."), out
    assert lines[-1] == "nxdomain"
    assert took < 3, took  # was 20 s a lookup with the host's unreachable nameserver
    gateway, _ = in_pod(mesh, "istio-ingressgateway", "hostname; grep search /etc/resolv.conf")
    assert gateway.split("\n")[:2] == [
        "istio-ingressgateway",
        "search istio-system.svc.cluster.local svc.cluster.local cluster.local",
    ]


def test_readiness_is_probed_through_the_pods_status_port(mesh: Mesh) -> None:
    """Istio's rewrite: the kubelet (from the node) GETs /app-health/<name>/readyz on the
    pod's 15020, which is not captured, and the status server probes the app in the pod."""
    status = rows(mesh)
    assert all(r["app_ready"] for r in status.values() if r["kind"] == "sidecar"), status
    node = next(n for n in capture_record(mesh)["namespaces"] if n.endswith("-node"))
    ip = status["details-v1"]["address"]
    code = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            node,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://{ip}:15020/app-health/details-v1/readyz",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout
    assert code == "200"


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


STRICT_MESH = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""


def _namespace(mesh: Mesh, suffix: str) -> str:
    names = capture_record(mesh)["namespaces"]
    return next(n for n in names if n.endswith(f"-{suffix}"))


class Tcpdump:
    """tcpdump inside a network namespace, writing a pcap file until stopped."""

    def __init__(self, netns: str, interface: str, path: Path, bpf: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", netns),
                *("tcpdump", "-U", "-s", "0", "-n", "-i", interface, "-w", str(path), bpf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on ...": capturing from now on
        assert b"listening on" in line, line

    def stop(self) -> list[pcap.Segment]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=10)
        return pcap.tcp_segments(self.path)


def test_strict_mtls_between_sidecars_and_plain_app_to_sidecar(mesh: Mesh, tmp_path: Path) -> None:
    """Mesh-wide STRICT PeerAuthentication: the routing steps still hold; on the bridge every
    sidecar-to-sidecar connection is TLS (no HTTP in clear), while inside productpage's pod
    the app talks plain HTTP to its sidecar; a client without a sidecar is refused."""
    strict = tmp_path / "strict.yaml"
    strict.write_text(STRICT_MESH)
    mesh.ctl("apply", "-f", str(strict))
    bridge = Tcpdump(_namespace(mesh, "node"), pods.BRIDGE, tmp_path / "br0.pcap", "tcp port 9080")
    pod_lo = Tcpdump(_namespace(mesh, "productpage-v1"), "lo", tmp_path / "lo.pcap", "tcp")
    try:
        bookinfo_routing_steps(mesh)
        mesh.apply("destination-rule-all-mtls.yaml", "virtual-service-all-v1.yaml")
        assert mesh.versions(10) == {"v1": 10}
    finally:
        on_bridge = bridge.stop()
        in_pod = pod_lo.stop()

    # Sidecar to sidecar (gateway -> productpage, productpage -> reviews/details, reviews ->
    # ratings): every connection's first bytes seen are a TLS record (a handshake for new
    # connections, application data for pooled ones opened before the capture) and no HTTP
    # goes in clear.
    assert len(on_bridge) > 100, len(on_bridge)
    first: dict[tuple[tuple[str, int], tuple[str, int]], bytes] = {}
    for seg in on_bridge:
        first.setdefault(seg.connection, seg.payload)
        assert b"HTTP/1.1" not in seg.payload and b"GET /" not in seg.payload, seg
    assert len(first) >= 4, first.keys()
    assert all(p[0] in (0x16, 0x17) and p[1] == 3 for p in first.values()), first
    assert any(p[:3] == b"\x16\x03\x01" for p in first.values())  # a ClientHello
    pods_seen = {ip for conn in first for ip, _ in conn}
    assert len(pods_seen) >= 5, pods_seen  # gateway, productpage, details, reviews, ratings
    # App to sidecar, inside the pod: plain HTTP to the outbound capture port.
    plain = [s for s in in_pod if s.dst[1] == 15001 and s.payload.startswith(b"GET /")]
    assert any(b"GET /reviews/" in s.payload for s in plain), [s.payload[:40] for s in in_pod]

    # A plain-text client on a STRICT port (from the node namespace: no sidecar) is refused.
    reviews_ip = next(str(r["address"]) for r in mesh.status() if r["name"] == "reviews-v1")
    probe = subprocess.run(
        [
            *("ip", "netns", "exec", _namespace(mesh, "node")),
            *("curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"),
            f"http://{reviews_ip}:9080/reviews/0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0 and probe.stdout in ("", "000"), (probe.stdout, probe.stderr)
    mesh.ctl("delete", "-f", str(strict))


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
    assert record["uts_files"] and not any(Path(f).exists() for f in record["uts_files"])
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
    assert not any(Path(f).exists() for f in record["uts_files"])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
