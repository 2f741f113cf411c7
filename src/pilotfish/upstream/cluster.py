"""A running cluster: its hosts (static, DNS, EDS or original destination), load balancer,
circuit breakers, connection pools and Envoy-named stats."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from pilotfish.model.cluster import Cluster as ClusterConfig
from pilotfish.model.cluster import ClusterLoadAssignment, DiscoveryType, HealthStatus
from pilotfish.model.common import PipeAddress, SocketAddress
from pilotfish.stats.store import Counter, Gauge, Histogram, Scope, Store
from pilotfish.tls.upstream import UpstreamTransportSockets
from pilotfish.upstream.health_check import HealthChecker, traffic_seen
from pilotfish.upstream.host import FAILED_ACTIVE_HC, PENDING_DYNAMIC_REMOVAL, Host
from pilotfish.upstream.lb import HostSet, LoadBalancer, make_lb
from pilotfish.upstream.outlier import Detector, EventLog

log = logging.getLogger("pilotfish.upstream")

_COUNTERS = (
    "upstream_cx_total",
    "upstream_cx_http1_total",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
    "upstream_cx_overflow",
    "upstream_cx_none_healthy",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_requests",
    "upstream_cx_pool_overflow",
    "upstream_cx_protocol_error",
    "upstream_cx_close_notify",
    "upstream_rq_total",
    "upstream_rq_pending_total",
    "upstream_rq_pending_overflow",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_cancelled",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_rx_reset",
    "upstream_rq_tx_reset",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_maintenance_mode",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
    "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total",
    "membership_change",
    "update_attempt",
    "update_success",
    "update_failure",
    "update_empty",
    "update_no_rebuild",
    "lb_healthy_panic",
    "bind_errors",
    "original_dst_host_invalid",
    "upstream_internal_redirect_failed_total",
    "upstream_internal_redirect_succeeded_total",
    "retry_or_shadow_abandoned",
    "assignment_stale",
    "assignment_timeout_received",
    "assignment_use_cached",
    "default.total_match_count",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_subsets_created",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
    "lb_subsets_removed",
    "lb_subsets_selected",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "upstream_cx_connect_attempts_exceeded",
    "upstream_cx_connect_with_0_rtt",
    "upstream_cx_http2_total",
    "upstream_cx_http3_total",
    "upstream_cx_max_duration_reached",
    "upstream_cx_preconnect_skipped",
    "upstream_http3_broken",
    "upstream_rq_0rtt",
    "upstream_rq_active_overflow",
    "upstream_rq_max_duration_reached",
    "upstream_rq_per_try_idle_timeout",
    "upstream_rq_retry_backoff_exponential",
    "upstream_rq_retry_backoff_ratelimited",
    "upstream_rq_rx_reset_no_error",
)
_GAUGES = (
    "upstream_cx_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "membership_total",
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "max_host_weight",
    "version",
    "lb_subsets_active",
    "upstream_queue_overloaded",
    "warming_state",
)


class ClusterStats:
    """References to a cluster's stats, so the request path increments attributes."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        for name in _COUNTERS:
            setattr(self, name.replace(".", "_"), scope.counter(name))
        for name in _GAUGES:
            setattr(self, name, scope.gauge(name, accumulate=name.startswith("upstream")))
        self.upstream_rq_time: Histogram = scope.histogram("upstream_rq_time")
        self.upstream_cx_connect_ms: Histogram = scope.histogram("upstream_cx_connect_ms")
        self.upstream_cx_length_ms: Histogram = scope.histogram("upstream_cx_length_ms")
        self._codes: dict[int, tuple[Counter, ...]] = {}
        self._internal_codes: dict[int, tuple[Counter, ...]] = {}
        self.upstream_rq_completed = scope.counter("upstream_rq_completed")

    def response_code(self, code: int, internal: bool = False) -> None:
        """A response (or a local reply charged to the cluster, as Envoy's router charges it):
        upstream_rq_<code>, upstream_rq_<N>xx and upstream_rq_completed, and the same under
        ``external.`` (``internal.`` for x-envoy-internal requests). Envoy creates these when
        first charged, so they are looked up then."""
        counters = (self._internal_codes if internal else self._codes).get(code)
        if counters is None:
            counters = self._code_counters(code, internal)
        counters[0].value += 1
        counters[1].value += 1
        counters[2].value += 1
        counters[3].value += 1
        counters[4].value += 1
        self.upstream_rq_completed.value += 1

    def _code_counters(self, code: int, internal: bool) -> tuple[Counter, ...]:
        scope = self.scope
        rq, group = f"upstream_rq_{code}", f"upstream_rq_{code // 100}xx"
        prefix = "internal." if internal else "external."
        counters = (
            scope.counter(rq),
            scope.counter(group),
            scope.counter(prefix + rq),
            scope.counter(prefix + group),
            scope.counter(prefix + "upstream_rq_completed"),
        )
        (self._internal_codes if internal else self._codes)[code] = counters
        return counters

    def retried_response_code(self, code: int) -> None:
        """A response that is retried: Envoy charges it under ``retry.`` only."""
        scope = self.scope
        scope.counter(f"retry.upstream_rq_{code}").value += 1
        scope.counter(f"retry.upstream_rq_{code // 100}xx").value += 1
        scope.counter("retry.upstream_rq_completed").value += 1

    # Declared for type checkers; set in __init__ from the tables above.
    upstream_cx_total: Counter
    upstream_cx_http1_total: Counter
    upstream_cx_connect_fail: Counter
    upstream_cx_connect_timeout: Counter
    upstream_cx_destroy: Counter
    upstream_cx_destroy_local: Counter
    upstream_cx_destroy_remote: Counter
    upstream_cx_destroy_with_active_rq: Counter
    upstream_cx_destroy_local_with_active_rq: Counter
    upstream_cx_destroy_remote_with_active_rq: Counter
    upstream_cx_rx_bytes_total: Counter
    upstream_cx_tx_bytes_total: Counter
    upstream_cx_overflow: Counter
    upstream_cx_none_healthy: Counter
    upstream_cx_idle_timeout: Counter
    upstream_cx_max_requests: Counter
    upstream_cx_protocol_error: Counter
    upstream_rq_total: Counter
    upstream_rq_pending_total: Counter
    upstream_rq_pending_overflow: Counter
    upstream_rq_pending_failure_eject: Counter
    upstream_rq_cancelled: Counter
    upstream_rq_timeout: Counter
    upstream_rq_per_try_timeout: Counter
    upstream_rq_rx_reset: Counter
    upstream_rq_tx_reset: Counter
    upstream_rq_retry: Counter
    upstream_rq_retry_success: Counter
    upstream_rq_retry_overflow: Counter
    upstream_rq_retry_limit_exceeded: Counter
    upstream_flow_control_paused_reading_total: Counter
    upstream_flow_control_resumed_reading_total: Counter
    upstream_flow_control_backed_up_total: Counter
    upstream_flow_control_drained_total: Counter
    upstream_rq_active_overflow: Counter
    upstream_rq_retry_backoff_exponential: Counter
    upstream_cx_connect_attempts_exceeded: Counter
    default_total_match_count: Counter
    membership_change: Counter
    update_attempt: Counter
    update_success: Counter
    update_failure: Counter
    update_empty: Counter
    update_no_rebuild: Counter
    lb_healthy_panic: Counter
    original_dst_host_invalid: Counter
    upstream_cx_active: Gauge
    upstream_rq_active: Gauge
    upstream_rq_pending_active: Gauge
    membership_total: Gauge
    membership_healthy: Gauge
    membership_degraded: Gauge
    membership_excluded: Gauge
    max_host_weight: Gauge


