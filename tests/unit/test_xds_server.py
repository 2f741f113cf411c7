"""The ADS server against a grpc.aio client in the same process: SotW and delta protocol rules
(versions, nonces, ACK/NACK, stale nonces, subscriptions, removals, resume), several
clients, dropped streams, and a large push."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from pilotfish.mesh.xds_server import ThreadedXdsServer, XdsServer
from pilotfish.xds.resource_types import CLUSTER, ENDPOINT

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

CDS = CLUSTER.type_url
EDS = ENDPOINT.type_url
NODE = base_pb2.Node(id="sidecar~10.0.0.1~a.default~default.svc.cluster.local", cluster="a")


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = timeout_s
    return c


def cla(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = msg.endpoints.add()
    for port in ports:
        addr = locality.lb_endpoints.add().endpoint.address.socket_address
        addr.address, addr.port_value = "127.0.0.1", port
    return msg


def names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for any_msg in resp.resources:
        msg = (
            cluster_pb2.Cluster()
            if any_msg.type_url == CDS
            else endpoint_pb2.ClusterLoadAssignment()
        )
        assert any_msg.Unpack(msg)
        out.append(msg.name if any_msg.type_url == CDS else msg.cluster_name)
    return out


def nack(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=3, message=message)


class Client:
    """One ADS stream (SotW or delta) from a grpc.aio client."""

    def __init__(self, address: str, *, delta: bool = False, service: str = "ads") -> None:
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", -1)]
        )
        if service == "cds":
            cds = cds_pb2_grpc.ClusterDiscoveryServiceStub(self.channel)
            self.call = cds.DeltaClusters() if delta else cds.StreamClusters()
        else:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
            self.call = (
                stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
            )

        # Reads go through a queue: cancelling a pending call.read() cancels the whole call.
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                resp = await self.call.read()
                if resp is grpc.aio.EOF:
                    return
                self.responses.put_nowait(resp)
        except grpc.aio.AioRpcError as err:
            self.responses.put_nowait(err)
        except asyncio.CancelledError:
            pass

    async def send(self, req: Any) -> None:
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> Any:
        item = await asyncio.wait_for(self.responses.get(), timeout)
        if isinstance(item, Exception):
            raise item
        return item

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert no response arrives within ``wait`` seconds."""
        await asyncio.sleep(wait)
        assert self.responses.empty(), f"unexpected response: {self.responses.get_nowait()}"

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        await self.channel.close()


def run(body: Callable[[XdsServer], Awaitable[None]], address: str = "127.0.0.1:0") -> None:
    async def main() -> None:
        server = XdsServer()
        server.address = await server.start(address)
        try:
            await body(server)
        finally:
            await server.stop(None)

    asyncio.run(main())


def sotw(
    type_url: str,
    *resource_names: str,
    version: str = "",
    nonce: str = "",
    error: status_pb2.Status | None = None,
    node: bool = False,
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        version_info=version,
        response_nonce=nonce,
        resource_names=list(resource_names),
    )
    if error is not None:
        req.error_detail.CopyFrom(error)
    if node:
        req.node.CopyFrom(NODE)
    return req


# --- SotW -----------------------------------------------------------------------------------


def test_sotw_versions_nonces_and_ack() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a"), cluster("b")])
        client = Client(server.address)
        await client.send(sotw(CDS, node=True))
        r1 = await client.recv()
        assert (r1.version_info, r1.type_url, sorted(names(r1))) == ("1", CDS, ["a", "b"])
        assert r1.nonce
        await client.send(sotw(CDS, version="1", nonce=r1.nonce))
        await client.nothing()  # an ACK is not answered
        await server.wait_for(lambda s: len(s.acks) == 1, 2)
        ack = server.acks[0]
        assert (ack.node_id, ack.type_url, ack.version_info, ack.nonce) == (
            NODE.id,
            CDS,
            "1",
            r1.nonce,
        )
        assert not ack.is_nack and not ack.stale and not ack.delta
        assert ack.resource_names == ("a", "b")
        # A change pushes the whole set with a new version and a fresh nonce.
        assert server.set_resources(CDS, [cluster("a")]) == "2"
        r2 = await client.recv()
        assert (r2.version_info, names(r2)) == ("2", ["a"])
        assert r2.nonce != r1.nonce
        # An explicit version is used as given.
        assert server.update(CDS, [cluster("c")], version="v-c") == "v-c"
        r3 = await client.recv()
        assert (r3.version_info, names(r3)) == ("v-c", ["a", "c"])
        # The node is kept from the first request (later ones omit it).
        (info,) = server.connected()
        assert (info.node_id, info.cluster, info.delta, info.subscribed) == (
            NODE.id,
            "a",
            False,
            {CDS: frozenset({"*"})},
        )
        await client.close()

    run(body)


