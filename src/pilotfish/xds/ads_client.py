"""The xDS client: one gRPC stream to a management server, state-of-the-world (``GRPC``) or
incremental (``DELTA_GRPC``), as Envoy's xDS protocol page specifies. The aggregated service
(ADS) by default; any other discovery service speaks the same protocol (``XdsService``: SDS's
``StreamSecrets``/``DeltaSecrets``), so one client serves them all.

It knows nothing of listeners or clusters: a ``Watcher`` (the xDS manager) says which types and
names it wants (``subscribe``) and gets every response decoded (``apply``); the error text it
returns is sent back as a NACK, None as an ACK. The client keeps, per type, the last accepted
version and nonce (SotW) or each resource's version (delta, to resume after a reconnect), and
reconnects with jittered exponential backoff; the watcher's config keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from pilotfish.stats.store import Store
from pilotfish.xds import resource_types as rt
from pilotfish.xds.resource_types import ResourceType

log = logging.getLogger("pilotfish.xds")

# Envoy's defaults for the ADS stream's retry: jittered exponential backoff, 500 ms to 30 s.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
GRPC_INTERNAL = 13  # the status code Envoy puts in a NACK's error_detail


@dataclass(frozen=True, slots=True)
class XdsService:
    """A discovery service's gRPC name and its SotW and delta methods."""

    name: str
    sotw_method: str
    delta_method: str

    def path(self, delta: bool) -> str:
        return f"/{self.name}/{self.delta_method if delta else self.sotw_method}"


ADS = XdsService(
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "StreamAggregatedResources",
    "DeltaAggregatedResources",
)
SDS = XdsService("envoy.service.secret.v3.SecretDiscoveryService", "StreamSecrets", "DeltaSecrets")


@dataclass(slots=True)
class Update:
    """One response, decoded. ``complete``: ``resources`` is the whole set of the type (a
    state-of-the-world response for LDS/CDS), so what is missing was removed."""

    version_info: str
    resources: dict[str, tuple[str, Message]]  # name -> (resource version, resource)
    removed: set[str]
    complete: bool


class Watcher(Protocol):
    def apply(self, rtype: ResourceType, update: Update) -> str | None:
        """Apply an update; return None to ACK it or the reason to NACK it."""

    def connection_changed(self, connected: bool) -> None: ...


@dataclass
class _TypeState:
    rtype: ResourceType
    names: set[str] = field(default_factory=set)  # named subscription (RDS, EDS, SDS)
    wildcard: bool = False
    version_info: str = ""  # SotW: the last version ACKed
    nonce: str = ""  # the last response's nonce on the current stream
    resource_versions: dict[str, str] = field(default_factory=dict)  # delta: what we hold
    sent_names: set[str] = field(default_factory=set)  # delta: what the server was told
    started: bool = False  # a request went out on the current stream


