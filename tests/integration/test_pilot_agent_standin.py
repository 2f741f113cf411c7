"""pilot-agent's contract (issue 5 item 3), through the stand-in of tests/support/pilot_agent.py:
every bootstrap Istio renders (its goldens) starts with pilot-agent's command line and reaches
ready by pilot-agent's own checks; ``/drain_listeners?inboundonly&graceful`` then SIGKILL
under steady load loses no request sent before the drain; ``/quitquitquit`` exits 0."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.pilot_agent import GOLDEN_DIR, PilotAgent, SdsStub
from tests.support.proxies import ENVOY_BIN, PILOTFISH_BIN, free_port, get
from tests.support.xds import cla, eds_cluster, http_listener, parse, route_config

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


GOLDENS = sorted(GOLDEN_DIR.glob("*_golden.json"))
BINARIES = {"pilotfish": PILOTFISH_BIN, "envoy": ENVOY_BIN}
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
        inbound.MergeFrom(parse(rt.LISTENER, {"traffic_direction": "INBOUND"}))
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


# --- 2. drain under load ----------------------------------------------------------------------


@dataclass
class Outcome:
    sent_at: float  # monotonic, once the request's bytes were written
    ok: bool
    error: str = ""
    closed: bool = False  # the response said connection: close


@dataclass
class Client:
    """Keep-alive requests to ``port`` in a loop until stopped; reconnects after a close."""

    port: int
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        seq = 0
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            seq += 1
            sent_at = None
            try:
                conn.request(
                    "GET", f"/req/{seq}", headers={"host": "echo:9080", "x-echo-delay-ms": "30"}
                )
                sent_at = time.monotonic()
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and f"/req/{seq}".encode() in body
                self.outcomes.append(
                    Outcome(sent_at, ok, "" if ok else f"{resp.status}", resp.will_close)
                )
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                if sent_at is not None:
                    self.outcomes.append(Outcome(sent_at, False, repr(err)))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()


@pytest.mark.parametrize("kind", ["pilotfish", "envoy"])
def test_drain_inbound_under_load_then_kill_loses_no_request_sent_before(
    backend: EchoBackend, kind: str
) -> None:
    """Four keep-alive clients load an INBOUND listener (echo backend, 30 ms per request);
    the stand-in POSTs the inbound drain, checks an outbound listener, then SIGKILLs the
    proxy 1.1 s later. Every request written before the drain POST got its complete
    response; requests in flight at the kill may be lost. Envoy runs the same as oracle."""
    inbound_port, outbound_port = free_port(), free_port()
    with (
        PilotAgent(GOLDEN_DIR / "default_golden.json", binary=BINARIES[kind]) as agent,
        ThreadedXdsServer(f"unix:{agent.xds_path}") as xds,
        SdsStub(agent.sds_path),
    ):
        serve_mesh(xds, backend.port, outbound_port, inbound_port)
        agent.start()
        agent.wait_ready()
        clients = [Client(inbound_port) for _ in range(4)]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            drain_started = time.monotonic()
            assert agent.drain() == (200, "OK\n")
            # Outbound listeners keep serving during the inbound drain.
            for _ in range(3):
                status, _, _ = get(outbound_port, "/out", host="echo:9080")
                assert status == 200
                time.sleep(0.2)
            time.sleep(0.5)
            # pilot-agent kills the proxy once its termination drain duration is over.
            assert agent.kill() == -signal.SIGKILL
            killed_at = time.monotonic()
        finally:
            for client in clients:
                client.stop.set()
            for thread in threads:
                thread.join(15)
    outcomes = [o for c in clients for o in c.outcomes]
    before = [o for o in outcomes if o.sent_at < drain_started]
    assert len(before) >= 20, f"too little load before the drain ({len(before)})"
    after = [o for o in outcomes if o.sent_at >= drain_started]
    lost = [o for o in before if not o.ok]
    assert not lost, f"{len(lost)} of {len(before)} requests sent before the drain lost: {lost[:5]}"
    # The inbound listener kept accepting through the drain (Envoy stops it only after
    # --drain-time-s), and every client's connection was drain-closed (connection: close).
    assert any(o.ok for o in after if o.sent_at < killed_at)
    assert sum(o.closed for o in after) >= len(clients)


@pytest.mark.parametrize("kind", ["pilotfish", "envoy"])
def test_inbound_drain_closes_each_connection_after_its_next_response(
    backend: EchoBackend, kind: str
) -> None:
    """--drain-strategy immediate: once the inbound drain starts, every response on an inbound
    listener carries ``connection: close`` (keep-alive connections opened before the drain,
    idle when it starts, and connections opened during it); an idle connection is not closed
    at once, since its client may be sending a request on it right now. Outbound listeners
    keep their keep-alive connections."""
    inbound_port, outbound_port = free_port(), free_port()
    with (
        PilotAgent(GOLDEN_DIR / "default_golden.json", binary=BINARIES[kind]) as agent,
        ThreadedXdsServer(f"unix:{agent.xds_path}") as xds,
        SdsStub(agent.sds_path),
    ):
        serve_mesh(xds, backend.port, outbound_port, inbound_port)
        agent.start()
        agent.wait_ready()
        idle_in = http.client.HTTPConnection("127.0.0.1", inbound_port, timeout=5)
        idle_out = http.client.HTTPConnection("127.0.0.1", outbound_port, timeout=5)
        for conn in (idle_in, idle_out):
            conn.request("GET", "/before", headers={"host": "echo:9080"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and not resp.will_close
        assert agent.drain() == (200, "OK\n")
        time.sleep(0.3)
        idle_in.request("GET", "/after", headers={"host": "echo:9080"})
        resp = idle_in.getresponse()
        assert resp.status == 200 and b"/after" in resp.read()
        assert resp.will_close
        fresh = http.client.HTTPConnection("127.0.0.1", inbound_port, timeout=5)
        fresh.request("GET", "/fresh", headers={"host": "echo:9080"})
        resp = fresh.getresponse()
        assert resp.status == 200 and b"/fresh" in resp.read()
        assert resp.will_close
        idle_out.request("GET", "/out", headers={"host": "echo:9080"})
        resp = idle_out.getresponse()
        assert resp.status == 200 and b"/out" in resp.read()
        assert not resp.will_close
        for conn in (idle_in, idle_out, fresh):
            conn.close()
        assert agent.kill() == -signal.SIGKILL


# --- 3. /quitquitquit -------------------------------------------------------------------------


def test_quitquitquit_exits_zero_promptly(backend: EchoBackend) -> None:
    with (
        PilotAgent(GOLDEN_DIR / "default_golden.json") as agent,
        ThreadedXdsServer(f"unix:{agent.xds_path}") as xds,
        SdsStub(agent.sds_path),
    ):
        serve_mesh(xds, backend.port, free_port())
        agent.start()
        agent.wait_ready()
        asked = time.monotonic()
        assert agent.quit() == (200, "OK\n")
        assert agent.wait_exit(5) == 0
        assert time.monotonic() - asked < 3.0
