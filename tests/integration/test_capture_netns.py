"""Capture mode with real pods: network namespaces on a bridge, istio-iptables rules applied
inside them with iptables-restore, pilotfish as uid 1337 (skipped unless root with ip,
iptables and setpriv).

Two pods ``a`` and ``b`` on one bridge (pods.PodNetwork: the bridge lives in its own
namespace; nothing of the host's network is touched). ``b`` runs small HTTP apps on 8080 and
9090 that answer with the peer address and the headers they got.

* outbound: pilotfish in ``a`` with Istio's capture-mode shape (virtualOutbound 0.0.0.0:15001
  with ``use_original_dst`` and a catch-all tcp_proxy to PassthroughCluster, a
  ``bind_to_port: false`` listener 0.0.0.0_8080 with an HTTP connection manager), the rules in
  ``a``; a plain ``curl http://b.test.svc:8080/`` in ``a`` (root, not 1337; the name from the
  pod's /etc/netns hosts) goes through the proxy's 0.0.0.0_8080 listener (stats, the headers
  the proxy adds), ``curl B_IP:9090`` through PassthroughCluster untouched.
* inbound: pilotfish in ``b`` with virtualInbound 0.0.0.0:15006 (original_dst listener filter,
  a chain for destination port 8080 with an HTTP connection manager, a catch-all tcp_proxy),
  both to InboundPassthroughCluster (ORIGINAL_DST, ``upstream_bind_config`` 127.0.0.6), the
  rules in ``b``; ``curl`` from ``a`` (no rules there) reaches the app, which sees the
  connection from 127.0.0.6. Both with REDIRECT and with TPROXY (mangle rules, policy
  routing, a ``transparent`` listener, the sidecar keeping CAP_NET_ADMIN).

* sidecar to sidecar: both pods captured, a's outbound path into b's inbound path.
* a ``transparent`` listener without CAP_NET_ADMIN: the sidecar refuses to start, naming it.

Each test runs with pilotfish and with Envoy (the oracle, when installed): same assertions.

Everything the tests create (namespaces, veths, bridge, rules, /etc/netns dirs, processes by
PID, the temp dir) is removed at the end, also on failure; names carry a random suffix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.proxies import ENVOY_BIN, HCM_TYPE, KINDS, PILOTFISH_BIN, ROUTER_FILTER

from pilotfish.mesh.capture import pods
from pilotfish.mesh.capture.iptables import CaptureConfig

_WHY_NOT = pods.available() or (None if shutil.which("curl") else "curl not found")
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"capture pods: {_WHY_NOT}")

PROXY_UID = 1337
ADMIN = "http://127.0.0.1:15000"
SERVICE = "b.test.svc"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST_FILTER = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
    },
}
# istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020
ISTIO_INIT = CaptureConfig(
    inbound_ports_include="*",
    outbound_ip_ranges_include="*",
    inbound_ports_exclude="15090,15021,15020",
)

# The pod's application: answers every GET with its name, the peer address and the headers.
APP = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"app": name, "peer": self.client_address[0],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer's server_bind asks DNS for its FQDN: a pod has no DNS (10 s timeout).
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "app", self.server_address[1]
server = Server(("0.0.0.0", port), H)
print("READY", flush=True)
server.serve_forever()
"""


# --- bootstraps ------------------------------------------------------------------------------


def _addr(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _tcp_proxy(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP_PROXY, "stat_prefix": stat_prefix, "cluster": cluster},
    }


def _hcm(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ],
            },
            "http_filters": [ROUTER_FILTER],
        },
    }


def _original_dst_cluster(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "2s",
        **extra,
    }


