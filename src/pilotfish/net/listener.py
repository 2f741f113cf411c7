"""Listeners: bind, accept, run listener filters, pick the filter chain, hand the connection to
the chain's terminal network filter. ``ListenerManager`` adds, updates and removes them; static
(bootstrap) and dynamic (LDS) listeners take the same path."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from pilotfish.context import ServerContext
from pilotfish.errors import ConfigError
from pilotfish.model.common import InternalAddress, PipeAddress, SocketAddress
from pilotfish.model.listener import FilterChain, Listener
from pilotfish.net.connection import ConnectionInfo
from pilotfish.net.filter_chain import FilterChainSelector
from pilotfish.tls.config import TlsContextConfig
from pilotfish.tls.context import TlsContext, TlsStats
from pilotfish.tls.downstream import TlsServerConnection

log = logging.getLogger("pilotfish.listener")


def listener_stat_prefix(model: Listener) -> str:
    """Envoy's ``listener.<address>.`` (``:`` becomes ``_``) or ``listener.<stat_prefix>.``."""
    if model.stat_prefix:
        return f"listener.{model.stat_prefix}."
    return f"listener.{model.address}.".replace(":", "_")


# ALPN a terminal filter can serve: the HTTP connection manager speaks HTTP/1.1 only, so a
# client must not be told "h2" (tcp_proxy passes any protocol through).
_HCM = "envoy.filters.network.http_connection_manager"
_HCM_UNSERVED_ALPN = frozenset(("h2", "h2c", "h3"))


class ChainRuntime:
    """A filter chain ready to take connections: its terminal filter's protocol factory and,
    with a TLS transport socket, its running TLS context."""

    def __init__(
        self, chain: FilterChain, ctx: ServerContext, listener_prefix: str, tls_stats: Any = None
    ) -> None:
        self.chain = chain
        terminal = chain.filters[-1] if chain.filters else None
        if terminal is None or terminal.factory is None or not hasattr(terminal.factory, "build"):
            raise ConfigError("filters", "filter chain has no runnable terminal filter")
        self.handler = terminal.factory.build(terminal.config, ctx, listener_prefix=listener_prefix)
        # Network filters before the terminal one that observe its connections (Istio's TCP
        # stats): the terminal filter calls them (only tcp_proxy has ``observers``).
        observers = [
            f.factory.build_tcp_observer(f.config, ctx)
            for f in chain.filters[:-1]
            if f.factory is not None and hasattr(f.factory, "build_tcp_observer")
        ]
        if observers and hasattr(self.handler, "observers"):
            self.handler.observers = observers
        self.tls: TlsContext | None = None
        socket_config = chain.transport_socket.config if chain.transport_socket else None
        if isinstance(socket_config, TlsContextConfig):
            is_hcm = terminal.name == _HCM
            self.tls = TlsContext(
                socket_config,
                ctx.secrets,
                tls_stats,
                alpn_filter=(
                    (lambda alpn: tuple(p for p in alpn if p not in _HCM_UNSERVED_ALPN))
                    if is_hcm
                    else None
                ),
            )

    def protocol_for(self, info: ConnectionInfo) -> asyncio.Protocol:
        return self.handler.new_connection(info)

    def drain(self, *, gradual: bool = False) -> None:
        drain = getattr(self.handler, "drain_gradually", None) if gradual else None
        if drain is None:
            drain = getattr(self.handler, "drain", None)
        if drain is not None:
            drain()

    def close_all(self) -> None:
        close_all = getattr(self.handler, "close_all", None)
        if close_all is not None:
            close_all()

    def release(self) -> None:
        """The listener is gone: its TLS context stops following secret changes."""
        if self.tls is not None:
            self.tls.close()


