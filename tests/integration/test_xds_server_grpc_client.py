"""grpcio's own xDS client (``xds:///myservice``, a client nobody here wrote) resolves its
backend through pilotfish's ADS server: LDS (HCM api_listener) -> RDS -> CDS -> EDS. The call
must reach the backend, the server must record grpc's ACKs, and a resource grpc rejects must
come back as a NACK with grpc's reason while calls keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.support.xds_resources import api_listener, eds_cluster, load_assignment, route_config

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds.resource_types import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).resolve().parents[1] / "support" / "grpc_xds_client.py"
NODE_ID = "grpc-test-client"


class Backend:
    """A gRPC server with one method, ``/test.Echo/Ping``, answering ``pong from NAME``."""

    def __init__(self, name: str) -> None:
        self.calls = 0

        def ping(request: bytes, context: Any) -> bytes:
            self.calls += 1
            return f"pong from {name}".encode()

        handler = grpc.unary_unary_rpc_method_handler(ping)  # bytes in, bytes out
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Echo", {"Ping": handler})]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait(5)


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in ("one", "two")}
    try:
        yield started
    finally:
        for backend in started.values():
            backend.stop()


class XdsClientProcess:
    """The grpc_xds_client.py process; ``call()`` makes one call and returns its line."""

    def __init__(self, server_address: str, tmp_path: Path) -> None:
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": server_address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": NODE_ID, "cluster": "grpc-tests", "locality": {"zone": "z"}},
        }
        path = tmp_path / "grpc_xds_bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path), "GRPC_VERBOSITY": "ERROR"}
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT), "xds:///myservice"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.readline() == "READY"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def call(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("call\n")
        self.proc.stdin.flush()
        return self.readline()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_grpc_xds_client_resolves_through_the_ads_server(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    with ThreadedXdsServer() as server:
        server.set_resources(LISTENER.type_url, [api_listener("myservice", "myservice-routes")])
        server.set_resources(ROUTE.type_url, [route_config("myservice-routes", "backend-one")])
        server.set_resources(CLUSTER.type_url, [eds_cluster("backend-one")])
        server.set_resources(
            ENDPOINT.type_url, [load_assignment("backend-one", backends["one"].port)]
        )
        client = XdsClientProcess(server.address, tmp_path)
        try:
            assert client.call() == "OK pong from one"
            assert backends["one"].calls == 1
            # grpc asked for exactly the names of its chain, and ACKed each type.
            (info,) = server.connected()
            assert info.node_id == NODE_ID and not info.delta
            assert info.subscribed == {
                LISTENER.type_url: frozenset({"myservice"}),
                ROUTE.type_url: frozenset({"myservice-routes"}),
                CLUSTER.type_url: frozenset({"backend-one"}),
                ENDPOINT.type_url: frozenset({"backend-one"}),
            }
            types = [t.type_url for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)]
            server.wait_for(
                lambda s: all(
                    any(
                        a.type_url == url and a.version_info == "1" and not a.is_nack
                        for a in s.acks
                    )
                    for url in types
                ),
                10,
            )

            # A second cluster and a route to it: grpc follows.
            server.update(CLUSTER.type_url, [eds_cluster("backend-two")])
            server.update(ENDPOINT.type_url, [load_assignment("backend-two", backends["two"].port)])
            server.set_resources(ROUTE.type_url, [route_config("myservice-routes", "backend-two")])
            server.wait_for(lambda s: _calls_reach(client, "two"), 10)

            # A route grpc must reject (bad regex): NACK with grpc's reason; calls still work.
            server.set_resources(
                ROUTE.type_url, [route_config("myservice-routes", "backend-two", regex="(bad")]
            )
            server.wait_for(
                lambda s: any(a.type_url == ROUTE.type_url and a.is_nack for a in s.acks), 10
            )
            nack = next(a for a in server.acks if a.type_url == ROUTE.type_url and a.is_nack)
            assert "regex" in nack.error_message.lower(), nack.error_message
            assert nack.version_info == "2"  # the last version grpc accepted
            assert client.call() == "OK pong from two"
        finally:
            client.stop()


def _calls_reach(client: XdsClientProcess, name: str) -> bool:
    return client.call() == f"OK pong from {name}"
