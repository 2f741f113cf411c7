"""Active health checking (HTTP/1.1 and TCP) with Envoy's semantics
(``source/common/upstream/health_checker_impl.cc`` and ``health_checker_base_impl.cc``).

A ``HealthChecker`` per cluster with ``health_checks``; a ``Session`` per host. Sessions are not
tasks: one timer wheel per checker (a heap of due times and a single loop timer) starts checks
and fires their timeouts. A check writes on the session's kept connection when there is one,
else opens one (the only coroutine, short-lived). Results move the host's ``FAILED_ACTIVE_HC``
flag as Envoy does: a failed HTTP status is unhealthy at once, network failures count up to
``unhealthy_threshold``, successes up to ``healthy_threshold`` (the very first success is healthy
at once); the next check is due after the interval Envoy picks for the state and transition
(``interval``, ``unhealthy_interval``, the ``*_edge_interval`` while a transition is pending,
``no_traffic_*interval`` before the cluster has had any connection), plus jitter.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import random
from collections.abc import Callable
from typing import IO, Any

import httptools
from google.protobuf.timestamp_pb2 import Timestamp

from pilotfish.model.cluster import HealthCheck
from pilotfish.model.common import SocketAddress
from pilotfish.stats.store import Counter, Scope
from pilotfish.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    FAILED_ACTIVE_HC,
    PENDING_ACTIVE_HC,
    Host,
)

log = logging.getLogger("pilotfish.upstream")

# Envoy's HealthTransition and failure types (the event log's HealthCheckFailureType).
UNCHANGED, CHANGED, CHANGE_PENDING = 0, 1, 2
ACTIVE, NETWORK, NETWORK_TIMEOUT = "ACTIVE", "NETWORK", "NETWORK_TIMEOUT"


class HealthCheckStats:
    """Envoy's cluster.<name>.health_check.* stats."""

    def __init__(self, scope: Scope) -> None:
        s = scope.scope("health_check.")
        self.attempt = s.counter("attempt")
        self.success = s.counter("success")
        self.failure = s.counter("failure")
        self.passive_failure = s.counter("passive_failure")
        self.network_failure = s.counter("network_failure")
        self.verify_cluster = s.counter("verify_cluster")
        self.healthy = s.gauge("healthy", accumulate=False)
        self.degraded = s.gauge("degraded", accumulate=False)
        self.healthy.set(0)
        self.degraded.set(0)


class EventLog:
    """The health check event log (``event_log_path``, or the file event sink): one JSON
    HealthCheckEvent per line, fields in Envoy's order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, event: dict[str, Any]) -> None:
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as e:
            log.warning("health check event log %s: %s", self.path, e)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Session:
    """One host's health checking state."""

    __slots__ = (
        "address",
        "checker",
        "conn",
        "first_check",
        "gen",
        "host",
        "hostname",
        "in_flight",
        "num_healthy",
        "num_unhealthy",
    )

    def __init__(self, checker: HealthChecker, host: Host, address: Any, hostname: str) -> None:
        self.checker = checker
        self.host = host
        self.address = address  # where checks go (the endpoint's health_check_config)
        self.hostname = hostname
        self.num_healthy = 0
        self.num_unhealthy = 0
        self.first_check = True
        self.in_flight = False
        self.gen = 0  # bumped to cancel what the wheel holds for this session
        self.conn: _CheckProtocol | None = None


