"""Upstream hosts: an address plus what load balancing and pooling need to know about it."""

from __future__ import annotations

from typing import Any

from pilotfish.model.cluster import HealthStatus
from pilotfish.model.common import Locality

HEALTHY_STATES = frozenset((HealthStatus.UNKNOWN, HealthStatus.HEALTHY))

# Envoy's Host::HealthFlag bits that make a host unhealthy, in Envoy's order (for /clusters).
FAILED_ACTIVE_HC = 0x1
FAILED_OUTLIER_CHECK = 0x2
# Set with FAILED_ACTIVE_HC on a host not health checked yet.
PENDING_ACTIVE_HC = 0x100
ACTIVE_HC_TIMEOUT = 0x200
# Removed by EDS but kept while its active health checks pass (ignore_health_on_host_removal
# unset): it goes when one fails.
PENDING_DYNAMIC_REMOVAL = 0x400
_FAILING = FAILED_ACTIVE_HC | FAILED_OUTLIER_CHECK


class Host:
    """``address`` is ("ip", port) for TCP or the path for a Unix socket."""

    __slots__ = (
        "address",
        "address_str",
        "cx_active",
        "cx_connect_fail",
        "cx_total",
        "health",
        "health_check_config",
        "health_flags",
        "hostname",
        "last_used",
        "locality",
        "locality_weight",
        "metadata",
        "outlier",
        "pool",
        "priority",
        "rq_active",
        "rq_error",
        "rq_success",
        "rq_timeout",
        "rq_total",
        "tls",
        "weight",
    )

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        weight: int = 1,
        health: HealthStatus = HealthStatus.UNKNOWN,
        hostname: str = "",
        locality: Locality = Locality(),
        locality_weight: int = 0,
        priority: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        if isinstance(address, tuple):
            host, port = address
            self.address_str = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            self.address_str = address
        self.weight = weight
        self.health = health  # from EDS (health_status)
        # Failures found by active health checks and outlier detection (the bits above).
        self.health_flags = 0
        # Its endpoint's health_check_config (model.cluster.EndpointHealthCheckConfig) or None.
        self.health_check_config: Any = None
        # The host's outlier.HostMonitor when its cluster detects outliers: the request path
        # reports results to it.
        self.outlier: Any = None
        self.hostname = hostname
        self.locality = locality
        self.locality_weight = locality_weight  # its locality's load_balancing_weight (0: unset)
        self.priority = priority
        self.metadata = metadata or {}
        self.rq_active = 0
        self.cx_active = 0
        # Per-host counters shown by /clusters.
        self.cx_total = 0
        self.cx_connect_fail = 0
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.rq_timeout = 0
        self.pool: Any = None  # the host's connection pool, created on first use
        self.last_used = 0.0
        # The TLS context connections to this host use (tls.context.TlsContext), None for
        # plain TCP: chosen by the cluster from its transport sockets when the host is added.
        self.tls: Any = None

    @property
    def healthy(self) -> bool:
        return self.health in HEALTHY_STATES and not self.health_flags & _FAILING

    def key(self) -> tuple[Any, ...]:
        return (self.address, self.hostname)

    def __repr__(self) -> str:
        return f"Host({self.address_str}, w={self.weight}, {self.health.name})"
