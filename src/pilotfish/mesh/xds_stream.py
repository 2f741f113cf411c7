"""One ADS stream as the xDS protocol has the server see it: SotW or delta.

A stream runs in one task that takes items from its inbox in order: the client's requests (read
by a helper task), change notices from the resource store, hand-made responses and a drop
order. Everything a stream knows (subscriptions, nonces, what the client has) is touched only
by that task, so there are no locks.

Protocol rules followed (Envoy's "xDS REST and gRPC protocol" page):

* SotW: every response carries the type's version and a fresh nonce. A request whose
  ``response_nonce`` is not the last one sent for its type on this stream is stale and is
  ignored (the client will answer the newer response). ACK = the version just sent; NACK =
  ``error_detail`` set: recorded, nothing is resent until the resources change.
* Wildcard: on LDS/CDS an empty ``resource_names`` on the first request means "everything"
  (legacy wildcard, kept while later requests stay empty); ``*`` asks for it explicitly.
* Delta: subscriptions change by difference, so no request is ignored; the nonce only pairs
  ACK/NACK with a response. The server remembers which version of each resource the client
  has (``initial_resource_versions`` on a resumed stream) and sends only what differs, with
  ``removed_resources`` for names the client has (or asked for) that do not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilotfish.mesh.resource_store import (
    Change,
    ResourceStore,
    encode_delta_response,
    encode_sotw_response,
    is_wildcard_type,
)
from pilotfish.xds.resource_types import CLUSTER, ENDPOINT

__all__ = ["AckRecord", "Stream", "StreamInfo"]

WILDCARD = "*"
CLUSTER_URL, ENDPOINT_URL = CLUSTER.type_url, ENDPOINT.type_url
# discovery_pb2.DiscoveryRequest | DeltaDiscoveryRequest, and the responses (the protos are
# untyped for mypy).
Request: TypeAlias = Any
Response: TypeAlias = Any


@dataclass(frozen=True, slots=True)
class AckRecord:
    """A client's answer to one response: ACK (error_detail None) or NACK."""

    node_id: str
    type_url: str
    version_info: str  # SotW: the version the client reports; delta: the response's version
    nonce: str
    error_detail: Any  # google.rpc.Status of a NACK; None for an ACK
    delta: bool
    time: float = field(default_factory=time.time)
    resource_names: tuple[str, ...] = ()  # the names the answered response carried
    stale: bool = False  # answers a response that a newer one had already replaced

    @property
    def is_nack(self) -> bool:
        return self.error_detail is not None

    @property
    def error_message(self) -> str:
        return "" if self.error_detail is None else str(self.error_detail.message)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What ``connected()`` tells about one open stream."""

    stream_id: int
    node_id: str
    cluster: str
    user_agent_name: str
    delta: bool
    peer: str
    subscribed: dict[str, frozenset[str]]  # type URL -> names; "*" stands for wildcard
    node: base_pb2.Node


@dataclass(slots=True)
class _TypeState:
    """One type URL on one stream."""

    wildcard: bool = False
    legacy_wildcard: bool = False  # wildcard by an empty first request
    names: set[str] = field(default_factory=set)
    last_nonce: str = ""
    acked_nonce: str = ""  # the last response the client accepted
    nacked_nonce: str = ""  # the last response the client rejected
    responded: bool = False
    sent: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # nonce -> ...
    # delta: name -> version the client has; None = the client was told it does not exist
    known: dict[str, str | None] = field(default_factory=dict)

    def subscribed(self) -> frozenset[str]:
        return frozenset(self.names | ({WILDCARD} if self.wildcard else set()))

    def remember(self, nonce: str, version: str, names: tuple[str, ...]) -> None:
        self.last_nonce = nonce
        self.responded = True
        self.sent[nonce] = (version, names)
        if len(self.sent) > 16:  # only recent nonces can still be answered
            del self.sent[next(iter(self.sent))]


class _Drop:
    pass


class _Dirty:
    pass


_DROP = _Drop()
_DIRTY = _Dirty()
_END = None


class Stream:
    """The server side of one SotW or delta stream."""

    def __init__(
        self,
        stream_id: int,
        store: ResourceStore,
        *,
        delta: bool,
        peer: str,
        record_ack: Callable[[AckRecord], None],
        type_url: str = "",  # set for the per-type services (CDS, EDS, ...): one type only
        store_for_node: Callable[[str], ResourceStore] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.store = store
        # The node's own resource set, if the server has one (known at the first request).
        self._store_for_node = store_for_node
        self.delta = delta
        self.peer = peer
        self.node = base_pb2.Node()
        self.fixed_type_url = type_url
        self._record_ack = record_ack
        self._types: dict[str, _TypeState] = {}
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._nonce = 0

    # -- from the server (same loop) -----------------------------------------------------------

    def info(self) -> StreamInfo:
        return StreamInfo(
            self.stream_id,
            self.node.id,
            self.node.cluster,
            self.node.user_agent_name,
            self.delta,
            self.peer,
            {t: s.subscribed() for t, s in self._types.items()},
            self.node,
        )

    def sync_states(self) -> dict[str, str]:
        """Each type's state as ``istioctl proxy-status`` shows it: ``SYNCED`` (the client
        ACKed the last response sent), ``STALE`` (an answer is awaited, or a push is queued),
        ``NACKED`` (it rejected the last one), ``NOT SENT`` (asked for, nothing sent yet)."""
        pending = bool(self._dirty) or not self._inbox.empty()
        out: dict[str, str] = {}
        for type_url, st in self._types.items():
            if pending or (st.responded and st.last_nonce not in (st.acked_nonce, st.nacked_nonce)):
                out[type_url] = "STALE"
            elif not st.responded:
                out[type_url] = "NOT SENT"
            elif st.acked_nonce == st.last_nonce:
                out[type_url] = "SYNCED"
            else:
                out[type_url] = "NACKED"
        return out

    def notify(self, change: Change) -> None:
        """The store changed: mark the type for a push if this stream cares."""
        st = self._types.get(change.type_url)
        if st is None:
            return
        relevant = (
            st.wildcard
            or not st.responded
            or not st.names.isdisjoint(change.changed)
            or not st.names.isdisjoint(change.removed)
        )
        if relevant and change.type_url not in self._dirty:
            if not self._dirty:
                self._inbox.put_nowait(_DIRTY)
            self._dirty.add(change.type_url)

    def send_raw(self, response: Response) -> None:
        self._inbox.put_nowait(response)

    def drop(self) -> None:
        self._inbox.put_nowait(_DROP)

    # -- the stream task -----------------------------------------------------------------------

    async def run(self, requests: AsyncIterator[Request], context: Any) -> None:
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while True:
                item = await self._inbox.get()
                if item is _END:
                    return
                if item is _DROP:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped by the server")
                    return
                for out in self._handle(item):
                    await context.write(out)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, requests: AsyncIterator[Request]) -> None:
        try:
            async for request in requests:
                self._inbox.put_nowait(request)
        finally:
            self._inbox.put_nowait(_END)

    def _handle(self, item: Any) -> list[bytes | Response]:
        if item is _DIRTY:
            dirty, self._dirty = self._dirty, set()
            if CLUSTER_URL in dirty and ENDPOINT_URL in self._types:
                # A changed EDS cluster warms until it gets its endpoints, and Envoy holds
                # the CDS ACK until every cluster has warmed, but a client does not ask again
                # for names it already has: EDS follows every CDS push, as in istiod's pushes,
                # with the changed clusters' endpoints even when they did not change (SotW
                # sends every name anyway; delta: see _delta_push).
                dirty.add(ENDPOINT_URL)
            return [r for t in sorted(dirty) for r in self._push(t, force=False)]
        if isinstance(item, discovery_pb2.DiscoveryRequest):
            return self._on_sotw_request(item)
        if isinstance(item, discovery_pb2.DeltaDiscoveryRequest):
            return self._on_delta_request(item)
        return [self._stamp_raw(item)]

    def _push(self, type_url: str, *, force: bool) -> list[bytes | Response]:
        if self.delta:
            return self._delta_push(type_url, force=force)
        return self._sotw_push(type_url)

    def _next_nonce(self) -> str:
        self._nonce += 1
        return f"{self.stream_id}-{self._nonce}"

    def _take_node(self, node: base_pb2.Node, has_node: bool) -> None:
        # Only the first request must carry the node (set_node_on_first_message_only).
        if has_node and not self.node.id:
            self.node = node
            if self._store_for_node is not None:
                self.store = self._store_for_node(node.id)

    def _ack(
        self, st: _TypeState, type_url: str, nonce: str, version: str, error: Any, has_error: bool
    ) -> bool:
        """Record an ACK/NACK for ``nonce``; False when the nonce is stale."""
        stale = nonce != st.last_nonce
        if not stale:
            if has_error:
                st.nacked_nonce = nonce
            else:
                st.acked_nonce = nonce
        sent_version, names = st.sent.get(nonce, ("", ()))
        self._record_ack(
            AckRecord(
                node_id=self.node.id,
                type_url=type_url,
                version_info=version if not self.delta else sent_version,
                nonce=nonce,
                error_detail=error if has_error else None,
                delta=self.delta,
                resource_names=names,
                stale=stale,
            )
        )
        return not stale

    def _stamp_raw(self, response: Response) -> Response:
        """A hand-made response: give it a nonce (so the client's answer is not stale)."""
        out = type(response)()
        out.CopyFrom(response)
        if not out.nonce:
            out.nonce = self._next_nonce()
        st = self._types.setdefault(out.type_url, _TypeState())
        version = (
            out.system_version_info
            if isinstance(out, discovery_pb2.DeltaDiscoveryResponse)
            else out.version_info
        )
        st.remember(out.nonce, version, tuple(_raw_names(out)))
        return out

    # -- SotW ----------------------------------------------------------------------------------

    def _on_sotw_request(self, req: discovery_pb2.DiscoveryRequest) -> list[bytes | Response]:
        self._take_node(req.node, req.HasField("node"))
        type_url = req.type_url or self.fixed_type_url
        st = self._types.get(type_url)
        first = st is None
        if st is None:
            st = self._types[type_url] = _TypeState()
        if req.response_nonce and st.last_nonce:
            fresh = self._ack(
                st,
                type_url,
                req.response_nonce,
                req.version_info,
                req.error_detail,
                req.HasField("error_detail"),
            )
            if not fresh:
                return []  # stale: the client will answer the newer response
        names = set(req.resource_names)
        before = (st.wildcard, set(st.names))
        if WILDCARD in names:
            st.wildcard, st.legacy_wildcard = True, False
            names.discard(WILDCARD)
        elif not names and (first or st.legacy_wildcard) and is_wildcard_type(type_url):
            st.wildcard = st.legacy_wildcard = True
        else:
            st.wildcard = st.legacy_wildcard = False
        st.names = names
        if first or (st.wildcard, st.names) != before:
            return self._sotw_push(type_url)
        return []

    def _sotw_push(self, type_url: str) -> list[bytes | Response]:
        st = self._types[type_url]
        ts = self.store.get(type_url)
        if ts is None:
            return []  # nothing was ever set for this type: the client keeps waiting
        if not st.wildcard and not st.names:
            return []  # a named type with nothing asked for (e.g. the last cluster went away)
        if st.wildcard:
            entries = [ts.entries[n] for n in sorted(ts.entries)]
        else:
            entries = [ts.entries[n] for n in sorted(st.names) if n in ts.entries]
        nonce = self._next_nonce()
        st.remember(nonce, ts.version, tuple(e.name for e in entries))
        return [encode_sotw_response(type_url, ts.version, nonce, (e.sotw_chunk for e in entries))]

    # -- delta ---------------------------------------------------------------------------------

    def _on_delta_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> list[bytes | Response]:
        self._take_node(req.node, req.HasField("node"))
        type_url = req.type_url or self.fixed_type_url
        st = self._types.get(type_url)
        first = st is None
        if st is None:
            st = self._types[type_url] = _TypeState()
            st.known = dict(req.initial_resource_versions)
        if req.response_nonce:
            self._ack(
                st, type_url, req.response_nonce, "", req.error_detail, req.HasField("error_detail")
            )
        subscribe = set(req.resource_names_subscribe)
        unsubscribe = set(req.resource_names_unsubscribe)
        if first and not subscribe and is_wildcard_type(type_url):
            st.wildcard = True
        if WILDCARD in subscribe:
            st.wildcard = True
            subscribe.discard(WILDCARD)
        if WILDCARD in unsubscribe:
            st.wildcard = False
            unsubscribe.discard(WILDCARD)
        for name in unsubscribe:
            st.names.discard(name)
            st.known.pop(name, None)  # the client forgets it: nothing to remove later
        st.names |= subscribe
        if not first:
            # A subscription after the first request asks for the resource again.
            for name in subscribe:
                st.known.pop(name, None)
        if first or subscribe:
            return self._delta_push(type_url, force=first)
        return []

    def _delta_push(self, type_url: str, *, force: bool) -> list[bytes | Response]:
        st = self._types[type_url]
        ts = self.store.get(type_url)
        if ts is None:
            return []
        entries = ts.entries
        wanted = entries.keys() if st.wildcard else st.names & entries.keys()
        send = [entries[n] for n in sorted(wanted) if st.known.get(n) != entries[n].version]
        removed = []
        for name, version in list(st.known.items()):
            if name in entries or version is None:
                continue
            if st.wildcard or name in st.names:
                removed.append(name)
            if name in st.names:
                st.known[name] = None
            else:
                del st.known[name]  # not asked for by name: forget it once removed
        for name in sorted(st.names - entries.keys() - st.known.keys()):
            removed.append(name)  # asked for, does not exist: say so
            st.known[name] = None
        if not send and not removed and not (force or not st.responded):
            return []
        for entry in send:
            st.known[entry.name] = entry.version
        if type_url == CLUSTER_URL and ENDPOINT_URL in self._types:
            eds = self._types[ENDPOINT_URL]
            for entry in send:  # resend these clusters' endpoints (they warm again)
                eds.known.pop(_eds_name(entry.message), None)
        nonce = self._next_nonce()
        st.remember(nonce, ts.version, tuple(e.name for e in send))
        return [
            encode_delta_response(
                type_url, ts.version, nonce, (e.delta_chunk for e in send), sorted(removed)
            )
        ]


def _eds_name(cluster: Any) -> str:
    """The ClusterLoadAssignment an EDS cluster asks for."""
    return str(cluster.eds_cluster_config.service_name or cluster.name)


def _raw_names(response: Response) -> list[str]:
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return []