def test_sotw_wildcard_type_set_empty_still_answers() -> None:
    async def body(server: XdsServer) -> None:
        client = Client(server.address)
        await client.send(sotw(CDS, node=True))
        await client.nothing()  # nothing ever set: the client keeps waiting
        server.set_resources(CDS, [])
        r = await client.recv()
        assert (r.version_info, list(r.resources)) == ("1", [])
        await client.close()

    run(body)


def test_sotw_nack_recorded_and_not_resent() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a")])
        client = Client(server.address)
        await client.send(sotw(CDS, node=True))
        r1 = await client.recv()
        await client.send(sotw(CDS, version="1", nonce=r1.nonce))
        server.update(CDS, [cluster("a", timeout_s=5)])
        r2 = await client.recv()
        # NACK: the previous version, the new nonce, error_detail.
        await client.send(sotw(CDS, version="1", nonce=r2.nonce, error=nack("bad cluster a")))
        await client.nothing()
        await server.wait_for(lambda s: len(s.acks) == 2, 2)
        rec = server.acks[-1]
        assert rec.is_nack and rec.error_message == "bad cluster a"
        assert (rec.version_info, rec.nonce, rec.stale) == ("1", r2.nonce, False)
        # Only a change sends again.
        server.update(CDS, [cluster("a", timeout_s=2)])
        r3 = await client.recv()
        assert r3.version_info == "3"
        await client.close()

    run(body)


def test_sync_status_as_proxy_status_shows_it() -> None:
    """NOT SENT before a response, STALE until the client answers it (or while a push is
    queued), SYNCED after the ACK, NACKED after a rejection (istioctl proxy-status)."""

    async def body(server: XdsServer) -> None:
        client = Client(server.address)
        await client.send(sotw(CDS, node=True))
        await server.wait_for(lambda s: s.sync_status().get(NODE.id) == {CDS: "NOT SENT"}, 2)
        server.set_resources(CDS, [cluster("a")])
        assert server.sync_status()[NODE.id] == {CDS: "STALE"}  # queued, not even sent
        r1 = await client.recv()
        assert server.sync_status()[NODE.id] == {CDS: "STALE"}
        await client.send(sotw(CDS, version=r1.version_info, nonce=r1.nonce))
        await server.wait_for(lambda s: s.sync_status()[NODE.id] == {CDS: "SYNCED"}, 2)
        server.update(CDS, [cluster("b")])
        assert server.sync_status()[NODE.id] == {CDS: "STALE"}
        r2 = await client.recv()
        await client.send(sotw(CDS, version="1", nonce=r2.nonce, error=nack("bad")))
        await server.wait_for(lambda s: s.sync_status()[NODE.id] == {CDS: "NACKED"}, 2)
        await client.close()
        await server.wait_for(lambda s: NODE.id not in s.sync_status(), 2)

    run(body)


def test_sotw_stale_nonce_is_ignored() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(EDS, [cla("x", 1), cla("y", 2)])
        client = Client(server.address)
        await client.send(sotw(EDS, "x", node=True))
        r1 = await client.recv()
        assert names(r1) == ["x"]
        server.update(EDS, [cla("x", 3)])
        r2 = await client.recv()
        # The client answers r1 late and asks for y: stale, ignored (no response).
        await client.send(sotw(EDS, "x", "y", version="1", nonce=r1.nonce))
        await client.nothing()
        await server.wait_for(lambda s: len(s.acks) == 1, 2)
        assert server.acks[0].stale
        (info,) = server.connected()
        assert info.subscribed[EDS] == frozenset({"x"})
        # The same request with the latest nonce counts.
        await client.send(sotw(EDS, "x", "y", version="2", nonce=r2.nonce))
        r3 = await client.recv()
        assert (r3.version_info, names(r3)) == ("2", ["x", "y"])
        assert r3.nonce != r2.nonce
        await client.close()

    run(body)


