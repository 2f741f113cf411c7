"""pilotfish's ADS client against the in-package ADS server (pilotfish.mesh.xds_server), in
state-of-the-world (GRPC) and delta (DELTA_GRPC) mode: initialization order and server
state, ACK/NACK with reasons, add/update/remove of every resource type with traffic
following, RDS/EDS subscriptions following the config, warming, reconnects with the last
good config serving meanwhile, delta resume, garbage from the server, and a large push."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ProxyProcess, free_port, get
from tests.support.rss import rss_bytes
from tests.support.waiting import wait_for
from tests.support.xds import (
    ads_bootstrap,
    cla,
    eds_cluster,
    http_listener,
    route_config,
    tcp_listener,
)

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

MODES = ["sotw", "delta"]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name).start() for name in ("A", "B", "C")}
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[ThreadedXdsServer]:
    with ThreadedXdsServer() as s:
        yield s


def answered_by(port: int, path: str = "/", **headers: str) -> str:
    """Which echo backend answered (its name), or ``<status>`` for a local reply."""
    status, _, body = get(port, path, **headers)
    if status == 200 and body.startswith(b'{"backend"'):
        import json

        return str(json.loads(body)["backend"])
    return f"<{status}>"


def serve_basic(server: ThreadedXdsServer, backends: dict[str, EchoBackend], port: int) -> None:
    """Cluster ``a`` (EDS → backend A) and ``b`` (→ B), listener ``http`` on ``port`` with
    route config ``r`` sending everything to ``a``."""
    server.set_resources(rt.CLUSTER.type_url, [eds_cluster("a"), eds_cluster("b", "b-svc")])
    server.set_resources(
        rt.ENDPOINT.type_url, [cla("a", [backends["A"].port]), cla("b-svc", [backends["B"].port])]
    )
    server.set_resources(rt.LISTENER.type_url, [http_listener("http", port, "r")])
    server.set_resources(
        rt.ROUTE.type_url,
        [route_config("r", [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}])],
    )


def start_pilotfish(
    server: ThreadedXdsServer, tmp_path: Path, mode: str, **kwargs: Any
) -> ProxyProcess:
    boot = ads_bootstrap(server.address, delta=mode == "delta", **kwargs)
    return ProxyProcess("pilotfish", boot, tmp_path, log_level="info").start()


def has_acks(server: ThreadedXdsServer, type_url: str, *, nacks: bool = False) -> bool:
    return bool(acks(server, type_url, nacks=nacks))


def acks(server: ThreadedXdsServer, type_url: str, *, nacks: bool = False) -> list[Any]:
    return [
        a
        for a in list(server.acks)
        if a.type_url == type_url and (a.error_detail is not None) == nacks
    ]


def dynamic(proxy: ProxyProcess, resource: str) -> list[dict[str, Any]]:
    reply = proxy.call(f"/config_dump?resource={resource}")
    assert reply.status == 200, reply.text
    return list(reply.json().get("configs", []))


# --- initialization ---------------------------------------------------------------------------


def test_initial_config_then_live_and_traffic(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    port = free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        assert proxy.call("/ready").text.strip() == "LIVE"
        assert answered_by(port) == "A"
        for rtype in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.ROUTE):
            url = rtype.type_url
            wait_for(lambda u=url: has_acks(server, u), f"an ACK of {rtype.short}")  # type: ignore[misc]
            assert not acks(server, url, nacks=True)
        stats = proxy.stats()
        assert stats["control_plane.connected_state"] == 1
        assert stats["cluster_manager.cds.update_success"] >= 1
        assert stats["listener_manager.lds.update_success"] >= 1
        assert stats["http.http.rds.r.update_success"] >= 1
        assert stats["cluster_manager.warming_clusters"] == 0
        assert stats["listener_manager.total_listeners_warming"] == 0
        assert stats["server.state"] == 0
        # /config_dump shows the dynamic resources with their versions.
        clusters = {c["cluster"]["name"]: c for c in dynamic(proxy, "dynamic_active_clusters")}
        assert set(clusters) == {"a", "b"}
        assert all(c["version_info"] and c["last_updated"] for c in clusters.values())
        listeners = dynamic(proxy, "dynamic_listeners")
        assert [ls["name"] for ls in listeners] == ["http"]
        assert listeners[0]["active_state"]["version_info"]
        routes = dynamic(proxy, "dynamic_route_configs")
        assert [r["route_config"]["name"] for r in routes] == ["r"]
        eds = proxy.call("/config_dump?include_eds").json()["configs"]
        eds_dump = next(c for c in eds if c["@type"].endswith("EndpointsConfigDump"))
        names = {e["endpoint_config"]["cluster_name"] for e in eds_dump["dynamic_endpoint_configs"]}
        assert names == {"a", "b-svc"}
        # /clusters shows the EDS hosts.
        text = proxy.call("/clusters").text
        assert f"a::127.0.0.1:{backends['A'].port}::health_flags::healthy" in text
        assert f"b::127.0.0.1:{backends['B'].port}::weight::1" in text


def test_node_is_sent_once_with_envoys_fields(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    serve_basic(server, backends, free_port())
    with start_pilotfish(server, tmp_path, mode):
        wait_for(lambda: bool(server.connected()), "a connected stream")
        info = server.connected()[0]
        assert info.node_id == "sidecar~127.0.0.1~test.default~default.svc.cluster.local"
        assert info.cluster == "test.default"
        assert info.user_agent_name == "envoy"
        assert info.delta is (mode == "delta")


def test_server_stays_initializing_until_routes_arrive(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """A listener warms until its route config comes: the server is not LIVE before."""
    port = free_port()
    serve_basic(server, backends, port)
    server.set_resources(rt.ROUTE.type_url, [])
    boot = ads_bootstrap(server.address, delta=mode == "delta")
    with ProxyProcess("pilotfish", boot, tmp_path, wait_live=False) as proxy:
        wait_for(lambda: proxy._admin_written() and proxy.call("/ready").status == 503, "admin up")
        wait_for(
            lambda: proxy.stats().get("listener_manager.total_listeners_warming") == 1,
            "a warming listener",
        )
        assert proxy.stats()["server.state"] == 3  # INITIALIZING
        warming = dynamic(proxy, "dynamic_listeners")[0]
        assert "warming_state" in warming and "active_state" not in warming
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        server.set_resources(
            rt.ROUTE.type_url,
            [route_config("r", [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}])],
        )
        wait_for(lambda: proxy.call("/ready").text.strip() == "LIVE", "LIVE")
        assert answered_by(port) == "B"


def test_initial_fetch_timeout_goes_live_without_a_server(tmp_path: Path, mode: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    boot = ads_bootstrap(dead, delta=mode == "delta", initial_fetch_timeout="0.5s")
    with ProxyProcess("pilotfish", boot, tmp_path) as proxy:
        stats = proxy.stats()
        assert stats["cluster_manager.cds.init_fetch_timeout"] == 1
        assert stats["listener_manager.lds.init_fetch_timeout"] == 1
        assert stats["control_plane.connected_state"] == 0


# --- NACK ---------------------------------------------------------------------------------------


def test_invalid_route_is_nacked_with_reason_and_old_config_serves(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    port = free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        assert answered_by(port) == "A"
        bad = route_config(
            "r",
            [{"match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "b"}}],
        )
        server.set_resources(rt.ROUTE.type_url, [bad])
        wait_for(lambda: has_acks(server, rt.ROUTE.type_url, nacks=True), "a NACK of RDS")
        nack = acks(server, rt.ROUTE.type_url, nacks=True)[0]
        text = nack.error_message
        assert "route config 'r'" in text, text
        assert "safe_regex" in text, text
        assert answered_by(port) == "A"  # the last good route config keeps serving
        stats = proxy.stats()
        assert stats["http.http.rds.r.update_rejected"] == 1
        # A good version afterwards is accepted.
        server.set_resources(
            rt.ROUTE.type_url,
            [route_config("r", [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}])],
        )
        wait_for(lambda: answered_by(port) == "B", "the new route config")


def test_invalid_cluster_and_listener_nacked_others_applied(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """Envoy applies the valid resources of a response and NACKs naming the invalid ones;
    /config_dump shows the rejected version as error_state."""
    port, port2 = free_port(), free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        # Envoy too refuses a Maglev table whose size is not a prime.
        bad_cluster = eds_cluster("bad", lb_policy="MAGLEV", maglev_lb_config={"table_size": 65536})
        server.set_resources(
            rt.CLUSTER.type_url,
            [eds_cluster("a"), eds_cluster("b", "b-svc"), bad_cluster, eds_cluster("c")],
        )
        server.update(rt.ENDPOINT.type_url, [cla("c", [backends["C"].port])])
        wait_for(lambda: has_acks(server, rt.CLUSTER.type_url, nacks=True), "a NACK of CDS")
        nack = acks(server, rt.CLUSTER.type_url, nacks=True)[-1].error_message
        assert "cluster 'bad'" in nack and "maglev_lb_config" in nack, nack
        wait_for(lambda: "c::127.0.0.1" in proxy.call("/clusters").text, "cluster c applied")
        assert proxy.stats()["cluster_manager.cds.update_rejected"] >= 1
        dump = proxy.call("/config_dump?resource=dynamic_active_clusters").json()["configs"]
        failed = [c for c in dump if "error_state" in c]
        assert failed and failed[0]["error_state"]["failed_configuration"]["name"] == "bad"
        assert "maglev_lb_config" in failed[0]["error_state"]["details"]
        # A listener on a port that is already taken is NACKed too; the other one is applied.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            server.update(
                rt.LISTENER.type_url,
                [http_listener("busy", busy, "r"), http_listener("second", port2, "r")],
            )
            wait_for(lambda: has_acks(server, rt.LISTENER.type_url, nacks=True), "a NACK of LDS")
            nack = acks(server, rt.LISTENER.type_url, nacks=True)[-1].error_message
            assert "listener 'busy'" in nack and "in use" in nack, nack
        wait_for(lambda: answered_by(port2) == "A", "listener 'second' serving")


def test_garbage_from_the_server_is_nacked_and_nothing_changes(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    port = free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        wait_for(lambda: has_acks(server, rt.CLUSTER.type_url), "CDS ACK")
        junk = any_pb2.Any(type_url=rt.CLUSTER.type_url, value=b"\xff\xff\xff\xff garbage")
        if mode == "delta":
            delta_response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=rt.CLUSTER.type_url, nonce="junk-1"
            )
            res = delta_response.resources.add()
            res.name = "junk"
            res.version = "1"
            res.resource.CopyFrom(junk)
            server.send_raw(rt.CLUSTER.type_url, delta_response)
        else:
            response = discovery_pb2.DiscoveryResponse(
                type_url=rt.CLUSTER.type_url, version_info="junk", nonce="junk-1"
            )
            response.resources.append(junk)
            server.send_raw(rt.CLUSTER.type_url, response)
        wait_for(lambda: has_acks(server, rt.CLUSTER.type_url, nacks=True), "a NACK of the garbage")
        assert proxy.proc is not None and proxy.proc.poll() is None
        assert answered_by(port) == "A"
        assert "a::127.0.0.1" in proxy.call("/clusters").text


# --- add, update, remove ------------------------------------------------------------------------


def test_add_update_remove_every_type_traffic_follows(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    port, tcp_port = free_port(), free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        assert answered_by(port) == "A"
        # RDS update: route by header to b.
        server.set_resources(
            rt.ROUTE.type_url,
            [
                route_config(
                    "r",
                    [
                        {
                            "match": {
                                "prefix": "/",
                                "headers": [
                                    {"name": "end-user", "string_match": {"exact": "jason"}}
                                ],
                            },
                            "route": {"cluster": "b"},
                        },
                        {"match": {"prefix": "/"}, "route": {"cluster": "a"}},
                    ],
                )
            ],
        )
        wait_for(lambda: answered_by(port, end_user="jason") == "B", "RDS update")
        assert answered_by(port) == "A"
        # EDS update: cluster a now points at C.
        server.update(rt.ENDPOINT.type_url, [cla("a", [backends["C"].port])])
        wait_for(lambda: answered_by(port) == "C", "EDS update")
        # CDS add + LDS add: a TCP listener to a new cluster.
        server.update(rt.CLUSTER.type_url, [eds_cluster("t")])
        server.update(rt.ENDPOINT.type_url, [cla("t", [backends["B"].port])])
        server.update(rt.LISTENER.type_url, [tcp_listener("tcp", tcp_port, "t")])
        wait_for(lambda: _port_open(tcp_port), "the TCP listener")
        assert answered_by(tcp_port) == "B"
        # LDS remove: the port closes.
        server.update(rt.LISTENER.type_url, remove=["tcp"])
        wait_for(lambda: not _port_open(tcp_port), "the TCP listener removed")
        # CDS remove: routes to it answer 503 (no cluster) — Envoy's NC.
        server.update(rt.CLUSTER.type_url, remove=["b"])
        wait_for(lambda: "b::" not in proxy.call("/clusters").text, "cluster b removed")
        assert answered_by(port, end_user="jason") == "<503>"
        # Unsubscribed: EDS no longer asks for b-svc, RDS names follow the listeners.
        wait_for(
            lambda: (
                "b-svc" not in server.connected()[0].subscribed.get(rt.ENDPOINT.type_url, set())
            ),
            "EDS interest without b-svc",
        )
        stats = proxy.stats()
        assert stats["listener_manager.listener_added"] >= 2
        assert stats["listener_manager.listener_removed"] == 1
        assert stats["cluster_manager.cluster_removed"] == 1


def test_rds_subscription_follows_listeners(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    port, port2 = free_port(), free_port()
    serve_basic(server, backends, port)
    server.update(
        rt.ROUTE.type_url,
        [route_config("r2", [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}])],
    )
    with start_pilotfish(server, tmp_path, mode):
        wait_for(lambda: bool(server.connected()), "connected")

        def routes_wanted() -> set[str]:
            return set(server.connected()[0].subscribed.get(rt.ROUTE.type_url, set()))

        wait_for(lambda: routes_wanted() == {"r"}, "RDS interest {r}")
        server.update(rt.LISTENER.type_url, [http_listener("two", port2, "r2")])
        wait_for(lambda: routes_wanted() == {"r", "r2"}, "RDS interest {r, r2}")
        wait_for(lambda: _port_open(port2) and answered_by(port2) == "B", "listener two")
        server.update(rt.LISTENER.type_url, remove=["http"])
        wait_for(lambda: routes_wanted() == {"r2"}, "RDS interest {r2}")


def test_listener_update_drains_in_flight_requests(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """A request in flight on the old listener finishes; new connections get the new one."""
    port = free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        result: dict[str, Any] = {}

        def slow() -> None:
            result["slow"] = get(port, "/", x_echo_delay_ms="1000")[0]

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        # A changed listener (new stat prefix) with a route config to b.
        server.update(
            rt.ROUTE.type_url,
            [route_config("r-new", [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}])],
        )
        server.update(rt.LISTENER.type_url, [http_listener("http", port, "r-new", "http2")])
        wait_for(lambda: answered_by(port) == "B", "the updated listener")
        t.join(5)
        assert result.get("slow") == 200
        assert proxy.stats()["listener_manager.listener_modified"] == 1


def test_quick_successive_listener_updates_end_on_the_last(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """Updates of one listener that arrive before the previous one started accepting: the
    bound socket passes from one to the next, and the last one serves."""
    port = free_port()
    serve_basic(server, backends, port)
    server.update(
        rt.ROUTE.type_url,
        [route_config("r-b", [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}])],
    )
    with start_pilotfish(server, tmp_path, mode) as proxy:
        assert answered_by(port) == "A"
        for i, route in enumerate(["r-b", "r", "r-b"]):
            server.update(rt.LISTENER.type_url, [http_listener("http", port, route, f"p{i}")])
        wait_for(lambda: answered_by(port) == "B", "the last update serving")

        def active_prefix() -> str:
            state = dynamic(proxy, "dynamic_listeners")[0]["active_state"]
            hcm = state["listener"]["filter_chains"][0]["filters"][0]["typed_config"]
            return str(hcm["stat_prefix"])

        wait_for(lambda: active_prefix() == "p2", "the last version active")
        assert proxy.stats()["listener_manager.listener_modified"] >= 1
        for _ in range(10):
            assert answered_by(port) == "B"


def test_removed_listener_connections_closed_after_drain_time(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """--drain-time-s (1 s here) bounds the drain of a removed listener: an idle TCP
    connection through it is closed when the drain period ends."""
    tcp_port = free_port()
    serve_basic(server, backends, free_port())
    server.update(rt.LISTENER.type_url, [tcp_listener("tcp", tcp_port, "a")])
    with start_pilotfish(server, tmp_path, mode):
        wait_for(lambda: _port_open(tcp_port), "the TCP listener")
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            server.update(rt.LISTENER.type_url, remove=["tcp"])
            started = time.monotonic()
            conn.settimeout(10)
            assert conn.recv(65536) == b""  # closed by the proxy
            assert 0.5 < time.monotonic() - started < 5


def test_listener_not_bound_to_port(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """Istio's per-port listeners (``bind_to_port: false``) are accepted and listed, and
    nothing binds their address."""
    port = free_port()
    serve_basic(server, backends, free_port())
    unbound = http_listener("0.0.0.0_9080", port, "r")
    unbound.bind_to_port.value = False  # type: ignore[attr-defined]
    server.update(rt.LISTENER.type_url, [unbound])
    with start_pilotfish(server, tmp_path, mode) as proxy:
        names = [ls["name"] for ls in dynamic(proxy, "dynamic_listeners")]
        assert "0.0.0.0_9080" in names
        assert not _port_open(port)
        assert not has_acks(server, rt.LISTENER.type_url, nacks=True)


def test_each_node_gets_its_own_resource_set(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """Two sidecars on one server, each with its own listeners and routes (as the local
    mesh gives every workload its own); a push to one node leaves the other alone."""
    ports = {"one": free_port(), "two": free_port()}
    for node, backend in (("one", "A"), ("two", "B")):
        node_id = f"sidecar~127.0.0.1~{node}.default~default.svc.cluster.local"
        cluster = eds_cluster(node)
        server.set_resources(rt.CLUSTER.type_url, [cluster], node_id=node_id)
        server.set_resources(
            rt.ENDPOINT.type_url, [cla(node, [backends[backend].port])], node_id=node_id
        )
        server.set_resources(
            rt.LISTENER.type_url, [http_listener("http", ports[node], "r")], node_id=node_id
        )
        server.set_resources(
            rt.ROUTE.type_url,
            [route_config("r", [{"match": {"prefix": "/"}, "route": {"cluster": node}}])],
            node_id=node_id,
        )
    boots = {
        node: ads_bootstrap(
            server.address,
            delta=mode == "delta",
            node_id=f"sidecar~127.0.0.1~{node}.default~default.svc.cluster.local",
        )
        for node in ports
    }
    with (
        ProxyProcess("pilotfish", boots["one"], tmp_path / "one") as one,
        ProxyProcess("pilotfish", boots["two"], tmp_path / "two"),
    ):
        assert answered_by(ports["one"]) == "A"
        assert answered_by(ports["two"]) == "B"
        node_one = "sidecar~127.0.0.1~one.default~default.svc.cluster.local"
        server.update(rt.ENDPOINT.type_url, [cla("one", [backends["C"].port])], node_id=node_one)
        wait_for(lambda: answered_by(ports["one"]) == "C", "node one's new endpoints")
        assert answered_by(ports["two"]) == "B"
        assert [c["cluster"]["name"] for c in dynamic(one, "dynamic_active_clusters")] == ["one"]


# --- reconnects ---------------------------------------------------------------------------------


def test_server_restart_keeps_config_serving_and_client_reconnects(
    backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    port = free_port()
    address = f"127.0.0.1:{free_port()}"
    first = ThreadedXdsServer(address)
    first.start()
    serve_basic(first, backends, port)
    with start_pilotfish(first, tmp_path, mode) as proxy:
        assert answered_by(port) == "A"
        first.stop()
        wait_for(lambda: proxy.stats()["control_plane.connected_state"] == 0, "disconnected")
        for _ in range(20):  # the last good config serves while the server is away
            assert answered_by(port) == "A"
        with ThreadedXdsServer(address) as second:
            serve_basic(second, backends, port)
            second.update(rt.ENDPOINT.type_url, [cla("a", [backends["C"].port])])
            wait_for(lambda: answered_by(port) == "C", "config from the new server", timeout=40)
            assert proxy.stats()["control_plane.connected_state"] == 1


def test_dropped_stream_resumes_without_reapplying(
    server: ThreadedXdsServer, backends: dict[str, EchoBackend], tmp_path: Path, mode: str
) -> None:
    """After a reconnect, unchanged resources change nothing (delta: the client tells what it
    has, with initial_resource_versions, and the server sends nothing back)."""
    port = free_port()
    serve_basic(server, backends, port)
    with start_pilotfish(server, tmp_path, mode) as proxy:
        wait_for(lambda: has_acks(server, rt.ROUTE.type_url), "RDS ACK")
        before = proxy.stats()
        acked_before = len(server.acks)
        server.drop_streams()
        wait_for(
            lambda: (
                len(server.connected()) == 1 and proxy.stats()["control_plane.connected_state"] == 1
            ),
            "reconnected",
            timeout=40,
        )
        time.sleep(0.5)
        after = proxy.stats()
        for name in ("listener_manager.listener_modified", "cluster_manager.cluster_modified"):
            assert after[name] == before[name], name
        assert answered_by(port) == "A"
        if mode == "delta":  # nothing changed, so nothing was sent again
            resent = [a for a in list(server.acks)[acked_before:] if a.resource_names]
            assert not resent, resent


# --- scale --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["delta"])  # Istio's mode; SotW's is measured by hand
def test_large_push_1000_clusters_1000_endpoints_each(
    server: ThreadedXdsServer, tmp_path: Path, mode: str
) -> None:
    """1,000 EDS clusters of 1,000 endpoints each: time to apply and memory, printed (a
    minute of the suite: one mode only)."""
    n_clusters, n_endpoints = 1000, 1000
    server.set_resources(rt.LISTENER.type_url, [])
    server.set_resources(rt.CLUSTER.type_url, [])
    with start_pilotfish(server, tmp_path, mode) as proxy:
        assert proxy.proc is not None
        rss_before = rss_bytes(proxy.proc.pid) // 1024
        ports = [20000 + i for i in range(n_endpoints)]
        assignments = [cla(f"c{i}", ports) for i in range(n_clusters)]
        started = time.monotonic()
        server.set_resources(rt.ENDPOINT.type_url, assignments)
        server.set_resources(rt.CLUSTER.type_url, [eds_cluster(f"c{i}") for i in range(n_clusters)])

        def all_warm() -> bool:
            try:  # the admin answers late while the push is being applied
                stats = proxy.stats("cluster_manager.")
            except OSError:
                return False
            return stats.get("active_clusters") == n_clusters + 1 and not stats.get(
                "warming_clusters"
            )

        wait_for(all_warm, "1,000 clusters warm", timeout=300)
        elapsed = time.monotonic() - started
        rss_after = rss_bytes(proxy.proc.pid) // 1024
        print(
            f"\n[{mode}] {n_clusters} clusters x {n_endpoints} endpoints applied in {elapsed:.1f} s; "
            f"RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
        )
        for name in ("c0", "c500", "c999"):
            assert proxy.stats(f"cluster.{name}.")["membership_total"] == n_endpoints


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