class AdsClient:
    def __init__(
        self,
        target: str,
        node: Message,
        watcher: Watcher,
        stats: Store,
        *,
        delta: bool = False,
        node_on_first_message_only: bool = False,
        service: XdsService = ADS,
        stats_prefix: str = "",
    ) -> None:
        self.target = target
        self.service = service
        self.node = node
        self.watcher = watcher
        self.delta = delta
        self.node_on_first_message_only = node_on_first_message_only
        self.types: dict[str, _TypeState] = {}
        self.order: list[str] = []  # subscription order: requests go out in it on reconnect
        self.connected = False
        self._queue: asyncio.Queue[Message | None] | None = None
        self._node_sent = False
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stopped = False
        self._attempt = 0
        # Envoy's control_plane.* stats, under the subscription's scope for a non-ADS stream.
        scope = stats.scope(stats_prefix + "control_plane.")
        self.g_connected = scope.gauge("connected_state", accumulate=False)
        self.c_rate_limit = scope.counter("rate_limit_enforced")
        self.g_pending = scope.gauge("pending_requests", accumulate=False)
        self.t_identifier = scope.text_readout("identifier")
        self.g_connected.set(0)

    # -- what the watcher asks for ---------------------------------------------------------------

    def subscribe(self, rtype: ResourceType, names: set[str] | None) -> None:
        """Want ``names`` of a type (None: all of it, a wildcard subscription). A changed
        interest is sent at once when the stream is up."""
        state = self.types.get(rtype.type_url)
        if state is None:
            state = _TypeState(rtype)
            self.types[rtype.type_url] = state
            self.order.append(rtype.type_url)
        wildcard = names is None
        new_names = set(names or ())
        if state.started and state.wildcard == wildcard and state.names == new_names:
            return
        state.wildcard = wildcard
        state.names = new_names
        if self.delta:
            # Forget what is no longer wanted, so a resume does not claim it.
            if not wildcard:
                for name in list(state.resource_versions):
                    if name not in new_names:
                        del state.resource_versions[name]
        if self.connected or self._queue is not None:
            self._send_subscription(state)

    def has_version(self, rtype: ResourceType) -> str:
        state = self.types.get(rtype.type_url)
        return state.version_info if state is not None else ""

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._channel is not None:
            await self._channel.close(grace=None)

    async def _run(self) -> None:
        while not self._stopped:
            got_response = False
            try:
                got_response = await self._one_stream()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.warning(
                    "%s stream to %s closed: %s %s",
                    self.service.name.rsplit(".", 1)[-1],
                    self.target,
                    e.code().name,
                    e.details(),
                )
            except Exception:
                log.exception("xDS stream to %s failed", self.target)
            self._set_connected(False)
            if self._stopped:
                return
            self._attempt = 0 if got_response else self._attempt + 1
            ceiling = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(self._attempt, 10)))
            await asyncio.sleep(random.uniform(0, ceiling))

    async def _one_stream(self) -> bool:
        """One stream, until it breaks. Returns whether any response arrived on it."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, options=[("grpc.max_receive_message_length", 1 << 30)]
            )
        self._queue = asyncio.Queue()
        self._node_sent = False
        for state in self.types.values():
            state.started = False
            state.nonce = ""
            state.sent_names = set()
        for url in self.order:
            self._send_subscription(self.types[url])
        request_class = (
            discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        )
        response_class = (
            discovery_pb2.DeltaDiscoveryResponse if self.delta else discovery_pb2.DiscoveryResponse
        )
        method = self._channel.stream_stream(
            self.service.path(self.delta),
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        call = method(self._requests(self._queue))
        got = False
        try:
            async for response in call:
                if not got:
                    got = True
                    self._set_connected(True)
                if self.delta:
                    self._on_delta(response)
                else:
                    self._on_sotw(response)
        finally:
            self._queue.put_nowait(None)
            self._queue = None
            call.cancel()
        return got

    async def _requests(self, queue: asyncio.Queue[Message | None]) -> AsyncIterator[Message]:
        while True:
            request = await queue.get()
            if request is None:
                return
            self.g_pending.set(queue.qsize())
            yield request

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.g_connected.set(1 if connected else 0)
            if connected:
                log.info("connected to the management server at %s", self.target)
            self.watcher.connection_changed(connected)

    def _send(self, request: Any) -> None:
        if self._queue is None:
            return
        if not self._node_sent or not self.node_on_first_message_only:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        self._queue.put_nowait(request)

    # -- state of the world ---------------------------------------------------------------------

    def _sotw_request(self, state: _TypeState, error: str | None = None) -> Any:
        request = discovery_pb2.DiscoveryRequest(
            type_url=state.rtype.type_url,
            version_info=state.version_info,
            response_nonce=state.nonce,
        )
        if not state.wildcard:
            request.resource_names.extend(sorted(state.names))
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=GRPC_INTERNAL, message=error))
        return request

    def _on_sotw(self, response: Any) -> None:
        state = self.types.get(response.type_url)
        if state is None:
            log.warning("ignoring a response of type %s nobody asked for", response.type_url)
            return
        self._note_identifier(response)
        state.nonce = response.nonce
        decoded: dict[str, tuple[str, Message]] = {}
        error = None
        try:
            for any_msg in response.resources:
                msg = _decode(state.rtype, any_msg)
                name = rt.resource_name(msg)
                decoded[name] = (response.version_info, msg)
        except ValueError as e:
            error = str(e)
        if error is None:
            # RDS/EDS responses carry what was asked for; absence is not removal (xDS spec).
            update = Update(response.version_info, decoded, set(), state.rtype.wildcard)
            error = self._apply(state.rtype, update)
        if error is None:
            state.version_info = response.version_info
        else:
            log.warning(
                "%s update (version %s) rejected: %s",
                state.rtype.short.upper(),
                response.version_info,
                error,
            )
        self._send(self._sotw_request(state, error))

    # -- delta ----------------------------------------------------------------------------------

    def _send_subscription(self, state: _TypeState) -> None:
        if not self.delta:
            state.started = True
            self._send(self._sotw_request(state))
            return
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=state.rtype.type_url)
        if not state.started:
            state.started = True
            # A new stream: say what we hold, so the server sends only what changed.
            for name, version in state.resource_versions.items():
                request.initial_resource_versions[name] = version
            if not state.wildcard:
                request.resource_names_subscribe.extend(sorted(state.names))
                state.sent_names = set(state.names)
            self._send(request)
            return
        if state.wildcard:
            return
        add = state.names - state.sent_names
        drop = state.sent_names - state.names
        if not add and not drop:
            return
        request.resource_names_subscribe.extend(sorted(add))
        request.resource_names_unsubscribe.extend(sorted(drop))
        state.sent_names = set(state.names)
        self._send(request)

    def _on_delta(self, response: Any) -> None:
        state = self.types.get(response.type_url)
        if state is None:
            log.warning("ignoring a response of type %s nobody asked for", response.type_url)
            return
        self._note_identifier(response)
        decoded: dict[str, tuple[str, Message]] = {}
        error = None
        try:
            for resource in response.resources:
                if not resource.HasField("resource"):
                    raise ValueError(f"resource '{resource.name}' has no body")
                msg = _decode(state.rtype, resource.resource)
                decoded[resource.name or rt.resource_name(msg)] = (resource.version, msg)
        except ValueError as e:
            error = str(e)
        removed = set(response.removed_resources)
        if error is None:
            update = Update(response.system_version_info, decoded, removed, False)
            error = self._apply(state.rtype, update)
        if error is None:
            for name, (version, _) in decoded.items():
                state.resource_versions[name] = version
            for name in removed:
                state.resource_versions.pop(name, None)
            state.version_info = response.system_version_info
        else:
            log.warning("%s delta update rejected: %s", state.rtype.short.upper(), error)
        ack = discovery_pb2.DeltaDiscoveryRequest(
            type_url=state.rtype.type_url, response_nonce=response.nonce
        )
        if error is not None:
            ack.error_detail.CopyFrom(status_pb2.Status(code=GRPC_INTERNAL, message=error))
        self._send(ack)

    def _apply(self, rtype: ResourceType, update: Update) -> str | None:
        """The watcher's verdict; a bug while applying is NACKed (and logged), so that one
        resource can't take the stream down in a reconnect loop."""
        try:
            return self.watcher.apply(rtype, update)
        except Exception as e:
            log.exception("applying a %s update failed", rtype.short.upper())
            return f"internal error applying the update: {type(e).__name__}: {e}"

    def _note_identifier(self, response: Any) -> None:
        if response.HasField("control_plane"):
            self.t_identifier.value = response.control_plane.identifier


def _decode(rtype: ResourceType, any_msg: Any) -> Message:
    if any_msg.type_url != rtype.type_url:
        raise ValueError(
            f"type URL {any_msg.type_url} embedded in an individual Any does not match the "
            f"message-wide type URL {rtype.type_url} in DiscoveryResponse"
        )
    msg = rtype.message()
    try:
        msg.ParseFromString(any_msg.value)
    except DecodeError as e:
        raise ValueError(f"cannot decode a {rtype.name}: {e}") from None
    return msg


def grpc_target(address: tuple[str, int] | str) -> str:
    """A gRPC target for an upstream host's address, ``(ip, port)`` or a Unix socket path:
    ``host:port`` or ``unix:PATH`` (relative paths allowed, as Istio's
    ``./etc/istio/proxy/XDS``; ``@name`` is an abstract socket)."""
    if isinstance(address, tuple):
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if address.startswith("@"):
        return "unix-abstract:" + address[1:]
    return "unix:" + address
