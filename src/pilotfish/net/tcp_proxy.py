"""envoy.filters.network.tcp_proxy: relay a downstream connection to a host of a cluster,
bytes both ways with backpressure, half-close propagated, idle timeout, access log at close."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from typing import Any

from pilotfish.context import ServerContext
from pilotfish.http.hash_policy import connection_hash
from pilotfish.model.http import TcpProxyConfig
from pilotfish.net.connection import ConnectionInfo
from pilotfish.stream_info import ResponseFlag, StreamInfo
from pilotfish.upstream import outlier
from pilotfish.upstream.conn_pool import ConnectFailure, open_connection

log = logging.getLogger("pilotfish.tcp_proxy")


class TcpProxyStats:
    def __init__(self, ctx: ServerContext, prefix: str) -> None:
        scope = ctx.stats.scope(f"tcp.{prefix}.")
        c = scope.counter
        self.downstream_cx_total = c("downstream_cx_total")
        self.downstream_cx_no_route = c("downstream_cx_no_route")
        self.downstream_cx_rx_bytes_total = c("downstream_cx_rx_bytes_total")
        self.downstream_cx_tx_bytes_total = c("downstream_cx_tx_bytes_total")
        self.downstream_flow_control_paused_reading_total = c(
            "downstream_flow_control_paused_reading_total"
        )
        self.downstream_flow_control_resumed_reading_total = c(
            "downstream_flow_control_resumed_reading_total"
        )
        self.idle_timeout = c("idle_timeout")
        # Created as Envoy creates them (drain and overload closes, early data and delayed
        # routing are not features pilotfish has: they stay 0).
        self.downstream_cx_drain_close = c("downstream_cx_drain_close")
        self.downstream_cx_overload_close = c("downstream_cx_overload_close")
        self.early_data_received_count_total = c("early_data_received_count_total")
        self.route_delayed_total = c("route_delayed_total")
        self.max_downstream_connection_duration = c("max_downstream_connection_duration")
        self.upstream_flush_total = c("upstream_flush_total")
        self.downstream_cx_rx_bytes_buffered = scope.gauge("downstream_cx_rx_bytes_buffered")
        self.downstream_cx_tx_bytes_buffered = scope.gauge("downstream_cx_tx_bytes_buffered")
        self.upstream_flush_active = scope.gauge("upstream_flush_active")


class TcpProxy:
    """One tcp_proxy config, ready to serve connections."""

    def __init__(self, config: TcpProxyConfig, ctx: ServerContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stats = TcpProxyStats(ctx, config.stat_prefix)
        self.access_loggers = [
            ext.factory.build(ext.config, ctx.access_logs)
            for ext in config.access_log
            if ext.factory is not None and ctx.access_logs is not None
        ]
        self.sessions: set[TcpProxySession] = set()
        # Set by the filter chain: Istio's TCP stats, told of each connection's open and close.
        self.observers: list[Any] = []
        self._total_weight = sum(w for _, w in config.weighted_clusters)

    def new_connection(self, info: ConnectionInfo) -> TcpProxySession:
        return TcpProxySession(self, info)

    def pick_cluster(self) -> str:
        if self.config.cluster:
            return self.config.cluster
        point = random.randrange(self._total_weight)
        for name, weight in self.config.weighted_clusters:
            if point < weight:
                return name
            point -= weight
        return self.config.weighted_clusters[-1][0]

    def drain(self) -> None:
        """TCP connections are left to finish on their own (as Envoy does)."""

    def close_all(self) -> None:
        """The drain period of a replaced or removed listener is over: close what is left."""
        for session in list(self.sessions):
            session.close()


class _Upstream(asyncio.Protocol):
    def __init__(self, session: TcpProxySession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.session.upstream_data(data)

    def eof_received(self) -> bool:
        self.session.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.upstream_closed()

    def pause_writing(self) -> None:
        self.session.set_downstream_paused(True)

    def resume_writing(self) -> None:
        self.session.set_downstream_paused(False)


def _reset_on_close(transport: asyncio.BaseTransport) -> None:
    """Make the coming close a reset (SO_LINGER 0), as closing with unread bytes is."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


