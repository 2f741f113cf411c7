"""The HTTP connection manager (envoy.filters.network.http_connection_manager) for HTTP/1.1.

``HttpConnectionManager`` is built once per filter chain from its config; each accepted
connection gets an ``HttpConnection`` (an asyncio Protocol around the sans-IO codec), and each
request an ``ActiveStream`` that runs the HTTP filters and then the router.

The per-request path is written for speed: callbacks only (no tasks or futures), writes batched
per event, one timer per connection (a watchdog re-armed lazily) instead of timers per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pilotfish.codec.http1 import (
    RESP_DATE,
    RESP_SERVER,
    SEEN_ENVOY,
    SEEN_HOST,
    SEEN_REQUEST_ID,
    SEEN_XFCC,
    SEEN_XFF,
    SEEN_XFP,
    CodecError,
    Http1ServerCodec,
)
from pilotfish.context import ServerContext
from pilotfish.http import filter as hf
from pilotfish.http.date import DATE
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from pilotfish.http.path_normalization import (
    REDIRECT,
    REJECT,
    PathSettings,
    needs_normalization,
    normalize,
)
from pilotfish.http.request_id import new_request_id
from pilotfish.http.router import RouterSettings, apply_response_mutations, route_request
from pilotfish.model.http import HttpConnectionManagerConfig
from pilotfish.router.matcher import RouteConfigProvider, RouteTable, VirtualHostEntry
from pilotfish.stats.store import Gauge, Histogram, Scope
from pilotfish.stream_info import ResponseFlag, StreamInfo

log = logging.getLogger("pilotfish.http")

# Read-pause reasons (a bit each): any set bit keeps the downstream socket paused.
PAUSE_PIPELINE = 1
PAUSE_UPSTREAM_BACKPRESSURE = 2
PAUSE_BUFFER = 4

_EDGE_ONLY_REMOVALS = (
    b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node",
    b"x-envoy-original-path",
)
# Envoy's cleanInternalHeaders: control headers only an internal request may carry.
_EXTERNAL_REMOVALS = frozenset(
    (
        b"x-envoy-internal",
        b"x-envoy-retriable-status-codes",
        b"x-envoy-retriable-header-names",
        b"x-envoy-retry-on",
        b"x-envoy-retry-grpc-on",
        b"x-envoy-max-retries",
        b"x-envoy-upstream-alt-stat-name",
        b"x-envoy-upstream-rq-timeout-ms",
        b"x-envoy-upstream-rq-per-try-timeout-ms",
        b"x-envoy-upstream-rq-timeout-alt-response",
        b"x-envoy-expected-rq-timeout-ms",
        b"x-envoy-force-trace",
        b"x-envoy-ip-tags",
        b"x-envoy-original-url",
        b"x-envoy-hedge-on-per-try-timeout",
    )
)
_EDGE_REMOVALS = _EXTERNAL_REMOVALS | frozenset(_EDGE_ONLY_REMOVALS)


class HcmStats:
    """``http.<stat_prefix>.*`` (and the per-listener copies Envoy keeps of a few)."""

    def __init__(self, scope: Scope, listener_scope: Scope | None) -> None:
        c, g = scope.counter, scope.gauge
        self.downstream_cx_total = c("downstream_cx_total")
        self.downstream_cx_http1_total = c("downstream_cx_http1_total")
        self.downstream_cx_active: Gauge = g("downstream_cx_active", accumulate=False)
        self.downstream_cx_http1_active: Gauge = g("downstream_cx_http1_active", accumulate=False)
        self.downstream_cx_ssl_total = c("downstream_cx_ssl_total")
        self.downstream_cx_ssl_active: Gauge = g("downstream_cx_ssl_active", accumulate=False)
        self.downstream_cx_destroy = c("downstream_cx_destroy")
        self.downstream_cx_destroy_remote = c("downstream_cx_destroy_remote")
        self.downstream_cx_destroy_local = c("downstream_cx_destroy_local")
        self.downstream_cx_destroy_active_rq = c("downstream_cx_destroy_active_rq")
        self.downstream_cx_destroy_remote_active_rq = c("downstream_cx_destroy_remote_active_rq")
        self.downstream_cx_destroy_local_active_rq = c("downstream_cx_destroy_local_active_rq")
        self.downstream_cx_rx_bytes_total = c("downstream_cx_rx_bytes_total")
        self.downstream_cx_tx_bytes_total = c("downstream_cx_tx_bytes_total")
        self.downstream_cx_protocol_error = c("downstream_cx_protocol_error")
        self.downstream_cx_idle_timeout = c("downstream_cx_idle_timeout")
        self.downstream_cx_drain_close = c("downstream_cx_drain_close")
        self.downstream_cx_upgrades_total = c("downstream_cx_upgrades_total")
        self.downstream_cx_upgrades_active: Gauge = g(
            "downstream_cx_upgrades_active", accumulate=False
        )
        self.downstream_cx_length_ms: Histogram = scope.histogram("downstream_cx_length_ms")
        self.downstream_rq_total = c("downstream_rq_total")
        self.downstream_rq_http1_total = c("downstream_rq_http1_total")
        self.downstream_rq_active: Gauge = g("downstream_rq_active", accumulate=False)
        self.downstream_rq_completed = c("downstream_rq_completed")
        self.downstream_rq_rx_reset = c("downstream_rq_rx_reset")
        self.downstream_rq_tx_reset = c("downstream_rq_tx_reset")
        self.downstream_rq_non_relative_path = c("downstream_rq_non_relative_path")
        self.downstream_rq_too_large = c("downstream_rq_too_large")
        self.downstream_rq_idle_timeout = c("downstream_rq_idle_timeout")
        self.downstream_rq_timeout = c("downstream_rq_timeout")
        self.downstream_rq_header_timeout = c("downstream_rq_header_timeout")
        self.downstream_rq_ws_on_non_ws_route = c("downstream_rq_ws_on_non_ws_route")
        self.downstream_rq_failed_path_normalization = c("downstream_rq_failed_path_normalization")
        self.downstream_rq_redirected_with_normalized_path = c(
            "downstream_rq_redirected_with_normalized_path"
        )
        self.downstream_rq_response_before_rq_complete = c(
            "downstream_rq_response_before_rq_complete"
        )
        self.downstream_rq_time: Histogram = scope.histogram("downstream_rq_time")
        self.rq_total = c("rq_total")
        self.no_route = c("no_route")
        self.no_cluster = c("no_cluster")
        self.rq_direct_response = c("rq_direct_response")
        self.rq_redirect = c("rq_redirect")
        self.rq_reset_after_downstream_response_started = c(
            "rq_reset_after_downstream_response_started"
        )
        self._classes = tuple(c(f"downstream_rq_{n}xx") for n in range(1, 6))
        self._listener_classes = (
            tuple(listener_scope.counter(f"downstream_rq_{n}xx") for n in range(1, 6))
            if listener_scope is not None
            else None
        )
        self._listener_completed = (
            listener_scope.counter("downstream_rq_completed")
            if listener_scope is not None
            else None
        )

    def response(self, status: int) -> None:
        index = status // 100 - 1
        if 0 <= index < 5:
            self._classes[index].value += 1
            if self._listener_classes is not None:
                self._listener_classes[index].value += 1
        self.downstream_rq_completed.value += 1
        if self._listener_completed is not None:
            self._listener_completed.value += 1


class HttpConnectionManager:
    """One HCM config, ready to serve connections."""

    def __init__(
        self,
        config: HttpConnectionManagerConfig,
        ctx: ServerContext,
        *,
        listener_stat_prefix: str = "",
        route_table: RouteTable | None = None,
        routes: RouteConfigProvider | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.loop = ctx.loop
        # Where the route table comes from: inline (fixed) or RDS (swapped on each update;
        # every request reads the current one, so an update applies to new requests).
        if routes is None:
            if route_table is None and config.route_config is not None:
                route_table = RouteTable(config.route_config)
            routes = RouteConfigProvider("", route_table)
        self.routes = routes
        listener_scope = (
            ctx.stats.scope(f"{listener_stat_prefix}http.{config.stat_prefix}.")
            if listener_stat_prefix
            else None
        )
        hcm_scope = ctx.stats.scope(f"http.{config.stat_prefix}.")
        self.stats = HcmStats(hcm_scope, listener_scope)
        # Filter factories, without the router (the connection manager's terminal step): the
        # filters every request gets, and (when some filter runs only where a route has a
        # per-filter config for it) the whole chain in order, with that flag.
        self.filter_factories: list[tuple[str, Callable[[], hf.HttpFilter]]] = []
        self.all_filters: list[tuple[str, Callable[[], hf.HttpFilter], bool]] = []
        self.route_only_filters = False
        # Set by a listener drain (drain_gradually): every response, on connections open
        # now or accepted later, closes its connection (Envoy's drain_close).
        self.drain_close = False
        router_config = None
        for ext in config.http_filters:
            if ext.factory is not None and ext.factory.name == "envoy.filters.http.router":
                router_config = ext.config
                continue
            build_filter = getattr(ext.factory, "build_filter", None)
            if build_filter is not None:
                make, route_only = build_filter(ext.config, ctx, ext.name, hcm_scope)
                self.all_filters.append((ext.name, make, route_only))
                if route_only:
                    self.route_only_filters = True
                else:
                    self.filter_factories.append((ext.name, make))
                continue
            build = getattr(ext.factory, "build", None)
            if build is not None:
                make = build(ext.config, ctx)
                self.filter_factories.append((ext.name, make))
                self.all_filters.append((ext.name, make, False))
        self.router = RouterSettings(router_config, ctx)
        self.access_loggers = [
            ext.factory.build(ext.config, ctx.access_logs)
            for ext in config.access_log
            if ext.factory is not None and ctx.access_logs is not None
        ]
        self.server_name = config.server_name
        self.path_settings = PathSettings(
            config.normalize_path, config.merge_slashes, config.path_with_escaped_slashes_action
        )
        self.normalizes_paths = self.path_settings.active
        self.upgrades = {u.upgrade_type: u.enabled for u in config.upgrade_configs}
        self._internal_nets: tuple[Any, ...] = tuple(
            ipaddress.ip_network(c) for c in (config.internal_address_cidrs or ())
        )
        self.connections: set[HttpConnection] = set()
        # A new stream's earliest timeout (stream idle or whole-request), 0 if none.
        stream_timeouts = [t for t in (config.stream_idle_timeout, config.request_timeout) if t]
        self.first_stream_timeout = min(stream_timeouts) if stream_timeouts else 0.0

    def filters_for(
        self, per_filter_config: dict[str, Any]
    ) -> list[tuple[str, Callable[[], hf.HttpFilter]]]:
        """The chain for a route with per-filter configs: the filters every request gets, plus
        the route-only ones this route configures, in config order."""
        return [
            (name, make)
            for name, make, route_only in self.all_filters
            if not route_only or name in per_filter_config
        ]

    def is_internal(self, address: str) -> bool:
        if not self._internal_nets:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._internal_nets)

    def new_connection(self, info: Any) -> HttpConnection:
        return HttpConnection(self, info)

    def drain(self) -> None:
        """Ask every connection to close after its current response."""
        for conn in list(self.connections):
            conn.start_drain()

    def close_all(self) -> None:
        """The drain period of a replaced or removed listener is over: close what is left."""
        for conn in list(self.connections):
            conn.close()

    def drain_gradually(self) -> None:
        """Envoy's drain of a replaced listener: every connection closes after its next
        response (with ``connection: close``); an idle keep-alive connection is not closed
        at once, since its client may be sending a request on it right now. Connections
        accepted afterwards (an inbound drain keeps accepting) close after each response."""
        self.drain_close = True
        for conn in list(self.connections):
            conn.start_gradual_drain()


class HttpConnection:
    """One downstream HTTP/1.1 connection (an asyncio protocol, by duck typing so that it can
    be compiled)."""

    def __init__(self, hcm: HttpConnectionManager, info: Any) -> None:
        self.hcm = hcm
        self.info = info
        cfg = hcm.config
        self.codec = Http1ServerCodec(
            self,
            max_headers_kb=cfg.max_request_headers_kb,
            max_headers_count=cfg.max_headers_count,
            allow_chunked_length=cfg.allow_chunked_length,
            underscores=cfg.headers_with_underscores_action,
            allow_absolute_url=cfg.allow_absolute_url,
            enable_trailers=cfg.enable_trailers,
            keep_expect=cfg.proxy_100_continue,
        )
        self.transport: asyncio.Transport | None = None
        self.active: ActiveStream | None = None  # the stream whose response is being produced
        self.parsing: ActiveStream | None = None  # the stream whose request is being parsed
        self.queue: deque[ActiveStream] = deque()  # pipelined requests waiting their turn
        self.batch: list[bytes] | None = None
        self.read_paused = 0
        self.write_blocked = False
        self.closing = False  # close once the current response is written
        self.drain_pending = False  # the next response closes the connection (listener drain)
        self.closed = False
        self.requests = 0
        self.last_activity = 0.0
        self.opened_at = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self.head_started = 0.0  # when the request whose headers are incomplete began
        self.tunnel: Any = None  # set when an upgrade switched the connection to a TCP tunnel

    # -- transport events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        hcm = self.hcm
        s = hcm.stats
        s.downstream_cx_total.value += 1
        s.downstream_cx_http1_total.value += 1
        s.downstream_cx_active.value += 1
        s.downstream_cx_http1_active.value += 1
        if self.info.tls is not None:
            s.downstream_cx_ssl_total.value += 1
            s.downstream_cx_ssl_active.value += 1
        hcm.connections.add(self)
        now = hcm.loop.time()
        self.opened_at = self.last_activity = self.now = now
        self._arm(now + self._idle_timeout())

    def data_received(self, data: bytes) -> None:
        self.hcm.stats.downstream_cx_rx_bytes_total.value += len(data)
        self.now = self.last_activity = self.hcm.loop.time()
        if self.tunnel is not None:
            self.tunnel.downstream_data(data)
            return
        if self.closing and self.active is None and not self.queue:
            return  # draining: nothing more is read
        batch: list[bytes] = []
        self.batch = batch
        try:
            rest = self.codec.feed(data)
            if rest is not None and self.active is not None:
                self.active.on_upgrade_data(rest)
            timeout = self.hcm.config.request_headers_timeout
            if timeout and not self.head_started and self.codec.in_head:
                self.head_started = self.now
                self._arm(self.now + timeout)
        except CodecError as e:
            self._protocol_error(e)
        finally:
            self.batch = None
            if batch:
                self._write_now(b"".join(batch))

    def eof_received(self) -> bool:
        # Envoy does not support half-closed HTTP/1 connections: a client FIN ends everything.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        hcm = self.hcm
        s = hcm.stats
        s.downstream_cx_active.value -= 1
        s.downstream_cx_http1_active.value -= 1
        if self.info.tls is not None:
            s.downstream_cx_ssl_active.value -= 1
        s.downstream_cx_destroy.value += 1
        remote = not self.closing
        if remote:
            s.downstream_cx_destroy_remote.value += 1
        else:
            s.downstream_cx_destroy_local.value += 1
        s.downstream_cx_length_ms.record((hcm.loop.time() - self.opened_at) * 1000)
        hcm.connections.discard(self)
        self.info.closed()
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        streams = ([self.active] if self.active is not None else []) + list(self.queue)
        if self.parsing is not None and self.parsing not in streams:
            streams.append(self.parsing)
        self.active = self.parsing = None
        self.queue.clear()
        if streams:
            s.downstream_cx_destroy_active_rq.value += 1
            if remote:
                s.downstream_cx_destroy_remote_active_rq.value += 1
            else:
                s.downstream_cx_destroy_local_active_rq.value += 1
        for stream in streams:
            stream.on_downstream_disconnect()
        if self.tunnel is not None:
            self.tunnel.downstream_closed()

    def pause_writing(self) -> None:
        self.write_blocked = True
        active = self.active
        if active is not None:
            active.on_downstream_writable(False)

    def resume_writing(self) -> None:
        self.write_blocked = False
        active = self.active
        if active is not None:
            active.on_downstream_writable(True)

    # -- codec callbacks ----------------------------------------------------------------------

    def on_request_headers(self, headers: RequestHeaders) -> None:
        self.head_started = 0.0
        stream = ActiveStream(self, headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "[C%d] request headers complete: %s %s (authority %s)",
                self.info.connection_id,
                headers.method.decode("latin-1"),
                headers.path.decode("latin-1"),
                headers.authority.decode("latin-1"),
            )
        self.parsing = stream
        self.requests += 1
        if self.active is None:
            self.active = stream
            stream.start()
        else:
            self.queue.append(stream)
            self.pause_reading(PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        stream = self.parsing
        if stream is not None:
            stream.on_downstream_body(data)

    def on_request_complete(self, trailers: HeaderMap | None) -> None:
        stream = self.parsing
        self.parsing = None
        if stream is not None:
            stream.on_downstream_complete(trailers)

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        batch = self.batch
        if batch is not None:
            batch.append(data)
        else:
            self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            self.hcm.stats.downstream_cx_tx_bytes_total.value += len(data)
            self.last_activity = self.now  # response bytes keep the stream alive too
            transport.write(data)

    def begin_batch(self) -> None:
        if self.batch is None:
            self.batch = []

    def end_batch(self) -> None:
        batch = self.batch
        self.batch = None
        if batch:
            self._write_now(b"".join(batch))

    # -- flow control -------------------------------------------------------------------------

    def pause_reading(self, reason: int) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self.read_paused & reason:
            return
        self.read_paused &= ~reason
        if not self.read_paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- stream lifecycle ---------------------------------------------------------------------

    def stream_done(self, stream: ActiveStream) -> None:
        """The response to ``stream`` is fully written."""
        if self.active is not stream:
            return
        self.active = None
        if self.closing or self.closed:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.resume_reading(PAUSE_PIPELINE)
            nxt.start()
        elif self.read_paused & PAUSE_PIPELINE:
            self.resume_reading(PAUSE_PIPELINE)

    def start_drain(self) -> None:
        self.closing = True
        if self.active is None and self.parsing is None:
            self.hcm.stats.downstream_cx_drain_close.value += 1
            self.close()

    def start_gradual_drain(self) -> None:
        if self.active is not None or self.parsing is not None:
            self.closing = True  # as start_drain: closes after the response under way
        else:
            self.drain_pending = True  # idle: answer the next request, then close

    def close(self, *, abort: bool = False) -> None:
        if self.closed or self.transport is None:
            return
        self.closing = True
        self.codec.stop()  # requests after this point in bytes already read are not served
        batch = self.batch
        if batch:
            self._write_now(b"".join(batch))
            batch.clear()  # data_received's finally holds this list too: write it only once
        self.batch = None
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _protocol_error(self, error: CodecError) -> None:
        """A request the codec rejected: Envoy's local reply, then close. Responses owed to
        the requests before it go out first (Envoy reads a pipelined request only once the
        previous response is done, so it answers them, then the 400)."""
        s = self.hcm.stats
        s.downstream_cx_protocol_error.value += 1
        self.codec.stop()
        stream = self.parsing
        if stream is not None and stream.response_started:
            # The request's body went bad after its response began: only a reset can say so.
            self.close(abort=True)
            return
        if stream is None:
            # The error came before this request's headers were complete.
            stream = ActiveStream(self, RequestHeaders(b"GET", b"/", b""), headerless=True)
            if self.active is None:
                self.active = stream
            else:
                self.queue.append(stream)
        stream.protocol_error = True
        stream.request_complete = True
        if self.active is not stream:
            # Earlier requests are in flight: answer this one after them, in order.
            stream.deferred_error = error
            return
        self.closing = True
        stream.send_local_reply(
            error.status,
            _reason_body(error.status),
            error.details,
            ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
        )

    def _request_headers_timeout(self) -> None:
        """request_headers_timeout: the request's headers did not arrive in time."""
        self.head_started = 0.0
        self.codec.stop()
        self.closing = True
        stream = ActiveStream(self, RequestHeaders(b"GET", b"/", b""), headerless=True)
        self.active = stream
        stream.request_complete = True
        stream.send_local_reply(408, b"request header timeout", "request_header_timeout", 0)

    # -- timeouts -----------------------------------------------------------------------------

    def _idle_timeout(self) -> float:
        t = self.hcm.config.idle_timeout
        return t if t > 0 else 1e9

    def _arm(self, when: float) -> None:
        """Make sure the watchdog runs no later than ``when`` (loop time)."""
        wd = self.watchdog
        if wd is not None:
            if wd.when() <= when:
                return
            wd.cancel()
        self.watchdog = self.hcm.loop.call_at(when, self._on_watchdog)

    def arm_deadline(self, when: float) -> None:
        self._arm(when)

    def _on_watchdog(self) -> None:
        self.watchdog = None
        if self.closed:
            return
        now = self.hcm.loop.time()
        cfg = self.hcm.config
        self.begin_batch()
        try:
            if self.head_started:
                if self.active is not None:
                    # Envoy reads no further request while a response is pending: the next
                    # request's clock starts when it can be read.
                    self.head_started = now
                deadline = self.head_started + cfg.request_headers_timeout
                if now >= deadline:
                    self._request_headers_timeout()
                    return
                self._arm(deadline)
            stream = self.active
            if stream is not None:
                nxt = stream.check_timeouts(now)
                if self.closed:
                    return
                if nxt is not None:
                    self._arm(nxt)
                    return
                if self.active is not None:
                    # The stream changed state: look again shortly.
                    self._arm(now + 1.0)
                    return
            if self.parsing is not None and self.parsing is not self.active:
                self._arm(now + 1.0)
                return
            # Idle connection.
            idle = self._idle_timeout()
            if now - self.last_activity >= idle:
                self.hcm.stats.downstream_cx_idle_timeout.value += 1
                self.close()
                return
            deadline = self.last_activity + idle
            if cfg.max_connection_duration:
                end = self.opened_at + cfg.max_connection_duration
                if now >= end:
                    self.close()
                    return
                deadline = min(deadline, end)
            self._arm(deadline)
        finally:
            self.end_batch()