class ListenerStats:
    def __init__(self, ctx: ServerContext, prefix: str) -> None:
        scope = ctx.stats.scope(prefix)
        self.downstream_cx_total = scope.counter("downstream_cx_total")
        self.downstream_cx_active = scope.gauge("downstream_cx_active", accumulate=False)
        self.downstream_cx_destroy = scope.counter("downstream_cx_destroy")
        self.downstream_cx_length_ms = scope.histogram("downstream_cx_length_ms")
        self.no_filter_chain_match = scope.counter("no_filter_chain_match")
        self.downstream_cx_overflow = scope.counter("downstream_cx_overflow")
        self.downstream_global_cx_overflow = scope.counter("downstream_global_cx_overflow")
        self.downstream_pre_cx_active = scope.gauge("downstream_pre_cx_active", accumulate=False)
        self.downstream_pre_cx_timeout = scope.counter("downstream_pre_cx_timeout")
        self.downstream_listener_filter_error = scope.counter("downstream_listener_filter_error")
        self.downstream_listener_filter_remote_close = scope.counter(
            "downstream_listener_filter_remote_close"
        )
        self.extension_config_missing = scope.counter("extension_config_missing")
        self.network_extension_config_missing = scope.counter("network_extension_config_missing")
        self.downstream_cx_overload_reject = scope.counter("downstream_cx_overload_reject")
        self.downstream_cx_transport_socket_connect_timeout = scope.counter(
            "downstream_cx_transport_socket_connect_timeout"
        )
        self.connections_accepted_per_socket_event = scope.histogram(
            "connections_accepted_per_socket_event", unit=""
        )
        # Envoy's per-worker stats; pilotfish has one worker (worker_0).
        worker = scope.scope("worker_0.")
        self.worker_downstream_cx_total = worker.counter("downstream_cx_total")
        self.worker_downstream_cx_active = worker.gauge("downstream_cx_active", accumulate=False)