class TcpProxySession(asyncio.Protocol, StreamInfo):
    def __init__(self, proxy: TcpProxy, info: ConnectionInfo) -> None:
        self.proxy = proxy
        self.info = info
        self.protocol = ""
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.downstream_eof = False
        self.upstream_eof_seen = False
        self.closed = False
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.attempts = 0
        self.closing_upstream = False  # this side closed the upstream connection
        self.upstream_bound = False  # connected and counted as the cluster's active request
        self.remote_closed_upstream = False
        self.cluster: Any = None
        self.host: Any = None
        self.start_time = time.time()
        self.connection_id = info.connection_id
        self.downstream_remote_address = info.remote_address
        self.downstream_direct_remote_address = info.remote_address
        self.downstream_local_address = info.local_address
        self.observed: list[Any] = []

    # -- downstream ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        proxy = self.proxy
        loop = proxy.ctx.loop
        self.start_monotonic = self.last_activity = loop.time()
        proxy.sessions.add(self)
        proxy.stats.downstream_cx_total.value += 1
        if proxy.observers:
            self.observed = [o.open(self) for o in proxy.observers]
        transport.pause_reading()  # type: ignore[attr-defined]
        name = proxy.pick_cluster()
        cluster = proxy.ctx.cluster_manager.get(name)
        if cluster is None:
            proxy.stats.downstream_cx_no_route.value += 1
            self.set_response_flag(ResponseFlag.NO_CLUSTER_FOUND)
            self.close()
            return
        self.cluster = cluster
        self.upstream_cluster = cluster.config.stat_name
        self._connect()
        self._arm()

    def _connect(self) -> None:
        cluster = self.cluster
        hash_policy = self.proxy.config.hash_policy
        if hash_policy:
            hash_key = connection_hash(hash_policy, self.info.remote_address)
            host = cluster.choose_host(self.info.original_dst, frozenset(), 1, hash_key)
        else:
            host = cluster.choose_host(self.info.original_dst)
        if host is None:
            self.set_response_flag(ResponseFlag.NO_HEALTHY_UPSTREAM)
            self.close()
            return
        self.host = host
        self.upstream_host = host.address_str
        self.attempts += 1
        self.upstream_request_attempt_count = self.attempts
        res = cluster.resources[0].connections
        if not res.can_create():
            cluster.stats.upstream_cx_overflow.value += 1
            self.set_response_flag(ResponseFlag.UPSTREAM_OVERFLOW)
            self.close()
            return
        res.inc()
        stats = cluster.stats
        stats.upstream_cx_total.value += 1
        stats.upstream_cx_active.value += 1
        # Envoy's TCP pool: the connection is a pending request until it is connected.
        stats.upstream_rq_pending_total.value += 1
        stats.upstream_rq_pending_active.value += 1
        host.cx_active += 1
        self.proxy.ctx.loop.create_task(self._do_connect())

    async def _do_connect(self) -> None:
        cluster = self.cluster
        started = cluster.loop.time()
        try:
            transport, proto = await open_connection(cluster, self.host, lambda: _Upstream(self))
        except ConnectFailure as e:
            monitor = self.host.outlier
            if monitor is not None:
                monitor.put_result(outlier.TIMEOUT if e.timeout else outlier.CONNECT_FAILED)
            stats = cluster.stats
            stats.upstream_cx_active.value -= 1
            stats.upstream_cx_destroy.value += 1
            stats.upstream_cx_connect_fail.value += 1
            if e.timeout:
                stats.upstream_cx_connect_timeout.value += 1
                stats.upstream_cx_destroy_local.value += 1
            else:
                stats.upstream_cx_destroy_remote.value += 1
            stats.upstream_rq_pending_active.value -= 1
            stats.upstream_rq_pending_failure_eject.value += 1
            self.host.cx_active -= 1
            cluster.resources[0].connections.dec()
            if self.closed:
                return
            if self.attempts < self.proxy.config.max_connect_attempts:
                self._connect()
                return
            stats.upstream_cx_connect_attempts_exceeded.value += 1
            if not e.timeout:  # Envoy gives no transport failure reason for a timeout
                self.upstream_transport_failure_reason = e.reason
            # The attempt failed (UF), and there is no attempt left (URX), in that order.
            self.set_response_flag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
            self.set_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            self.close()
            return
        monitor = self.host.outlier
        if monitor is not None:
            monitor.put_result(outlier.CONNECT_SUCCESS_FINAL)
        stats = cluster.stats
        stats.upstream_cx_connect_ms.record((cluster.loop.time() - started) * 1000)
        stats.upstream_rq_pending_active.value -= 1
        if self.closed:
            transport.close()
            return
        stats.upstream_rq_total.value += 1
        stats.upstream_rq_active.value += 1
        self.host.rq_total += 1
        self.host.rq_active += 1
        self.upstream = proto
        self.upstream_bound = True
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            self.upstream_local_address = f"{sockname[0]}:{sockname[1]}"
        if self.pending:
            # Bytes that came before the upstream connected: only now read, as far as Envoy's
            # stats and the access log are concerned.
            data = b"".join(self.pending)
            self.pending = []
            self._count_received(data)
            self._send_upstream(data)
        if self.downstream_eof:
            transport.write_eof()
        elif self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None or self.upstream.transport is None:
            # Envoy does not read the downstream until the upstream is connected. The event
            # loop starts reading after connection_made, so a first chunk may come: it is kept
            # (and not counted) and reading stops; if the upstream never connects, the close
            # is a reset, as the kernel resets a connection closed with unread bytes.
            self.pending.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self._count_received(data)
        self._send_upstream(data)

    def _count_received(self, data: bytes) -> None:
        self.last_activity = self.proxy.ctx.loop.time()
        self.bytes_received += len(data)
        self.proxy.stats.downstream_cx_rx_bytes_total.value += len(data)

    def _send_upstream(self, data: bytes) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            self.cluster.stats.upstream_cx_tx_bytes_total.value += len(data)
            self.upstream_bytes_sent += len(data)
            up.transport.write(data)

    def eof_received(self) -> bool:
        self.downstream_eof = True
        up = self.upstream
        if up is not None and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
        return not self.upstream_eof_seen

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish()

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    # -- upstream -----------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        self.last_activity = self.proxy.ctx.loop.time()
        self.bytes_sent += len(data)
        self.upstream_bytes_received += len(data)
        self.cluster.stats.upstream_cx_rx_bytes_total.value += len(data)
        self.proxy.stats.downstream_cx_tx_bytes_total.value += len(data)
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def upstream_eof(self) -> None:
        self.upstream_eof_seen = True
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.downstream_eof:
            # The upstream's FIN completed the close: a remote close for the cluster's stats.
            self.remote_closed_upstream = True
            self.close()

    def upstream_closed(self) -> None:
        cluster = self.cluster
        stats = cluster.stats
        stats.upstream_cx_active.value -= 1
        stats.upstream_cx_destroy.value += 1
        local = (self.closing_upstream and not self.remote_closed_upstream) or (
            not self.upstream_bound
        )
        if local:
            stats.upstream_cx_destroy_local.value += 1
        else:
            stats.upstream_cx_destroy_remote.value += 1
        if self.upstream_bound:
            # The connection carried the session's one "request" until it closed.
            self.upstream_bound = False
            stats.upstream_rq_active.value -= 1
            stats.upstream_cx_destroy_with_active_rq.value += 1
            if local:
                stats.upstream_cx_destroy_local_with_active_rq.value += 1
            else:
                stats.upstream_cx_destroy_remote_with_active_rq.value += 1
            if self.host is not None:
                self.host.rq_active -= 1
        cluster.resources[0].connections.dec()
        if self.host is not None:
            self.host.cx_active -= 1
        self.upstream = None
        self.close()

    def set_downstream_paused(self, paused: bool) -> None:
        if self.transport is None or self.closed:
            return
        stats = self.proxy.stats
        if paused:
            stats.downstream_flow_control_paused_reading_total.value += 1
            self.transport.pause_reading()
        else:
            stats.downstream_flow_control_resumed_reading_total.value += 1
            self.transport.resume_reading()

    # -- timeouts and closing -----------------------------------------------------------------

    def _arm(self) -> None:
        cfg = self.proxy.config
        deadlines = []
        if cfg.idle_timeout:
            deadlines.append(self.last_activity + cfg.idle_timeout)
        if cfg.max_downstream_connection_duration:
            deadlines.append(self.start_monotonic + cfg.max_downstream_connection_duration)
        if deadlines and not self.closed:
            self.timer = self.proxy.ctx.loop.call_at(min(deadlines), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = self.proxy.ctx.loop.time()
        cfg = self.proxy.config
        if (
            cfg.max_downstream_connection_duration
            and now >= self.start_monotonic + cfg.max_downstream_connection_duration
        ):
            self.proxy.stats.max_downstream_connection_duration.value += 1
            self.set_response_flag(ResponseFlag.DURATION_TIMEOUT)
            self.close()
            return
        if cfg.idle_timeout and now >= self.last_activity + cfg.idle_timeout:
            self.proxy.stats.idle_timeout.value += 1
            self.close()
            return
        self._arm()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            if self.pending and self.upstream is None:
                _reset_on_close(transport)
            transport.close()
        self._close_upstream()

    def _close_upstream(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not up.transport.is_closing():
            self.closing_upstream = True
            up.transport.close()

    def _finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close_upstream()
        proxy = self.proxy
        proxy.sessions.discard(self)
        self.end_monotonic = proxy.ctx.loop.time()
        self.info.closed()
        for observed in self.observed:
            observed.close()
        for logger in proxy.access_loggers:
            try:
                logger.log(self)
            except Exception:
                log.exception("access log failed")