def test_sotw_named_subscription_changes() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(EDS, [cla("x", 1), cla("y", 2)])
        client = Client(server.address)
        await client.send(sotw(EDS, "x", "missing", node=True))
        r1 = await client.recv()
        assert names(r1) == ["x"]  # only what exists
        await client.send(sotw(EDS, "x", "missing", version="1", nonce=r1.nonce))
        await client.nothing()
        # A change to a resource nobody asked for is not pushed to this stream.
        server.update(EDS, [cla("y", 5)])
        await client.nothing()
        # The set grows: a response for the new set, same version, new nonce.
        await client.send(sotw(EDS, "x", "y", version="1", nonce=r1.nonce))
        r2 = await client.recv()
        assert (r2.version_info, names(r2)) == ("2", ["x", "y"])
        # The missing name appears: pushed.
        await client.send(sotw(EDS, "x", "y", "missing", version="2", nonce=r2.nonce))
        r3 = await client.recv()
        assert names(r3) == ["x", "y"]
        server.update(EDS, [cla("missing", 7)])
        r4 = await client.recv()
        assert names(r4) == ["missing", "x", "y"]
        await client.close()

    run(body)


def test_two_clients_and_drop_streams() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a")])
        one, two = Client(server.address), Client(server.address, delta=True)
        await one.send(sotw(CDS, node=True))
        await two.send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, node=base_pb2.Node(id="two"))
        )
        assert names(await one.recv()) == ["a"]
        assert [r.name for r in (await two.recv()).resources] == ["a"]
        assert sorted(i.node_id for i in server.connected()) == sorted([NODE.id, "two"])
        server.update(CDS, [cluster("b")])
        assert names(await one.recv()) == ["a", "b"]
        assert [r.name for r in (await two.recv()).resources] == ["b"]
        server.drop_streams()
        for client in (one, two):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.recv()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await server.wait_for(lambda s: not s.connected(), 2)
        for client in (one, two):
            await client.close()

    run(body)


# --- delta ----------------------------------------------------------------------------------