class ActiveListener:
    def __init__(self, model: Listener, ctx: ServerContext, manager: ListenerManager) -> None:
        self.model = model
        self.name = model.name
        self.ctx = ctx
        self.manager = manager
        self.stat_prefix = listener_stat_prefix(model)
        self.stats = ListenerStats(ctx, self.stat_prefix)
        self.runtimes: dict[int, ChainRuntime] = {}
        chains = list(model.filter_chains)
        if model.default_filter_chain is not None:
            chains.append(model.default_filter_chain)
        tls_stats = None
        for chain in chains:
            if tls_stats is None and chain.transport_socket is not None:
                tls_stats = TlsStats(ctx.stats.scope(self.stat_prefix))  # listener.X.ssl.*
            runtime = self.runtimes[id(chain)] = ChainRuntime(
                chain, ctx, self.stat_prefix, tls_stats
            )
            if model.drain_type == "MODIFY_ONLY" and ctx.drain is not None:
                ctx.drain.exempt(runtime.handler)
        self.selector = FilterChainSelector(model.filter_chains, model.default_filter_chain)
        self.listener_filters = [
            ext.factory.build(ext.config)
            for ext in model.listener_filters
            if ext.factory is not None and hasattr(ext.factory, "build")
        ]
        if model.use_original_dst:
            # Envoy's buildOriginalDstListenerFilter: use_original_dst implies the original_dst
            # listener filter (Istio's virtualOutbound names none), after the configured ones.
            from pilotfish.extensions.filters.listener.original_dst import OriginalDstFilter

            if not any(isinstance(lf, OriginalDstFilter) for lf in self.listener_filters):
                self.listener_filters.append(OriginalDstFilter())
        # Filters that decide from the connection's first bytes (tls_inspector, ...).
        self.inspecting = any(getattr(lf, "max_read_bytes", 0) for lf in self.listener_filters)
        self.server: asyncio.AbstractServer | None = None
        self.sock: socket.socket | None = None
        self.port: int | None = None  # the bound TCP port, kept after the socket is closed
        self.stopped = False  # no longer accepting (drained or stopped)
        self.draining = False
        self.connections = 0
        self.last_updated = time.time()
        self.version_info = ""
        self.proto: Any = None  # the LDS resource it came from, for /config_dump

    # -- binding ------------------------------------------------------------------------------

    def bind(self) -> None:
        """Create and bind the listening socket (synchronously, so errors surface at once)."""
        model = self.model
        addr = model.address
        if not model.bind_to_port or isinstance(addr, InternalAddress):
            return
        if isinstance(addr, PipeAddress):
            path = addr.path
            abstract = path.startswith("@")
            if abstract:
                path = "\0" + path[1:]
            elif os.path.exists(path):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            if addr.mode and not abstract:
                os.chmod(path, addr.mode)
        else:
            assert isinstance(addr, SocketAddress)
            family = socket.AF_INET6 if ":" in addr.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if model.enable_reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and not addr.ipv4_compat:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                if model.transparent:
                    sock.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT (CAP_NET_ADMIN)
                if model.freebind:
                    sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
            except OSError as e:
                sock.close()
                option = "IP_TRANSPARENT" if model.transparent else "IP_FREEBIND"
                raise OSError(
                    e.errno,
                    f"listener '{model.name}' failed to apply socket options "
                    f"({option}): {e.strerror}",
                ) from None
            try:
                sock.bind((addr.address, addr.port))
            except OSError as e:
                sock.close()
                raise OSError(e.errno, f"cannot bind '{addr}': {e.strerror}") from None
        sock.listen(model.tcp_backlog_size)
        sock.setblocking(False)
        self.sock = sock
        if sock.family != socket.AF_UNIX:
            self.port = int(sock.getsockname()[1])

    @property
    def bound_port(self) -> int | None:
        """The port the listener was bound to (still reported once it stopped, as Envoy's
        /listeners does); None for Unix sockets and unbound listeners."""
        return self.port

    async def start(self) -> None:
        if self.sock is None:
            return
        self.server = await self.ctx.loop.create_server(
            lambda: AcceptedConnection(self), sock=self.sock, backlog=self.model.tcp_backlog_size
        )

    # -- connections --------------------------------------------------------------------------

    def accept(self, transport: asyncio.Transport, info: ConnectionInfo) -> asyncio.Protocol | None:
        """Pick the chain for an accepted connection and return the protocol to give it to
        (the terminal protocol, behind TLS if the chain's transport socket is TLS)."""
        chain = self.selector.select(info)
        if chain is None:
            self.stats.no_filter_chain_match.value += 1
            return None
        info.filter_chain = chain
        runtime = self.runtimes[id(chain)]
        tls = runtime.tls
        context = tls.ssl_context if tls is not None else None
        if tls is not None and context is None:
            # A secret the chain needs has not arrived: the connection cannot be served.
            tls.stats.connection_error.value += 1
            return None
        stats = self.stats
        stats.downstream_cx_total.value += 1
        stats.downstream_cx_active.inc()  # inc() marks the gauge used, as Envoy's add()
        stats.worker_downstream_cx_total.value += 1
        stats.worker_downstream_cx_active.inc()
        self.connections += 1
        self.manager.total_connections += 1

        def on_close() -> None:
            stats.downstream_cx_active.value -= 1
            stats.worker_downstream_cx_active.value -= 1
            stats.downstream_cx_destroy.value += 1
            stats.downstream_cx_length_ms.record((time.monotonic() - info.start) * 1000)
            self.connections -= 1
            self.manager.total_connections -= 1

        info.close_hook = on_close
        app = runtime.protocol_for(info)
        if tls is None or context is None:
            return app
        conn = TlsServerConnection(transport, tls, context, app, info)
        timeout = chain.transport_socket_connect_timeout
        if timeout:
            conn.timer = self.ctx.loop.call_later(timeout, self._tls_timeout, conn)
        return conn

    def _tls_timeout(self, conn: TlsServerConnection) -> None:
        conn.timer = None
        self.stats.downstream_cx_transport_socket_connect_timeout.value += 1
        conn.abort()

    # -- shutdown -----------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        self.stopped = True
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def drain_connections(self, *, gradual: bool = False) -> None:
        """Existing connections close after their current request (``gradual``: HTTP
        connections close after their next response, idle ones are not closed at once)."""
        for runtime in self.runtimes.values():
            runtime.drain(gradual=gradual)

    def drain(self, *, gradual: bool = False) -> None:
        """Stop accepting and let existing connections finish their requests."""
        self.draining = True
        self.stop_accepting()
        self.drain_connections(gradual=gradual)


