"""An ADS server (xDS v3 over gRPC, SotW and delta) serving a versioned resource store.

It is the base of the local mesh control plane and the driver of the proxy's xDS tests:
``XdsServer`` lives in an asyncio loop; ``ThreadedXdsServer`` runs one in its own thread for
synchronous code. Besides ADS it serves the per-type services (CDS, EDS, LDS, RDS, SDS), which
are the same protocol restricted to one type.

Responses are written as bytes put together from resources serialized once per version (see
resource_store.py), hence the gRPC method handlers are registered here with a serializer that
passes bytes through, rather than with the generated ``add_..._to_server``.

Run ``python -m pilotfish.mesh.xds_server --address 127.0.0.1:18000 --resources FILE.yaml`` to
serve the resources of a YAML/JSON file (a list of Envoy v3 resources, each with ``@type``);
SIGHUP reloads it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from pilotfish.mesh.resource_store import ResourceStore
from pilotfish.mesh.xds_stream import AckRecord, Request, Response, Stream, StreamInfo
from pilotfish.xds import protos
from pilotfish.xds.resource_types import BY_URL, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

__all__ = ["AckRecord", "StreamInfo", "ThreadedXdsServer", "XdsServer", "load_resources", "main"]

log = logging.getLogger("pilotfish.xds_server")

# The per-type services: (proto module, service, SotW method, delta method, type).
_PER_TYPE = (
    ("envoy.service.cluster.v3.cds_pb2", "ClusterDiscoveryService", "Clusters", CLUSTER),
    ("envoy.service.endpoint.v3.eds_pb2", "EndpointDiscoveryService", "Endpoints", ENDPOINT),
    ("envoy.service.listener.v3.lds_pb2", "ListenerDiscoveryService", "Listeners", LISTENER),
    ("envoy.service.route.v3.rds_pb2", "RouteDiscoveryService", "Routes", ROUTE),
    ("envoy.service.secret.v3.sds_pb2", "SecretDiscoveryService", "Secrets", SECRET),
)

# Large pushes (1,000 clusters of 1,000 endpoints) exceed gRPC's 4 MB default.
_GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _serialize(out: bytes | Message) -> bytes:
    return out if isinstance(out, bytes) else out.SerializeToString()


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS server; create, ``await start()``, set resources, ``await stop()``."""

    def __init__(self) -> None:
        self.store = ResourceStore()  # what every node gets, unless it has its own set
        self._node_stores: dict[str, ResourceStore] = {}
        self.acks: list[AckRecord] = []
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.address = ""
        self.store.subscribe(lambda change: self._on_change(change, self.store))

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, address: str = "127.0.0.1:0") -> str:
        """Listen on ``address`` (``127.0.0.1:0``, ``[::1]:0``, ``unix:/path``); returns the
        bound address (``127.0.0.1:PORT`` or ``unix:/path``)."""
        if self._server is not None:
            raise RuntimeError("already started")
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        server.add_generic_rpc_handlers(self._handlers())
        port = server.add_insecure_port(address)
        if address.startswith("unix:"):
            self.address = address
        else:
            self.address = f"{address.rsplit(':', 1)[0]}:{port}"
        await server.start()
        self._server = server
        return self.address

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening and close every stream (after ``grace`` seconds if given)."""
        server, self._server = self._server, None
        if server is not None:
            for stream in list(self._streams.values()):
                stream.drop()
            await server.stop(grace)

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        def method(delta: bool, type_url: str = "") -> grpc.RpcMethodHandler:
            request = (
                discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
            )

            async def handle(requests: AsyncIterator[Request], context: Any) -> None:
                await self._serve(requests, context, delta=delta, type_url=type_url)

            return grpc.stream_stream_rpc_method_handler(
                handle, request_deserializer=request.FromString, response_serializer=_serialize
            )

        ads = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
        handlers = [
            grpc.method_handlers_generic_handler(
                ads,
                {
                    "StreamAggregatedResources": method(False),
                    "DeltaAggregatedResources": method(True),
                },
            )
        ]
        for module, service, noun, rtype in _PER_TYPE:
            descriptor = importlib.import_module(module).DESCRIPTOR
            full_name = descriptor.services_by_name[service].full_name
            handlers.append(
                grpc.method_handlers_generic_handler(
                    full_name,
                    {
                        f"Stream{noun}": method(False, rtype.type_url),
                        f"Delta{noun}": method(True, rtype.type_url),
                    },
                )
            )
        return handlers

    async def _serve(
        self, requests: AsyncIterator[Request], context: Any, *, delta: bool, type_url: str
    ) -> None:
        stream = Stream(
            next(self._ids),
            self.store,
            delta=delta,
            peer=str(context.peer()),
            record_ack=self.acks.append,
            type_url=type_url,
            store_for_node=lambda node_id: self._node_stores.get(node_id, self.store),
        )
        self._streams[stream.stream_id] = stream
        try:
            await stream.run(requests, context)
        finally:
            del self._streams[stream.stream_id]

    # Named like the generated servicer's methods, for readers who look for them.
    async def StreamAggregatedResources(
        self, requests: AsyncIterator[Request], context: Any
    ) -> None:
        await self._serve(requests, context, delta=False, type_url="")

    async def DeltaAggregatedResources(
        self, requests: AsyncIterator[Request], context: Any
    ) -> None:
        await self._serve(requests, context, delta=True, type_url="")

    # -- resources -----------------------------------------------------------------------------

    def node_store(self, node_id: str) -> ResourceStore:
        """The resource set of one node (a sidecar gets its own listeners and clusters);
        created on first use. A node connects to it only if it exists when the node's first
        request arrives: create it, and fill it, before starting the proxy."""
        store = self._node_stores.get(node_id)
        if store is None:
            store = ResourceStore()
            store.subscribe(lambda change: self._on_change(change, store))
            self._node_stores[node_id] = store
        return store

    def _store(self, node_id: str | None) -> ResourceStore:
        return self.store if node_id is None else self.node_store(node_id)

    def set_resources(
        self,
        type_url: str,
        resources: Iterable[Message],
        *,
        version: str | None = None,
        node_id: str | None = None,
    ) -> str:
        """Replace every resource of ``type_url`` (of node ``node_id``'s own set if given);
        bumps the type's version and pushes."""
        return self._store(node_id).set_resources(type_url, resources, version)

    def update(
        self,
        type_url: str,
        upsert: Iterable[Message] = (),
        remove: Iterable[str] = (),
        *,
        version: str | None = None,
        node_id: str | None = None,
    ) -> str:
        """Add or replace ``upsert``, delete ``remove``; bumps the version and pushes."""
        return self._store(node_id).update(type_url, upsert, remove, version)

    def resources(self, type_url: str, *, node_id: str | None = None) -> dict[str, Message]:
        return self._store(node_id).resources(type_url)

    def _on_change(self, change: Any, store: ResourceStore) -> None:
        for stream in self._streams.values():
            if stream.store is store:
                stream.notify(change)

    # -- observations and test hooks -----------------------------------------------------------

    def connected(self) -> list[StreamInfo]:
        return [s.info() for s in self._streams.values()]

    def sync_status(self) -> dict[str, dict[str, str]]:
        """node id -> type URL -> ``SYNCED``/``STALE``/``NACKED``/``NOT SENT`` (as
        ``istioctl proxy-status``), over the node's open streams; a node without a stream is
        absent."""
        out: dict[str, dict[str, str]] = {}
        for stream in self._streams.values():
            if stream.node.id:
                out.setdefault(stream.node.id, {}).update(stream.sync_states())
        return out

    async def wait_for(self, predicate: Callable[[XdsServer], bool], timeout: float) -> None:
        """Poll ``predicate(self)`` until true; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"xDS server: condition not met in {timeout} s")
            await asyncio.sleep(0.01)

    def drop_streams(self) -> None:
        """Break every stream with UNAVAILABLE (clients reconnect)."""
        for stream in list(self._streams.values()):
            stream.drop()

    def send_raw(self, type_url: str, response: Response, node_id: str | None = None) -> int:
        """Push a hand-made response (even an invalid one) to the streams of its kind (SotW or
        delta) that have asked for ``type_url``, of node ``node_id`` if given. An empty nonce
        is filled in and becomes the type's latest. Returns how many streams got it."""
        delta = isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
        if not response.type_url:
            response = _copy(response)
            response.type_url = type_url
        count = 0
        for stream in list(self._streams.values()):
            info = stream.info()
            if info.delta != delta or type_url not in info.subscribed:
                continue
            if node_id is not None and info.node_id != node_id:
                continue
            stream.send_raw(response)
            count += 1
        return count


def _copy(response: Response) -> Response:
    out = type(response)()
    out.CopyFrom(response)
    return out


class ThreadedXdsServer:
    """An XdsServer in its own thread and event loop, with synchronous, thread-safe methods;
    a context manager."""

    def __init__(self, address: str = "127.0.0.1:0") -> None:
        self.requested_address = address
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: XdsServer | None = None

    def start(self) -> str:
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="xds-server", daemon=True)
        self._thread.start()
        self._server = self._call(self._make)
        self.address = self._run(self._server.start(self.requested_address))
        return self.address

    @staticmethod
    async def _make() -> XdsServer:
        return XdsServer()  # built inside the loop: grpc.aio binds to the running loop

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._run(self._server.stop(None), timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> ThreadedXdsServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- plumbing --------------------------------------------------------------------------------

    def _run(self, coro: Any, timeout: float | None = 60) -> Any:
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return await result
            return result

        return self._run(call())

    @property
    def server(self) -> XdsServer:
        assert self._server is not None, "not started"
        return self._server

    # -- the XdsServer API, run in the loop ------------------------------------------------------

    def set_resources(
        self,
        type_url: str,
        resources: Iterable[Message],
        *,
        version: str | None = None,
        node_id: str | None = None,
    ) -> str:
        resources = list(resources)
        return str(
            self._call(
                self.server.set_resources, type_url, resources, version=version, node_id=node_id
            )
        )

    def update(
        self,
        type_url: str,
        upsert: Iterable[Message] = (),
        remove: Iterable[str] = (),
        *,
        version: str | None = None,
        node_id: str | None = None,
    ) -> str:
        upsert, remove = list(upsert), list(remove)
        return str(
            self._call(
                self.server.update, type_url, upsert, remove, version=version, node_id=node_id
            )
        )

    def resources(self, type_url: str, *, node_id: str | None = None) -> dict[str, Message]:
        result: dict[str, Message] = self._call(self.server.resources, type_url, node_id=node_id)
        return result

    @property
    def acks(self) -> list[AckRecord]:
        """A snapshot of the ACK/NACK records."""
        return list(self.server.acks)

    def connected(self) -> list[StreamInfo]:
        result: list[StreamInfo] = self._call(self.server.connected)
        return result

    def wait_for(self, predicate: Callable[[ThreadedXdsServer], bool], timeout: float) -> None:
        """Poll ``predicate(self)`` from the calling thread; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"xDS server: condition not met in {timeout} s")
            time.sleep(0.01)

    def drop_streams(self) -> None:
        self._call(self.server.drop_streams)

    def send_raw(self, type_url: str, response: Response, node_id: str | None = None) -> int:
        return int(self._call(self.server.send_raw, type_url, response, node_id))


# --- serving a file -------------------------------------------------------------------------


def load_resources(path: Path) -> dict[str, list[Message]]:
    """Type URL -> resources, from a YAML or JSON file holding a list of Envoy v3 resources
    with ``@type`` (or a mapping with such a list under ``resources``)."""
    import yaml

    text = path.read_text()
    doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(doc, dict):
        doc = doc.get("resources", [])
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a list of resources")
    out: dict[str, list[Message]] = {url: [] for url in BY_URL}
    for item in doc:
        any_msg = json_format.ParseDict(protos.load_types_in(item), AnyProto())
        out.setdefault(any_msg.type_url, []).append(protos.unpack_any(any_msg))
    return out


async def _serve_file(address: str, path: Path) -> None:
    server = XdsServer()

    def load() -> None:
        try:
            for type_url, resources in load_resources(path).items():
                server.set_resources(type_url, resources)
        except Exception as exc:  # a bad edit must not kill the server: keep the last set
            log.error("cannot load %s: %s", path, exc)
            return
        counts = {
            BY_URL[t].short if t in BY_URL else t: len(server.resources(t))
            for t in server.store.types
        }
        log.warning("serving %s: %s", path, counts)

    load()
    bound = await server.start(address)
    print(f"ADS server on {bound}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, load)
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    await done.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pilotfish.mesh.xds_server")
    parser.add_argument("--address", default="127.0.0.1:18000")
    parser.add_argument("--resources", type=Path, required=True, help="YAML/JSON list of resources")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    asyncio.run(_serve_file(args.address, args.resources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