def delta_req(
    type_url: str,
    subscribe: tuple[str, ...] = (),
    unsubscribe: tuple[str, ...] = (),
    nonce: str = "",
    error: status_pb2.Status | None = None,
    initial: dict[str, str] | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    req.node.CopyFrom(NODE)
    if error is not None:
        req.error_detail.CopyFrom(error)
    return req


def delta_names(resp: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in resp.resources]


def test_delta_wildcard_updates_and_removals() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a"), cluster("b")])
        client = Client(server.address, delta=True)
        await client.send(delta_req(CDS))  # empty first request: legacy wildcard
        r1 = await client.recv()
        assert (delta_names(r1), r1.system_version_info, list(r1.removed_resources)) == (
            ["a", "b"],
            "1",
            [],
        )
        versions = {r.name: r.version for r in r1.resources}
        assert all(versions.values())
        unpacked = cluster_pb2.Cluster()
        assert r1.resources[0].resource.Unpack(unpacked) and unpacked.name == "a"
        await client.send(delta_req(CDS, nonce=r1.nonce))
        await client.nothing()
        # Only the changed resource is sent; a removal is announced.
        server.set_resources(CDS, [cluster("a"), cluster("b", timeout_s=9), cluster("c")])
        r2 = await client.recv()
        assert delta_names(r2) == ["b", "c"] and not r2.removed_resources
        assert {r.name: r.version for r in r2.resources}["b"] != versions["b"]
        server.update(CDS, remove=["a"])
        r3 = await client.recv()
        assert (delta_names(r3), list(r3.removed_resources)) == ([], ["a"])
        # A NACK is recorded and nothing is resent.
        await client.send(delta_req(CDS, nonce=r3.nonce, error=nack("no")))
        await client.nothing()
        await server.wait_for(lambda s: any(a.is_nack for a in s.acks), 2)
        rec = server.acks[-1]
        assert (rec.delta, rec.nonce, rec.error_message, rec.version_info) == (
            True,
            r3.nonce,
            "no",
            "3",
        )
        # Unsubscribing from the wildcard stops the pushes.
        await client.send(delta_req(CDS, unsubscribe=("*",)))
        await server.wait_for(lambda s: s.connected()[0].subscribed[CDS] == frozenset(), 2)
        server.update(CDS, [cluster("d")])
        await client.nothing()
        await client.close()

    run(body)


def test_delta_named_subscribe_unsubscribe() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(EDS, [cla("x", 1), cla("y", 2)])
        client = Client(server.address, delta=True)
        await client.send(delta_req(EDS, subscribe=("x",)))
        r1 = await client.recv()
        assert delta_names(r1) == ["x"]
        # Subscribing to a name that does not exist: announced as removed.
        await client.send(delta_req(EDS, subscribe=("nope", "y"), nonce=r1.nonce))
        r2 = await client.recv()
        assert (delta_names(r2), list(r2.removed_resources)) == (["y"], ["nope"])
        # Changes to unsubscribed names are not pushed.
        await client.send(delta_req(EDS, unsubscribe=("x",), nonce=r2.nonce))
        await server.wait_for(lambda s: "x" not in s.connected()[0].subscribed[EDS], 2)
        server.update(EDS, [cla("x", 9)])
        await client.nothing()
        (info,) = server.connected()
        assert info.subscribed[EDS] == frozenset({"y", "nope"}) and info.delta
        # The missing one appears; a subscribed one goes away.
        server.update(EDS, [cla("nope", 4)], remove=["y"])
        r3 = await client.recv()
        assert (delta_names(r3), list(r3.removed_resources)) == (["nope"], ["y"])
        await client.close()

    run(body)


@pytest.mark.parametrize("delta", [False, True])
def test_eds_follows_a_cds_push_for_the_changed_clusters(delta: bool) -> None:
    """Envoy warms an updated EDS cluster until endpoints arrive for it (and holds the CDS
    ACK until then), without asking again for a name it has: after a CDS push the server
    sends the changed clusters' endpoints even though they did not change (go-control-plane
    issue 245; istiod does the same)."""

    def req(type_url: str, *names: str, nonce: str = "") -> Any:
        if delta:
            return delta_req(type_url, subscribe=names, nonce=nonce)
        return sotw(type_url, *names, nonce=nonce, node=True)

    def sent(resp: Any) -> list[str]:
        return delta_names(resp) if delta else names(resp)

    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a"), cluster("b")])
        server.set_resources(EDS, [cla("a", 1), cla("b", 2)])
        client = Client(server.address, delta=delta)
        await client.send(req(CDS) if not delta else delta_req(CDS, subscribe=("*",)))
        r1 = await client.recv()
        await client.send(req(EDS, "a", "b"))
        r2 = await client.recv()
        await client.send(req(CDS, nonce=r1.nonce) if not delta else delta_req(CDS, nonce=r1.nonce))
        await client.send(
            req(EDS, "a", "b", nonce=r2.nonce) if not delta else delta_req(EDS, nonce=r2.nonce)
        )
        await client.nothing()
        server.set_resources(CDS, [cluster("a", timeout_s=7), cluster("b")])  # only a changed
        r3 = await client.recv()
        assert r3.type_url == CDS and "a" in sent(r3)
        r4 = await client.recv()
        assert r4.type_url == EDS
        assert sent(r4) == (["a"] if delta else ["a", "b"])
        await client.close()

    run(body)


def test_delta_resume_with_initial_resource_versions() -> None:
    async def body(server: XdsServer) -> None:
        server.set_resources(CDS, [cluster("a"), cluster("b")])
        first = Client(server.address, delta=True)
        await first.send(delta_req(CDS))
        r1 = await first.recv()
        have = {r.name: r.version for r in r1.resources}
        await first.close()
        # While the client is away: b changes, c appears, a stays.
        server.set_resources(CDS, [cluster("a"), cluster("b", timeout_s=3), cluster("c")])
        again = Client(server.address, delta=True)
        await again.send(delta_req(CDS, initial={**have, "gone": "v0"}))
        r2 = await again.recv()
        assert delta_names(r2) == ["b", "c"]
        assert list(r2.removed_resources) == ["gone"]
        await again.close()

    run(body)


# --- extras ---------------------------------------------------------------------------------


def test_per_type_service_and_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "XDS"

    async def body(server: XdsServer) -> None:
        assert server.address == f"unix:{sock}"
        server.set_resources(CDS, [cluster("a")])
        client = Client(server.address, service="cds")
        await client.send(sotw("", node=True))  # the type is implied by the service
        r = await client.recv()
        assert (r.type_url, names(r)) == (CDS, ["a"])
        await client.close()

    run(body, f"unix:{sock}")


def test_threaded_server_send_raw_and_nack() -> None:
    with ThreadedXdsServer() as server:
        assert server.address.startswith("127.0.0.1:")
        server.set_resources(CDS, [cluster("a")])
        received: list[Any] = []

        async def client_side() -> None:
            client = Client(server.address)
            await client.send(sotw(CDS, node=True))
            r1 = await client.recv()
            await client.send(sotw(CDS, version="1", nonce=r1.nonce))
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: server.wait_for(lambda s: len(s.acks) == 1, 5)
            )
            raw = discovery_pb2.DiscoveryResponse(version_info="bogus")
            raw.resources.add(type_url=CDS, value=b"\xff\xff")
            count = await asyncio.get_running_loop().run_in_executor(
                None, lambda: server.send_raw(CDS, raw)
            )
            assert count == 1
            r2 = await client.recv()
            received.append(r2)
            await client.send(sotw(CDS, version="1", nonce=r2.nonce, error=nack("cannot parse")))
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: server.wait_for(lambda s: len(s.acks) == 2, 5)
            )
            await client.close()

        asyncio.run(client_side())
        (r2,) = received
        assert r2.version_info == "bogus" and r2.nonce and r2.type_url == CDS
        rec = server.acks[-1]
        assert rec.is_nack and not rec.stale and rec.error_message == "cannot parse"
        assert sorted(server.resources(CDS)) == ["a"]


