"""Upstream connections: connecting with Envoy's connect timeout and stats, and a per-host
HTTP/1.1 pool with keep-alive reuse and the cluster's circuit breakers."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from pilotfish.codec.http1 import CodecError, Http1ClientCodec
from pilotfish.http.headers import HeaderMap, ResponseHeaders
from pilotfish.model.common import SocketAddress
from pilotfish.upstream.cluster import Cluster
from pilotfish.upstream.host import Host


class ConnectFailure(Exception):
    """``reason`` is Envoy's transport failure text, ``timeout`` tells UF from a timeout."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


def _failure_reason(exc: BaseException) -> str:
    """Envoy's transport failure reason: ``delayed connect error: <strerror>``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"delayed connect error: {os.strerror(exc.errno)}"
    return f"delayed connect error: {exc}"


async def open_connection(
    cluster: Cluster, host: Host, factory: Callable[[], Any]
) -> tuple[asyncio.Transport, Any]:
    """Connect to ``host`` within the cluster's connect timeout. Raises ConnectFailure."""
    loop = cluster.loop
    addr = host.address
    try:
        async with asyncio.timeout(cluster.config.connect_timeout):
            if isinstance(addr, str):
                path = addr
                if path.startswith("@"):
                    path = "\0" + path[1:]  # Linux abstract socket
                t, p = await loop.create_unix_connection(factory, path)
            else:
                bind = cluster.config.upstream_bind_address
                local = (bind.address, bind.port) if isinstance(bind, SocketAddress) else None
                tls = host.tls
                if tls is None:
                    t, p = await loop.create_connection(factory, addr[0], addr[1], local_addr=local)
                else:
                    t, p = await _open_tls(loop, tls, addr, local, factory)
                sock = t.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    ka = cluster.config.tcp_keepalive
                    if ka is not None:
                        _set_keepalive(sock, ka)
        return t, p
    except TimeoutError:
        raise ConnectFailure("connection timeout", timeout=True) from None
    except ssl.SSLError as e:
        raise ConnectFailure(host.tls.stats.handshake_failed(e)) from None
    except OSError as e:
        raise ConnectFailure(_failure_reason(e)) from None


async def _open_tls(
    loop: asyncio.AbstractEventLoop,
    tls: Any,
    addr: tuple[str, int],
    local: tuple[str, int] | None,
    factory: Callable[[], Any],
) -> tuple[asyncio.Transport, Any]:
    """Connect and handshake with the host's TLS context (uvloop's SSL), then check the peer
    (SANs) before the connection is handed to ``factory``'s protocol: a peer that fails the
    checks never becomes a pool connection."""
    context = tls.ssl_context
    if context is None:
        tls.stats.connection_error.value += 1
        raise ConnectFailure(f"TLS_error:{tls.error or 'no TLS context'}")
    pending = _HandshakePending()
    pending_factory: Callable[[], Any] = lambda: pending  # noqa: E731 (duck-typed protocol)
    t, _ = await loop.create_connection(
        pending_factory,
        addr[0],
        addr[1],
        local_addr=local,
        ssl=context,
        server_hostname=tls.sni or "",
    )
    reason = tls.check_peer(t.get_extra_info("ssl_object"))
    if reason or pending.lost:
        t.abort()
        raise ConnectFailure(reason or "delayed connect error: connection reset by peer")
    p = factory()
    t.set_protocol(p)
    p.connection_made(t)
    if pending.data:
        p.data_received(pending.data)
    return t, p


class _HandshakePending:
    """The TLS connection's protocol until its peer has been checked (keeps early bytes)."""

    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def _set_keepalive(sock: Any, ka: tuple[int, int, int]) -> None:
    probes, idle, interval = ka
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if probes:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    if idle:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    if interval:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)


class PoolClient(Protocol):
    """What an upstream request must offer the pool (implemented by the router's request)."""

    is_head: bool

    def on_pool_ready(self, conn: UpstreamConnection) -> None: ...
    def on_pool_failure(self, kind: str, reason: str) -> None: ...
    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self, trailers: HeaderMap | None) -> None: ...
    def on_informational(self, headers: ResponseHeaders) -> None: ...
    def on_upstream_reset(self, reason: str) -> None: ...
    def on_upstream_protocol_error(self, error: CodecError) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...
    def begin_upstream_read(self) -> None: ...
    def after_upstream_read(self) -> None: ...


