"""The cluster manager: one path for static (bootstrap) and dynamic (CDS) clusters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pilotfish.model.cluster import Cluster as ClusterConfig
from pilotfish.model.cluster import ClusterLoadAssignment, DiscoveryType
from pilotfish.stats.store import Store
from pilotfish.upstream.cluster import Cluster
from pilotfish.upstream.host import Host
from pilotfish.upstream.outlier import EventLog


class ClusterManager:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.clusters: dict[str, Cluster] = {}
        self.secrets: Any = None  # the server's SecretStore, for clusters' TLS contexts
        # The bootstrap's outlier event log (cluster_manager.outlier_detection.event_log_path).
        self.outlier_event_log: EventLog | None = None
        scope = store.scope("cluster_manager.")
        self.cluster_added = scope.counter("cluster_added")
        self.cluster_modified = scope.counter("cluster_modified")
        self.cluster_removed = scope.counter("cluster_removed")
        self.cluster_updated = scope.counter("cluster_updated")
        self.update_merge_cancelled = scope.counter("update_merge_cancelled")
        self.update_out_of_merge_window = scope.counter("update_out_of_merge_window")
        self.active_clusters = scope.gauge("active_clusters")
        self.warming_clusters = scope.gauge("warming_clusters")
        self.active_clusters.set(0)
        self.warming_clusters.set(0)

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def add_or_update(
        self, config: ClusterConfig, *, version_info: str = "", added_via_api: bool = False
    ) -> bool:
        """Install a cluster (replacing one of the same name). Returns False if unchanged.
        A replaced cluster's pools drain: busy connections finish their requests."""
        old = self.clusters.get(config.name)
        if old is not None and old.config == config:
            return False
        cluster = Cluster(config, self.store, self.loop, self.secrets, self.outlier_event_log)
        cluster.version_info = version_info
        cluster.added_via_api = added_via_api
        if old is not None and old.config.type == config.type and not config.load_assignment:
            # EDS clusters keep their endpoints across a cluster update until new ones arrive.
            # New Host objects: the old ones' pools drain with the old cluster (sharing them
            # would leave the new cluster with draining pools that never connect again).
            cluster.update_hosts([_fresh_host(h) for h in old.hosts_by_key.values()])
        self.clusters[config.name] = cluster
        cluster.start()
        if old is not None:
            self.cluster_modified.value += 1
            old.close()
        else:
            self.cluster_added.value += 1
        self.active_clusters.set(len(self.clusters))
        return True

    def remove(self, name: str) -> bool:
        cluster = self.clusters.pop(name, None)
        if cluster is None:
            return False
        cluster.close()
        self.cluster_removed.value += 1
        self.active_clusters.set(len(self.clusters))
        return True

    def update_endpoints(self, name: str, assignment: ClusterLoadAssignment) -> bool:
        cluster = self.clusters.get(name)
        if cluster is None:
            return False
        cluster.set_load_assignment(assignment)
        self.cluster_updated.value += 1
        return True

    def when_initialized(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every current cluster has its first hosts. EDS clusters are
        left to the xDS layer's initialization (they wait for their first assignment there)."""
        pending = [
            c
            for c in self.clusters.values()
            if not c.initialized and c.config.type is not DiscoveryType.EDS
        ]
        if not pending:
            callback()
            return
        remaining = {id(c) for c in pending}

        def one_done(cluster_id: int) -> None:
            remaining.discard(cluster_id)
            if not remaining:
                callback()

        for c in pending:
            c.on_initialized(lambda cid=id(c): one_done(cid))  # type: ignore[misc]

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.close()
        if self.outlier_event_log is not None:
            self.outlier_event_log.close()


def _fresh_host(host: Host) -> Host:
    """A copy of ``host``'s membership (address, weight, health, locality...) without its
    connection pool and counters, for the cluster that replaces the one it belongs to."""
    fresh = Host(
        host.address,
        weight=host.weight,
        health=host.health,
        hostname=host.hostname,
        locality=host.locality,
        locality_weight=host.locality_weight,
        priority=host.priority,
        metadata=host.metadata,
    )
    fresh.health_check_config = host.health_check_config
    return fresh
