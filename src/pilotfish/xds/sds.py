"""The SDS client: secrets named by TLS contexts, fetched from their config sources into the
SecretStore, as Envoy's secret manager does.

- Interest follows the config: every ``SdsSecretRef`` of a listener's filter chains or a
  cluster's transport sockets (static or from xDS) is subscribed by name on its source, and
  dropped when nothing names it any more (non-wildcard, as Envoy's SDS subscriptions).
- Sources: ``ads`` (the ADS stream of the xDS manager) or an ``api_config_source`` of type
  GRPC/DELTA_GRPC with an ``envoy_grpc`` cluster: a stream per secret (``AdsClient``
  speaking SecretDiscoveryService), as Envoy 1.40 does (measured: two secrets of one source
  are two streams).
- Each secret is decoded (xds/translate/secret.py) before it is stored; a bad one is NACKed
  naming the field and the last good one is kept.
- A secret is *ready* once it arrived or its source's ``initial_fetch_timeout`` passed:
  listeners and clusters needing it warm until then (xds/manager.py), and the server is not
  LIVE before the secrets of its static listeners and clusters are ready (server.py).
- Stats: ``sds.<name>.update_attempt|update_success|update_rejected|init_fetch_timeout|...``
  and the stream's ``sds.<name>.control_plane.*``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pilotfish.errors import ConfigError
from pilotfish.tls.secrets import SdsSecretRef, SecretStore
from pilotfish.xds import resource_types as rt
from pilotfish.xds.ads_client import SDS, AdsClient, Update
from pilotfish.xds.manager import (
    DEFAULT_INITIAL_FETCH_TIMEOUT,
    SubscriptionStats,
    grpc_service_target,
)
from pilotfish.xds.resource_types import ResourceType
from pilotfish.xds.translate.secret import decode_secret

if TYPE_CHECKING:
    from pilotfish.server import Server

log = logging.getLogger("pilotfish.xds")

ADS_KEY = "ads"


@dataclass
class SecretSubscription:
    """One secret being fetched: its source, whether it is ready and its stats."""

    name: str
    source_key: str
    stats: SubscriptionStats
    timeout: float
    received: bool = False
    timed_out: bool = False
    timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        return self.received or self.timed_out


@dataclass
class SourceStream:
    """One SDS stream (an api_config_source), shared by the secrets it serves."""

    key: str
    source: Any  # the ConfigSource proto
    client: AdsClient | None = None
    names: set[str] = field(default_factory=set)


class SdsManager:
    def __init__(self, server: Server, store: SecretStore) -> None:
        self.server = server
        self.store = store
        self.subscriptions: dict[str, SecretSubscription] = {}
        self.streams: dict[str, SourceStream] = {}
        self.ads_client: AdsClient | None = None
        self.static_names: set[str] = set()
        self._ready_callbacks: list[Callable[[], None]] = []
        self._stats: dict[str, SubscriptionStats] = {}
        self._stopped = False
        self._closing: set[asyncio.Task[None]] = set()

    # -- static secrets ------------------------------------------------------------------------

    def load_static(self, secrets: Iterable[Any]) -> None:
        """The bootstrap's ``static_resources.secrets``; raises ConfigError naming the field."""
        now = time.time()
        for i, msg in enumerate(secrets):
            path = f"static_resources.secrets[{i}]"
            if not msg.name:
                raise ConfigError(f"{path}.name", "a static secret needs a name")
            if msg.name in self.static_names:
                raise ConfigError(f"{path}.name", f"duplicate static secret '{msg.name}'")
            try:
                value = decode_secret(msg)
            except ConfigError as e:
                raise e.under(path) from None
            self.static_names.add(msg.name)
            self.store.set(msg.name, value, source="static", proto=msg, now=now)

    # -- interest ------------------------------------------------------------------------------

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever a secret becomes ready (arrived or timed out)."""
        self._ready_callbacks.append(callback)

    def want(self, refs: Iterable[SdsSecretRef], path: str = "") -> None:
        """Subscribe every SDS secret in ``refs`` not subscribed yet; raises ConfigError for a
        static reference to a secret the bootstrap does not have."""
        for ref in refs:
            if ref.sds_config is None:
                if ref.name not in self.static_names:
                    raise ConfigError(path, f"Unknown static secret: {ref.name}")
                continue
            if ref.name not in self.subscriptions:
                self._subscribe(ref)

    def sync(self, refs: Iterable[SdsSecretRef]) -> None:
        """``refs`` is everything in use now: subscribe what is new, drop the rest."""
        refs = list(refs)
        wanted = {r.name for r in refs if r.sds_config is not None}
        for ref in refs:
            if ref.sds_config is not None and ref.name not in self.subscriptions:
                self._subscribe(ref)
        for name in [n for n in self.subscriptions if n not in wanted]:
            self._unsubscribe(name)

    def ready(self, refs: Iterable[SdsSecretRef]) -> bool:
        for ref in refs:
            if ref.sds_config is None:
                continue
            sub = self.subscriptions.get(ref.name)
            if sub is None or not sub.ready:
                return False
        return True

    async def initialize(self, refs: Iterable[SdsSecretRef]) -> None:
        """Wait until every secret of ``refs`` is ready (arrived or timed out)."""
        refs = list(refs)
        while not self.ready(refs):
            changed = asyncio.Event()
            self._ready_callbacks.append(changed.set)
            try:
                await changed.wait()
            finally:
                self._ready_callbacks.remove(changed.set)

    def max_timeout(self, refs: Iterable[SdsSecretRef]) -> float:
        return max(
            (self.subscriptions[r.name].timeout for r in refs if r.name in self.subscriptions),
            default=0.0,
        )

    def _subscribe(self, ref: SdsSecretRef) -> None:
        source = ref.sds_config
        # One stream per secret, as Envoy 1.40 opens them (two secrets of one source: two
        # streams, each with its sds.<name>.control_plane.* stats).
        key = source_key(source, ref.name)
        stream = self.streams.get(key)
        if key != ADS_KEY and stream is None:
            stream = SourceStream(key, source, self._start_stream(source, ref.name))
            self.streams[key] = stream
        sub = SecretSubscription(ref.name, key, self._stats_of(ref.name), _fetch_timeout(source))
        self.subscriptions[ref.name] = sub
        if sub.timeout:
            loop = asyncio.get_running_loop()
            sub.timer = loop.call_later(sub.timeout, lambda: self._fetch_timeout(sub))
        if stream is None:
            self._update_ads_interest()
            return
        stream.names.add(ref.name)
        if stream.client is not None:
            stream.client.subscribe(rt.SECRET, set(stream.names))

    def _unsubscribe(self, name: str) -> None:
        sub = self.subscriptions.pop(name)
        if sub.timer is not None:
            sub.timer.cancel()
        entry = self.store.entries.get(name)
        if entry is not None and entry.source == "sds" and not entry.watchers:
            del self.store.entries[name]  # Envoy drops a secret nothing uses
        if sub.source_key == ADS_KEY:
            self._update_ads_interest()
            return
        stream = self.streams.get(sub.source_key)
        if stream is not None:
            stream.names.discard(name)
            if not stream.names:  # nothing left on it: close it, as Envoy does
                del self.streams[sub.source_key]
                if stream.client is not None:
                    task = asyncio.get_running_loop().create_task(stream.client.stop())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
            elif stream.client is not None:
                stream.client.subscribe(rt.SECRET, set(stream.names))

    def _stats_of(self, name: str) -> SubscriptionStats:
        stats = self._stats.get(name)
        if stats is None:
            assert self.server.stats is not None
            scope = self.server.stats.scope(f"sds.{name}.")
            stats = SubscriptionStats(scope)
            scope.counter("key_rotation_failed")  # Envoy's; no key rotation here to fail
            self._stats[name] = stats
        return stats

    def _fetch_timeout(self, sub: SecretSubscription) -> None:
        sub.timer = None
        if sub.ready or self.subscriptions.get(sub.name) is not sub:
            return
        sub.timed_out = True
        sub.stats.init_fetch_timeout.value += 1
        log.warning("SDS: secret %s not received within initial_fetch_timeout", sub.name)
        self._notify_ready()

    def _notify_ready(self) -> None:
        for callback in list(self._ready_callbacks):
            callback()

    # -- streams -------------------------------------------------------------------------------

    def attach_ads(self, client: AdsClient | None) -> None:
        """The xDS manager's ADS client, for secrets whose source is ``ads``."""
        self.ads_client = client
        names = sorted(n for n, s in self.subscriptions.items() if s.source_key == ADS_KEY)
        if client is None and names:
            log.warning("SDS: secrets %s are to come over ADS, which is not configured", names)
        self._update_ads_interest()

    def _update_ads_interest(self) -> None:
        names = {n for n, s in self.subscriptions.items() if s.source_key == ADS_KEY}
        client = self.ads_client
        if client is None:
            return
        if names or rt.SECRET.type_url in client.types:
            client.subscribe(rt.SECRET, names)

    def _start_stream(self, source: Any, name: str) -> AdsClient | None:
        api = source.api_config_source
        where = "sds_config.api_config_source"
        if api.api_type not in (api.GRPC, api.DELTA_GRPC):
            raise ConfigError(
                f"{where}.api_type", "pilotfish fetches secrets over GRPC or DELTA_GRPC"
            )
        if not api.grpc_services:
            raise ConfigError(f"{where}.grpc_services", "a gRPC service is required")
        assert self.server.cluster_manager is not None and self.server.stats is not None
        target = grpc_service_target(
            self.server.cluster_manager, api.grpc_services[0], f"{where}.grpc_services[0]"
        )
        from pilotfish.admin.config_dump import node_proto

        client = AdsClient(
            target,
            node_proto(self.server),
            _StreamWatcher(self),
            self.server.stats,
            delta=api.api_type == api.DELTA_GRPC,
            node_on_first_message_only=api.set_node_on_first_message_only,
            service=SDS,
            stats_prefix=f"sds.{name}.",
        )
        if not self._stopped:
            client.start()
        return client

    async def stop(self) -> None:
        self._stopped = True
        for sub in self.subscriptions.values():
            if sub.timer is not None:
                sub.timer.cancel()
        for stream in self.streams.values():
            if stream.client is not None:
                await stream.client.stop()

    # -- updates -------------------------------------------------------------------------------

    def apply(self, update: Update) -> list[str]:
        """Store the secrets of a response; returns the errors (the NACK's reasons)."""
        errors: list[str] = []
        now = time.time()
        became_ready = False
        for name, (version, msg) in update.resources.items():
            sub = self.subscriptions.get(name)
            if sub is None:
                continue  # not (or no longer) wanted
            started = time.monotonic()
            entry = self.store.entries.get(name)
            if entry is not None and entry.source == "sds" and entry.proto == msg:
                entry.version_info = update.version_info or version
                sub.stats.accepted(update.version_info or version, started)
                continue
            try:
                value = decode_secret(msg)
            except ConfigError as e:
                sub.stats.rejected()
                errors.append(f"secret '{name}': {e}")
                continue
            self.store.set(
                name,
                value,
                version_info=update.version_info or version,
                source="sds",
                proto=msg,
                now=now,
            )
            sub.stats.accepted(update.version_info or version, started)
            if not sub.ready:
                became_ready = True
            sub.received = True
            if sub.timer is not None:
                sub.timer.cancel()
                sub.timer = None
        for name in update.removed:
            # Envoy keeps serving the last secret of a name still in use.
            log.info("SDS: secret %s removed by the server; keeping the last one", name)
        if became_ready:
            self._notify_ready()
        return errors


class _StreamWatcher:
    """The AdsClient's watcher for an SDS stream of its own."""

    def __init__(self, manager: SdsManager) -> None:
        self.manager = manager

    def apply(self, rtype: ResourceType, update: Update) -> str | None:
        if rtype is not rt.SECRET:
            return f"an SDS stream carries secrets only, not {rtype.name}"
        errors = self.manager.apply(update)
        return "Error adding/updating " + "; ".join(errors) if errors else None

    def connection_changed(self, connected: bool) -> None:
        if not connected:
            log.warning("lost an SDS server; the last good secrets keep serving")


def source_key(source: Any, name: str) -> str:
    """The stream a secret comes over: the ADS stream, or its own."""
    if source.HasField("ads"):
        return ADS_KEY
    return name + "/" + source.api_config_source.SerializeToString(deterministic=True).hex()


def _fetch_timeout(source: Any) -> float:
    if source.HasField("initial_fetch_timeout"):
        return float(source.initial_fetch_timeout.ToTimedelta().total_seconds())
    return DEFAULT_INITIAL_FETCH_TIMEOUT