class UpstreamConnection:
    """One HTTP/1.1 connection to a host (an asyncio protocol, by duck typing so that it can
    be compiled). The request being served is the codec's handler."""

    def __init__(self, pool: Http1ConnPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        http = pool.cluster.config.http
        self.codec = Http1ClientCodec(
            _IdleHandler(self),
            max_headers_count=http.max_headers_count,
            enable_trailers=http.enable_trailers,
        )
        self.client: PoolClient | None = None
        self.requests = 0
        self.closed = False
        self.local_close = False
        self.connected_at = 0.0
        self.idle_since = 0.0
        self.local_address = ""
        self.tunnel: Any = None  # after 101 Switching Protocols: raw bytes go to the tunnel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connected_at = self.pool.cluster.loop.time()
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            self.local_address = f"{sockname[0]}:{sockname[1]}"

    def data_received(self, data: bytes) -> None:
        stats = self.pool.cluster.stats
        stats.upstream_cx_rx_bytes_total.value += len(data)
        if self.tunnel is not None:
            self.tunnel.upstream_data(data)
            return
        client = self.client
        if client is None:
            # Bytes nobody asked for: the connection can't be trusted any more.
            self.close()
            return
        client.begin_upstream_read()
        try:
            self.codec.feed(data)
        except CodecError as e:
            stats.upstream_cx_protocol_error.value += 1
            self._detach()
            self.close()
            client.on_upstream_protocol_error(e)
        if self.codec.upgraded is not None:
            # (Read through a call: type narrowing above would make the compiled code insist
            # that self.tunnel is still None here.)
            tunnel = self._tunnel()
            rest, self.codec.upgraded = self.codec.upgraded, None
            if rest and tunnel is not None:
                tunnel.upstream_data(rest)
        client.after_upstream_read()

    def _tunnel(self) -> Any:
        return self.tunnel

    def _detach(self) -> PoolClient | None:
        client = self.client
        if client is not None:
            self.client = None
            self.codec.handler = _IdleHandler(self)
            self.pool.active -= 1
        return client

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.upstream_closed()
        pool = self.pool
        stats = pool.cluster.stats
        stats.upstream_cx_active.value -= 1
        stats.upstream_cx_destroy.value += 1
        pool.host.cx_active -= 1
        pool.cluster.resources[0].connections.dec()
        length_ms = (pool.cluster.loop.time() - self.connected_at) * 1000
        stats.upstream_cx_length_ms.record(length_ms)
        codec_handler = self.codec.handler
        client = self._detach()
        if self.local_close:
            stats.upstream_cx_destroy_local.value += 1
        else:
            stats.upstream_cx_destroy_remote.value += 1
        if client is not None:
            self.codec.handler = codec_handler
            if self.codec.eof():
                client.after_upstream_read()
            else:
                stats.upstream_cx_destroy_with_active_rq.value += 1
                if self.local_close:
                    stats.upstream_cx_destroy_local_with_active_rq.value += 1
                else:
                    stats.upstream_cx_destroy_remote_with_active_rq.value += 1
                client.on_upstream_reset("connection termination")
        pool.on_closed(self)

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_writable(False)
        elif self.client is not None:
            self.client.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_writable(True)
        elif self.client is not None:
            self.client.on_upstream_writable(True)

    def attach(self, client: PoolClient) -> None:
        """Bind a request to this connection: from now on it is an upstream request (Envoy's
        attachStreamToClient counts it in upstream_rq_total and upstream_rq_active)."""
        self.client = client
        self.requests += 1
        pool = self.pool
        pool.active += 1
        cluster = pool.cluster
        stats = cluster.stats
        stats.upstream_rq_total.value += 1
        stats.upstream_rq_active.value += 1
        cluster.resources[0].requests.count += 1
        host = pool.host
        host.rq_total += 1
        host.rq_active += 1
        self.codec.reset_for(client, head_request=client.is_head)
        client.on_pool_ready(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.pool.cluster.stats.upstream_cx_tx_bytes_total.value += len(data)
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def done(self, reusable: bool) -> None:
        """The exchange finished (request sent and response read)."""
        self._detach()
        limit = self.pool.cluster.config.http.max_requests_per_connection
        if limit and self.requests >= limit:
            self.pool.cluster.stats.upstream_cx_max_requests.value += 1
            reusable = False
        if reusable and self.codec.keep_alive and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.local_close = True
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection (the request was abandoned mid-way)."""
        client = self._detach()
        if self.transport is not None and not self.closed:
            self.local_close = True
            if client is not None:
                stats = self.pool.cluster.stats
                stats.upstream_cx_destroy_with_active_rq.value += 1
                stats.upstream_cx_destroy_local_with_active_rq.value += 1
            self.transport.abort()


class _IdleHandler:
    """Codec handler between requests: any response now is a protocol violation."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        self.conn.close()

    def on_response_body(self, data: bytes) -> None:
        self.conn.close()

    def on_response_complete(self, trailers: HeaderMap | None) -> None:
        self.conn.close()

    def on_informational(self, headers: ResponseHeaders) -> None:
        self.conn.close()


class Http1ConnPool:
    def __init__(self, cluster: Cluster, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.idle: list[UpstreamConnection] = []
        self.pending: deque[PoolClient] = deque()
        self.connecting = 0
        self.active = 0
        self.draining = False
        self._idle_timer: asyncio.TimerHandle | None = None

    def busy(self) -> bool:
        return bool(self.active or self.connecting or self.pending)

    def new_stream(self, client: PoolClient) -> None:
        """Serve ``client`` on an idle connection now, or queue it (connecting if allowed)."""
        idle = self.idle
        while idle:
            conn = idle[-1]
            if conn.closed:
                idle.pop()
                continue
            if self._can_attach(client):
                idle.pop()
                conn.attach(client)
            return
        cluster = self.cluster
        res = cluster.resources[0]
        if not res.pending.can_create():
            cluster.stats.upstream_rq_pending_overflow.value += 1
            client.on_pool_failure("overflow", "")
            return
        self.pending.append(client)
        res.pending.inc()
        cluster.stats.upstream_rq_pending_total.value += 1
        cluster.stats.upstream_rq_pending_active.value += 1
        if self.connecting < len(self.pending):
            self._connect()

    def cancel(self, client: PoolClient) -> None:
        try:
            self.pending.remove(client)
        except ValueError:
            return
        self._pending_done()
        self.cluster.stats.upstream_rq_cancelled.value += 1

    def _pending_done(self) -> None:
        self.cluster.resources[0].pending.dec()
        self.cluster.stats.upstream_rq_pending_active.value -= 1

    def _connect(self) -> None:
        cluster = self.cluster
        conns = cluster.resources[0].connections
        if not conns.can_create():
            cluster.stats.upstream_cx_overflow.value += 1
            return
        conns.inc()
        self.connecting += 1
        stats = cluster.stats
        stats.upstream_cx_total.value += 1
        stats.upstream_cx_http1_total.value += 1
        stats.upstream_cx_active.value += 1
        self.host.cx_active += 1
        self.host.cx_total += 1
        cluster.loop.create_task(self._do_connect(cluster.loop.time()))

    async def _do_connect(self, started: float) -> None:
        cluster = self.cluster
        try:
            _, conn = await open_connection(cluster, self.host, lambda: UpstreamConnection(self))
        except ConnectFailure as e:
            self.connecting -= 1
            stats = cluster.stats
            stats.upstream_cx_active.value -= 1
            stats.upstream_cx_destroy.value += 1
            self.host.cx_active -= 1
            cluster.resources[0].connections.dec()
            if e.timeout:
                stats.upstream_cx_connect_timeout.value += 1
                stats.upstream_cx_destroy_local.value += 1  # Envoy closes it
            else:
                stats.upstream_cx_destroy_remote.value += 1
            stats.upstream_cx_connect_fail.value += 1
            self.host.cx_connect_fail += 1
            # One failed attempt fails one waiting request (more attempts may be under way).
            if self.pending and len(self.pending) > self.connecting:
                client = self.pending.popleft()
                self._pending_done()
                stats.upstream_rq_pending_failure_eject.value += 1
                client.on_pool_failure("timeout" if e.timeout else "connection_failure", e.reason)
            return
        self.connecting -= 1
        cluster.stats.upstream_cx_connect_ms.record((cluster.loop.time() - started) * 1000)
        # A draining pool still serves the requests that were waiting for this connection
        # (closing it here would leave them waiting for ever); _serve_next closes it after.
        self._serve_next(conn)

    def _can_attach(self, client: PoolClient) -> bool:
        """The cluster's max_requests, checked when a request would be bound to a connection
        (as Envoy does): over it, the request fails with an overflow."""
        requests = self.cluster.resources[0].requests
        if requests.count < requests.limit:
            return True
        self.cluster.stats.upstream_rq_active_overflow.value += 1
        client.on_pool_failure("overflow", "")
        return False

    def _serve_next(self, conn: UpstreamConnection) -> None:
        pending = self.pending
        while pending:
            client = pending.popleft()
            self._pending_done()
            if self._can_attach(client):
                conn.attach(client)
                return
        if self.draining:
            conn.close()
            return
        self._make_idle(conn)

    def _make_idle(self, conn: UpstreamConnection) -> None:
        self.idle.append(conn)
        timeout = self.cluster.config.http.idle_timeout
        if timeout:
            conn.idle_since = now = self.cluster.loop.time()
            if self._idle_timer is None:
                # One timer per pool, re-armed lazily: no timer work per request.
                self._idle_timer = self.cluster.loop.call_at(now + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        timeout = self.cluster.config.http.idle_timeout
        now = self.cluster.loop.time()
        for conn in [c for c in self.idle if now - c.idle_since >= timeout]:
            self.idle.remove(conn)
            self.cluster.stats.upstream_cx_idle_timeout.value += 1
            conn.close()
        if self.idle:
            oldest = min(c.idle_since for c in self.idle)
            self._idle_timer = self.cluster.loop.call_at(oldest + timeout, self._check_idle)

    def release(self, conn: UpstreamConnection) -> None:
        self._serve_next(conn)  # closes it if the pool drains and no request waits

    def on_closed(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        # Requests waiting for a connection get a new one if this one was needed.
        if self.pending and self.connecting < len(self.pending):
            self._connect()

    def drain(self) -> None:
        """Stop using this pool: close idle connections, let active ones finish."""
        self.draining = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