def test_large_push_1000_clusters_1000_endpoints() -> None:
    async def body(server: XdsServer) -> None:
        clusters = [cluster(f"c{i}") for i in range(1000)]
        ports = list(range(20000, 21000))
        start = time.perf_counter()
        server.set_resources(CDS, clusters)
        server.set_resources(EDS, [cla(f"c{i}", *ports) for i in range(1000)])
        stored = time.perf_counter()
        sotw_client = Client(server.address)
        delta_client = Client(server.address, delta=True)
        await sotw_client.send(sotw(EDS, *(f"c{i}" for i in range(1000)), node=True))
        await delta_client.send(delta_req(EDS, subscribe=tuple(f"c{i}" for i in range(1000))))
        r_sotw = await sotw_client.recv(60)
        r_delta = await delta_client.recv(60)
        done = time.perf_counter()
        assert len(r_sotw.resources) == 1000 and len(r_delta.resources) == 1000
        size = r_sotw.ByteSize()
        # One endpoint changes: SotW resends all, delta one.
        server.update(EDS, [cla("c7", *ports[:-1])])
        again = time.perf_counter()
        assert len((await sotw_client.recv(60)).resources) == 1000
        assert delta_names(await delta_client.recv(60)) == ["c7"]
        print(
            f"\n1000 CLAs x 1000 endpoints ({size / 1e6:.1f} MB): store {stored - start:.2f} s, "
            f"first push to 2 streams {done - stored:.2f} s, "
            f"one-CLA change {time.perf_counter() - again:.2f} s"
        )
        start = time.perf_counter()
        server.set_resources(CDS, clusters)
        print(f"1000 clusters stored in {time.perf_counter() - start:.3f} s")
        for client in (sotw_client, delta_client):
            await client.close()

    run(body)


def test_load_resources_from_yaml(tmp_path: Path) -> None:
    from pilotfish.mesh.xds_server import load_resources

    path = tmp_path / "resources.yaml"
    path.write_text(
        """
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  type: EDS
  connect_timeout: 1s
  eds_cluster_config: {eds_config: {ads: {}}}
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: web
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]
"""
    )
    loaded = load_resources(path)
    (c,) = loaded[CDS]
    assert isinstance(c, cluster_pb2.Cluster) and c.name == "web"
    (e,) = loaded[EDS]
    assert isinstance(e, endpoint_pb2.ClusterLoadAssignment)
    assert e.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 8080
    assert loaded[ENDPOINT.type_url] and all(k.startswith("type.googleapis.com/") for k in loaded)