def _bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "node": {"id": "sidecar~10.0.0.1~pod.test~test.svc.cluster.local", "cluster": "pod"},
        "admin": {"address": _addr("127.0.0.1", 15000)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def outbound_bootstrap(b_ip: str) -> dict[str, Any]:
    """Istio's outbound shape: virtualOutbound hands off to 0.0.0.0_8080 or passes through."""
    service_cluster = f"outbound|8080||{SERVICE}"
    return _bootstrap(
        [
            {
                "name": "virtualOutbound",
                "address": _addr("0.0.0.0", 15001),
                "use_original_dst": True,
                "traffic_direction": "OUTBOUND",
                "filter_chains": [
                    {
                        "name": "virtualOutbound-catchall-tcp",
                        "filters": [_tcp_proxy("PassthroughCluster", "PassthroughCluster")],
                    }
                ],
            },
            {
                "name": "0.0.0.0_8080",
                "address": _addr("0.0.0.0", 8080),
                "bind_to_port": False,
                "traffic_direction": "OUTBOUND",
                "filter_chains": [{"filters": [_hcm("outbound_0.0.0.0_8080", service_cluster)]}],
            },
        ],
        [
            _original_dst_cluster("PassthroughCluster"),
            {
                "name": service_cluster,
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {
                    "cluster_name": service_cluster,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(b_ip, 8080)}}]}],
                },
            },
        ],
    )


def inbound_bootstrap(mode: str) -> dict[str, Any]:
    """Istio's inbound shape: virtualInbound, HTTP on 8080, TCP passthrough for the rest;
    ``transparent`` (IP_TRANSPARENT) in TPROXY mode, as Istio sets it."""
    return _bootstrap(
        [
            {
                "name": "virtualInbound",
                "address": _addr("0.0.0.0", 15006),
                "transparent": mode == "TPROXY",
                "traffic_direction": "INBOUND",
                "listener_filters": [ORIGINAL_DST_FILTER],
                "filter_chains": [
                    {
                        "name": "0.0.0.0_8080",
                        "filter_chain_match": {"destination_port": 8080},
                        "filters": [_hcm("inbound_0.0.0.0_8080", "InboundPassthroughCluster")],
                    }
                ],
                "default_filter_chain": {
                    "name": "virtualInbound-catchall-tcp",
                    "filters": [
                        _tcp_proxy("InboundPassthroughCluster", "InboundPassthroughCluster")
                    ],
                },
            }
        ],
        [
            _original_dst_cluster(
                "InboundPassthroughCluster",
                upstream_bind_config={"source_address": {"address": "127.0.0.6", "port_value": 0}},
            )
        ],
    )


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp dir uid 1337 can read (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="pf-capture-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def net() -> Iterator[pods.PodNetwork]:
    subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 250)}.0/24"
    with pods.PodNetwork(subnet, prefix="pfct") as network:
        yield network