class HealthChecker:
    """A cluster's active health checker. ``on_change``: a host's health flags changed (the
    cluster rebuilds its load balancer); ``on_result(host, healthy)``: every check's verdict
    (the outlier detector un-ejects on success); ``traffic_seen()``: whether the cluster has
    opened a connection yet (Envoy's ``upstream_cx_total`` used)."""

    def __init__(
        self,
        config: HealthCheck,
        cluster: Any,
        scope: Scope,
        on_change: Callable[[Host], None],
        traffic_seen: Callable[[], bool],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.loop: asyncio.AbstractEventLoop = cluster.loop
        self.on_change = on_change
        self.on_result: Callable[[Host, bool], None] | None = None
        self.traffic_seen = traffic_seen
        self.rng = rng if rng is not None else random.Random()
        self.stats = HealthCheckStats(scope)
        self.event_log = EventLog(config.event_log_path) if config.event_log_path else None
        self.sessions: dict[Host, Session] = {}
        self._heap: list[tuple[float, int, int, Session]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._pending_first: set[Host] = set()
        self._first_round_callbacks: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._request = self._http_request_prefix() if config.kind == "HTTP" else b""

    # -- membership ---------------------------------------------------------------------------

    def add_host(self, host: Host, hc: Any = None) -> None:
        """Start checking ``host`` (``hc``: its endpoint's health_check_config, if any)."""
        if hc is not None and hc.disable_active_health_check:
            return
        address = host.address
        if hc is not None and hc.address is not None and isinstance(hc.address, SocketAddress):
            address = (hc.address.address, hc.address.port)
        port = (hc.port_value if hc is not None else 0) or self.config.alt_port
        if port and isinstance(address, tuple):
            address = (address[0], port)
        hostname = (hc.hostname if hc is not None else "") or self.config.host or self.cluster.name
        session = Session(self, host, address, hostname)
        self.sessions[host] = session
        host.health_flags |= FAILED_ACTIVE_HC | PENDING_ACTIVE_HC
        self._pending_first.add(host)
        delay = 0.0
        if self.config.initial_jitter > 0:
            delay = self.rng.randrange(int(self.config.initial_jitter * 1000) + 1) / 1000.0
        self._schedule(session, delay)

    def remove_host(self, host: Host) -> None:
        session = self.sessions.pop(host, None)
        if session is None:
            return
        session.gen += 1
        if session.conn is not None:
            session.conn.close()
            session.conn = None
        if not host.health_flags & FAILED_ACTIVE_HC:
            self.stats.healthy.dec()
        self._first_done(host)

    def on_first_round(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every host added so far has had its first check (Envoy's
        cluster warming waits for it)."""
        if not self._pending_first:
            callback()
        else:
            self._first_round_callbacks.append(callback)

    def _first_done(self, host: Host) -> None:
        self._pending_first.discard(host)
        if not self._pending_first and self._first_round_callbacks:
            callbacks, self._first_round_callbacks = self._first_round_callbacks, []
            for cb in callbacks:
                cb()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for session in self.sessions.values():
            session.gen += 1
            if session.conn is not None:
                session.conn.close()
                session.conn = None
        for task in list(self._tasks):
            task.cancel()
        if self.event_log is not None:
            self.event_log.close()

    # -- the timer wheel ----------------------------------------------------------------------

    def _schedule(self, session: Session, delay: float) -> None:
        session.gen += 1
        when = self.loop.time() + delay
        heapq.heappush(self._heap, (when, next(self._seq), session.gen, session))
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        heap = self._heap
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            _, _, gen, session = heapq.heappop(heap)
            if gen != session.gen or self.closed:
                continue  # cancelled or superseded
            if session.in_flight:
                self._on_timeout(session)
            else:
                self._start(session)
        if heap and not self.closed:
            self._timer_at = heap[0][0]
            self._timer = self.loop.call_at(self._timer_at, self._on_timer)

    # -- checks -------------------------------------------------------------------------------

    def _start(self, session: Session) -> None:
        self.stats.attempt.value += 1
        session.in_flight = True
        self._schedule(session, self.config.timeout)  # the timeout, same wheel
        conn = session.conn
        if conn is not None and conn.usable():
            conn.check()
            return
        session.conn = None
        task = self.loop.create_task(self._connect(session, session.gen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, session: Session, gen: int) -> None:
        from pilotfish.upstream.conn_pool import ConnectFailure, open_connection

        target = Host(session.address)
        target.tls = session.host.tls
        factory = _HttpCheck if self.config.kind == "HTTP" else _TcpCheck
        try:
            _, proto = await open_connection(self.cluster, target, lambda: factory(session))
        except ConnectFailure:
            if gen == session.gen and session.in_flight:
                self._failure(session, NETWORK)
            return
        if gen != session.gen or not session.in_flight:
            proto.close()  # timed out or removed meanwhile
            return
        session.conn = proto
        proto.check()

    def _on_timeout(self, session: Session) -> None:
        if session.conn is not None:
            session.conn.close()
            session.conn = None
        session.host.health_flags |= ACTIVE_HC_TIMEOUT
        self._failure(session, NETWORK_TIMEOUT)

    def _interval(self, healthy: bool, transition: int) -> float:
        c = self.config
        if self.traffic_seen():
            if not healthy:
                base = (
                    c.unhealthy_edge_interval
                    if transition == CHANGE_PENDING
                    else c.unhealthy_interval
                )
            else:
                base = c.healthy_edge_interval if transition == CHANGE_PENDING else c.interval
        elif healthy and transition != CHANGE_PENDING:
            base = c.no_traffic_healthy_interval
        else:
            base = c.no_traffic_interval
        ms = int(base * 1000)
        spread = c.interval_jitter_percent * ms // 100
        if spread > 0:
            ms += self.rng.randrange(spread)
        jitter = int(c.interval_jitter * 1000)
        if jitter > 0:
            ms += self.rng.randrange(jitter)
        return max(1, ms) / 1000.0

    def _success(self, session: Session) -> None:
        host = session.host
        session.in_flight = False
        session.num_unhealthy = 0
        transition = UNCHANGED
        if host.health_flags & FAILED_ACTIVE_HC:
            session.num_healthy += 1
            if session.first_check or session.num_healthy == self.config.healthy_threshold:
                host.health_flags &= ~(FAILED_ACTIVE_HC | ACTIVE_HC_TIMEOUT)
                self.stats.healthy.inc()
                transition = CHANGED
                self._log(session, "add_healthy_event", {"first_check": session.first_check})
            else:
                transition = CHANGE_PENDING
        if host.health_flags & PENDING_ACTIVE_HC:
            host.health_flags &= ~PENDING_ACTIVE_HC
            transition = CHANGED if transition == CHANGE_PENDING else transition
        if self.config.always_log_health_check_success:
            self._log(session, "successful_health_check_event", {})
        self.stats.success.value += 1
        first = session.first_check
        session.first_check = False
        self._schedule(session, self._interval(True, transition))
        if transition == CHANGED:
            self.on_change(host)
        if self.on_result is not None:
            self.on_result(host, True)
        if first:
            self._first_done(host)

    def _failure(
        self, session: Session, kind: str, retriable: bool = False, status: int = 0
    ) -> None:
        host = session.host
        session.in_flight = False
        session.num_healthy = 0
        transition = UNCHANGED
        network = kind != ACTIVE
        if not host.health_flags & FAILED_ACTIVE_HC:
            session.num_unhealthy += 1
            if (not network and not retriable) or (
                session.num_unhealthy == self.config.unhealthy_threshold
            ):
                host.health_flags |= FAILED_ACTIVE_HC
                self.stats.healthy.dec()
                transition = CHANGED
                self._log(
                    session,
                    "eject_unhealthy_event",
                    {"failure_type": kind, "http_status_code": status},
                )
            else:
                transition = CHANGE_PENDING
        if session.first_check or self.config.always_log_health_check_failures:
            self._log(
                session,
                "health_check_failure_event",
                {
                    "failure_type": kind,
                    "first_check": session.first_check,
                    "http_status_code": status,
                },
            )
        if host.health_flags & PENDING_ACTIVE_HC:
            host.health_flags &= ~PENDING_ACTIVE_HC
            transition = CHANGED if transition == CHANGE_PENDING else transition
        self.stats.failure.value += 1
        if network:
            self.stats.network_failure.value += 1
        first = session.first_check
        session.first_check = False
        self._schedule(session, self._interval(False, transition))
        if transition == CHANGED:
            self.on_change(host)
        if self.on_result is not None:
            self.on_result(host, False)
        if first:
            self._first_done(host)

    # -- HTTP ---------------------------------------------------------------------------------

    def _http_request_prefix(self) -> bytes:
        """The request line; the Host header is per session (see ``http_request``)."""
        return f"{self.config.method} {self.config.path} HTTP/1.1\r\n".encode("latin-1")

    def http_request(self, session: Session) -> bytes:
        c = self.config
        headers: list[tuple[str, str]] = [("host", session.hostname), ("user-agent", "Envoy/HC")]
        remove = set(c.request_headers_to_remove)
        headers = [h for h in headers if h[0] not in remove]
        for name, value, append in c.request_headers_to_add:
            if not append:
                headers = [h for h in headers if h[0] != name]
            headers.append((name, value))
        if not c.reuse_connection:
            headers.append(("connection", "close"))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers)
        return self._request + head.encode("latin-1") + b"\r\n"

    def http_verdict(self, session: Session, status: int) -> None:
        c = self.config
        if any(lo <= status < hi for lo, hi in c.expected_statuses):
            self._success(session)
        else:
            retriable = any(lo <= status < hi for lo, hi in c.retriable_statuses)
            self._failure(session, ACTIVE, retriable, status)

    # -- the event log ------------------------------------------------------------------------

    def _log(self, session: Session, kind: str, body: dict[str, Any]) -> None:
        """One HealthCheckEvent as Envoy prints it: fields in field-number order, defaults
        included (the event kinds 4 and 5 come before the timestamp, 6; the others after)."""
        if self.event_log is None:
            return
        h = session.host
        address = h.address
        host: dict[str, Any] = (
            {
                "socket_address": {
                    "protocol": "TCP",
                    "address": address[0],
                    "port_value": address[1],
                    "resolver_name": "",
                    "ipv4_compat": False,
                    "network_namespace_filepath": "",
                }
            }
            if isinstance(address, tuple)
            else {"pipe": {"path": address, "mode": 0}}
        )
        stamp = Timestamp()
        stamp.GetCurrentTime()
        event: dict[str, Any] = {
            "health_checker_type": self.config.kind,
            "host": host,
            "cluster_name": self.cluster.name,
        }
        if kind in ("eject_unhealthy_event", "add_healthy_event"):
            event[kind] = body
        event["timestamp"] = stamp.ToJsonString()
        if kind == "health_check_failure_event":
            event[kind] = body
        loc = h.locality
        event["locality"] = {"region": loc.region, "zone": loc.zone, "sub_zone": loc.sub_zone}
        if kind == "successful_health_check_event":
            event[kind] = body
        self.event_log.write(event)


class _CheckProtocol(asyncio.Protocol):
    """A health check connection: ``check()`` sends one check; the verdict goes to the
    session's checker."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.transport: Any = None  # an asyncio or uvloop transport
        self.closed = False
        self.keep = session.checker.config.reuse_connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and self.keep

    def check(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _verdict_pending(self) -> bool:
        session = self.session
        return session.in_flight and session.conn is self

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._verdict_pending():
            self.session.conn = None
            self.session.checker._failure(self.session, NETWORK)


class _HttpCheck(_CheckProtocol):
    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.parser: Any = None
        self.close_after = False
        self.immediate_fail = False

    def check(self) -> None:
        assert self.transport is not None
        self.parser = httptools.HttpResponseParser(self)
        self.close_after = not self.keep
        self.immediate_fail = False
        self.transport.write(self.session.checker.http_request(self.session))

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self.close()  # nothing was asked
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"connection" and value.lower() == b"close":
            self.close_after = True
        elif lname == b"x-envoy-immediate-health-check-fail":
            self.immediate_fail = True

    def on_message_complete(self) -> None:
        parser, self.parser = self.parser, None
        status = parser.get_status_code()
        if parser.get_http_version() == "1.0" or not parser.should_keep_alive():
            self.close_after = True
        if self.close_after:
            self.keep = False
        if self._verdict_pending():
            session = self.session
            if self.close_after:
                session.conn = None
                self.close()
            if self.immediate_fail:
                # The host is failing its health checks on purpose (Envoy's /healthcheck/fail):
                # unhealthy at once, whatever the status.
                session.checker._failure(session, ACTIVE, False, status)
            else:
                session.checker.http_verdict(session, status)
        if self.close_after:
            self.close()


class _TcpCheck(_CheckProtocol):
    """Envoy's TCP checker: connect, send ``send``, expect every ``receive`` payload in
    order; with nothing to receive, connecting is the check (and the connection is not kept)."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.buffer = b""
        config = session.checker.config
        if not config.receive:
            self.keep = False

    def check(self) -> None:
        assert self.transport is not None
        self.buffer = b""
        config = self.session.checker.config
        if config.send:
            self.transport.write(config.send)
        if not config.receive:
            session = self.session
            session.conn = None
            self.close()
            session.checker._success(session)

    def data_received(self, data: bytes) -> None:
        if not self._verdict_pending():
            return
        self.buffer += data
        pos = 0
        for payload in self.session.checker.config.receive:
            found = self.buffer.find(payload, pos)
            if found < 0:
                return
            pos = found + len(payload)
        self.buffer = b""
        session = self.session
        if not self.keep:
            session.conn = None
            self.close()
        session.checker._success(session)


def traffic_seen(counter: Counter) -> Callable[[], bool]:
    return lambda: counter.used
