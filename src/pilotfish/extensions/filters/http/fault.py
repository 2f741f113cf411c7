"""envoy.filters.http.fault: delay and abort requests (Envoy's fault injection filter).

The settings come from the filter's config (``HTTPFault``) or, when the matched route, its
virtual host or its route table has one for this filter's name, from that per-route
``HTTPFault`` (the most specific wins and replaces the filter's config whole, as in Envoy).
istiod puts an empty ``HTTPFault {}`` in every HTTP filter chain and a VirtualService's
``fault`` on its routes; an empty filter config injects nothing, so such a filter runs only on
routes that configure it (the connection manager leaves it out of other requests' chains).

Per request, in Envoy's order: the upstream cluster, downstream nodes and header matchers must
match; then a delay (``fixed_delay`` or the ``x-envoy-fault-delay-request`` header with
``header_delay``) is injected with its ``percentage`` (response flag ``DI``), after which the
request goes on or, if the abort also fires, is aborted; else an abort (``http_status``,
``grpc_status`` or ``header_abort``) is answered locally with ``fault filter abort`` (flag
``FI``). ``max_active_faults`` bounds concurrent faults (``faults_overflow``). Stats:
``http.<prefix>.fault.{delays_injected,aborts_injected,faults_overflow,response_rl_injected}``
and the gauge ``active_faults``; with ``x-envoy-downstream-service-cluster``, also
``fault.<cluster>.{delays,aborts}_injected``.

Not done (docs/compatibility.md): runtime overrides (``*_runtime`` keys: the configured
values are used), ``response_rate_limit`` (refused), ``filter_metadata``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.http import filter as hf
from pilotfish.http.headers import RequestHeaders
from pilotfish.model.common import FractionalPercent
from pilotfish.stream_info import ResponseFlag

TYPE_NAME = "envoy.extensions.filters.http.fault.v3.HTTPFault"
ABORT_BODY = b"fault filter abort"
ABORT_DETAILS = "fault_filter_abort"

H_DELAY = b"x-envoy-fault-delay-request"
H_DELAY_PERCENT = b"x-envoy-fault-delay-request-percentage"
H_ABORT = b"x-envoy-fault-abort-request"
H_ABORT_GRPC = b"x-envoy-fault-abort-grpc-request"
H_ABORT_PERCENT = b"x-envoy-fault-abort-request-percentage"
H_DOWNSTREAM_NODE = b"x-envoy-downstream-service-node"
H_DOWNSTREAM_CLUSTER = b"x-envoy-downstream-service-cluster"

_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


@dataclass(frozen=True, slots=True)
class FaultDelay:
    percentage: FractionalPercent
    fixed_delay: float | None = None  # seconds; None: from the request header (header_delay)


@dataclass(frozen=True, slots=True)
class FaultAbort:
    percentage: FractionalPercent
    http_status: int = 0  # 0: not an HTTP status abort
    grpc_status: int | None = None
    header: bool = False  # header_abort: status from the request headers


@dataclass(frozen=True, slots=True)
class FaultSettings:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str = ""
    headers: tuple[Callable[[RequestHeaders], bool], ...] = ()
    downstream_nodes: frozenset[bytes] = frozenset()
    max_active_faults: int | None = None
    disable_downstream_cluster_stats: bool = False

    @property
    def injects(self) -> bool:
        return self.delay is not None or self.abort is not None


def _percentage(msg: Any, path: str) -> FractionalPercent:
    if msg.denominator not in _DENOMINATORS:
        raise ConfigError(f"{path}.denominator", "value must be one of the defined enum values")
    return FractionalPercent(msg.numerator, _DENOMINATORS[msg.denominator])


def parse_fault(msg: Any, path: str) -> FaultSettings:
    """Validate an ``HTTPFault`` (filter-level or per-route) as Envoy does."""
    from pilotfish.router.matcher import compile_header_matcher
    from pilotfish.xds.translate.route import header_matcher

    if msg.HasField("response_rate_limit"):
        raise ConfigError(
            f"{path}.response_rate_limit", "response rate limit faults are not supported"
        )
    delay = abort = None
    if msg.HasField("delay"):
        d = msg.delay
        dpath = f"{path}.delay"
        kind = d.WhichOneof("fault_delay_secifier")
        pct = _percentage(d.percentage, f"{dpath}.percentage")
        if kind == "fixed_delay":
            fd = d.fixed_delay
            if fd.seconds < 0 or fd.nanos < 0:
                raise ConfigError(f"{dpath}.fixed_delay", "value must be greater than 0s")
            delay = FaultDelay(pct, fd.seconds + fd.nanos / 1e9)
        elif kind == "header_delay":
            delay = FaultDelay(pct, None)
        else:
            raise ConfigError(dpath, "fault_delay_secifier is required")
    if msg.HasField("abort"):
        a = msg.abort
        apath = f"{path}.abort"
        kind = a.WhichOneof("error_type")
        pct = _percentage(a.percentage, f"{apath}.percentage")
        if kind == "http_status":
            if not 200 <= a.http_status < 600:
                raise ConfigError(f"{apath}.http_status", "value must be inside range [200, 600)")
            abort = FaultAbort(pct, http_status=a.http_status)
        elif kind == "grpc_status":
            abort = FaultAbort(pct, grpc_status=a.grpc_status)
        elif kind == "header_abort":
            abort = FaultAbort(pct, header=True)
        else:
            raise ConfigError(apath, "error_type is required")
    headers = tuple(
        compile_header_matcher(header_matcher(h, f"{path}.headers[{i}]"))
        for i, h in enumerate(msg.headers)
    )
    return FaultSettings(
        delay=delay,
        abort=abort,
        upstream_cluster=msg.upstream_cluster,
        headers=headers,
        downstream_nodes=frozenset(n.encode() for n in msg.downstream_nodes),
        max_active_faults=msg.max_active_faults.value
        if msg.HasField("max_active_faults")
        else None,
        disable_downstream_cluster_stats=msg.disable_downstream_cluster_stats,
    )


class FaultStats:
    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.delays_injected = scope.counter("fault.delays_injected")
        self.aborts_injected = scope.counter("fault.aborts_injected")
        self.faults_overflow = scope.counter("fault.faults_overflow")
        self.response_rl_injected = scope.counter("fault.response_rl_injected")
        self.active_faults = scope.gauge("fault.active_faults", accumulate=False)


class FaultRuntime:
    """What one HCM's fault filter shares across its requests."""

    def __init__(self, name: str, settings: FaultSettings, stats: FaultStats, loop: Any) -> None:
        self.name = name
        self.settings = settings
        self.stats = stats
        self.loop = loop
        self.rng = random.Random()  # replaceable (seeded) by tests


class FaultFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.fault"
    type_names = (TYPE_NAME,)
    per_route_type_names = (TYPE_NAME,)

    def parse(self, msg: Any, ctx: Any, path: str) -> FaultSettings:
        return parse_fault(msg, f"{path}.typed_config")

    def parse_per_route(self, msg: Any, ctx: Any, path: str) -> FaultSettings:
        return parse_fault(msg, path)

    def build_filter(
        self, config: FaultSettings, ctx: Any, name: str, scope: Any
    ) -> tuple[Callable[[], hf.HttpFilter], bool]:
        """(filter maker, route-only): a filter config that injects nothing matters only on
        routes with a per-route config."""
        rt = FaultRuntime(name, config, FaultStats(scope), ctx.loop)
        return (lambda: FaultFilter(rt)), not config.injects


def _header_percentage(
    headers: RequestHeaders, name: bytes, configured: FractionalPercent
) -> FractionalPercent:
    """The header's numerator (with the configured denominator), capped by the config's."""
    raw = headers.get(name)
    if raw is None or not raw.strip().isdigit():
        return configured
    return FractionalPercent(min(int(raw), configured.numerator), configured.denominator)


class FaultFilter(hf.HttpFilter):
    __slots__ = ("active", "downstream_cluster", "rt", "settings", "timer")

    def __init__(self, rt: FaultRuntime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.active = False
        self.timer: Any = None
        self.downstream_cluster = b""

    def _enabled(self, pct: FractionalPercent) -> bool:
        # Envoy's featureEnabled: a random value modulo the denominator below the numerator.
        return pct.numerator > 0 and self.rt.rng.getrandbits(64) % pct.denominator < pct.numerator

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        stream = self.stream
        per_route = stream.per_filter_config(self.rt.name)
        s: FaultSettings = per_route if per_route is not None else self.settings
        self.settings = s
        if not s.injects:
            return hf.CONTINUE
        if s.upstream_cluster:
            route = stream.route
            cluster = route.cluster if route is not None else ""
            if cluster != s.upstream_cluster:
                return hf.CONTINUE
        if s.downstream_nodes:
            node = headers.get(H_DOWNSTREAM_NODE)
            if node is None or node not in s.downstream_nodes:
                return hf.CONTINUE
        for m in s.headers:
            if not m(headers):
                return hf.CONTINUE
        dc = headers.get(H_DOWNSTREAM_CLUSTER)
        if dc and not s.disable_downstream_cluster_stats:
            self.downstream_cluster = dc
        delay = self._delay(headers)
        if delay is not None and self._try_activate():
            self.timer = self.rt.loop.call_later(delay, self._after_delay)
            self._count("delays_injected")
            stream.set_response_flag(ResponseFlag.DELAY_INJECTED)
            return hf.STOP
        status = self._abort_status(headers)
        if status is not None and self._try_activate():
            self._abort(headers, status)
            return hf.STOP
        return hf.CONTINUE

    def _delay(self, headers: RequestHeaders) -> float | None:
        d = self.settings.delay
        if d is None:
            return None
        if d.fixed_delay is None:
            if not self._enabled(_header_percentage(headers, H_DELAY_PERCENT, d.percentage)):
                return None
            raw = headers.get(H_DELAY)
            if raw is None or not raw.strip().isdigit():
                return None
            ms = int(raw)
        else:
            if not self._enabled(d.percentage):
                return None
            ms = round(d.fixed_delay * 1000)
        return ms / 1000 if ms > 0 else None

    def _abort_status(self, headers: RequestHeaders) -> tuple[int, int | None] | None:
        """(HTTP status, gRPC status) of an abort that fires for this request, or None."""
        a = self.settings.abort
        if a is None:
            return None
        if not a.header:
            if not self._enabled(a.percentage):
                return None
            if a.grpc_status is not None:
                return 200, a.grpc_status
            return a.http_status, None
        if not self._enabled(_header_percentage(headers, H_ABORT_PERCENT, a.percentage)):
            return None
        raw = headers.get(H_ABORT)
        if raw is not None and raw.strip().isdigit() and 200 <= int(raw) < 600:
            return int(raw), None
        raw = headers.get(H_ABORT_GRPC)
        if raw is not None and raw.strip().isdigit():
            return 200, int(raw)
        return None

    def _try_activate(self) -> bool:
        """Count this request among the active faults (once), unless there are too many."""
        if self.active:
            return True
        stats = self.rt.stats
        limit = self.settings.max_active_faults
        if limit is not None and stats.active_faults.value >= limit:
            stats.faults_overflow.value += 1
            return False
        stats.active_faults.value += 1
        self.active = True
        return True

    def _count(self, what: str) -> None:
        stats = self.rt.stats
        getattr(stats, what).value += 1
        if self.downstream_cluster:
            cluster = self.downstream_cluster.decode("latin-1")
            stats.scope.counter(f"fault.{cluster}.{what}").value += 1

    def _abort(self, headers: RequestHeaders, status: tuple[int, int | None]) -> None:
        http_status, grpc_status = status
        self._count("aborts_injected")
        stream = self.stream
        extra: list[tuple[bytes, bytes]] | None = None
        body = ABORT_BODY
        content_type = (headers.get(b"content-type") or b"").startswith(b"application/grpc")
        if grpc_status is not None and content_type:
            # A gRPC request gets a trailers-only gRPC error, as Envoy's gRPC local replies.
            extra = [
                (b"content-type", b"application/grpc"),
                (b"grpc-status", str(grpc_status).encode()),
                (b"grpc-message", ABORT_BODY),
            ]
            body = b""
        stream.send_local_reply(
            http_status, body, ABORT_DETAILS, ResponseFlag.FAULT_INJECTED, extra_headers=extra
        )

    def _after_delay(self) -> None:
        self.timer = None
        stream = self.stream
        if stream.done:
            return
        headers = stream.request_headers
        status = self._abort_status(headers)
        conn = stream.conn
        conn.begin_batch()
        try:
            if status is not None:
                self._abort(headers, status)
            else:
                stream.continue_decoding()
        finally:
            conn.end_batch()

    def on_destroy(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            self.active = False
            self.rt.stats.active_faults.value -= 1
