"""Outlier detection (passive health checking) with Envoy's semantics
(``source/common/upstream/outlier_detection_impl.cc``).

A ``Detector`` per cluster with ``outlier_detection``; a ``HostMonitor`` per host, reached from
the request path as ``host.outlier``. The request path reports each response code
(``put_http_code``) and each local-origin event (``put_result``: connect failure, timeout,
connect success); a monitor counts consecutive errors and success-rate buckets. Consecutive
errors eject at once (Envoy posts them to its main thread; one thread here); success rate and
failure percentage are evaluated on the interval timer, which also un-ejects hosts whose
ejection time is over. An ejected host carries ``FAILED_OUTLIER_CHECK`` in its health flags,
and the cluster rebuilds its load balancer, so priorities, panic and locality weights see it
as unhealthy, exactly as any other health change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Callable
from typing import IO, Any

from google.protobuf.timestamp_pb2 import Timestamp

from pilotfish.model.cluster import OutlierDetection
from pilotfish.stats.store import Scope
from pilotfish.upstream.host import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, Host

log = logging.getLogger("pilotfish.upstream")

# Envoy's Upstream::Outlier::Result.
CONNECT_SUCCESS = 0  # LocalOriginConnectSuccess: connected; the HTTP answer is still to come
CONNECT_SUCCESS_FINAL = 1  # LocalOriginConnectSuccessFinal: connected, and that is all (TCP)
TIMEOUT = 2  # LocalOriginTimeout
CONNECT_FAILED = 3  # LocalOriginConnectFailed (also a reset of the connection)
EXT_REQUEST_FAILED = 4  # ExtOriginRequestFailed
EXT_REQUEST_SUCCESS = 5  # ExtOriginRequestSuccess

# envoy.data.cluster.v3.OutlierEjectionType.
CONSECUTIVE_5XX = 0
CONSECUTIVE_GATEWAY_FAILURE = 1
SUCCESS_RATE = 2
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = 3
SUCCESS_RATE_LOCAL_ORIGIN = 4
FAILURE_PERCENTAGE = 5
FAILURE_PERCENTAGE_LOCAL_ORIGIN = 6

_TYPE_NAMES = (
    "CONSECUTIVE_5XX",
    "CONSECUTIVE_GATEWAY_FAILURE",
    "SUCCESS_RATE",
    "CONSECUTIVE_LOCAL_ORIGIN_FAILURE",
    "SUCCESS_RATE_LOCAL_ORIGIN",
    "FAILURE_PERCENTAGE",
    "FAILURE_PERCENTAGE_LOCAL_ORIGIN",
)
# The ejections_{detected,enforced}_<suffix> stat of each type.
_STAT_SUFFIX = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "success_rate",
    "consecutive_local_origin_failure",
    "local_origin_success_rate",
    "failure_percentage",
    "local_origin_failure_percentage",
)
# Without a code, a result counts as this HTTP code when errors are not split by origin.
_RESULT_CODE = {
    CONNECT_SUCCESS_FINAL: 200,
    EXT_REQUEST_SUCCESS: 200,
    TIMEOUT: 504,
    CONNECT_FAILED: 503,
    EXT_REQUEST_FAILED: 500,
}


class HostMonitor:
    """One host's counters. ``put_http_code`` is on the request path: a non-5xx answer costs a
    few attribute updates."""

    __slots__ = (
        "backoff",
        "consecutive_5xx",
        "consecutive_gateway_failure",
        "consecutive_local_origin_failure",
        "detector",
        "host",
        "jitter",
        "last_ejection",
        "last_unejection",
        "lo_prev_success",
        "lo_prev_total",
        "lo_success",
        "lo_total",
        "local_success_rate",
        "num_ejections",
        "prev_success",
        "prev_total",
        "split",
        "sr_success",
        "sr_total",
        "success_rate",
    )

    def __init__(self, detector: Detector, host: Host) -> None:
        self.detector = detector
        self.host = host
        self.split = detector.config.split_external_local_origin_errors
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0
        # Success-rate buckets: the current one is written, the previous one is evaluated.
        self.sr_total = self.sr_success = 0
        self.prev_total = self.prev_success = 0
        self.lo_total = self.lo_success = 0
        self.lo_prev_total = self.lo_prev_success = 0
        self.success_rate = -1.0  # for /clusters, set when evaluated
        self.local_success_rate = -1.0
        self.num_ejections = 0
        self.backoff = 0  # the ejection time multiplier
        self.jitter = 0.0
        self.last_ejection: float | None = None
        self.last_unejection: float | None = None

    # -- results (request path) ---------------------------------------------------------------

    def put_http_code(self, code: int) -> None:
        self.sr_total += 1
        if code < 500 or code > 599:
            self.sr_success += 1
            self.consecutive_5xx = 0
            self.consecutive_gateway_failure = 0
            return
        detector = self.detector
        config = detector.config
        if 502 <= code <= 504:
            self.consecutive_gateway_failure += 1
            if self.consecutive_gateway_failure == config.consecutive_gateway_failure:
                detector.on_consecutive_error(self, CONSECUTIVE_GATEWAY_FAILURE)
        else:
            self.consecutive_gateway_failure = 0
        self.consecutive_5xx += 1
        if self.consecutive_5xx == config.consecutive_5xx:
            detector.on_consecutive_error(self, CONSECUTIVE_5XX)

    def put_result(self, result: int, code: int = 0) -> None:
        """A local-origin event, or an external one without an HTTP code; ``code``: the HTTP
        code it stands for (a timeout's 504), used when errors are not split by origin."""
        if not self.split:
            if code:
                self.put_http_code(code)
            else:
                mapped = _RESULT_CODE.get(result)
                if mapped is not None:
                    self.put_http_code(mapped)
            return
        if result in (CONNECT_SUCCESS, CONNECT_SUCCESS_FINAL):
            self._local_success()
        elif result in (TIMEOUT, CONNECT_FAILED):
            self._local_failure()
        elif result == EXT_REQUEST_FAILED:
            self.put_http_code(503)
        else:  # EXT_REQUEST_SUCCESS
            self.put_http_code(200)
            self._local_success()

    def _local_success(self) -> None:
        self.lo_total += 1
        self.lo_success += 1
        self.consecutive_local_origin_failure = 0

    def _local_failure(self) -> None:
        self.lo_total += 1
        self.consecutive_local_origin_failure += 1
        detector = self.detector
        if (
            self.consecutive_local_origin_failure
            == detector.config.consecutive_local_origin_failure
        ):
            detector.on_consecutive_error(self, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    # -- buckets ------------------------------------------------------------------------------

    def swap_buckets(self) -> None:
        self.prev_total, self.prev_success = self.sr_total, self.sr_success
        self.sr_total = self.sr_success = 0
        self.lo_prev_total, self.lo_prev_success = self.lo_total, self.lo_success
        self.lo_total = self.lo_success = 0

    def rate_and_volume(self, local: bool) -> tuple[float, int] | None:
        total = self.lo_prev_total if local else self.prev_total
        if not total:
            return None
        success = self.lo_prev_success if local else self.prev_success
        return success * 100.0 / total, total

    def reset_consecutive(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0


class DetectorStats:
    """Envoy's cluster.<name>.outlier_detection.* stats."""

    def __init__(self, scope: Scope) -> None:
        s = scope.scope("outlier_detection.")
        self.ejections_active = s.gauge("ejections_active", accumulate=False)
        self.ejections_active.set(0)
        self.ejections_overflow = s.counter("ejections_overflow")
        self.ejections_total = s.counter("ejections_total")  # deprecated, still counted
        self.ejections_consecutive_5xx = s.counter("ejections_consecutive_5xx")  # deprecated
        self.ejections_success_rate = s.counter("ejections_success_rate")  # deprecated
        self.ejections_enforced_total = s.counter("ejections_enforced_total")
        self.detected = tuple(s.counter(f"ejections_detected_{x}") for x in _STAT_SUFFIX)
        self.enforced = tuple(s.counter(f"ejections_enforced_{x}") for x in _STAT_SUFFIX)


class EventLog:
    """The outlier event log (the bootstrap's cluster_manager.outlier_detection.event_log_path):
    one JSON OutlierDetectionEvent per line, as Envoy writes them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, event: dict[str, Any]) -> None:
        """``event``: an OutlierDetectionEvent's fields in field-number order, as Envoy's JSON
        printer (which prints fields without presence even at their default) orders them."""
        line = json.dumps(event, separators=(",", ":"))
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as e:
            log.warning("outlier event log %s: %s", self.path, e)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Detector:
    """A cluster's outlier detector. ``on_change`` is called when a host is ejected or
    un-ejected (the cluster then rebuilds its load balancer)."""

    def __init__(
        self,
        config: OutlierDetection,
        cluster_name: str,
        scope: Scope,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[Host], None],
        event_log: EventLog | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.cluster_name = cluster_name
        self.loop = loop
        self.on_change = on_change
        self.event_log = event_log
        self.rng = rng if rng is not None else random.Random()
        self.stats = DetectorStats(scope)
        self.monitors: dict[Host, HostMonitor] = {}
        self.active = 0  # hosts ejected now
        # Cluster success-rate figures of the last evaluation (average, threshold) or -1.
        self.sr_numbers = [(-1.0, -1.0), (-1.0, -1.0)]  # external, local origin
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    # -- membership ---------------------------------------------------------------------------

    def start(self) -> None:
        self._arm()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def add_host(self, host: Host) -> None:
        monitor = HostMonitor(self, host)
        self.monitors[host] = monitor
        host.outlier = monitor

    def remove_host(self, host: Host) -> None:
        monitor = self.monitors.pop(host, None)
        if monitor is None:
            return
        if host.health_flags & FAILED_OUTLIER_CHECK:
            self._set_active(self.active - 1)
        host.outlier = None

    def _set_active(self, n: int) -> None:
        self.active = n
        self.stats.ejections_active.set(n)

    # -- ejection -----------------------------------------------------------------------------

    def on_consecutive_error(self, monitor: HostMonitor, kind: int) -> None:
        host = monitor.host
        if self.closed or self.monitors.get(host) is not monitor:
            return
        if host.health_flags & FAILED_OUTLIER_CHECK:
            return
        self.stats.detected[kind].value += 1
        self._eject(monitor, kind)
        # Reset the counter that fired, so a new bout of errors is detected even if no success
        # comes in between.
        if kind == CONSECUTIVE_5XX:
            self.stats.ejections_consecutive_5xx.value += 1
            monitor.consecutive_5xx = 0
        elif kind == CONSECUTIVE_GATEWAY_FAILURE:
            monitor.consecutive_gateway_failure = 0
        else:
            monitor.consecutive_local_origin_failure = 0

    def _enforced(self, kind: int) -> bool:
        c = self.config
        percent = (
            c.enforcing_consecutive_5xx,
            c.enforcing_consecutive_gateway_failure,
            c.enforcing_success_rate,
            c.enforcing_consecutive_local_origin_failure,
            c.enforcing_local_origin_success_rate,
            c.enforcing_failure_percentage,
            c.enforcing_failure_percentage_local_origin,
        )[kind]
        return self.rng.randrange(100) < percent

    def _eject(self, monitor: HostMonitor, kind: int) -> None:
        c = self.config
        stats = self.stats
        max_percent = min(100, c.max_ejection_percent)
        # Not checked per priority (as in Envoy): a whole priority level can be ejected.
        percent = 100.0 * (self.active + 1) / len(self.monitors)
        should = percent <= max_percent or (c.always_eject_one_host and self.active == 0)
        if not should:
            stats.ejections_overflow.value += 1
            return
        if kind in (CONSECUTIVE_5XX, SUCCESS_RATE):
            stats.ejections_total.value += 1
        if not self._enforced(kind):
            self._log_eject(monitor, kind, enforced=False)
            return
        self._set_active(self.active + 1)
        stats.ejections_enforced_total.value += 1
        stats.enforced[kind].value += 1
        host = monitor.host
        host.health_flags |= FAILED_OUTLIER_CHECK
        monitor.num_ejections += 1
        monitor.last_ejection = self.loop.time()
        jitter_ms = round(c.max_ejection_time_jitter * 1000)
        monitor.jitter = self.rng.randrange(jitter_ms + 1) / 1000.0
        if monitor.backoff * c.base_ejection_time < c.max_ejection_time + c.base_ejection_time:
            monitor.backoff += 1
        self.on_change(host)
        self._log_eject(monitor, kind, enforced=True)

    def uneject(self, monitor: HostMonitor) -> None:
        host = monitor.host
        self._set_active(self.active - 1)
        host.health_flags &= ~FAILED_OUTLIER_CHECK
        monitor.reset_consecutive()
        monitor.last_unejection = self.loop.time()
        self.on_change(host)
        if self.event_log is not None:
            # The type is left at its default (Envoy's event has none for an un-ejection).
            event = self._event(monitor, 0, monitor.last_ejection, "UNEJECT", False)
            self.event_log.write(event)

    def on_health_check(self, host: Host, healthy: bool) -> None:
        """An active health check passed (``successful_active_health_check_uneject_host``)."""
        if not healthy or not self.config.successful_active_health_check_uneject_host:
            return
        monitor = self.monitors.get(host)
        if monitor is None:
            return
        flags = host.health_flags
        if flags & FAILED_OUTLIER_CHECK and not flags & FAILED_ACTIVE_HC:
            self.uneject(monitor)

    # -- the interval timer -------------------------------------------------------------------

    def _arm(self) -> None:
        if not self.closed:
            self._timer = self.loop.call_later(self.config.interval, self.on_interval)

    def on_interval(self) -> None:
        self._timer = None
        now = self.loop.time()
        c = self.config
        for host, monitor in list(self.monitors.items()):
            if host.health_flags & FAILED_OUTLIER_CHECK and monitor.last_ejection is not None:
                ejected_for = min(c.base_ejection_time * monitor.backoff, c.max_ejection_time)
                # Milliseconds, as Envoy's monotonic clock compares them.
                if _ms(ejected_for + monitor.jitter) <= _ms(now - monitor.last_ejection):
                    self.uneject(monitor)
            monitor.swap_buckets()
            monitor.success_rate = -1.0
            monitor.local_success_rate = -1.0
        self._success_rate_ejections(local=False)
        self._success_rate_ejections(local=True)
        for host, monitor in self.monitors.items():
            if (
                not host.health_flags & FAILED_OUTLIER_CHECK
                and monitor.last_unejection is not None
                and _ms(now - monitor.last_unejection) >= _ms(c.interval)
                and monitor.backoff
            ):
                monitor.backoff -= 1
        self._arm()

    def _success_rate_ejections(self, *, local: bool) -> None:
        c = self.config
        index = 1 if local else 0
        self.sr_numbers[index] = (-1.0, -1.0)
        n = len(self.monitors)
        if n < c.success_rate_minimum_hosts and n < c.failure_percentage_minimum_hosts:
            return
        sr_hosts: list[tuple[HostMonitor, float]] = []
        fp_hosts: list[tuple[HostMonitor, float]] = []
        total = 0.0
        for host, monitor in self.monitors.items():
            if host.health_flags & FAILED_OUTLIER_CHECK:
                continue
            rv = monitor.rate_and_volume(local)
            if rv is None:
                continue
            rate, volume = rv
            if volume >= min(c.success_rate_request_volume, c.failure_percentage_request_volume):
                if local:
                    monitor.local_success_rate = rate
                else:
                    monitor.success_rate = rate
            if volume >= c.success_rate_request_volume:
                sr_hosts.append((monitor, rate))
                total += rate
            if volume >= c.failure_percentage_request_volume:
                fp_hosts.append((monitor, rate))
        if sr_hosts and len(sr_hosts) >= c.success_rate_minimum_hosts:
            mean = total / len(sr_hosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in sr_hosts) / len(sr_hosts))
            threshold = mean - c.success_rate_stdev_factor / 1000.0 * stdev
            self.sr_numbers[index] = (mean, threshold)
            kind = SUCCESS_RATE_LOCAL_ORIGIN if local else SUCCESS_RATE
            for monitor, rate in sr_hosts:
                if rate < threshold:
                    self.stats.ejections_success_rate.value += 1
                    self.stats.detected[kind].value += 1
                    self._eject(monitor, kind)
        if fp_hosts and len(fp_hosts) >= c.failure_percentage_minimum_hosts:
            kind = FAILURE_PERCENTAGE_LOCAL_ORIGIN if local else FAILURE_PERCENTAGE
            for monitor, rate in fp_hosts:
                if 100.0 - rate >= c.failure_percentage_threshold:
                    self.stats.detected[kind].value += 1
                    self._eject(monitor, kind)

    # -- the event log ------------------------------------------------------------------------

    def _event(
        self, monitor: HostMonitor, kind: int, since: float | None, action: str, enforced: bool
    ) -> dict[str, Any]:
        stamp = Timestamp()
        stamp.GetCurrentTime()
        event: dict[str, Any] = {"type": _TYPE_NAMES[kind], "timestamp": stamp.ToJsonString()}
        if since is not None:
            # A UInt64Value: a string in JSON.
            event["secs_since_last_action"] = str(int(self.loop.time() - since))
        event["cluster_name"] = self.cluster_name
        event["upstream_url"] = monitor.host.address_str
        event["action"] = action
        event["num_ejections"] = monitor.num_ejections
        event["enforced"] = enforced
        return event

    def _log_eject(self, monitor: HostMonitor, kind: int, *, enforced: bool) -> None:
        if self.event_log is None:
            return
        event = self._event(monitor, kind, monitor.last_unejection, "EJECT", enforced)
        if kind in (SUCCESS_RATE, SUCCESS_RATE_LOCAL_ORIGIN):
            local = kind == SUCCESS_RATE_LOCAL_ORIGIN
            mean, threshold = self.sr_numbers[1 if local else 0]
            event["eject_success_rate_event"] = {
                "host_success_rate": _uint(
                    monitor.local_success_rate if local else monitor.success_rate
                ),
                "cluster_average_success_rate": _uint(mean),
                "cluster_success_rate_ejection_threshold": _uint(threshold),
            }
        elif kind in (FAILURE_PERCENTAGE, FAILURE_PERCENTAGE_LOCAL_ORIGIN):
            local = kind == FAILURE_PERCENTAGE_LOCAL_ORIGIN
            event["eject_failure_percentage_event"] = {
                "host_success_rate": _uint(
                    monitor.local_success_rate if local else monitor.success_rate
                )
            }
        else:
            event["eject_consecutive_event"] = {}
        self.event_log.write(event)


def _ms(seconds: float) -> int:
    return int(seconds * 1000 + 1e-6)


def _uint(value: float) -> int:
    """A double stored in a uint32 event field (truncated, as the C++ conversion does)."""
    return max(0, int(value))
