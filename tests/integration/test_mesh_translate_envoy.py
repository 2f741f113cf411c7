"""The translation's output is valid xDS: real Envoy accepts, with no NACK, every resource
generated for BookInfo under every routing scenario of samples/bookinfo/networking, served by
the in-package ADS server to a sidecar of productpage, a sidecar of reviews-v2 and the
ingress gateway. pilotfish gets the same pushes; its NACKs are listed (``pytest -s``) and must
be among KNOWN_PILOTFISH_NACKS (features it lacks).

Then, end to end (Envoy and pilotfish alike): EchoBackends stand in for the reviews apps,
a request through productpage's sidecar HTTP-proxy listener (absolute-form
``GET http://reviews:9080/reviews/0``) reaches a reviews backend through reviews' sidecar
inbound listener, following the subset routing of ``reviews-test-v2``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.bookinfo_mesh import (
    NETWORKING,
    SCENARIOS,
    bookinfo_config,
    bookinfo_store,
    bookinfo_workloads,
    gateway,
    workload,
)
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ProxyProcess, free_port, http_request
from tests.support.xds import ads_bootstrap

from pilotfish.mesh.translate import (
    MeshConfig,
    ProxyResources,
    gateway_resources,
    sidecar_resources,
)
from pilotfish.mesh.xds_server import AckRecord, ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

pytestmark = [
    pytest.mark.slow,
]

TYPES = (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.ROUTE)
PROXIES = ("productpage-v1", "reviews-v2", "gateway")
KINDS = ("envoy", "pilotfish")
# (scenario, proxy, type short name, substring of the message): what pilotfish refuses.
# Empty since TLS is served (egress-google-apis' TLS origination was the last entry).
KNOWN_PILOTFISH_NACKS: set[tuple[str, str, str, str]] = set()


def resources_for(scenario: str, proxy: str, ports: dict[str, int]) -> tuple[str, ProxyResources]:
    workloads = bookinfo_workloads(app_ports=ports, allocate_port=_ports())
    config = bookinfo_config(scenario)
    if proxy == "gateway":
        gw = gateway(ports["gateway"])
        return gw.node_id(), gateway_resources(config, workloads, gw)
    w = workload(workloads, proxy)
    return w.node_id(), sidecar_resources(config, workloads, w)


_FIXED: dict[str, int] = {}


def _ports() -> Callable[[], int]:
    """The same made-up ports for every scenario of a run (listeners must not move)."""
    names = iter(range(1000))

    def allocate() -> int:
        key = str(next(names))
        if key not in _FIXED:
            _FIXED[key] = free_port()
        return _FIXED[key]

    return allocate


def push(
    server: ThreadedXdsServer, res: ProxyResources, node_id: str, timeout: float = 20.0
) -> list[AckRecord]:
    """Serve ``res``; wait until the proxy answered every changed type's new version (the
    server sends nothing for a type whose resources are unchanged); its answers."""
    start = len(server.acks)
    versions = {}
    for rtype in TYPES:
        new = res.by_type_url()[rtype.type_url]
        old = server.resources(rtype.type_url)
        if {m.SerializeToString(deterministic=True) for m in new} == {
            m.SerializeToString(deterministic=True) for m in old.values()
        } and len(new) == len(old):
            continue
        versions[rtype.type_url] = server.set_resources(rtype.type_url, new)

    # CDS and LDS are wildcard: every change is sent and answered. RDS and EDS are sent only
    # when a subscribed resource changed, so for those wait until the answers stop coming.
    wildcard = {t for t in versions if t in (rt.CLUSTER.type_url, rt.LISTENER.type_url)}

    def answered(s: ThreadedXdsServer) -> bool:
        new = [a for a in s.acks[start:] if a.node_id == node_id]
        done = {a.type_url for a in new if a.is_nack or a.version_info == versions[a.type_url]}
        return done >= wildcard

    try:
        server.wait_for(answered, timeout)
    except TimeoutError:
        got = [
            (a.type_url.rsplit(".", 1)[-1], a.version_info, a.is_nack) for a in server.acks[start:]
        ]
        raise AssertionError(f"no answer for every type: want {versions}, got {got}") from None
    deadline = time.monotonic() + timeout
    seen = -1
    while len(server.acks) != seen and time.monotonic() < deadline:
        seen = len(server.acks)
        time.sleep(0.3)
    return [a for a in server.acks[start:] if a.node_id == node_id]


@contextlib.contextmanager
def proxy_for(
    kind: str, node_id: str, tmp_path: Path, name: str
) -> Iterator[tuple[ThreadedXdsServer, ProxyProcess]]:
    with ThreadedXdsServer() as server:
        boot = ads_bootstrap(server.address, node_id=node_id)
        proc = ProxyProcess(kind, boot, tmp_path / name, wait_live=False)
        with proc:
            yield server, proc


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("proxy", PROXIES)
def test_every_scenario_is_accepted(kind: str, proxy: str, tmp_path: Path) -> None:
    ports = {"gateway": free_port()}
    node_id, _ = resources_for("no-rules", proxy, ports)
    nacks: list[tuple[str, str, str]] = []
    with proxy_for(kind, node_id, tmp_path, proxy) as (server, proc):
        for scenario in SCENARIOS:
            _, res = resources_for(scenario, proxy, ports)
            for a in push(server, res, node_id):
                if a.is_nack:
                    nacks.append((scenario, a.type_url.rsplit(".", 1)[-1], a.error_message))
        assert proc.call("/ready").status == 200, proc.log()[-3000:]
    for n in nacks:
        print(f"{kind} {proxy} NACK {n}")
    if kind == "envoy":
        assert nacks == []
    else:
        unexpected = [
            n
            for n in nacks
            if not any(
                s == n[0] and p == proxy and n[2].find(why) >= 0
                for s, p, _t, why in KNOWN_PILOTFISH_NACKS
            )
        ]
        assert unexpected == []
        # Each known refusal still happens (else it is fixed: drop it from the list).
        for s, p, _t, why in KNOWN_PILOTFISH_NACKS:
            if p == proxy:
                assert any(n[0] == s and why in n[2] for n in nacks), (s, why)


# --- end to end ------------------------------------------------------------------------------

REVIEWS_DEPLOYMENTS = ("reviews-v1", "reviews-v2", "reviews-v3")
APPS = ("productpage-v1", *REVIEWS_DEPLOYMENTS)


@pytest.mark.parametrize("kind", KINDS)
def test_http_proxy_request_follows_subset_routing(kind: str, tmp_path: Path) -> None:
    """productpage's app → its sidecar's HTTP-proxy listener (absolute-form URL) → reviews'
    sidecar inbound listener (the EDS endpoint of the subset) → the reviews "app"; and the
    ingress gateway → productpage's sidecar inbound listener → the productpage "app"."""
    with contextlib.ExitStack() as stack:
        backends = {d: stack.enter_context(EchoBackend(d)) for d in APPS}
        workloads = bookinfo_workloads(
            allocate_port=free_port, app_ports={d: b.port for d, b in backends.items()}
        )
        store = bookinfo_store("reviews-test-v2")
        store.apply([NETWORKING / "bookinfo-gateway.yaml"])
        config = MeshConfig.from_store(
            store, mtls=False
        )  # plaintext: test_mesh_mtls_envoy has mTLS
        gw = gateway(free_port())
        procs = {}
        for name in (*APPS, "gateway"):
            if name == "gateway":
                node_id, res = gw.node_id(), gateway_resources(config, workloads, gw)
            else:
                w = workload(workloads, name)
                node_id, res = w.node_id(), sidecar_resources(config, workloads, w)
            server = stack.enter_context(ThreadedXdsServer())
            for type_url, protos in res.by_type_url().items():
                server.set_resources(type_url, protos)
            proc = ProxyProcess(
                kind, ads_bootstrap(server.address, node_id=node_id), tmp_path / name
            )
            procs[name] = stack.enter_context(proc)
            assert not [a for a in server.acks if a.is_nack], proc.log()[-2000:]
        proxy_port = workload(workloads, "productpage-v1").outbound_port

        def via_proxy(user: str | None) -> tuple[int, str]:
            extra = f"end-user: {user}\r\n" if user else ""
            raw = (
                f"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\n{extra}\r\n"
            ).encode()
            status, headers, body = http_request(proxy_port, raw)
            return status, headers.get("x-backend", body.decode(errors="replace")[:300])

        deadline = time.monotonic() + 10
        while via_proxy(None)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the reviews sidecars may still be warming
        for _ in range(5):
            assert via_proxy("jason") == (200, "reviews-v2")
            assert via_proxy(None) == (200, "reviews-v1")
            assert via_proxy("someone") == (200, "reviews-v1")
        # The backend saw the request as the app sent it, path and all.
        assert backends["reviews-v2"].requests[-1].target == "/reviews/0"
        status, headers, _ = http_request(
            gw.ports[8080], b"GET /productpage HTTP/1.1\r\nhost: bookinfo.example\r\n\r\n"
        )
        assert (status, headers.get("x-backend")) == (200, "productpage-v1")
        status, _, _ = http_request(
            gw.ports[8080], b"GET /other HTTP/1.1\r\nhost: bookinfo.example\r\n\r\n"
        )
        assert status == 404
