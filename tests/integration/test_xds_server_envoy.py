"""Real Envoy as the client of pilotfish's ADS server (SotW and delta, over TCP and over a Unix
socket as Istio's ``./etc/istio/proxy/XDS``): Envoy must go LIVE on the served config, route
traffic by it, ACK every type, follow changes (new route and cluster, new endpoints, a removed
cluster) and NACK invalid resources while it keeps serving the last good config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ENVOY_BIN, ProxyProcess, bootstrap, free_port, get, static_cluster
from tests.support.waiting import wait_for
from tests.support.xds_resources import (
    eds_cluster,
    http_listener,
    load_assignment,
    route_config,
)

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds.resource_types import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.slow,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
NODE_ID = "sidecar~10.0.0.1~app.default~default.svc.cluster.local"
ISTIO_XDS_PATH = "./etc/istio/proxy/XDS"  # relative to Envoy's working directory, as Istio


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name).start() for name in "ABC"}
    try:
        yield started
    finally:
        for backend in started.values():
            backend.stop()


def envoy_bootstrap(api_type: str, xds_address: str | None, pipe: str | None) -> dict[str, Any]:
    if pipe is not None:
        xds = static_cluster(
            "xds-grpc", endpoints=[{"endpoint": {"address": {"pipe": {"path": pipe}}}}]
        )
    else:
        assert xds_address is not None
        xds = static_cluster("xds-grpc", int(xds_address.rsplit(":", 1)[1]))
    xds["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    config = bootstrap([], [xds])
    config["node"] = {"id": NODE_ID, "cluster": "app.default"}
    source = {"ads": {}, "resource_api_version": "V3"}
    config["dynamic_resources"] = {
        "ads_config": {
            "api_type": api_type,
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            "set_node_on_first_message_only": True,
        },
        "lds_config": source,
        "cds_config": source,
    }
    return config


def served_by(port: int, backends: dict[str, EchoBackend]) -> str:
    """Send one request through Envoy; the name of the backend that got it, or the status when
    it is not 200 (e.g. 503 for a moment while a new cluster warms)."""
    before = {name: len(b.requests) for name, b in backends.items()}
    status, _, _ = get(port, "/")
    if status != 200:
        return str(status)
    hit = [name for name, b in backends.items() if len(b.requests) > before[name]]
    assert len(hit) == 1, hit
    return hit[0]


def acked(server: ThreadedXdsServer, type_url: str, version: str) -> bool:
    return any(
        a.type_url == type_url
        and a.version_info == version
        and not a.is_nack
        and not a.stale
        and a.node_id == NODE_ID
        for a in server.acks
    )


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_follows_the_ads_server(
    api_type: str, transport: str, backends: dict[str, EchoBackend], tmp_path: Path
) -> None:
    delta = api_type == "DELTA_GRPC"
    workdir = tmp_path / "envoy"  # ProxyProcess runs Envoy there
    if transport == "unix":
        sock = workdir / ISTIO_XDS_PATH
        sock.parent.mkdir(parents=True)
        address = f"unix:{sock}"
    else:
        address = "127.0.0.1:0"
    port = free_port()
    with ThreadedXdsServer(address) as server:
        server.set_resources(CLUSTER.type_url, [eds_cluster("cluster-a")])
        server.set_resources(ENDPOINT.type_url, [load_assignment("cluster-a", backends["A"].port)])
        server.set_resources(LISTENER.type_url, [http_listener("ingress", port, "routes")])
        server.set_resources(ROUTE.type_url, [route_config("routes", "cluster-a")])
        config = envoy_bootstrap(
            api_type,
            server.address if transport == "tcp" else None,
            ISTIO_XDS_PATH if transport == "unix" else None,
        )
        with ProxyProcess("envoy", config, tmp_path) as envoy:
            # LIVE means Envoy got and applied CDS, EDS, LDS and RDS.
            assert served_by(port, backends) == "A"
            types = [t.type_url for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)]
            server.wait_for(lambda s: all(acked(s, t, "1") for t in types), 10)
            (info,) = server.connected()
            assert (info.node_id, info.cluster, info.delta) == (NODE_ID, "app.default", delta)
            assert info.user_agent_name == "envoy"
            assert info.subscribed[CLUSTER.type_url] == frozenset({"*"})
            assert info.subscribed[LISTENER.type_url] == frozenset({"*"})
            assert info.subscribed[ENDPOINT.type_url] == frozenset({"cluster-a"})
            assert info.subscribed[ROUTE.type_url] == frozenset({"routes"})

            # A new cluster and a route to it.
            server.update(CLUSTER.type_url, [eds_cluster("cluster-b")])
            server.update(ENDPOINT.type_url, [load_assignment("cluster-b", backends["B"].port)])
            server.set_resources(ROUTE.type_url, [route_config("routes", "cluster-b")])
            wait_for(lambda: served_by(port, backends) == "B", "traffic to B", 10)

            # New endpoints for cluster-b.
            server.update(ENDPOINT.type_url, [load_assignment("cluster-b", backends["C"].port)])
            wait_for(lambda: served_by(port, backends) == "C", "traffic to C", 10)

            # cluster-a goes away.
            server.update(CLUSTER.type_url, remove=["cluster-a"])
            wait_for(
                lambda: "cluster-a::" not in envoy.call("/clusters").text, "cluster-a removed", 10
            )
            assert "cluster-b::" in envoy.call("/clusters").text
            assert served_by(port, backends) == "C"

            # Invalid resources: NACKed with a reason; the last good config keeps serving.
            bad_route = server.set_resources(
                ROUTE.type_url, [route_config("routes", "cluster-b", regex="(unclosed")]
            )
            server.wait_for(
                lambda s: any(a.type_url == ROUTE.type_url and a.is_nack for a in s.acks), 10
            )
            nack = next(a for a in server.acks if a.type_url == ROUTE.type_url and a.is_nack)
            assert "missing )" in nack.error_message, nack.error_message  # RE2 says why
            if not delta:  # SotW NACK: the last accepted version, the rejected nonce
                assert nack.version_info == str(int(bad_route) - 1)
            assert served_by(port, backends) == "C"

            server.update(CLUSTER.type_url, [eds_cluster("cluster-bad", connect_timeout="-1s")])
            server.wait_for(
                lambda s: any(a.type_url == CLUSTER.type_url and a.is_nack for a in s.acks), 10
            )
            nack = next(a for a in server.acks if a.type_url == CLUSTER.type_url and a.is_nack)
            assert "positive duration" in nack.error_message, nack.error_message
            assert served_by(port, backends) == "C"

            # A dropped stream: Envoy reconnects, keeps serving, and takes new config.
            server.update(CLUSTER.type_url, remove=["cluster-bad"])
            server.drop_streams()
            server.wait_for(
                lambda s: [ROUTE.type_url in i.subscribed for i in s.connected()] == [True], 15
            )
            assert served_by(port, backends) == "C"
            server.update(CLUSTER.type_url, [eds_cluster("cluster-a")])
            good = server.set_resources(ROUTE.type_url, [route_config("routes", "cluster-a")])
            server.wait_for(lambda s: acked(s, ROUTE.type_url, good), 10)
            wait_for(lambda: served_by(port, backends) == "A", "traffic back to A", 10)
