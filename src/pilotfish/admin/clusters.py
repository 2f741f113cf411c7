"""/clusters in Envoy's text and JSON formats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pilotfish.upstream.cluster import Cluster
from pilotfish.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    FAILED_ACTIVE_HC,
    FAILED_OUTLIER_CHECK,
    HEALTHY_STATES,
    PENDING_ACTIVE_HC,
    PENDING_DYNAMIC_REMOVAL,
    Host,
)


def _host_stats(host: Host) -> list[tuple[str, int, bool]]:
    """(name, value, is_gauge) in Envoy's order."""
    return [
        ("cx_active", host.cx_active, True),
        ("cx_connect_fail", host.cx_connect_fail, False),
        ("cx_total", host.cx_total, False),
        ("rq_active", host.rq_active, True),
        ("rq_error", host.rq_error, False),
        ("rq_pending_active", 0, True),
        ("rq_success", host.rq_success, False),
        ("rq_timeout", host.rq_timeout, False),
        ("rq_total", host.rq_total, False),
    ]


def _health_flags(host: Host) -> str:
    """Envoy's HostUtility::healthFlagsToString: the flags set, in Envoy's order."""
    flags = host.health_flags
    out = ""
    if flags & FAILED_ACTIVE_HC:
        out += "/failed_active_hc"
    if flags & FAILED_OUTLIER_CHECK:
        out += "/failed_outlier_check"
    if host.health.name == "UNHEALTHY" or host.health.name == "TIMEOUT":
        out += "/failed_eds_health"
    elif host.health.name == "DEGRADED":
        out += "/degraded_eds_health"
    if flags & PENDING_DYNAMIC_REMOVAL:
        out += "/pending_dynamic_removal"
    if flags & PENDING_ACTIVE_HC:
        out += "/pending_active_hc"
    if flags & ACTIVE_HC_TIMEOUT:
        out += "/active_hc_timeout"
    if host.health.name == "DRAINING":
        out += "/eds_status_draining"
    return out or "healthy"


def _rate(value: float) -> str:
    """A double as Envoy's fmt prints it (no trailing ``.0``)."""
    return str(int(value)) if value == int(value) else repr(value)


def _success_rates(host: Host) -> tuple[float, float]:
    monitor = host.outlier
    if monitor is None:
        return -1.0, -1.0
    return monitor.success_rate, monitor.local_success_rate


def clusters_text(clusters: Iterable[Cluster]) -> str:
    lines: list[str] = []
    for c in clusters:
        n = c.name
        lines.append(f"{n}::observability_name::{c.config.stat_name}")
        for prio, res in (
            ("default_priority", c.config.circuit_breakers[0]),
            ("high_priority", c.config.circuit_breakers[1]),
        ):
            lines.append(f"{n}::{prio}::max_connections::{res.max_connections}")
            lines.append(f"{n}::{prio}::max_pending_requests::{res.max_pending_requests}")
            lines.append(f"{n}::{prio}::max_requests::{res.max_requests}")
            lines.append(f"{n}::{prio}::max_retries::{res.max_retries}")
        lines.append(f"{n}::added_via_api::{'true' if c.added_via_api else 'false'}")
        for host in c.hosts_by_key.values():
            a = host.address_str
            for name, value, _ in _host_stats(host):
                lines.append(f"{n}::{a}::{name}::{value}")
            lines.append(f"{n}::{a}::hostname::{host.hostname}")
            lines.append(f"{n}::{a}::health_flags::{_health_flags(host)}")
            lines.append(f"{n}::{a}::weight::{host.weight}")
            lines.append(f"{n}::{a}::region::{host.locality.region}")
            lines.append(f"{n}::{a}::zone::{host.locality.zone}")
            lines.append(f"{n}::{a}::sub_zone::{host.locality.sub_zone}")
            lines.append(f"{n}::{a}::canary::false")
            lines.append(f"{n}::{a}::priority::{host.priority}")
            rate, local_rate = _success_rates(host)
            lines.append(f"{n}::{a}::success_rate::{_rate(rate)}")
            lines.append(f"{n}::{a}::local_origin_success_rate::{_rate(local_rate)}")
    return "".join(line + "\n" for line in lines)


def _address_json(host: Host) -> dict[str, Any]:
    if isinstance(host.address, tuple):
        return {"socket_address": {"address": host.address[0], "port_value": host.address[1]}}
    return {"pipe": {"path": host.address}}


def clusters_json(clusters: Iterable[Cluster]) -> dict[str, Any]:
    out = []
    for c in clusters:
        hosts = []
        for host in c.hosts_by_key.values():
            stats = []
            for name, value, gauge in _host_stats(host):
                entry: dict[str, Any] = {"name": name}
                if value:
                    entry["value"] = str(value)
                if gauge:
                    entry["type"] = "GAUGE"
                stats.append(entry)
            h: dict[str, Any] = {
                "address": _address_json(host),
                "stats": stats,
                "health_status": _health_status_json(host),
                "weight": host.weight,
                "locality": {
                    k: v
                    for k, v in (
                        ("region", host.locality.region),
                        ("zone", host.locality.zone),
                        ("sub_zone", host.locality.sub_zone),
                    )
                    if v
                },
            }
            rate, local_rate = _success_rates(host)
            if rate >= 0:
                h["success_rate"] = {"value": rate}
            if local_rate >= 0:
                h["local_origin_success_rate"] = {"value": local_rate}
            if host.hostname:
                h["hostname"] = host.hostname
            if host.priority:
                h["priority"] = host.priority
            hosts.append(h)
        thresholds = []
        for prio, res in (
            ("DEFAULT", c.config.circuit_breakers[0]),
            ("HIGH", c.config.circuit_breakers[1]),
        ):
            t: dict[str, Any] = {
                "max_connections": res.max_connections,
                "max_pending_requests": res.max_pending_requests,
                "max_requests": res.max_requests,
                "max_retries": res.max_retries,
            }
            if prio == "HIGH":
                t["priority"] = "HIGH"
            thresholds.append(t)
        entry = {
            "name": c.name,
            "host_statuses": hosts,
            "circuit_breakers": {"thresholds": thresholds},
            "observability_name": c.config.stat_name,
        }
        if c.added_via_api:
            entry["added_via_api"] = True
        out.append(entry)
    return {"cluster_statuses": out}


def _health_status_json(host: Host) -> dict[str, Any]:
    flags = host.health_flags
    status: dict[str, Any] = {}
    if flags & FAILED_ACTIVE_HC:
        status["failed_active_health_check"] = True
    if flags & FAILED_OUTLIER_CHECK:
        status["failed_outlier_check"] = True
    if flags & PENDING_DYNAMIC_REMOVAL:
        status["pending_dynamic_removal"] = True
    if flags & PENDING_ACTIVE_HC:
        status["pending_active_hc"] = True
    if flags & ACTIVE_HC_TIMEOUT:
        status["active_hc_timeout"] = True
    status["eds_health_status"] = "HEALTHY" if host.health in HEALTHY_STATES else host.health.name
    return status
