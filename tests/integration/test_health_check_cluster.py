"""Health checks and EDS membership in one process (a real cluster, real sockets, scripted
backends): a host EDS removes stays while it passes its checks (flagged
``pending_dynamic_removal``) and goes at its first failure, unless
``ignore_health_on_host_removal``; the cluster is initialized once every host has had its first
check; a passing check un-ejects an outlier-ejected host."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests.support.faulty_backend import FaultyBackend

from pilotfish.model.cluster import (
    Cluster as ClusterConfig,
)
from pilotfish.model.cluster import (
    ClusterLoadAssignment,
    DiscoveryType,
    HealthCheck,
    LbEndpoint,
    LocalityLbEndpoints,
    OutlierDetection,
)
from pilotfish.model.common import SocketAddress
from pilotfish.stats.store import Store
from pilotfish.upstream.cluster import Cluster
from pilotfish.upstream.host import FAILED_OUTLIER_CHECK, PENDING_DYNAMIC_REMOVAL

HC = HealthCheck(
    kind="HTTP",
    timeout=0.5,
    interval=0.05,
    unhealthy_threshold=1,
    healthy_threshold=1,
    no_traffic_interval=0.05,
    no_traffic_healthy_interval=0.05,
    unhealthy_interval=0.05,
    unhealthy_edge_interval=0.05,
    healthy_edge_interval=0.05,
    path="/hz",
)


def _cla(*ports: int) -> ClusterLoadAssignment:
    eps = tuple(LbEndpoint(SocketAddress("127.0.0.1", p)) for p in ports)
    return ClusterLoadAssignment("c", (LocalityLbEndpoints(eps),))


async def _until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def _run(body: Callable[[list[FaultyBackend]], object]) -> None:
    backends = [FaultyBackend(f"b{i}").start() for i in range(2)]
    try:
        asyncio.run(body(backends))  # type: ignore[arg-type]
    finally:
        for b in backends:
            b.stop()


@pytest.mark.parametrize("ignore", [False, True], ids=["kept-until-failure", "ignore-health"])
def test_removed_host_stays_while_it_passes_checks(ignore: bool) -> None:
    async def body(backends: list[FaultyBackend]) -> None:
        a, b = backends
        config = ClusterConfig(
            "c", DiscoveryType.EDS, health_checks=(HC,), ignore_health_on_host_removal=ignore
        )
        cluster = Cluster(config, Store(), asyncio.get_running_loop())
        cluster.start()
        cluster.set_load_assignment(_cla(a.port, b.port))
        await _until(lambda: cluster.initialized)
        assert cluster.stats.membership_healthy.value == 2
        cluster.set_load_assignment(_cla(a.port))
        keys = {h.address[1] for h in cluster.hosts_by_key.values()}
        if ignore:
            assert keys == {a.port}
        else:
            assert keys == {a.port, b.port}
            kept = cluster.hosts_by_key[(("127.0.0.1", b.port), "")]
            assert kept.health_flags & PENDING_DYNAMIC_REMOVAL and kept.healthy
            b.mode = "503"
            await _until(lambda: len(cluster.hosts_by_key) == 1)
            assert cluster.stats.membership_total.value == 1
        cluster.close()

    _run(body)


def test_passing_check_unejects_an_outlier_ejected_host() -> None:
    async def body(backends: list[FaultyBackend]) -> None:
        a, b = backends
        od = OutlierDetection(consecutive_5xx=1, max_ejection_percent=100, base_ejection_time=60)
        config = ClusterConfig("c", DiscoveryType.STATIC, health_checks=(HC,), outlier_detection=od)
        cluster = Cluster(config, Store(), asyncio.get_running_loop())
        cluster.start()
        cluster.set_load_assignment(_cla(a.port, b.port))
        await _until(lambda: cluster.initialized)
        host = next(iter(cluster.hosts_by_key.values()))
        host.outlier.put_http_code(503)
        assert host.health_flags & FAILED_OUTLIER_CHECK
        # The next passing check clears the ejection (successful_active_health_check_uneject_host).
        await _until(lambda: not host.health_flags & FAILED_OUTLIER_CHECK)
        assert cluster.outlier is not None and cluster.outlier.stats.ejections_active.value == 0
        cluster.close()

    _run(body)
