"""The xDS manager: applies what the ADS client receives to the cluster and listener managers,
as Envoy does.

- Each resource is translated (pure, ``xds/translate``) before anything changes; one that
  fails is NACKed with its name and reason and keeps its last good config, while the valid
  resources of the same response are applied (Envoy's per-resource acceptance).
- Subscriptions follow the config: CDS and LDS are wildcard; EDS asks for the service names
  of the EDS clusters, RDS for the route configs the HTTP connection managers name.
- Warming: a new EDS cluster is installed once its first endpoints arrive, a new or updated
  listener once every route config it names has arrived (or after the source's
  ``initial_fetch_timeout``); until then the old one keeps serving. Both also wait for the
  SDS secrets their TLS contexts name (xds/sds.py).
- Initialization: CDS first (and the clusters it brings warm), then LDS (and its routes),
  each bounded by ``initial_fetch_timeout``; the server goes LIVE after both.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import Cluster as ClusterModel
from pilotfish.model.cluster import ClusterLoadAssignment, DiscoveryType
from pilotfish.model.listener import Listener as ListenerModel
from pilotfish.router.matcher import RouteConfigProvider, RouteTable
from pilotfish.stats.store import Scope
from pilotfish.xds import resource_types as rt
from pilotfish.xds import secret_refs
from pilotfish.xds.ads_client import AdsClient, Update, grpc_target
from pilotfish.xds.resource_types import ResourceType
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.resource import KIND, translate_resource

if TYPE_CHECKING:
    from pilotfish.server import Server
    from pilotfish.xds.sds import SdsManager

log = logging.getLogger("pilotfish.xds")

DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0


@dataclass(slots=True)
class Record:
    """An accepted resource, as /config_dump shows it."""

    name: str
    version_info: str
    proto: Message
    last_updated: float
    model: Any = None


@dataclass(slots=True)
class EndpointsRecord:
    """An accepted ClusterLoadAssignment, kept serialized: a large mesh has a million
    endpoints, and the clusters hold their hosts already (the proto and the model would
    double and triple the memory). Parsed again only when a cluster is (re)installed."""

    name: str
    version_info: str
    raw: bytes
    last_updated: float

    def model(self) -> ClusterLoadAssignment:
        msg = rt.ENDPOINT.message()
        msg.ParseFromString(self.raw)
        model: Any = translate_resource(rt.ENDPOINT.type_url, msg, TranslateContext())
        return model


@dataclass(slots=True)
class Failure:
    """The last rejected version of a resource (Envoy's UpdateFailureState)."""

    proto: Message
    details: str
    version_info: str
    time: float


class SubscriptionStats:
    """Envoy's per-subscription stats (cluster_manager.cds., listener_manager.lds.,
    http.<prefix>.rds.<name>.)."""

    def __init__(self, scope: Scope) -> None:
        self.update_attempt = scope.counter("update_attempt")
        self.update_success = scope.counter("update_success")
        self.update_rejected = scope.counter("update_rejected")
        self.update_failure = scope.counter("update_failure")
        self.init_fetch_timeout = scope.counter("init_fetch_timeout")
        self.update_time = scope.gauge("update_time", accumulate=False)
        self.version = scope.gauge("version", accumulate=False)
        self.version_text = scope.text_readout("version_text")
        self.update_duration = scope.histogram("update_duration")

    def accepted(self, version_info: str, started: float) -> None:
        self.update_attempt.value += 1
        self.update_success.value += 1
        self.update_time.set(int(time.time() * 1000))
        self.version.set(version_hash(version_info))
        self.version_text.value = version_info
        self.update_duration.record((time.monotonic() - started) * 1000)

    def rejected(self) -> None:
        self.update_attempt.value += 1
        self.update_rejected.value += 1


def version_hash(version_info: str) -> int:
    """The ``version`` gauge: a 64-bit hash of version_info (Envoy uses xxHash64; the value
    is only ever compared for change)."""
    if not version_info:
        return 0
    return int.from_bytes(hashlib.blake2b(version_info.encode(), digest_size=8).digest(), "big")


class RouteProviders:
    """One RouteConfigProvider per RDS route config name, shared by every connection manager
    that names it (Envoy shares one RDS subscription per name)."""

    def __init__(self, manager: XdsManager) -> None:
        self.manager = manager
        self.providers: dict[str, RouteConfigProvider] = {}
        self.stats: dict[str, SubscriptionStats] = {}
        self.config_reload: dict[str, Any] = {}

    def provider(self, name: str, stat_prefix: str) -> RouteConfigProvider:
        provider = self.providers.get(name)
        if provider is None:
            provider = RouteConfigProvider(name)
            self.providers[name] = provider
            scope = self.manager.server_stats.scope(f"http.{stat_prefix}.rds.{name}.")
            self.stats[name] = SubscriptionStats(scope)
            self.config_reload[name] = scope.counter("config_reload")
            record = self.manager.routes.get(name)
            if record is not None:
                provider.table = record.model
        return provider


class XdsManager:
    def __init__(self, server: Server) -> None:
        ctx = server.ctx
        assert ctx is not None and server.cluster_manager is not None
        assert server.listener_manager is not None and server.stats is not None
        self.server = server
        self.ctx = ctx
        self.cm = server.cluster_manager
        self.lm = server.listener_manager
        self.server_stats = server.stats
        self.loop = ctx.loop
        self.dynamic = server.model.dynamic_resources
        self.route_providers = RouteProviders(self)
        ctx.rds = self.route_providers
        self.static_clusters = {c.name for c in server.model.clusters}
        self.static_listeners = {ls.name for ls in server.model.listeners}
        # Accepted resources: clusters (active or warming), endpoints by service name,
        # listeners (active or warming), route configs.
        self.clusters: dict[str, Record] = {}
        self.warming_clusters: dict[str, Record] = {}
        self.endpoints: dict[str, EndpointsRecord] = {}
        self.listeners: dict[str, Record] = {}
        self.warming_listeners: dict[str, Record] = {}
        self.routes: dict[str, Record] = {}
        self.failures: dict[tuple[str, str], Failure] = {}
        # EDS service name -> the dynamic clusters that take their endpoints from it.
        self.service_clusters: dict[str, set[str]] = {}
        self.static_eds = any(c.type is DiscoveryType.EDS for c in server.model.clusters)
        self.version_info: dict[str, str] = {}  # type URL -> last accepted version
        self.cds_stats = SubscriptionStats(self.server_stats.scope("cluster_manager.cds."))
        self.lds_stats = SubscriptionStats(self.server_stats.scope("listener_manager.lds."))
        self._cds_initialized = asyncio.Event()
        self._lds_initialized = asyncio.Event()
        self._cds_first = asyncio.Event()
        self._lds_first = asyncio.Event()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.client: AdsClient | None = None
        self.sds: SdsManager | None = server.sds
        if self.sds is not None:
            self.sds.on_ready(self._secrets_ready)

    # -- starting ---------------------------------------------------------------------------

    def has_ads(self) -> bool:
        return self.dynamic is not None and self.dynamic.HasField("ads_config")

    def start(self) -> None:
        if self.has_ads():
            ads = self.dynamic.ads_config
            from pilotfish.admin.config_dump import node_proto

            node = node_proto(self.server)
            if not node.id or not node.cluster:
                # Envoy's words: a management server needs to know who is asking.
                raise ConfigError(
                    "node",
                    "ads: node 'id' and 'cluster' are required. Set it either in 'node' "
                    "config or via --service-node and --service-cluster options.",
                )
            self.client = AdsClient(
                self._target(ads),
                node,
                self,
                self.server_stats,
                delta=ads.api_type == ads.DELTA_GRPC,
                node_on_first_message_only=ads.set_node_on_first_message_only,
            )
            self.client.start()
        if self.sds is not None:
            self.sds.attach_ads(self.client)
        if self._source_is_ads("cds_config") and self.client is not None:
            self.client.subscribe(rt.CLUSTER, None)
        else:
            self._cds_first.set()

    def _target(self, ads: Any) -> str:
        return grpc_service_target(
            self.cm, ads.grpc_services[0], "dynamic_resources.ads_config.grpc_services[0]"
        )

    def _source_is_ads(self, field: str) -> bool:
        return self.dynamic is not None and self.dynamic.HasField(field)

    def _initial_fetch_timeout(self, source: Any) -> float:
        if source is not None and source.HasField("initial_fetch_timeout"):
            return float(source.initial_fetch_timeout.ToTimedelta().total_seconds())
        return DEFAULT_INITIAL_FETCH_TIMEOUT

    async def initialize_clusters(self) -> None:
        """Wait for the first CDS response and the clusters it brings to warm, bounded by
        cds_config.initial_fetch_timeout (0: for ever)."""
        if not self._source_is_ads("cds_config"):
            return
        timeout = self._initial_fetch_timeout(self.dynamic.cds_config)
        if not await self._wait(self._cds_first, timeout):
            self.cds_stats.init_fetch_timeout.value += 1
            log.warning("CDS: no response in %gs (initial_fetch_timeout)", timeout)
            return
        await self._wait_until(lambda: not self.warming_clusters)

    async def initialize_listeners(self) -> None:
        if not self._source_is_ads("lds_config") or self.client is None:
            return
        self.client.subscribe(rt.LISTENER, None)
        timeout = self._initial_fetch_timeout(self.dynamic.lds_config)
        if not await self._wait(self._lds_first, timeout):
            self.lds_stats.init_fetch_timeout.value += 1
            log.warning("LDS: no response in %gs (initial_fetch_timeout)", timeout)
            return
        await self._wait_until(lambda: not self.warming_listeners)

    async def _wait(self, event: asyncio.Event, timeout: float) -> bool:
        if not timeout:
            await event.wait()
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        if self.client is not None:
            await self.client.stop()

    # -- the Watcher interface --------------------------------------------------------------

    def connection_changed(self, connected: bool) -> None:
        if not connected:
            log.warning("lost the management server; the last good config keeps serving")

    def apply(self, rtype: ResourceType, update: Update) -> str | None:
        started = time.monotonic()
        handler = {
            rt.CLUSTER.type_url: self._apply_clusters,
            rt.ENDPOINT.type_url: self._apply_endpoints,
            rt.LISTENER.type_url: self._apply_listeners,
            rt.ROUTE.type_url: self._apply_routes,
            rt.SECRET.type_url: self._apply_secrets,
        }.get(rtype.type_url)
        if handler is None:
            return f"pilotfish does not handle {rtype.name} resources"
        errors = handler(update)
        if not errors:
            self.version_info[rtype.type_url] = update.version_info
        stats = (
            self.cds_stats
            if rtype is rt.CLUSTER
            else self.lds_stats
            if rtype is rt.LISTENER
            else None
        )
        if stats is not None:
            if errors:
                stats.rejected()
            else:
                stats.accepted(update.version_info, started)
        if rtype is rt.CLUSTER:
            self._cds_first.set()
        elif rtype is rt.LISTENER:
            self._lds_first.set()
        if not errors:
            return None
        return "Error adding/updating " + "; ".join(errors)

    def _fail(self, rtype: ResourceType, name: str, msg: Message, version: str, e: Any) -> str:
        self.failures[(rtype.type_url, name)] = Failure(msg, str(e), version, time.time())
        # Translation errors name the resource already ("listener 'x': field: reason").
        if isinstance(e, ConfigError) and str(e).startswith(KIND[rtype.type_url]):
            return str(e)
        return f"{KIND[rtype.type_url]} '{name}': {e}"

    def _changed(self, records: dict[str, Record], name: str, msg: Message) -> bool:
        old = records.get(name)
        return old is None or old.proto != msg

    def _tctx(self) -> TranslateContext:
        """Route tables that validate their clusters (inline ones by default) are checked
        against every cluster the cluster manager has, static or from CDS, as Envoy does."""
        return TranslateContext(static_clusters=set(self.cm.clusters) | set(self.warming_clusters))

    # -- CDS --------------------------------------------------------------------------------

    def _apply_clusters(self, update: Update) -> list[str]:
        errors: list[str] = []
        now = time.time()
        for name, (version, msg) in update.resources.items():
            if name in self.static_clusters:
                errors.append(f"cluster '{name}': already exists as a static cluster")
                continue
            if not self._changed(self.clusters, name, msg):
                self.clusters[name].version_info = update.version_info or version
                continue
            try:
                model: Any = translate_resource(rt.CLUSTER.type_url, msg, self._tctx())
            except ConfigError as e:
                errors.append(self._fail(rt.CLUSTER, name, msg, update.version_info, e))
                continue
            self.failures.pop((rt.CLUSTER.type_url, name), None)
            record = Record(name, update.version_info or version, msg, now, model)
            try:
                if self.sds is not None:
                    self.sds.want(secret_refs.cluster_secrets(model), f"cluster '{name}'")
            except ConfigError as e:
                errors.append(self._fail(rt.CLUSTER, name, msg, update.version_info, e))
                continue
            self._forget_service(name)
            self.clusters[name] = record
            if model.type is DiscoveryType.EDS:
                self.service_clusters.setdefault(_service_name(model), set()).add(name)
            self._install_cluster(record)
        removed = set(update.removed)
        if update.complete:
            removed |= set(self.clusters) - set(update.resources)
        for name in removed:
            self._forget_service(name)
            if self.clusters.pop(name, None) is not None:
                self.warming_clusters.pop(name, None)
                self._cancel_timer("cluster", name)
                self.cm.remove(name)
        self._update_eds_interest()
        self._update_sds_interest()
        self.cm.warming_clusters.set(len(self.warming_clusters))
        return errors

    def _forget_service(self, cluster_name: str) -> None:
        old = self.clusters.get(cluster_name)
        if old is not None and old.model.type is DiscoveryType.EDS:
            names = self.service_clusters.get(_service_name(old.model))
            if names is not None:
                names.discard(cluster_name)
                if not names:
                    del self.service_clusters[_service_name(old.model)]

    def _install_cluster(self, record: Record) -> None:
        model: ClusterModel = record.model
        if self._cluster_warm(record):
            self.warming_clusters.pop(record.name, None)
            self._activate_cluster(record)
            return
        self.warming_clusters[record.name] = record
        timeout = max(
            self._initial_fetch_timeout(model_eds_source(record.proto))
            if model.type is DiscoveryType.EDS
            else 0.0,
            self.sds.max_timeout(secret_refs.cluster_secrets(model))
            if self.sds is not None
            else 0.0,
        )
        if timeout:
            self._set_timer("cluster", record.name, timeout, lambda: self._warm_timeout(record))

    def _secrets_timeout(self, refs: list[Any]) -> float:
        return self.sds.max_timeout(refs) if self.sds is not None else 0.0

    def _cluster_warm(self, record: Record) -> bool:
        """Its endpoints are known (or kept by the cluster it replaces) and its secrets are
        ready."""
        model: ClusterModel = record.model
        if self.sds is not None and not self.sds.ready(secret_refs.cluster_secrets(model)):
            return False
        if model.type is not DiscoveryType.EDS:
            return True
        active = self.cm.get(record.name)
        return _service_name(model) in self.endpoints or (active is not None and active.initialized)

    def _warm_timeout(self, record: Record) -> None:
        if self.warming_clusters.get(record.name) is record:
            log.warning("cluster %s: no endpoints within initial_fetch_timeout", record.name)
            del self.warming_clusters[record.name]
            self._activate_cluster(record, empty=True)
            self.cm.warming_clusters.set(len(self.warming_clusters))

    def _activate_cluster(
        self, record: Record, *, empty: bool = False, assignment: Any = None
    ) -> None:
        self._cancel_timer("cluster", record.name)
        model: ClusterModel = record.model
        self.cm.add_or_update(model, version_info=record.version_info, added_via_api=True)
        cluster = self.cm.get(record.name)
        if cluster is not None:
            cluster.proto = record.proto
            cluster.last_updated = record.last_updated
        if model.type is DiscoveryType.EDS:
            if assignment is None:
                known = self.endpoints.get(_service_name(model))
                assignment = known.model() if known is not None else None
            if assignment is not None:
                self.cm.update_endpoints(record.name, assignment)
            elif empty:
                self.cm.update_endpoints(record.name, ClusterLoadAssignment(record.name))

    def _update_eds_interest(self) -> None:
        if self.client is None:
            return
        names = set(self.service_clusters)
        names |= {
            _service_name(c.config)
            for c in self.cm.clusters.values()
            if c.name in self.static_clusters and c.config.type is DiscoveryType.EDS
        }
        if names or rt.ENDPOINT.type_url in self.client.types:
            self.client.subscribe(rt.ENDPOINT, names)

    # -- EDS --------------------------------------------------------------------------------

    def _apply_endpoints(self, update: Update) -> list[str]:
        errors: list[str] = []
        now = time.time()
        for name, (version, msg) in update.resources.items():
            raw = msg.SerializeToString()
            known = self.endpoints.get(name)
            if known is not None and known.raw == raw:
                known.version_info = update.version_info or version
                continue
            try:
                model: Any = translate_resource(rt.ENDPOINT.type_url, msg, self._tctx())
            except ConfigError as e:
                errors.append(self._fail(rt.ENDPOINT, name, msg, update.version_info, e))
                continue
            self.endpoints[name] = EndpointsRecord(name, update.version_info or version, raw, now)
            for cname in self._clusters_of_service(name):
                warming = self.warming_clusters.get(cname)
                if warming is None:
                    self.cm.update_endpoints(cname, model)
                elif self._cluster_warm(warming):
                    del self.warming_clusters[cname]
                    self._activate_cluster(warming, assignment=model)
        for name in update.removed:
            self.endpoints.pop(name, None)
            for cname in self._clusters_of_service(name):
                self.cm.update_endpoints(cname, ClusterLoadAssignment(cname))
        self.cm.warming_clusters.set(len(self.warming_clusters))
        return errors

    def _clusters_of_service(self, service: str) -> list[str]:
        out = list(self.service_clusters.get(service, ()))
        out += (
            [
                c.name
                for c in self.cm.clusters.values()
                if c.name in self.static_clusters
                and c.config.type is DiscoveryType.EDS
                and _service_name(c.config) == service
            ]
            if self.static_eds
            else []
        )
        return out

    # -- LDS --------------------------------------------------------------------------------

    def _apply_listeners(self, update: Update) -> list[str]:
        errors: list[str] = []
        now = time.time()
        for name, (version, msg) in update.resources.items():
            if name in self.static_listeners:
                errors.append(f"listener '{name}': already exists as a static listener")
                continue
            current = self.warming_listeners.get(name) or self.listeners.get(name)
            if current is not None and current.proto == msg:
                current.version_info = update.version_info or version
                continue
            try:
                model: Any = translate_resource(rt.LISTENER.type_url, msg, self._tctx())
                self._check_rds_sources(model)
                if self.sds is not None:
                    self.sds.want(secret_refs.listener_secrets(model), f"listener '{name}'")
            except ConfigError as e:
                errors.append(self._fail(rt.LISTENER, name, msg, update.version_info, e))
                continue
            record = Record(name, update.version_info or version, msg, now, model)
            if not self._warm_listener(record, errors):
                continue
            self.failures.pop((rt.LISTENER.type_url, name), None)
        removed = set(update.removed)
        if update.complete:
            removed |= (set(self.listeners) | set(self.warming_listeners)) - set(update.resources)
        for name in removed:
            self.warming_listeners.pop(name, None)
            self._cancel_timer("listener", name)
            if self.listeners.pop(name, None) is not None:
                self.lm.remove(name)
        self._update_rds_interest()
        self._update_sds_interest()
        self.lm.gauge_warming.set(len(self.warming_listeners))
        return errors

    def _check_rds_sources(self, model: ListenerModel) -> None:
        for hcm in _hcm_configs(model):
            if hcm.rds is not None and not hcm.rds.config_source.HasField("ads"):
                raise ConfigError(
                    "rds.config_source",
                    "pilotfish takes route configs over ADS only (config_source: {ads: {}})",
                )

    def _warm_listener(self, record: Record, errors: list[str]) -> bool:
        """Install the listener now if its route configs are there, else keep it warming.
        Returns False (with an error) if it can't be installed (e.g. its port is taken)."""
        for hcm in _hcm_configs(record.model):
            if hcm.rds is not None:  # its stats exist from the first request on
                self.route_providers.provider(hcm.rds.route_config_name, hcm.stat_prefix)
        if self._listener_warm(record):
            self.warming_listeners.pop(record.name, None)
            return self._activate_listener(record, errors)
        self.warming_listeners[record.name] = record
        timeout = max(
            (self._initial_fetch_timeout(s) for s in _rds_sources(record.model)), default=0.0
        )
        if self.sds is not None:
            timeout = max(timeout, self.sds.max_timeout(secret_refs.listener_secrets(record.model)))
        if timeout:
            self._set_timer(
                "listener", record.name, timeout, lambda: self._listener_warm_timeout(record)
            )
        return True

    def _listener_warm(self, record: Record) -> bool:
        """Every route config it names has arrived and every secret it needs is ready."""
        if any(n not in self.routes for n in _rds_names(record.model)):
            return False
        return self.sds is None or self.sds.ready(secret_refs.listener_secrets(record.model))

    def _listener_warm_timeout(self, record: Record) -> None:
        if self.warming_listeners.get(record.name) is record:
            log.warning("listener %s: route configs missing after the timeout", record.name)
            del self.warming_listeners[record.name]
            self._activate_listener(record, [])
            self.lm.gauge_warming.set(len(self.warming_listeners))

    def _activate_listener(self, record: Record, errors: list[str]) -> bool:
        self._cancel_timer("listener", record.name)
        try:
            prepared = self.lm.prepare(record.model)
        except (OSError, ConfigError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            errors.append(self._fail(rt.LISTENER, record.name, record.proto, "", reason))
            return False
        self.listeners[record.name] = record
        if prepared is None:
            return True
        prepared.proto = record.proto
        prepared.last_updated = record.last_updated
        self.lm.install(prepared, version_info=record.version_info)
        self.loop.create_task(prepared.start())
        return True

    def _update_rds_interest(self) -> None:
        if self.client is None:
            return
        names: set[str] = set()
        for record in list(self.listeners.values()) + list(self.warming_listeners.values()):
            names.update(_rds_names(record.model))
        for model in self.server.model.listeners:
            names.update(_rds_names(model))
        if names or rt.ROUTE.type_url in self.client.types:
            self.client.subscribe(rt.ROUTE, names)

    # -- RDS --------------------------------------------------------------------------------

    def _apply_routes(self, update: Update) -> list[str]:
        errors: list[str] = []
        now = time.time()
        for name, (version, msg) in update.resources.items():
            started = time.monotonic()
            stats = self.route_providers.stats.get(name)
            if not self._changed(self.routes, name, msg):
                self.routes[name].version_info = update.version_info or version
                continue
            try:
                model: Any = translate_resource(rt.ROUTE.type_url, msg, self._tctx())
            except ConfigError as e:
                errors.append(self._fail(rt.ROUTE, name, msg, update.version_info, e))
                if stats is not None:
                    stats.rejected()
                continue
            self.failures.pop((rt.ROUTE.type_url, name), None)
            table = RouteTable(model)
            self.routes[name] = Record(name, update.version_info or version, msg, now, table)
            provider = self.route_providers.providers.get(name)
            if provider is not None:
                provider.table = table
                self.route_providers.config_reload[name].value += 1
            if stats is not None:
                stats.accepted(update.version_info or version, started)
        for name in update.removed:
            # Envoy keeps serving the last route config of a name still in use.
            self.routes.pop(name, None)
        self._activate_warm_listeners(errors)
        return errors

    def _activate_warm_listeners(self, errors: list[str]) -> None:
        for record in list(self.warming_listeners.values()):
            if self._listener_warm(record):
                del self.warming_listeners[record.name]
                self._activate_listener(record, errors)
        self.lm.gauge_warming.set(len(self.warming_listeners))

    # -- SDS --------------------------------------------------------------------------------

    def _apply_secrets(self, update: Update) -> list[str]:
        if self.sds is None:
            return ["pilotfish has no SDS subscription"]
        return self.sds.apply(update)

    def _secrets_ready(self) -> None:
        """A secret arrived (or timed out): install what was warming for it."""
        for record in list(self.warming_clusters.values()):
            if self._cluster_warm(record):
                del self.warming_clusters[record.name]
                self._activate_cluster(record)
        self.cm.warming_clusters.set(len(self.warming_clusters))
        errors: list[str] = []
        self._activate_warm_listeners(errors)
        for error in errors:
            log.warning("activating a listener whose secrets arrived failed: %s", error)

    def _update_sds_interest(self) -> None:
        """Drop the secrets nothing names any more (static listeners and clusters too)."""
        if self.sds is None:
            return
        refs = list(static_secret_refs(self.server.model))
        for record in [*self.listeners.values(), *self.warming_listeners.values()]:
            refs += secret_refs.listener_secrets(record.model)
        for record in [*self.clusters.values(), *self.warming_clusters.values()]:
            refs += secret_refs.cluster_secrets(record.model)
        self.sds.sync(refs)

    # -- timers -----------------------------------------------------------------------------

    def _set_timer(self, kind: str, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel_timer(kind, name)
        self._timers[(kind, name)] = self.loop.call_later(delay, fn)

    def _cancel_timer(self, kind: str, name: str) -> None:
        timer = self._timers.pop((kind, name), None)
        if timer is not None:
            timer.cancel()


def grpc_service_target(cm: Any, service: Any, path: str) -> str:
    """The gRPC target of a GrpcService: google_grpc's target URI, or the first endpoint of
    envoy_grpc's cluster."""
    if service.HasField("google_grpc"):
        return str(service.google_grpc.target_uri)
    name = service.envoy_grpc.cluster_name
    cluster = cm.get(name)
    if cluster is None or not cluster.hosts_by_key:
        raise ConfigError(
            f"{path}.envoy_grpc.cluster_name", f"cluster '{name}' has no endpoint to connect to"
        )
    host = next(iter(cluster.hosts_by_key.values()))
    return grpc_target(host.address)


def static_secret_refs(model: Any) -> Iterable[Any]:
    """The SDS secrets the bootstrap's static listeners and clusters name."""
    for listener in model.listeners:
        yield from secret_refs.listener_secrets(listener)
    for cluster in model.clusters:
        yield from secret_refs.cluster_secrets(cluster)


def _service_name(model: ClusterModel) -> str:
    return model.eds_service_name or model.name


def model_eds_source(cluster_proto: Any) -> Any:
    if cluster_proto.HasField("eds_cluster_config") and cluster_proto.eds_cluster_config.HasField(
        "eds_config"
    ):
        return cluster_proto.eds_cluster_config.eds_config
    return None


def _hcm_configs(model: ListenerModel) -> Iterable[Any]:
    from pilotfish.model.http import HttpConnectionManagerConfig

    chains = list(model.filter_chains)
    if model.default_filter_chain is not None:
        chains.append(model.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            if isinstance(f.config, HttpConnectionManagerConfig):
                yield f.config


def _rds_names(model: ListenerModel) -> set[str]:
    return {h.rds.route_config_name for h in _hcm_configs(model) if h.rds is not None}


def _rds_sources(model: ListenerModel) -> list[Any]:
    return [h.rds.config_source for h in _hcm_configs(model) if h.rds is not None]