def _reason_body(status: int) -> bytes:
    from pilotfish.codec.http1 import REASONS

    return REASONS.get(status, b"Unknown")


class ActiveStream(StreamInfo):
    """One request/response exchange. It is its own StreamInfo (access logs read it).

    Per-request state that most requests never change lives in class attributes, so creating
    a stream sets a dozen attributes, not fifty."""

    request_complete = False
    response_started = False
    done = False
    started = False
    protocol_error = False
    deferred_error: CodecError | None = None
    pending: list[tuple[int, Any]] | None = None  # request events before start()
    route: Any = None  # the matched CompiledRoute
    vhost: VirtualHostEntry | None = None
    router: Any = None
    filters: list[hf.HttpFilter] | None = None
    decoder_stopped = -1
    encoder_stopped = -1
    decode_buffer: list[Any] | None = None
    encode_buffer: list[Any] | None = None
    http_version = "1.1"
    keep_alive = True
    has_body = False
    expect_continue = False
    upgrade: bytes | None = None
    seen = 0  # the codec's SEEN_* flags for these request headers
    internal = False  # an internal request (x-envoy-internal set by this proxy)
    sent_100_continue = False

    def __init__(
        self, conn: HttpConnection, headers: RequestHeaders, *, headerless: bool = False
    ) -> None:
        self.conn = conn
        hcm = self.hcm = conn.hcm
        self.request_headers = headers
        self.start_monotonic = conn.now
        self.start_time = time.time()
        self.is_head = headers.method == b"HEAD"
        info = conn.info
        self.connection_id = info.connection_id
        self.downstream_remote_address = self.downstream_direct_remote_address = info.remote_address
        self.downstream_local_address = info.local_address
        if not headerless:
            codec = conn.codec
            version = codec.version
            if version != "1.1":
                self.http_version = version
                self.protocol = "HTTP/1.0" if version == "1.0" else f"HTTP/{version}"
            if not codec.keep_alive:
                self.keep_alive = False
            if codec.chunked or codec.content_length:
                self.has_body = True
            if codec.expect_continue:
                self.expect_continue = True
            if codec.upgrade is not None:
                self.upgrade = codec.upgrade
            elif not self.has_body and headers.method != b"CONNECT":
                # Envoy decodes a headers-only request with end_stream: it is complete now, so a
                # local reply sent at once keeps the connection.
                self.request_complete = True
            self.seen = codec.seen
        s = hcm.stats
        s.downstream_rq_total.value += 1
        s.downstream_rq_http1_total.value += 1
        s.downstream_rq_active.value += 1

    # -- request side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin processing (immediately, or when an earlier pipelined response is done)."""
        self.started = True
        first_timeout = self.hcm.first_stream_timeout
        if first_timeout:
            conn = self.conn
            conn.last_activity = conn.now
            conn._arm(conn.now + first_timeout)  # no-op when the watchdog is due sooner
        headers = self.request_headers
        path = headers.path
        if (
            self.http_version != "1.1"
            or not self.keep_alive
            or path[:1] != b"/"
            or not headers.authority
            or self.upgrade is not None
            or self.expect_continue
            or self.deferred_error is not None
            or self.protocol_error
            or b"#" in path
        ):
            if not self._start_checks():
                return
        hcm = self.hcm
        if (
            hcm.normalizes_paths
            and headers.method != b"CONNECT"
            and needs_normalization(path, hcm.path_settings)
            and not self._normalize_path()
        ):
            return
        self._mutate_request_headers()
        table = hcm.routes.table
        if table is not None:
            self.vhost, route = table.route(headers)
            if route is not None:
                self.route = route
                self.route_name = route.name
        if self.upgrade is not None and not self._upgrade_allowed():
            self.conn.closing = True
            self.send_local_reply(403, b"", "upgrade_failed", 0)
            return
        factories = hcm.filter_factories
        if hcm.route_only_filters:
            cr = self.route
            if cr is not None and cr.per_filter_config:
                factories = hcm.filters_for(cr.per_filter_config)
        if factories:
            filters = []
            for _, make in factories:
                f = make()
                f.stream = self
                filters.append(f)
            self.filters = filters
            self._decode_headers(0, not self.has_body)
        else:
            route_request(self, not self.has_body)
        pending = self.pending
        if pending is not None:
            self.pending = None
            for kind, value in pending:
                if self.done:
                    break
                if kind == 0:
                    self._decode_data_from(0, value, False)
                else:
                    self._complete_request(value)

    def _start_checks(self) -> bool:
        """The unusual requests: answer or adjust them. False if the stream is over."""
        conn = self.conn
        if self.deferred_error is not None:
            e = self.deferred_error
            conn.closing = True
            self.send_local_reply(
                e.status, _reason_body(e.status), e.details, ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR
            )
            return False
        if self.protocol_error:
            return False
        cfg = self.hcm.config
        headers = self.request_headers
        if self.http_version != "1.1":
            if self.http_version == "1.0" and cfg.accept_http_10:
                if not headers.authority and cfg.default_host_for_http_10:
                    headers.authority = cfg.default_host_for_http_10
            else:
                conn.closing = True
                self.send_local_reply(
                    426, b"Upgrade Required", "low_version", ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR
                )
                return False
        if not self.keep_alive:
            conn.closing = True
        path = headers.path
        if path[:1] != b"/" and headers.method != b"CONNECT":
            # OPTIONS * and the like: Envoy answers 404 and keeps the connection.
            self.send_local_reply(404, b"", "absolute_path_rejected", 0)
            return False
        if b"#" in path:
            # Envoy's default (reject_path_with_fragment): the fragment is never forwarded.
            conn.closing = True
            self.send_local_reply(400, b"", "path_normalization_failed", 0)
            return False
        if (
            not headers.authority
            and not self.seen & SEEN_HOST
            and (self.http_version == "1.1" or not cfg.accept_http_10)
        ):
            conn.closing = True
            self.send_local_reply(400, b"", "missing_host_header", 0)
            return False
        if self.expect_continue and not cfg.proxy_100_continue:
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _normalize_path(self) -> bool:
        """normalize_path, merge_slashes, path_with_escaped_slashes_action (before routing and
        every filter, as Envoy). False if the stream was answered (400 or 307)."""
        headers = self.request_headers
        hcm = self.hcm
        action, path = normalize(headers.path, hcm.path_settings)
        if action == REJECT:
            hcm.stats.downstream_rq_failed_path_normalization.value += 1
            self.conn.closing = True
            self.send_local_reply(400, b"", "path_normalization_failed", 0)
            return False
        if action == REDIRECT:
            hcm.stats.downstream_rq_redirected_with_normalized_path.value += 1
            self.send_local_reply(
                307, b"", "path_normalization_failed", 0, extra_headers=[(b"location", path)]
            )
            return False
        headers.path = path
        return True

    def _upgrade_allowed(self) -> bool:
        """The route's upgrade_configs, if it names the type, decide; else the HCM's (Envoy's
        table: a route can enable an upgrade the HCM does not list)."""
        assert self.upgrade is not None
        upgrade_type = self.upgrade.lower()
        route = self.route
        action = route.action if route is not None else None
        wanted = upgrade_type.decode("latin-1")
        for name, enabled in getattr(action, "upgrade_configs", ()):
            if name == wanted:
                return bool(enabled)
        return self.hcm.upgrades.get(upgrade_type, False)

    def _mutate_request_headers(self) -> None:
        """Envoy's ConnectionManagerUtility::mutateRequestHeaders, HTTP/1 plain-text part. The
        codec's ``seen`` flags say which headers exist, so the common case scans nothing."""
        headers = self.request_headers
        hcm = self.hcm
        cfg = hcm.config
        items = headers.items
        seen = self.seen
        edge = False
        internal = False
        if cfg.use_remote_address:
            info = self.conn.info
            remote_ip = info.remote_ip
            if not cfg.skip_xff_append:
                appended = hcm.ctx.local_address if info.remote_is_loopback else remote_ip
                _append_header(headers, b"x-forwarded-for", appended.encode())
            headers.set(b"x-forwarded-proto", b"http")
            internal = not seen & SEEN_XFF and hcm.is_internal(remote_ip)
            edge = not internal
        else:
            if not seen & SEEN_XFP:
                items.append((b"x-forwarded-proto", b"http"))
            if seen & SEEN_XFF:
                # The client address for logs is the XFF entry after the trusted hops.
                address = _xff_address(
                    headers.get(b"x-forwarded-for") or b"", cfg.xff_num_trusted_hops
                )
                if address is not None:
                    self.downstream_remote_address = address
        if internal:
            self.internal = True
            headers.set(b"x-envoy-internal", b"true")
        else:
            if seen & SEEN_ENVOY:
                removals = _EDGE_REMOVALS if edge else _EXTERNAL_REMOVALS
                headers.items = items = [(n, v) for n, v in items if n not in removals]
            table = hcm.routes.table
            if table is not None and table.config.internal_only_headers:
                for name in table.config.internal_only_headers:
                    headers.remove(name)
        if cfg.via:
            _append_header(headers, b"via", cfg.via)
        if edge:
            headers.set(b"x-envoy-external-address", self.conn.info.remote_ip.encode())
        if cfg.generate_request_id:
            if edge and not cfg.preserve_external_request_id:
                headers.set(b"x-request-id", new_request_id())
            elif not seen & SEEN_REQUEST_ID:
                items.append((b"x-request-id", new_request_id()))
        fcc = cfg.forward_client_cert_details
        tls = self.conn.info.tls
        if tls is not None and tls.peer_certificate is not None:
            if fcc == "SANITIZE":
                if seen & SEEN_XFCC:
                    headers.remove(b"x-forwarded-client-cert")
            elif fcc == "APPEND_FORWARD" or fcc == "SANITIZE_SET":
                # Computed once per connection (tls/xfcc.py).
                details = tls.xfcc(cfg.set_current_client_cert_details)
                current = headers.get(b"x-forwarded-client-cert") if seen & SEEN_XFCC else None
                if fcc == "APPEND_FORWARD" and current:
                    details = current + b"," + details
                headers.set(b"x-forwarded-client-cert", details)
        elif seen & SEEN_XFCC and fcc != "ALWAYS_FORWARD_ONLY":
            # No client certificate, so x-forwarded-client-cert is not trusted.
            headers.remove(b"x-forwarded-client-cert")

    def _resolve_route(self) -> None:
        table = self.hcm.routes.table
        if table is None:
            return
        vhost, route = table.route(self.request_headers)
        self.vhost = vhost
        self.route = route
        if route is not None:
            self.route_name = route.name

    def per_filter_config(self, name: str) -> Any:
        """The per-route config of filter ``name`` for this request's route: the route's
        ``typed_per_filter_config``, else its virtual host's, else its route table's (most
        specific wins, resolved when the table was compiled), as the filter parsed it; None
        without a route or a config."""
        route = self.route
        if route is None:
            return None
        return route.per_filter_config.get(name)

    def per_filter_configs(self, name: str) -> tuple[Any, ...]:
        """Every level's per-route config of filter ``name``, most specific first (route,
        virtual host, route table), for filters that merge them field by field."""
        route = self.route
        if route is None:
            return ()
        return route.per_filter_levels.get(name, ())

    def clear_route_cache(self) -> None:
        """A filter changed what routing depends on (Envoy's clearRouteCache)."""
        self._resolve_route()

    def on_downstream_body(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if not self.started:
            if self.pending is None:
                self.pending = []
            self.pending.append((0, data))
            return
        if self.done:
            return
        self._decode_data_from(0, data, False)

    def on_downstream_complete(self, trailers: HeaderMap | None) -> None:
        self.last_downstream_rx = self.conn.now
        if not self.started:
            if self.pending is None:
                self.pending = []
            self.pending.append((1, trailers))
            return
        self._complete_request(trailers)

    def _complete_request(self, trailers: HeaderMap | None) -> None:
        self.request_complete = True
        if self.done:
            return
        if trailers is not None:
            self._decode_trailers_from(0, trailers)
        elif self.has_body:
            self._decode_data_from(0, b"", True)
        # (A request without a body ended with its headers: the router already knows.)

    def on_upgrade_data(self, data: bytes) -> None:
        if self.router is not None:
            self.router.on_upgrade_data(data)

    # -- the decoder filter chain -------------------------------------------------------------

    def _decode_headers(self, start: int, end_stream: bool) -> None:
        filters = self.filters
        if filters is not None:
            headers = self.request_headers
            for i in range(start, len(filters)):
                if filters[i].decode_headers(headers, end_stream) == hf.STOP:
                    self.decoder_stopped = i
                    self.decode_buffer = []
                    return
                if self.done:
                    return
        route_request(self, end_stream)

    def _decode_data_from(self, start: int, data: bytes, end_stream: bool) -> None:
        if self.decode_buffer is not None:
            self.decode_buffer.append((0, data, end_stream))
            return
        filters = self.filters
        if filters is not None:
            for i in range(start, len(filters)):
                r = filters[i].decode_data(data, end_stream)
                if r.__class__ is bytes:
                    data = r
                elif r == hf.STOP:
                    self.decoder_stopped = i
                    self.decode_buffer = []
                    return
                if self.done:
                    return
        router = self.router
        if router is not None:
            router.decode_data(data, end_stream)

    def _decode_trailers_from(self, start: int, trailers: HeaderMap) -> None:
        if self.decode_buffer is not None:
            self.decode_buffer.append((1, trailers, True))
            return
        filters = self.filters
        if filters is not None:
            for i in range(start, len(filters)):
                if filters[i].decode_trailers(trailers) == hf.STOP:
                    self.decoder_stopped = i
                    self.decode_buffer = []
                    return
        router = self.router
        if router is not None:
            router.decode_trailers(trailers)

    def continue_decoding(self) -> None:
        """A filter that returned STOP lets the request go on."""
        index = self.decoder_stopped
        if index < 0 or self.done:
            return
        self.decoder_stopped = -1
        buffered = self.decode_buffer or []
        self.decode_buffer = None
        conn = self.conn
        conn.begin_batch()
        try:
            if self.router is None:
                self._decode_headers(index + 1, not self.has_body)
                index = -1
            for kind, value, end in buffered:
                if self.done:
                    break
                if kind == 0:
                    self._decode_data_from(index + 1, value, end)
                else:
                    self._decode_trailers_from(index + 1, value)
        finally:
            conn.end_batch()

    # -- the response side --------------------------------------------------------------------

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        """Send response headers through the encoder filters to the client."""
        if self.done or self.response_started:
            return
        filters = self.filters
        if filters is not None:
            for i in range(len(filters) - 1, -1, -1):
                if filters[i].encode_headers(headers, end_stream) == hf.STOP:
                    self.encoder_stopped = i
                    self.response_headers = headers
                    self.encode_buffer = [(2, headers, end_stream)]
                    return
        self._write_headers(headers, end_stream)

    def _write_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        self.response_started = True
        self.response_headers = headers
        self.response_code = headers.status
        conn = self.conn
        hcm = self.hcm
        cfg = hcm.config
        items = headers.items
        # The upstream's flags say what is there; -1 (unknown) means look.
        seen = headers.seen if self.filters is None else -1
        if seen < 0:
            seen = (RESP_DATE if b"date" in headers else 0) | (
                RESP_SERVER if b"server" in headers else 0
            )
        if not seen & RESP_DATE:
            items.append((b"date", DATE.get()))
        transform = cfg.server_header_transformation
        if transform == "OVERWRITE":
            if seen & RESP_SERVER:
                headers.set(b"server", hcm.server_name)
            else:
                items.append((b"server", hcm.server_name))
        elif transform == "APPEND_IF_ABSENT" and not seen & RESP_SERVER:
            items.append((b"server", hcm.server_name))
        if cfg.always_set_request_id_in_response:
            rid = self.request_headers.get(b"x-request-id")
            if rid is not None:
                headers.set(b"x-request-id", rid)
        if hcm.ctx.draining or hcm.drain_close or conn.drain_pending:
            if not conn.closing:
                hcm.stats.downstream_cx_drain_close.value += 1
            conn.closing = True
        # Envoy answers in HTTP/1.0 only when it accepts HTTP/1.0 (else: HTTP/1.1 426).
        http10 = self.http_version == "1.0" and cfg.accept_http_10
        if headers.status == 101 and self.upgrade is not None:
            pass  # connection/upgrade headers go through for a switched protocol
        elif conn.closing:
            headers.set(b"connection", b"close")
        elif http10:
            headers.set(b"connection", b"keep-alive")
        if http10 and not end_stream and headers.get(b"content-length") is None:
            conn.closing = True  # a close-delimited body
        self.first_downstream_tx = conn.now
        conn.write(
            conn.codec.encode_headers(headers, end_stream, head_request=self.is_head, http10=http10)
        )
        if end_stream:
            self._response_complete(None)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:
            return
        if self.encode_buffer is not None:
            self.encode_buffer.append((0, data, end_stream))
            return
        filters = self.filters
        if filters is not None:
            self._encode_data_below(len(filters), data, end_stream)
            return
        self._write_data(data, end_stream)

    def _encode_data_below(self, index: int, data: bytes, end_stream: bool) -> None:
        """Run encoder filters below ``index`` (they run in reverse order) on ``data``."""
        filters = self.filters
        assert filters is not None
        for i in range(index - 1, -1, -1):
            r = filters[i].encode_data(data, end_stream)
            if r.__class__ is bytes:
                data = r
            elif r == hf.STOP:
                self.encoder_stopped = i
                self.encode_buffer = []
                return
        self._write_data(data, end_stream)

    def add_encoded_data(self, source: hf.HttpFilter, data: bytes) -> None:
        """A filter emits extra response body (e.g. a compressor's tail before trailers)."""
        filters = self.filters
        if not data or filters is None or self.done:
            return
        self._encode_data_below(filters.index(source), data, False)

    def _write_data(self, data: bytes, end_stream: bool) -> None:
        if not self.is_head:
            self.bytes_sent += len(data)
            conn = self.conn
            codec = conn.codec
            if codec._chunked_out:
                data = codec.encode_data(data, end_stream)
            if data:
                conn.write(data)
        if end_stream:
            self._response_complete(None)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        if self.done:
            return
        if self.encode_buffer is not None:
            self.encode_buffer.append((1, trailers, True))
            return
        filters = self.filters
        if filters is not None:
            for i in range(len(filters) - 1, -1, -1):
                if filters[i].encode_trailers(trailers) == hf.STOP:
                    self.encoder_stopped = i
                    self.encode_buffer = []
                    return
        self._write_trailers(trailers)

    def _write_trailers(self, trailers: HeaderMap) -> None:
        self.response_trailers = trailers
        if not self.is_head:
            out = self.conn.codec.encode_trailers(trailers)
            if out:
                self.conn.write(out)
        self._response_complete(trailers)

    def continue_encoding(self) -> None:
        if self.encoder_stopped < 0 or self.done:
            return
        self.encoder_stopped = -1
        buffered = self.encode_buffer or []
        self.encode_buffer = None
        conn = self.conn
        conn.begin_batch()
        try:
            for kind, value, end in buffered:
                if kind == 2:
                    self._write_headers(value, end)
                elif kind == 0:
                    self._write_data(value, end)
                else:
                    self._write_trailers(value)
        finally:
            conn.end_batch()

    def send_local_reply(
        self,
        status: int,
        body: bytes,
        details: str,
        flag: int,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Envoy's local reply: the status, a text body, date/server; through encoder filters."""
        if self.done:
            return
        if flag:
            self.set_response_flag(flag)
        self.response_code_details = details
        if self.response_started:
            # Too late for a reply: the client sees the connection reset.
            self.reset_stream(details)
            return
        if self.router is not None:
            self.router.cancel()
        headers = ResponseHeaders(status, list(extra_headers) if extra_headers else [])
        route = self.route
        if route is not None and (route.response_mutations or self.router is not None):
            # After route selection, the route's response headers apply (before the body's).
            wc = self.router.wc if self.router is not None else None
            apply_response_mutations(self, headers, route, wc)
        if body:
            headers.items.append((b"content-length", str(len(body)).encode()))
            headers.items.append((b"content-type", b"text/plain"))
        if self.http_version != "1.1":
            self.conn.closing = True  # every local reply to HTTP/1.0 closes (Envoy)
        if not self.request_complete:
            # The rest of the request will not be read: the connection can't be reused.
            self.conn.closing = True
        end_stream = not body and not self.is_head
        self.encode_headers(headers, end_stream)
        if not end_stream and not self.done:
            self.encode_data(body, True)

    def reset_stream(self, details: str = "") -> None:
        """Abandon the exchange: HTTP/1 can only say so by closing the connection."""
        if self.done:
            return
        if details:
            self.connection_termination_details = self.connection_termination_details or ""
        self.hcm.stats.downstream_rq_tx_reset.value += 1
        if self.router is not None:
            self.router.cancel()
        self._finish()
        self.conn.close(abort=True)

    def _response_complete(self, trailers: HeaderMap | None) -> None:
        self.last_downstream_tx = self.hcm.loop.time()
        if not self.request_complete:
            if self.response_code != 101:
                self.conn.closing = True
                self.hcm.stats.downstream_rq_response_before_rq_complete.value += 1
        self._finish()
        self.conn.stream_done(self)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        hcm = self.hcm
        now = hcm.loop.time()
        self.end_monotonic = now
        s = hcm.stats
        s.downstream_rq_active.value -= 1
        if self.response_code:
            s.response(self.response_code)
        s.downstream_rq_time.record((now - self.start_monotonic) * 1000)
        filters = self.filters
        if filters is not None:
            for f in filters:
                f.on_destroy()
        for logger in hcm.access_loggers:
            try:
                logger.log(self)
            except Exception:  # an access log must never break the data path
                log.exception("access log failed")

    def on_downstream_disconnect(self) -> None:
        """The client went away before the exchange finished."""
        if self.done:
            return
        self.set_response_flag(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION)
        if not self.response_code_details:
            self.response_code_details = "downstream_remote_disconnect"
        self.hcm.stats.downstream_rq_rx_reset.value += 1
        if self.router is not None:
            self.router.cancel()
        self._finish()

    def on_downstream_writable(self, writable: bool) -> None:
        if self.router is not None:
            self.router.on_downstream_writable(writable)

    def check_timeouts(self, now: float) -> float | None:
        """Called by the connection's watchdog: act on an expired timeout, or return the next
        deadline to check (None when the stream no longer needs the watchdog)."""
        if self.done:
            return None
        cfg = self.hcm.config
        deadlines = []
        if self.router is not None:
            d = self.router.deadline()
            if d is not None:
                if now >= d:
                    self.router.on_timeout()
                    return None
                deadlines.append(d)
        idle = cfg.stream_idle_timeout
        router = self.router
        if router is not None and router.action.idle_timeout is not None:
            idle = router.action.idle_timeout  # the route's idle_timeout overrides the HCM's
        if idle:
            d = self.conn.last_activity + idle
            if now >= d:
                self.hcm.stats.downstream_rq_idle_timeout.value += 1
                # Waiting for the upstream: 504; still receiving the request: 408 (and close).
                status = 504 if self.request_complete else 408
                if status == 408:
                    self.conn.closing = True
                flag = ResponseFlag.STREAM_IDLE_TIMEOUT
                self.send_local_reply(status, b"stream timeout", "stream_idle_timeout", flag)
                return None
            deadlines.append(d)
        if cfg.request_timeout and not self.request_complete:
            d = self.start_monotonic + cfg.request_timeout
            if now >= d:
                self.hcm.stats.downstream_rq_timeout.value += 1
                self.conn.closing = True
                self.send_local_reply(408, b"request timeout", "request_overall_timeout", 0)
                return None
            deadlines.append(d)
        return min(deadlines) if deadlines else None


def _xff_address(xff: bytes, skip: int) -> str | None:
    """Envoy's getLastAddressFromXFF: the entry ``skip`` places from the end, as "ip:0"."""
    parts = [p.strip() for p in xff.split(b",")]
    if skip >= len(parts):
        return None
    text = parts[-1 - skip].decode("latin-1")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return f"[{ip}]:0" if ip.version == 6 else f"{ip}:0"


def _append_xff(headers: RequestHeaders, address: bytes) -> None:
    _append_header(headers, b"x-forwarded-for", address)


def _append_header(headers: RequestHeaders, name: bytes, value: bytes) -> None:
    """Append to a comma-separated header (first instance), or add it."""
    items = headers.items
    for i, (n, v) in enumerate(items):
        if n == name:
            items[i] = (n, v + b"," + value if v else value)
            return
    items.append((name, value))