class AcceptedConnection(asyncio.Protocol):
    """Protocol of a just-accepted socket: runs listener filters, then hands the transport to
    the chosen filter chain's protocol. Filters that inspect the first bytes get them here;
    the bytes are then replayed to the chain's protocol."""

    def __init__(self, listener: ActiveListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.info: ConnectionInfo | None = None
        self.target: asyncio.Protocol | None = None
        self.inspectors: list[Any] = []  # listener filters still waiting for bytes, in order
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None
        self.handed_off = False  # by use_original_dst, to the listener of the original address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        listener = self.listener
        ctx = listener.ctx
        listener.stats.connections_accepted_per_socket_event.record(1)  # one per accept here
        if listener.manager.over_global_limit() and not listener.model.ignore_global_conn_limit:
            listener.stats.downstream_global_cx_overflow.value += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        info = ConnectionInfo(
            ctx.connection_id(),
            transport.get_extra_info("sockname"),
            transport.get_extra_info("peername"),
            time.monotonic(),
            listener.model.per_connection_buffer_limit_bytes,
        )
        info.listener = listener
        self.info = info
        pre_active = listener.stats.downstream_pre_cx_active
        pre_active.inc()  # while listener filters run (Envoy counts every accepted socket)
        for lf in listener.listener_filters:
            lf.on_accept(info, sock)
        if listener.inspecting:
            self.inspectors = [
                lf for lf in listener.listener_filters if getattr(lf, "max_read_bytes", 0)
            ]
            timeout = listener.model.listener_filters_timeout
            if timeout:
                self.timer = ctx.loop.call_later(timeout, self._inspection_timeout)
            return
        pre_active.dec()
        self._hand_over()

    def _hand_over(self) -> None:
        """Pick the filter chain and give it the connection (and any bytes read so far)."""
        transport, info, listener = self.transport, self.info, self.listener
        assert transport is not None and info is not None
        target_listener = listener
        hand_off = listener.model.use_original_dst and not self.handed_off
        if hand_off and info.original_dst is not None:
            target_listener = listener.manager.find_by_destination(info.original_dst) or listener
            if target_listener is not listener:
                self._hand_off(target_listener)
                return
        proto = target_listener.accept(transport, info)
        if proto is None:
            transport.close()
            return
        self.target = proto
        transport.set_protocol(proto)
        proto.connection_made(transport)
        data, self.buffer = self.buffer, b""
        if isinstance(proto, TlsServerConnection):
            proto.start(data)  # the ClientHello tls_inspector read goes to the TLS engine
        elif data:
            proto.data_received(data)

    def _hand_off(self, target: ActiveListener) -> None:
        """Envoy's use_original_dst hand-off (the new listener's ``onAcceptWorker``, with no
        further hand-off): the target listener's own listener filters run on the connection
        (Istio's ``0.0.0.0_9080`` has an http_inspector its filter chain matches on), with the
        bytes read so far, before its filter chain is chosen."""
        transport, info = self.transport, self.info
        assert transport is not None and info is not None
        self.handed_off = True
        self.listener = target
        info.listener = target
        target.stats.downstream_pre_cx_active.inc()
        sock = transport.get_extra_info("socket")
        for lf in target.listener_filters:
            lf.on_accept(info, sock)
        if not target.inspecting:
            target.stats.downstream_pre_cx_active.dec()
            self._hand_over()
            return
        self.inspectors = [lf for lf in target.listener_filters if getattr(lf, "max_read_bytes", 0)]
        timeout = target.model.listener_filters_timeout
        if timeout:
            self.timer = target.ctx.loop.call_later(timeout, self._inspection_timeout)
        if self.buffer:
            data, self.buffer = self.buffer, b""
            self.data_received(data)

    def _inspection_done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.listener.stats.downstream_pre_cx_active.dec()
        self._hand_over()

    def _inspection_timeout(self) -> None:
        self.timer = None
        if not self.inspectors or self.transport is None or self.transport.is_closing():
            return
        self.inspectors = []
        stats = self.listener.stats
        stats.downstream_pre_cx_timeout.value += 1
        if self.listener.model.continue_on_listener_filters_timeout:
            self._inspection_done()
        else:
            stats.downstream_pre_cx_active.dec()
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        inspectors = self.inspectors
        if not inspectors:
            return  # no chain was chosen: the socket is being closed
        info = self.info
        assert info is not None
        self.buffer += data
        while inspectors:
            lf = inspectors[0]
            if lf.on_data(info, self.buffer) or len(self.buffer) >= lf.max_read_bytes:
                inspectors.pop(0)
            else:
                return
        self._inspection_done()

    def eof_received(self) -> bool:
        if self.inspectors:
            # The client gave up before the listener filters could decide (Envoy:
            # downstream_listener_filter_remote_close).
            self.inspectors = []
            stats = self.listener.stats
            stats.downstream_listener_filter_remote_close.value += 1
            stats.downstream_pre_cx_active.dec()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inspectors:
            self.inspectors = []
            self.listener.stats.downstream_pre_cx_active.dec()


class ListenerManager:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.listeners: dict[str, ActiveListener] = {}
        self.draining: list[ActiveListener] = []
        self.total_connections = 0
        self.max_connections: int | None = None
        scope = ctx.stats.scope("listener_manager.")
        self.stats_added = scope.counter("listener_added")
        self.stats_modified = scope.counter("listener_modified")
        self.stats_removed = scope.counter("listener_removed")
        self.stats_create_success = scope.counter("listener_create_success")
        self.stats_create_failure = scope.counter("listener_create_failure")
        self.stats_stopped = scope.counter("listener_stopped")
        self.stats_in_place_updated = scope.counter("listener_in_place_updated")
        self.gauge_active = scope.gauge("total_listeners_active")
        self.gauge_warming = scope.gauge("total_listeners_warming")
        self.gauge_draining = scope.gauge("total_listeners_draining")
        self.gauge_filter_chains_draining = scope.gauge("total_filter_chains_draining")
        self.gauge_workers_started = scope.gauge("workers_started")
        scope.gauge("workers_pinned")
        self.gauge_active.set(0)
        self.gauge_warming.set(0)
        self.gauge_workers_started.set(0)

    def over_global_limit(self) -> bool:
        return self.max_connections is not None and self.total_connections >= self.max_connections

    def build(self, model: Listener) -> ActiveListener:
        """Create (and bind) a listener without installing it; raises on failure."""
        listener = ActiveListener(model, self.ctx, self)
        try:
            listener.bind()
        except OSError:
            self.stats_create_failure.value += 1
            raise
        return listener

    async def add_or_update(self, model: Listener, *, version_info: str = "") -> bool:
        """Install a listener; an existing one of the same name is replaced and drained."""
        new = self.prepare(model)
        if new is None:
            return False
        self.install(new, version_info=version_info)
        await new.start()
        return True

    def prepare(self, model: Listener) -> ActiveListener | None:
        """The synchronous half of add_or_update: build the listener and bind its socket (or
        take over the bound socket of the listener it replaces at the same address), so that
        a bind error surfaces at once. None when the listener is unchanged."""
        old = self.listeners.get(model.name)
        if old is not None and old.model == model:
            return None
        if old is not None and _same_bind(old.model, model):
            new = ActiveListener(model, self.ctx, self)
            # A duplicate of the listening socket: closing the old server closes its own
            # descriptor, while connections keep queueing on the socket for the new one.
            new.sock, old.sock = (old.sock.dup() if old.sock is not None else None), None
            new.port = old.port
            if old.server is not None:
                old.server.close()
                old.server = None
            return new
        return self.build(model)

    def install(self, new: ActiveListener, *, version_info: str = "") -> None:
        """Make a prepared listener the one of its name (the one it replaces drains); it
        accepts once ``start()`` has run. Synchronous, so that a second update of the same
        listener prepares against this one."""
        old = self.listeners.get(new.name)
        new.version_info = version_info
        self.listeners[new.name] = new
        if old is not None:
            self.stats_modified.value += 1
            self._drain_old(old)
        else:
            self.stats_added.value += 1
        self.stats_create_success.value += 1
        self.gauge_active.set(len(self.listeners))

    def remove(self, name: str) -> bool:
        old = self.listeners.pop(name, None)
        if old is None:
            return False
        self.stats_removed.value += 1
        self._drain_old(old)
        self.gauge_active.set(len(self.listeners))
        return True

    def _drain_old(self, old: ActiveListener) -> None:
        # As Envoy drains a replaced or removed listener: over the drain time each HTTP
        # connection closes after its next response; what is left closes at the end.
        # Closing idle keep-alive connections at once would fail the requests their clients
        # are sending at that moment.
        old.drain(gradual=True)
        self.draining.append(old)
        self.gauge_draining.set(len(self.draining))

        def forget() -> None:
            # --drain-time-s bounds the drain: connections still open are closed.
            for runtime in old.runtimes.values():
                runtime.close_all()
                runtime.release()
            if old in self.draining:
                self.draining.remove(old)
                self.gauge_draining.set(len(self.draining))

        self.ctx.loop.call_later(self.ctx.drain_time, forget)

    def find_by_destination(self, dst: tuple[str, int]) -> ActiveListener | None:
        """The listener for an original destination (Envoy's use_original_dst hand-off)."""
        ip, port = dst
        wildcard = None
        for listener in self.listeners.values():
            addr = listener.model.address
            if not isinstance(addr, SocketAddress) or addr.port != port:
                continue
            if addr.address == ip:
                return listener
            if addr.address in ("0.0.0.0", "::"):
                wildcard = listener
        return wildcard

    def _selected(self, inbound_only: bool) -> list[ActiveListener]:
        return [
            x
            for x in self.listeners.values()
            if not inbound_only or x.model.traffic_direction == "INBOUND"
        ]

    def handlers(self, *, inbound_only: bool = False) -> list[Any]:
        """The connection managers (terminal handlers) of the listeners."""
        return [
            runtime.handler
            for listener in self._selected(inbound_only)
            for runtime in listener.runtimes.values()
        ]

    def drain_all(self, *, inbound_only: bool = False) -> None:
        """Shutdown: stop accepting and drain-close every connection."""
        for listener in self._selected(inbound_only):
            listener.drain()

    def stop_listeners(self, *, inbound_only: bool = False) -> None:
        """Envoy's stopListeners (/drain_listeners): the listeners stop accepting (and stay
        listed); the connections they accepted go on."""
        for listener in self._selected(inbound_only):
            if not listener.stopped:
                listener.stop_accepting()
                self.stats_stopped.value += 1

    def drain_connections(self, *, inbound_only: bool = False, gradual: bool = False) -> None:
        """Drain-close the listeners' connections (after their current request; ``gradual``:
        see ActiveListener.drain_connections)."""
        for listener in self._selected(inbound_only):
            listener.drain_connections(gradual=gradual)

    def stop_all(self) -> None:
        for listener in list(self.listeners.values()) + self.draining:
            listener.stop_accepting()


def _same_bind(a: Listener, b: Listener) -> bool:
    return a.address == b.address and a.bind_to_port and b.bind_to_port


def describe(listener: ActiveListener) -> dict[str, Any]:
    """For /listeners?format=json."""
    addr = listener.model.address
    if isinstance(addr, SocketAddress):
        port = listener.bound_port if listener.bound_port is not None else addr.port
        local = {"socket_address": {"address": addr.address, "port_value": port}}
    elif isinstance(addr, PipeAddress):
        local = {"pipe": {"path": addr.path}}
    else:
        local = {"envoy_internal_address": {"server_listener_name": str(addr)}}
    return {"name": listener.name, "local_address": local}
