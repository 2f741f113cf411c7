"""Real Envoy and pilotfish run the local mesh's mTLS translation: two sidecars
(productpage's and reviews-v1's) get their resources from the in-package ADS server and
their certificates from the mesh's per-pod SDS servers (MeshCA, SPIFFE identities);
productpage's app reaches reviews through
auto mTLS (the backend sees Istio's x-forwarded-client-cert naming productpage's identity);
reviews' inbound listener takes plaintext under PERMISSIVE and refuses it under STRICT. No
resource is NACKed."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tests.support.bookinfo_mesh import bookinfo_store, bookinfo_workloads, workload
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ENVOY_BIN, ProxyProcess, free_port, http_request
from tests.support.sds import ThreadedSds
from tests.support.xds import ads_bootstrap

from pilotfish.mesh.bootstrap import sds_cluster
from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.translate import MeshConfig, Workload, sidecar_resources
from pilotfish.mesh.xds_server import ThreadedXdsServer

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.slow,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

STRICT_REVIEWS = yaml.safe_dump(
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"}},
    }
)


def push(
    server: ThreadedXdsServer, config: MeshConfig, workloads: list[Workload], w: Workload
) -> None:
    for type_url, protos in sidecar_resources(config, workloads, w).by_type_url().items():
        server.set_resources(type_url, protos)


def plaintext_get(port: int) -> int | None:
    """A plaintext request straight to a sidecar's inbound port: the status, or None when
    the connection is closed without an answer."""
    try:
        status, _, _ = http_request(port, b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n", timeout=3)
    except (TimeoutError, ConnectionError, OSError, ValueError):
        return None
    return status


def wait(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["envoy", "pilotfish"])
def test_sidecars_talk_istio_mtls(kind: str, tmp_path: Path) -> None:
    ca = MeshCA(tmp_path / "ca")
    with contextlib.ExitStack() as stack:
        backends = {
            d: stack.enter_context(EchoBackend(d)) for d in ("productpage-v1", "reviews-v1")
        }
        workloads = [
            w
            for w in bookinfo_workloads(
                allocate_port=free_port, app_ports={d: b.port for d, b in backends.items()}
            )
            if w.name.split("-")[0] != "reviews" or w.name.startswith("reviews-v1")
        ]
        store = bookinfo_store("no-rules")
        config = MeshConfig.from_store(store)
        servers: dict[str, ThreadedXdsServer] = {}
        procs: dict[str, ProxyProcess] = {}
        for name in backends:
            w = workload(workloads, name)
            socket = tmp_path / f"{name}.sock"
            stack.enter_context(
                ThreadedSds(ca, socket, namespace=w.namespace, service_account=w.service_account)
            )
            servers[name] = server = stack.enter_context(ThreadedXdsServer())
            push(server, config, workloads, w)
            boot = ads_bootstrap(server.address, node_id=w.node_id())
            boot["static_resources"]["clusters"].append(sds_cluster(str(socket)))
            procs[name] = stack.enter_context(ProxyProcess(kind, boot, tmp_path / name))
        reviews = workload(workloads, "reviews-v1")
        proxy_port = workload(workloads, "productpage-v1").outbound_port

        def via_mesh() -> tuple[int, str]:
            raw = b"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\n\r\n"
            status, headers, _ = http_request(proxy_port, raw)
            return status, headers.get("x-backend", "")

        wait(lambda: via_mesh() == (200, "reviews-v1"), "a request through the mesh")
        xfcc = backends["reviews-v1"].requests[-1].header("x-forwarded-client-cert")
        assert xfcc is not None
        assert "URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage" in xfcc
        stats = procs["productpage-v1"].stats("cluster.outbound|9080||reviews")
        assert any(k.endswith("ssl.handshake") and v > 0 for k, v in stats.items()), stats
        assert plaintext_get(reviews.inbound_port) == 200  # PERMISSIVE

        store.apply_yaml(STRICT_REVIEWS)
        push(servers["reviews-v1"], MeshConfig.from_store(store), workloads, reviews)
        wait(lambda: plaintext_get(reviews.inbound_port) is None, "STRICT to refuse plaintext")
        assert via_mesh() == (200, "reviews-v1")  # mTLS still gets in

        for server in servers.values():
            assert not [a for a in server.acks if a.is_nack]