class Resource:
    """One circuit-breaker dimension: a count and its limit. Its ``*_open`` and ``remaining_*``
    gauges (Envoy's circuit_breakers.<priority>.*) are computed when stats are read."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def can_create(self) -> bool:
        return self.count < self.limit

    def inc(self) -> None:
        self.count += 1

    def dec(self) -> None:
        self.count -= 1

    def is_open(self) -> int:
        return int(self.count >= self.limit)

    def remaining(self) -> int:
        return max(0, self.limit - self.count)


class ResourceManager:
    def __init__(self, scope: Scope, thresholds: Any) -> None:
        self.connections = Resource(thresholds.max_connections)
        self.pending = Resource(thresholds.max_pending_requests)
        self.requests = Resource(thresholds.max_requests)
        self.retries = Resource(thresholds.max_retries)
        for res, open_name, remaining_name in (
            (self.connections, "cx_open", "remaining_cx"),
            (self.pending, "rq_pending_open", "remaining_pending"),
            (self.requests, "rq_open", "remaining_rq"),
            (self.retries, "rq_retry_open", "remaining_retries"),
        ):
            scope.computed_gauge(open_name, res.is_open)
            if thresholds.track_remaining:
                scope.computed_gauge(remaining_name, res.remaining)
        scope.gauge("cx_pool_open").set(0)


def _host_address(addr: Any) -> tuple[str, int] | str:
    if isinstance(addr, SocketAddress):
        return (addr.address, addr.port)
    if isinstance(addr, PipeAddress):
        return addr.path
    raise ValueError(f"unsupported upstream address {addr}")


def parse_ip_port(text: str) -> tuple[str, int] | None:
    """``a.b.c.d:port`` or ``[v6]:port`` as Envoy's parseInternetAddressAndPortNoThrow reads it
    (IP literals only, port 0-65535); None if it is anything else."""
    if text.startswith("["):
        end = text.rfind("]:")
        if end < 0:
            return None
        ip, port = text[1:end], text[end + 2 :]
        family = socket.AF_INET6
    else:
        ip, sep, port = text.rpartition(":")
        if not sep:
            return None
        family = socket.AF_INET
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    try:
        socket.inet_pton(family, ip)
    except OSError:
        return None
    return ip, int(port)


_FAMILIES = {
    "V4_ONLY": (socket.AF_INET,),
    "V6_ONLY": (socket.AF_INET6,),
    "V4_PREFERRED": (socket.AF_INET, socket.AF_INET6),
    "AUTO": (socket.AF_INET6, socket.AF_INET),
    "ALL": (socket.AF_UNSPEC,),
}


class Cluster:
    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        secrets: Any = None,
        outlier_event_log: EventLog | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.loop = loop
        self.store = store
        self.stat_name = config.stat_name
        self.stats_prefix = f"cluster.{config.stat_name}."
        scope = store.scope(self.stats_prefix)
        self.stats = ClusterStats(scope)
        # TLS per host (transport_socket / transport_socket_matches), secrets from ``secrets``.
        self.transport_sockets = UpstreamTransportSockets(config, secrets, scope)
        self.resources = (
            ResourceManager(scope.scope("circuit_breakers.default"), config.circuit_breakers[0]),
            ResourceManager(scope.scope("circuit_breakers.high"), config.circuit_breakers[1]),
        )
        self.hosts_by_key: dict[tuple[Any, ...], Host] = {}
        self.host_set = HostSet(())
        self.overprovisioning = 140
        self.lb: LoadBalancer = self._make_lb()
        self.outlier: Detector | None = None
        if config.outlier_detection is not None:
            self.outlier = Detector(
                config.outlier_detection,
                config.name,
                scope,
                loop,
                self.host_health_changed,
                outlier_event_log,
            )
        self.health_checker: HealthChecker | None = None
        if config.health_checks:
            self.health_checker = HealthChecker(
                config.health_checks[0],
                self,
                scope,
                self.host_health_changed,
                traffic_seen(self.stats.upstream_cx_total),
            )
            if self.outlier is not None:
                self.health_checker.on_result = self.outlier.on_health_check
        self._waited_for_health_checks = False
        self.initialized = False
        self._init_callbacks: list[Callable[[], None]] = []
        self._dns_task: asyncio.Task[None] | None = None
        self._dns_results: dict[int, list[Host]] = {}  # resolved hosts per DNS target
        self._cleanup_handle: asyncio.TimerHandle | None = None
        self.original_dst = config.type is DiscoveryType.ORIGINAL_DST
        self.last_updated = time.time()
        self.added_via_api = False
        self.version_info = ""
        self.proto: Any = None  # the CDS resource it came from, for /config_dump
        self.closed = False

    def _make_lb(self) -> LoadBalancer:
        cfg = self.config
        return make_lb(
            cfg.lb_policy,
            self.host_set,
            cfg.least_request_choice_count,
            cfg.least_request_active_request_bias,
            panic_counter=self.stats.lb_healthy_panic,
            hashing=cfg.consistent_hashing,
            rq_active=self.stats.upstream_rq_active,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin host discovery. Static and original-destination clusters are ready at once."""
        cfg = self.config
        if self.outlier is not None:
            self.outlier.start()
        if cfg.type is DiscoveryType.STATIC:
            if cfg.load_assignment is not None:
                self.set_load_assignment(cfg.load_assignment)
            self._mark_initialized()
        elif cfg.type in (DiscoveryType.STRICT_DNS, DiscoveryType.LOGICAL_DNS):
            self._dns_task = self.loop.create_task(self._dns_loop())
        elif cfg.type is DiscoveryType.ORIGINAL_DST:
            self._mark_initialized()
            self._schedule_cleanup()
        else:  # EDS: initialized by the first assignment from the xDS layer.
            pass

    def on_initialized(self, callback: Callable[[], None]) -> None:
        if self.initialized:
            callback()
        else:
            self._init_callbacks.append(callback)

    def _mark_initialized(self) -> None:
        if self.initialized:
            return
        if self.health_checker is not None and not self._waited_for_health_checks:
            # As Envoy's cluster warming: ready once every host has had its first check.
            self._waited_for_health_checks = True
            self.health_checker.on_first_round(self._mark_initialized)
            return
        self.initialized = True
        callbacks, self._init_callbacks = self._init_callbacks, []
        for cb in callbacks:
            cb()

    def close(self) -> None:
        self.closed = True
        if self._dns_task is not None:
            self._dns_task.cancel()
        if self._cleanup_handle is not None:
            self._cleanup_handle.cancel()
        if self.outlier is not None:
            self.outlier.close()
        if self.health_checker is not None:
            self.health_checker.close()
        for host in self.hosts_by_key.values():
            if host.pool is not None:
                host.pool.drain()
        self.transport_sockets.close()

    # -- hosts --------------------------------------------------------------------------------

    def set_load_assignment(self, cla: ClusterLoadAssignment) -> None:
        hosts = []
        for loc in cla.endpoints:
            for ep in loc.lb_endpoints:
                host = Host(
                    _host_address(ep.address),
                    weight=ep.load_balancing_weight,
                    health=ep.health_status,
                    hostname=ep.hostname,
                    locality=loc.locality,
                    locality_weight=loc.load_balancing_weight,
                    priority=loc.priority,
                    metadata=ep.metadata,
                )
                host.health_check_config = ep.health_check
                hosts.append(host)
        if self.config.type is DiscoveryType.STATIC:
            # A static cluster's hosts come from the bootstrap: no update_* stats (Envoy).
            self.update_hosts(hosts, cla.overprovisioning_factor)
        else:
            s = self.stats
            s.update_attempt.value += 1
            self.update_hosts(hosts, cla.overprovisioning_factor)
            s.update_success.value += 1
            if not hosts:
                s.update_empty.value += 1
        self._mark_initialized()

    def update_hosts(
        self, hosts: list[Host], overprovisioning: int = 140, changes: int = 1
    ) -> bool:
        """Swap the host set atomically. A host that stays keeps its object, and so its pool
        and connections; a removed host's idle connections close, busy ones finish. Returns
        whether the membership changed (then counted ``changes`` times in membership_change:
        Envoy counts each DNS target's update)."""
        new_by_key: dict[tuple[Any, ...], Host] = {}
        merged = []
        added = 0
        for h in hosts:
            key = h.key()
            old = self.hosts_by_key.get(key)
            if old is not None:
                if old.metadata != h.metadata:
                    old.tls = self.transport_sockets.select(h.metadata, count=False)
                old.weight, old.health, old.priority = h.weight, h.health, h.priority
                old.locality, old.metadata = h.locality, h.metadata
                old.locality_weight = h.locality_weight
                old.health_flags &= ~PENDING_DYNAMIC_REMOVAL
                h = old
            elif key not in new_by_key:
                added += 1
                h.tls = self.transport_sockets.select(h.metadata, count=True)
                if self.outlier is not None:
                    self.outlier.add_host(h)
                if self.health_checker is not None:
                    self.health_checker.add_host(h, h.health_check_config)
            new_by_key[key] = h
            merged.append(h)
        removed = [h for k, h in self.hosts_by_key.items() if k not in new_by_key]
        changed = bool(removed) or bool(added)
        if self.health_checker is not None and not self.config.ignore_health_on_host_removal:
            # Envoy keeps a removed host that passes its active health checks until one fails.
            for h in removed:
                if not h.health_flags & FAILED_ACTIVE_HC and h in self.health_checker.sessions:
                    h.health_flags |= PENDING_DYNAMIC_REMOVAL
                    new_by_key[h.key()] = h
                    merged.append(h)
            removed = [h for h in removed if not h.health_flags & PENDING_DYNAMIC_REMOVAL]
        for h in removed:
            if h.pool is not None:
                h.pool.drain()
            if self.outlier is not None:
                self.outlier.remove_host(h)
            if self.health_checker is not None:
                self.health_checker.remove_host(h)
        self.hosts_by_key = new_by_key
        cfg = self.config
        self.overprovisioning = overprovisioning
        self.host_set = HostSet(
            merged, cfg.healthy_panic_threshold, overprovisioning, cfg.locality_weighted_lb
        )
        self.lb = self._make_lb()
        s = self.stats
        if changed:
            s.membership_change.value += changes
        s.membership_total.set(len(merged))
        s.membership_healthy.set(sum(1 for h in merged if h.healthy))
        s.membership_degraded.set(sum(1 for h in merged if h.health is HealthStatus.DEGRADED))
        s.membership_excluded.set(0)
        if cfg.type is DiscoveryType.EDS or cfg.type is DiscoveryType.STRICT_DNS:
            # Envoy sets max_host_weight on these updates only (0 for static hosts).
            s.max_host_weight.set(max((h.weight for h in merged), default=0))
        self.last_updated = time.time()
        return changed

    def host_health_changed(self, host: Host) -> None:
        """A health check or the outlier detector changed ``host``'s health flags."""
        flags = host.health_flags
        if flags & PENDING_DYNAMIC_REMOVAL and flags & FAILED_ACTIVE_HC:
            self._remove_host(host)
            return
        if (
            flags & FAILED_ACTIVE_HC
            and self.config.close_connections_on_host_health_failure
            and host.pool is not None
        ):
            # Idle connections close now, busy ones after their request (Envoy resets those).
            host.pool.drain()
            host.pool = None
        self.refresh_health()

    def _remove_host(self, host: Host) -> None:
        self.hosts_by_key.pop(host.key(), None)
        if host.pool is not None:
            host.pool.drain()
        if self.outlier is not None:
            self.outlier.remove_host(host)
        if self.health_checker is not None:
            self.health_checker.remove_host(host)
        cfg = self.config
        hosts = [h for h in self.host_set.hosts if h is not host]
        self.host_set = HostSet(
            hosts, cfg.healthy_panic_threshold, self.overprovisioning, cfg.locality_weighted_lb
        )
        self.lb = self._make_lb()
        s = self.stats
        s.membership_change.value += 1
        s.membership_total.set(len(hosts))
        s.membership_healthy.set(sum(1 for h in hosts if h.healthy))

    def refresh_health(self) -> None:
        """A host's health flags changed (ejected or un-ejected, a health check's verdict): the
        same hosts, regrouped as healthy or not, as Envoy's priority set update does."""
        if self.closed:
            return
        cfg = self.config
        hosts = self.host_set.hosts
        self.host_set = HostSet(
            hosts, cfg.healthy_panic_threshold, self.overprovisioning, cfg.locality_weighted_lb
        )
        self.lb = self._make_lb()
        self.stats.membership_healthy.set(sum(1 for h in hosts if h.healthy))

    def choose_host(
        self,
        original_dst: tuple[str, int] | None = None,
        exclude: AbstractSet[Host] = frozenset(),
        attempts: int = 1,
        hash_key: int | None = None,
    ) -> Host | None:
        """A host for one request or connection, or None (counted in upstream_cx_none_healthy,
        as Envoy's cluster manager does). ``original_dst``: the destination an ORIGINAL_DST
        cluster connects to (see ``original_destination``). ``hash_key``: the request's hash
        from the route's hash_policy, for the consistent-hash balancers."""
        if self.original_dst:
            host = self._original_dst_host(original_dst)
        else:
            host = self.lb.choose(exclude, attempts, hash_key)
        if host is None:
            self.stats.upstream_cx_none_healthy.value += 1
        return host

    def original_destination(
        self, header: bytes | None, restored: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        """Where an ORIGINAL_DST cluster sends a request: with ``use_http_header``, the address
        in that header (``header``, its first value) if it is a valid IP:port (otherwise counted
        in original_dst_host_invalid); else the downstream connection's destination, but only
        if a listener filter restored it (``restored``, None otherwise)."""
        if header is not None:
            address = parse_ip_port(header.decode("latin-1"))
            if address is not None:
                return address
            self.stats.original_dst_host_invalid.value += 1
        return restored

    def _original_dst_host(self, address: tuple[str, int] | None) -> Host | None:
        if address is None:
            return None
        port_override = self.config.original_dst.upstream_port_override
        if port_override:
            address = (address[0], port_override)
        key = (address, "")
        host = self.hosts_by_key.get(key)
        if host is None:
            host = Host(address)
            host.tls = self.transport_sockets.select(host.metadata, count=True)
            if self.outlier is not None:
                self.outlier.add_host(host)
            self.hosts_by_key[key] = host
            s = self.stats
            s.membership_change.value += 1
            s.membership_total.set(len(self.hosts_by_key))
            s.membership_healthy.set(len(self.hosts_by_key))
        host.last_used = self.loop.time()
        return host

    def _schedule_cleanup(self) -> None:
        self._cleanup_handle = self.loop.call_later(self.config.cleanup_interval, self._cleanup)

    def _cleanup(self) -> None:
        """Original-destination hosts unused for a cleanup interval are forgotten."""
        now = self.loop.time()
        interval = self.config.cleanup_interval
        removed = False
        for key, host in list(self.hosts_by_key.items()):
            busy = host.pool is not None and host.pool.busy()
            if not busy and now - host.last_used >= interval:
                if host.pool is not None:
                    host.pool.drain()
                if self.outlier is not None:
                    self.outlier.remove_host(host)
                del self.hosts_by_key[key]
                removed = True
        if removed:
            self.stats.membership_change.value += 1
        self.stats.membership_total.set(len(self.hosts_by_key))
        self.stats.membership_healthy.set(len(self.hosts_by_key))
        if not self.closed:
            self._schedule_cleanup()

    # -- DNS ----------------------------------------------------------------------------------

    async def _resolve(self, name: str, port: int) -> list[str]:
        for family in _FAMILIES.get(self.config.dns_lookup_family, (socket.AF_UNSPEC,)):
            try:
                infos = await self.loop.getaddrinfo(
                    name, port, family=family, type=socket.SOCK_STREAM
                )
            except (socket.gaierror, OSError):
                continue
            addrs = []
            for info in infos:
                ip = str(info[4][0])
                if ip not in addrs:
                    addrs.append(ip)
            if addrs:
                return addrs
        return []

    async def _dns_loop(self) -> None:
        cfg = self.config
        while not self.closed:
            try:
                await self._refresh_dns()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a resolver error kill the refresh loop
                log.exception("DNS refresh failed for cluster %s", self.name)
            self._mark_initialized()
            await asyncio.sleep(cfg.dns_refresh_rate)

    async def _refresh_dns(self) -> None:
        """Resolve every endpoint (each is a DNS target with its own update_* stats, as in
        Envoy); a target that fails keeps its previous hosts."""
        cfg = self.config
        cla = cfg.load_assignment
        if cla is None:
            return
        s = self.stats
        results = self._dns_results
        changed_targets = 0
        target = 0
        for loc in cla.endpoints:
            for ep in loc.lb_endpoints:
                index, target = target, target + 1
                addr = ep.address
                assert isinstance(addr, SocketAddress)
                s.update_attempt.value += 1
                ips = await self._resolve(addr.address, addr.port)
                if not ips:
                    s.update_failure.value += 1
                    continue
                if cfg.type is DiscoveryType.LOGICAL_DNS:
                    ips = ips[:1]
                s.update_success.value += 1
                if [h.address for h in results.get(index, ())] == [(ip, addr.port) for ip in ips]:
                    s.update_no_rebuild.value += 1
                    continue
                changed_targets += 1
                results[index] = [
                    Host(
                        (ip, addr.port),
                        weight=ep.load_balancing_weight,
                        health=ep.health_status,
                        hostname=ep.hostname or addr.address,
                        locality=loc.locality,
                        locality_weight=loc.load_balancing_weight,
                        priority=loc.priority,
                        metadata=ep.metadata,
                    )
                    for ip in ips
                ]
        if changed_targets:
            hosts = [h for i in sorted(results) for h in results[i]]
            self.update_hosts(hosts, cla.overprovisioning_factor, changed_targets)
