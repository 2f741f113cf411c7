"""What the runtime pieces share, built once by the Server and passed down (no module
globals): the event loop, stats, the cluster manager, access-log files and server-wide facts."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from pilotfish.stats.store import Store
from pilotfish.stats.tagged import TaggedStats


def detect_local_address(ip_version: str = "v4") -> str:
    """The address Envoy calls the server's local address (``--local-address-ip-version``):
    the source address this host would use to reach the outside, loopback if there is none."""
    family = socket.AF_INET6 if ip_version == "v6" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.254"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


@dataclass
class ServerContext:
    loop: asyncio.AbstractEventLoop
    stats: Store
    cluster_manager: Any
    access_logs: Any = None  # AccessLogManager
    local_address: str = "127.0.0.1"
    node_id: str = ""
    node_cluster: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)
    drain_time: float = 600.0
    # Set while the server drains (SIGTERM, /drain_listeners?graceful) or fails health checks:
    # the connection manager then asks ``drain`` whether a response closes its connection.
    draining: bool = False
    drain: Any = None  # drain.DrainManager; None: every response closes while draining
    # Set by /healthcheck/fail (Envoy's health check filter answers 503 then).
    health_check_failed: bool = False
    next_connection_id: int = 0
    # Route configs from RDS, by name (xds.manager.RouteProviders); None without xDS.
    rds: Any = None
    # Named TLS secrets, static and from SDS (tls.secrets.SecretStore).
    secrets: Any = None
    # The bootstrap's node metadata (Istio's WORKLOAD_NAME, LABELS, ... for telemetry).
    node_metadata: dict[str, Any] = field(default_factory=dict)
    # Labelled stats (Istio's standard metrics), rendered beside ``stats`` on scrape.
    tagged_stats: TaggedStats = field(default_factory=TaggedStats)

    def drain_close(self, handler: Any) -> bool:
        """While ``draining``: whether a response of ``handler`` (a connection manager) closes
        its connection."""
        drain = self.drain
        return True if drain is None else bool(drain.drain_close(handler))

    def connection_id(self) -> int:
        self.next_connection_id += 1
        return self.next_connection_id
