"""pilot-agent's contract (issue 5 item 3), through the stand-in of tests/support/pilot_agent.py:
every bootstrap Istio renders (its goldens) starts with pilot-agent's command line and reaches
ready by pilot-agent's own checks; ``/drain_listeners?inboundonly&graceful`` then SIGKILL
under steady load loses no request sent before the drain; ``/quitquitquit`` exits 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.pilot_agent import GOLDEN_DIR, PilotAgent, SdsStub
from tests.support.proxies import free_port, get
from tests.support.xds import cla, eds_cluster, http_listener, parse, route_config

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

pytestmark = pytest.mark.skipif(not GOLDEN_DIR.exists(), reason="needs ../shared/refdata")

GOLDENS = sorted(GOLDEN_DIR.glob("*_golden.json")) if GOLDEN_DIR.exists() else []
CLUSTER = "outbound|9080||echo"
INBOUND_CLUSTER = "inbound|9080||"


def serve_mesh(
    server: ThreadedXdsServer, backend_port: int, outbound_port: int, inbound_port: int = 0
) -> None:
    """An outbound HTTP listener (and, with ``inbound_port``, one marked
    ``traffic_direction: INBOUND``) in front of the echo backend."""
    clusters = [eds_cluster(CLUSTER)]
    assignments = [cla(CLUSTER, [backend_port])]
    listeners = [http_listener(f"127.0.0.1_{outbound_port}", outbound_port, "9080")]
    route = {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}
    routes = [route_config("9080", [route], domains=["*"])]
    if inbound_port:
        clusters.append(eds_cluster(INBOUND_CLUSTER))
        assignments.append(cla(INBOUND_CLUSTER, [backend_port]))
        inbound = http_listener("virtualInbound", inbound_port, "inbound|9080||")
        inbound.traffic_direction = parse(
            rt.LISTENER, {"name": "x", "traffic_direction": "INBOUND"}
        ).traffic_direction
        listeners.append(inbound)
        inbound_route = {"match": {"prefix": "/"}, "route": {"cluster": INBOUND_CLUSTER}}
        routes.append(route_config("inbound|9080||", [inbound_route], domains=["*"]))
    server.set_resources(rt.CLUSTER.type_url, clusters)
    server.set_resources(rt.ENDPOINT.type_url, assignments)
    server.set_resources(rt.LISTENER.type_url, listeners)
    server.set_resources(rt.ROUTE.type_url, routes)


@pytest.fixture
def backend() -> Iterator[EchoBackend]:
    with EchoBackend("echo") as server:
        yield server


# --- 1. every golden bootstrap reaches ready --------------------------------------------------


@pytest.mark.parametrize(
    "golden", GOLDENS, ids=[p.name.removesuffix("_golden.json") for p in GOLDENS]
)
def test_golden_bootstrap_reaches_ready(golden: Path, backend: EchoBackend) -> None:
    port = free_port()
    with (
        PilotAgent(golden) as agent,
        ThreadedXdsServer(f"unix:{agent.xds_path}") as xds,
        SdsStub(agent.sds_path),
    ):
        serve_mesh(xds, backend.port, port)
        agent.start()
        agent.wait_ready()
        # Served over the ADS stream on the bootstrap's pipe, with the golden's node.
        info = xds.connected()[0]
        assert info.node_id == agent.bootstrap["node"]["id"]
        status, _, body = get(port, "/", host="echo:9080")
        assert status == 200 and b'"backend": "echo"' in body
        # Istio's Prometheus listener serves admin's stats (prometheus_stats cluster).
        status, _, body = get(agent.static_port("0.0.0.0_15090"), "/stats/prometheus")
        assert status == 200 and b"envoy_server_state" in body
        status, _ = agent.quit()
        assert status == 200
        assert agent.wait_exit(10) == 0
