"""io.istio.http.peer_metadata (Istio's HTTP metadata exchange): learn who the peer is and tell
the peer who this proxy is, for Istio's standard metrics.

Config (``io.istio.http.peer_metadata.Config``, an Istio type carried as a TypedStruct):
``downstream_discovery`` / ``upstream_discovery`` (in precedence order, first success wins)
read the request's / the response's ``x-envoy-peer-metadata`` + ``-id`` headers
(``istio_headers``) or ``baggage`` (``baggage``) into filter state ``downstream_peer`` /
``upstream_peer``, and remove the exchange headers; ``upstream_propagation`` adds this
workload's headers to the request, ``downstream_propagation`` to the response (only when the
request carried them, as istio-proxy does); ``istio_headers.skip_external_clusters`` and the
cluster metadata ``istio.disable_mx`` / ``istio.external`` stop propagation. ``baggage``
propagation (Istio's waypoint form) adds a ``baggage`` header with this workload's identity.

Not run (warned): ``workload_discovery`` (needs Istio's workload metadata xDS, which pilotfish
does not subscribe to) and ``upstream_filter_state`` (filled by upstream network metadata
exchange, not implemented): they never find a peer, so the next method is tried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.http import filter as hf
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from pilotfish.stats.workload import (
    WorkloadMetadata,
    from_baggage,
    from_header,
    from_node_metadata,
)

TYPE_NAME = "io.istio.http.peer_metadata.Config"
H_ID = b"x-envoy-peer-metadata-id"
H_METADATA = b"x-envoy-peer-metadata"
H_BAGGAGE = b"baggage"
DOWNSTREAM_PEER = "downstream_peer"
UPSTREAM_PEER = "upstream_peer"
_DISCOVERY = ("istio_headers", "baggage", "workload_discovery", "upstream_filter_state")
_PROPAGATION = ("istio_headers", "baggage")
_CACHE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class PeerMetadataConfig:
    downstream_discovery: tuple[str, ...] = ()
    upstream_discovery: tuple[str, ...] = ()
    downstream_propagation: tuple[str, ...] = ()
    upstream_propagation: tuple[str, ...] = ()
    skip_external_clusters: bool = False
    additional_labels: frozenset[str] = frozenset()


def _methods(
    doc: dict[str, Any], key: str, allowed: tuple[str, ...], path: str, warnings: list[str]
) -> tuple[tuple[str, ...], bool]:
    out = []
    skip_external = False
    for i, m in enumerate(doc.get(key) or ()):
        mpath = f"{path}.{key}[{i}]"
        if not isinstance(m, dict) or len(m) != 1:
            raise ConfigError(mpath, f"expected exactly one of {', '.join(allowed)}")
        ((name, value),) = m.items()
        if name not in allowed:
            raise ConfigError(
                mpath, f"unknown method '{name}' (expected one of {', '.join(allowed)})"
            )
        if name in ("workload_discovery", "upstream_filter_state"):
            warnings.append(
                f"{mpath}: '{name}' is not supported by pilotfish (no workload metadata xDS, no "
                "upstream metadata exchange); it never finds a peer"
            )
        if name == "istio_headers" and isinstance(value, dict):
            skip_external = skip_external or bool(value.get("skip_external_clusters"))
        out.append(name)
    return tuple(out), skip_external


def parse_config(doc: dict[str, Any], path: str, warnings: list[str]) -> PeerMetadataConfig:
    known = {
        "downstream_discovery",
        "upstream_discovery",
        "downstream_propagation",
        "upstream_propagation",
        "shared_with_upstream",
        "additional_labels",
    }
    for key in doc:
        if key not in known:
            raise ConfigError(f"{path}.{key}", f"unknown field '{key}' in {TYPE_NAME}")
    dd, _ = _methods(doc, "downstream_discovery", _DISCOVERY, path, warnings)
    ud, _ = _methods(doc, "upstream_discovery", _DISCOVERY, path, warnings)
    dp, skip1 = _methods(doc, "downstream_propagation", _PROPAGATION, path, warnings)
    up, skip2 = _methods(doc, "upstream_propagation", _PROPAGATION, path, warnings)
    return PeerMetadataConfig(
        downstream_discovery=dd,
        upstream_discovery=ud,
        downstream_propagation=dp,
        upstream_propagation=up,
        skip_external_clusters=skip1 or skip2,
        additional_labels=frozenset(str(x) for x in doc.get("additional_labels") or ()),
    )


class PeerMetadataRuntime:
    """Shared by one filter config's streams: this workload's headers (computed once) and a
    cache of decoded peer headers (a peer sends the same value on every request)."""

    def __init__(self, config: PeerMetadataConfig, ctx: Any) -> None:
        self.config = config
        self.cluster_manager = getattr(ctx, "cluster_manager", None)
        local = from_node_metadata(
            getattr(ctx, "node_metadata", {}) or {}, config.additional_labels
        )
        self.local_id = (getattr(ctx, "node_id", "") or "").encode()
        self.local_value = local.header_value()
        self.local_baggage = local.baggage()
        self.cache: dict[bytes, WorkloadMetadata | None] = {}
        self._skip: dict[str, tuple[Any, bool]] = {}

    def decode(self, value: bytes) -> WorkloadMetadata | None:
        cache = self.cache
        if value in cache:
            return cache[value]
        peer = from_header(value, self.config.additional_labels)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = peer
        return peer

    def skip_propagation(self, cluster_name: str) -> bool:
        """istio-proxy's skipMXHeaders: ``istio.disable_mx`` on the cluster, or (with
        ``skip_external_clusters``) ``istio.external`` or the PassthroughCluster."""
        if not cluster_name:
            return False
        if self.config.skip_external_clusters and cluster_name == "PassthroughCluster":
            return True
        cm = self.cluster_manager
        cluster = cm.get(cluster_name) if cm is not None else None
        if cluster is None:
            return False
        # Per cluster config object: a CDS update brings a new one (and a new answer).
        config = cluster.config
        cached = self._skip.get(cluster_name)
        if cached is not None and cached[0] is config:
            return cached[1]
        skip = self._skip_for(config)
        if len(self._skip) > 10_000:
            self._skip.clear()
        self._skip[cluster_name] = (config, skip)
        return skip

    def _skip_for(self, config: Any) -> bool:
        istio = config.metadata.get("istio")
        if not isinstance(istio, dict):
            return False
        if istio.get("disable_mx") is True:
            return True
        return self.config.skip_external_clusters and istio.get("external") is True


class PeerMetadataFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "istio.metadata_exchange"
    type_names = (TYPE_NAME,)

    def parse(self, msg: Any, ctx: Any, path: str) -> PeerMetadataConfig:
        from google.protobuf.json_format import MessageToDict

        doc = MessageToDict(msg, preserving_proto_field_name=True)
        warnings: list[str] = []
        config = parse_config(doc, f"{path}.typed_config", warnings)
        for w in warnings:
            ctx.warn(w)
        return config

    def build_filter(
        self, config: PeerMetadataConfig, ctx: Any, name: str, scope: Any
    ) -> tuple[Callable[[], hf.HttpFilter], bool]:
        rt = PeerMetadataRuntime(config, ctx)
        return (lambda: PeerMetadataFilter(rt)), False


def _put(headers: HeaderMap, name: bytes, value: bytes) -> None:
    """Envoy's setReference: replace, or append (appending directly when absent is the cheap
    common case)."""
    if headers.get(name) is None:
        headers.add(name, value)
    else:
        headers.set(name, value)


def _set_peer(stream: Any, key: str, peer: WorkloadMetadata) -> None:
    fs = stream.filter_state
    if fs is None:
        fs = stream.filter_state = {}
    fs.setdefault(key, peer)  # the first discovery wins (istio-proxy: "duplicate, skipping")


class PeerMetadataFilter(hf.HttpFilter):
    __slots__ = ("got_id", "got_metadata", "rt")

    def __init__(self, rt: PeerMetadataRuntime) -> None:
        self.rt = rt
        self.got_id = False
        self.got_metadata = False

    def _discover(
        self, headers: HeaderMap, methods: tuple[str, ...], key: str, downstream: bool
    ) -> None:
        rt = self.rt
        found = False
        has_id = has_metadata = False
        for method in methods:
            peer = None
            if method == "istio_headers":
                value = headers.get(H_METADATA)
                has_id = headers.get(H_ID) is not None
                has_metadata = value is not None
                if downstream:
                    self.got_id = has_id
                    self.got_metadata = has_metadata
                if value:
                    peer = rt.decode(value)
            elif method == "baggage":
                value = headers.get(H_BAGGAGE)
                if value:
                    peer = from_baggage(value)
            if peer is not None and not found:
                _set_peer(self.stream, key, peer)
                found = True
        # Removed when present (a lookup is far cheaper than a rebuild of the header list).
        if has_id:
            headers.remove(H_ID)
        if has_metadata:
            headers.remove(H_METADATA)

    def _propagate(self, headers: HeaderMap, methods: tuple[str, ...], downstream: bool) -> None:
        rt = self.rt
        route = self.stream.route
        if rt.skip_propagation(route.cluster if route is not None else ""):
            return
        for method in methods:
            if method == "istio_headers":
                if not downstream or self.got_id:
                    _put(headers, H_ID, rt.local_id)
                if not downstream or self.got_metadata:
                    _put(headers, H_METADATA, rt.local_value)
            elif method == "baggage" and rt.local_baggage:
                _put(headers, H_BAGGAGE, rt.local_baggage)

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        cfg = self.rt.config
        if cfg.downstream_discovery:
            self._discover(headers, cfg.downstream_discovery, DOWNSTREAM_PEER, True)
        if cfg.upstream_propagation:
            self._propagate(headers, cfg.upstream_propagation, False)
        return hf.CONTINUE

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> int:
        cfg = self.rt.config
        if cfg.upstream_discovery:
            self._discover(headers, cfg.upstream_discovery, UPSTREAM_PEER, False)
        if cfg.downstream_propagation:
            self._propagate(headers, cfg.downstream_propagation, True)
        return hf.CONTINUE