def start_app(pod: pods.Pod, port: int) -> None:
    proc = pod.popen(
        [sys.executable, "-c", APP, pod.name, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "READY"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The sidecar: pilotfish, and Envoy (the oracle) when it is installed."""
    if request.param == "envoy" and not ENVOY_BIN.exists():
        pytest.skip("no Envoy binary (make envoy)")
    return str(request.param)


def start_sidecar(
    kind: str, pod: pods.Pod, bootstrap: dict[str, Any], workdir: Path, caps: tuple[str, ...] = ()
) -> Path:
    """The sidecar in the pod as uid/gid 1337, waiting until its admin answers LIVE."""
    config = workdir / f"{pod.name}-bootstrap.json"
    config.write_text(json.dumps(bootstrap))
    config.chmod(0o644)
    log = workdir / f"{pod.name}-{kind}.log"
    with log.open("wb") as out:
        proc = pod.popen(
            [
                str(PILOTFISH_BIN if kind == "pilotfish" else ENVOY_BIN),
                "-c",
                str(config),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--drain-time-s",
                "1",
                "-l",
                "warning",
            ],
            uid=PROXY_UID,
            gid=PROXY_UID,
            caps=caps,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{kind} exited {proc.returncode}: {log.read_text()[-3000:]}")
        if admin(pod, "/ready").strip() == "LIVE":
            return log
        time.sleep(0.2)
    pytest.fail(f"{kind} not LIVE: {log.read_text()[-3000:]}")


def curl(pod: pods.Pod, url: str) -> subprocess.CompletedProcess[str]:
    """``curl -i`` in the pod as root (an app, not the proxy's uid)."""
    return pod.run(["curl", "-sS", "-i", "--max-time", "10", url])


def response(result: subprocess.CompletedProcess[str]) -> tuple[int, dict[str, str], Any]:
    assert result.returncode == 0, result.stderr
    # text mode turned the CRLFs into LFs
    head, _, body = result.stdout.partition("\n\n")
    lines = head.splitlines()
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(body)


def admin(pod: pods.Pod, path: str) -> str:
    """The body of an admin request to the pod's sidecar (127.0.0.1 is never captured)."""
    return pod.run(["curl", "-sS", "--max-time", "5", f"{ADMIN}{path}"]).stdout


def stats(pod: pods.Pod) -> dict[str, int]:
    out = admin(pod, "/stats")
    values = {}
    for line in out.splitlines():
        name, _, value = line.rpartition(": ")
        if value.isdigit():
            values[name] = int(value)
    return values


# --- tests -----------------------------------------------------------------------------------


def test_outbound_capture_through_per_port_listener_and_passthrough(
    kind: str, net: pods.PodNetwork, workdir: Path
) -> None:
    b = net.pod("b")
    a = net.pod("a", hosts={SERVICE: b.ip})
    start_app(b, 8080)
    start_app(b, 9090)
    # Before the sidecar: the app answers directly, with nothing a proxy adds.
    status, headers, body = response(curl(a, f"http://{SERVICE}:8080/"))
    assert (status, body["peer"]) == (200, a.ip)
    assert "x-request-id" not in body["headers"]
    assert "x-envoy-upstream-service-time" not in headers

    log = start_sidecar(kind, a, outbound_bootstrap(b.ip), workdir)
    rules = a.apply_capture(ISTIO_INIT)
    assert "--uid-owner 1337" in rules
    assert "ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in a.iptables_save()

    # HTTP to the service's port: captured to 15001, handed to 0.0.0.0_8080 (HCM).
    status, headers, body = response(curl(a, f"http://{SERVICE}:8080/hello"))
    assert status == 200, log.read_text()
    assert body["app"] == "b"
    assert body["peer"] == a.ip  # the proxy (uid 1337) is exempt: not captured again
    assert body["headers"].get("x-forwarded-proto") == "http"
    assert body["headers"].get("x-request-id")
    assert "x-envoy-upstream-service-time" in headers
    s = stats(a)
    # As in Envoy, the handed-off connection counts on the listener it was handed to.
    assert s.get("listener.0.0.0.0_8080.downstream_cx_total", 0) == 1, s
    assert s.get("listener.0.0.0.0_15001.downstream_cx_total", 0) == 0, s
    assert s.get("http.outbound_0.0.0.0_8080.downstream_rq_2xx", 0) >= 1, s
    assert s.get("cluster.outbound|8080||b.test.svc.upstream_rq_2xx", 0) >= 1, s
    assert s.get("cluster.PassthroughCluster.upstream_cx_total", 0) == 0, s

    # A port with no listener: virtualOutbound's own chain, TCP to the original destination.
    status, headers, body = response(curl(a, f"http://{b.ip}:9090/"))
    assert (status, body["app"], body["peer"]) == (200, "b", a.ip)
    assert "x-request-id" not in body["headers"]
    assert "x-envoy-upstream-service-time" not in headers
    s = stats(a)
    assert s.get("listener.0.0.0.0_15001.downstream_cx_total", 0) == 1, s
    assert s.get("cluster.PassthroughCluster.upstream_cx_total", 0) == 1, s
    assert s.get("tcp.PassthroughCluster.downstream_cx_total", 0) == 1, s


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_inbound_capture_to_app_from_127_0_0_6(
    kind: str, mode: str, net: pods.PodNetwork, workdir: Path
) -> None:
    b = net.pod("b")
    a = net.pod("a", hosts={SERVICE: b.ip})
    start_app(b, 8080)
    start_app(b, 9090)
    caps = ("net_admin",) if mode == "TPROXY" else ()  # IP_TRANSPARENT, as Istio grants it
    log = start_sidecar(kind, b, inbound_bootstrap(mode), workdir, caps)
    b.apply_capture(dataclasses.replace(ISTIO_INIT, inbound_intercept_mode=mode))

    # HTTP on 8080: PREROUTING -> 15006, the 8080 chain (HCM), to the app from 127.0.0.6.
    status, headers, body = response(curl(a, f"http://{SERVICE}:8080/in"))
    assert status == 200, log.read_text()
    assert body["app"] == "b"
    assert body["peer"] == "127.0.0.6"
    assert body["headers"].get("x-request-id")
    assert "x-envoy-upstream-service-time" in headers
    # Another port: the catch-all TCP chain, also from 127.0.0.6, bytes untouched.
    status, headers, body = response(curl(a, f"http://{b.ip}:9090/"))
    assert (status, body["peer"]) == (200, "127.0.0.6")
    assert "x-request-id" not in body["headers"]
    s = stats(b)
    assert s.get("listener.0.0.0.0_15006.downstream_cx_total", 0) == 2, s
    assert s.get("http.inbound_0.0.0.0_8080.downstream_rq_2xx", 0) == 1, s
    assert s.get("cluster.InboundPassthroughCluster.upstream_cx_total", 0) == 2, s
    # Excluded ports are not captured: the admin-like port 15021 is reached directly.
    # (curl exit 7, connection refused; captured it would be accepted, then closed: 52).
    assert curl(a, f"http://{b.ip}:15021/").returncode == 7


def test_pod_network_teardown_is_complete_and_idempotent() -> None:
    subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 250)}.0/24"
    network = pods.PodNetwork(subnet, prefix="pfct")
    with network:
        pod = network.pod("x", hosts={"y.test": "10.0.0.9"})
        pod.apply_capture(ISTIO_INIT)
        proc = pod.popen(["sleep", "60"])
        names = [network.ns, pod.ns]
        assert (pod.etc_dir / "hosts").read_text().count("y.test") == 1
    network.close()  # again: nothing left to do
    assert proc.poll() is not None
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    assert not any(name in listed for name in names)
    assert not pod.etc_dir.exists()
    assert not os.path.exists(f"/run/netns/{pod.ns}")


def test_transparent_listener_without_net_admin_fails_naming_it(
    kind: str, net: pods.PodNetwork, workdir: Path
) -> None:
    """TPROXY's IP_TRANSPARENT needs CAP_NET_ADMIN: without it the sidecar refuses to start
    and says which listener (Envoy: "listener 'virtualInbound' failed to bind or apply socket
    options")."""
    b = net.pod("b")
    config = workdir / "bootstrap.json"
    config.write_text(json.dumps(inbound_bootstrap("TPROXY")))
    config.chmod(0o644)
    binary = PILOTFISH_BIN if kind == "pilotfish" else ENVOY_BIN
    result = b.run(
        [str(binary), "-c", str(config), "--disable-hot-restart", "-l", "error"],
        uid=PROXY_UID,
        gid=PROXY_UID,
    )
    assert result.returncode != 0
    assert "'virtualInbound'" in result.stdout + result.stderr


def test_sidecar_to_sidecar(kind: str, net: pods.PodNetwork, workdir: Path) -> None:
    """Both pods captured: a's app -> a's 15001 -> 0.0.0.0_8080 -> b's 15006 -> b's app."""
    b = net.pod("b")
    a = net.pod("a", hosts={SERVICE: b.ip})
    start_app(b, 8080)
    start_sidecar(kind, b, inbound_bootstrap("REDIRECT"), workdir)
    b.apply_capture(ISTIO_INIT)
    log = start_sidecar(kind, a, outbound_bootstrap(b.ip), workdir)
    a.apply_capture(ISTIO_INIT)

    status, headers, body = response(curl(a, f"http://{SERVICE}:8080/both"))
    assert status == 200, log.read_text()
    assert (body["app"], body["peer"]) == ("b", "127.0.0.6")
    # Headers only a proxy adds, on the way in and on the way back.
    assert body["headers"].get("x-request-id")
    assert "x-envoy-upstream-service-time" in headers
    sa, sb = stats(a), stats(b)
    assert sa.get("cluster.outbound|8080||b.test.svc.upstream_rq_2xx", 0) == 1, sa
    assert sb.get("http.inbound_0.0.0.0_8080.downstream_rq_2xx", 0) == 1, sb
    assert sb.get("cluster.InboundPassthroughCluster.upstream_rq_2xx", 0) == 1, sb
