"""BookInfo as the translation sees it: Istio's own YAML (shared/refdata) in a ConfigStore,
one workload per Deployment on made-up (or free) loopback ports, and the routing scenarios of
``samples/bookinfo/networking`` (each applied on top of bookinfo.yaml)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.translate import GatewayProxy, MeshConfig, Workload
from pilotfish.mesh.translate.workload import workloads_from_deployments

__all__ = [
    "BOOKINFO",
    "NETWORKING",
    "SCENARIOS",
    "bookinfo_config",
    "bookinfo_store",
    "bookinfo_workloads",
    "gateway",
    "workload",
]

BOOKINFO = Path("/work/shared/refdata/istio/samples/bookinfo")
NETWORKING = BOOKINFO / "networking"
KUBE_YAML = BOOKINFO / "platform/kube/bookinfo.yaml"

# name → files applied on top of bookinfo.yaml. Every file of samples/bookinfo/networking that
# applies to sidecars or the gateway (the ratings-mysql/db ones name services bookinfo.yaml
# lacks; certmanager-gateway and destination-rule-all-mtls need certificates).
_DR = "destination-rule-all.yaml"
SCENARIOS: dict[str, tuple[str, ...]] = {
    "no-rules": (),
    "destination-rule-all": (_DR,),
    "destination-rule-reviews": ("destination-rule-reviews.yaml",),
    "virtual-service-all-v1": (_DR, "virtual-service-all-v1.yaml"),
    "reviews-50-v3": (_DR, "virtual-service-reviews-50-v3.yaml"),
    "reviews-80-20": (_DR, "virtual-service-reviews-80-20.yaml"),
    "reviews-90-10": (_DR, "virtual-service-reviews-90-10.yaml"),
    "reviews-test-v2": (_DR, "virtual-service-reviews-test-v2.yaml"),
    "reviews-jason-v2-v3": (_DR, "virtual-service-reviews-jason-v2-v3.yaml"),
    "reviews-v3": (_DR, "virtual-service-reviews-v3.yaml"),
    "reviews-v2-v3": (_DR, "virtual-service-reviews-v2-v3.yaml"),
    "details-v2": (_DR, "virtual-service-details-v2.yaml"),
    "ratings-test-abort": (
        _DR,
        "virtual-service-all-v1.yaml",
        "virtual-service-ratings-test-abort.yaml",
    ),
    "ratings-test-delay": (
        _DR,
        "virtual-service-all-v1.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ),
    "fault-injection-details-v1": (_DR, "fault-injection-details-v1.yaml"),
    "bookinfo-gateway": (_DR, "virtual-service-all-v1.yaml", "bookinfo-gateway.yaml"),
    "egress-google-apis": ("egress-rule-google-apis.yaml",),
}


def bookinfo_store(scenario: str = "no-rules") -> ConfigStore:
    store = ConfigStore()
    store.apply([KUBE_YAML])
    for name in SCENARIOS[scenario]:
        store.apply([NETWORKING / name])
    return store


def bookinfo_config(scenario: str = "no-rules") -> MeshConfig:
    return MeshConfig.from_store(bookinfo_store(scenario))


def bookinfo_workloads(
    allocate_port: Callable[[], int] | None = None,
    app_ports: dict[str, int] | None = None,
) -> list[Workload]:
    """One workload per BookInfo Deployment (``details-v1-0``, ..., ``reviews-v3-0``); ports
    from ``allocate_port`` (default: 20000, 20001, ...); ``app_ports`` overrides the app port
    by deployment name (e.g. to point at a running backend)."""
    if allocate_port is None:
        counter = itertools.count(20000)
        allocate_port = lambda: next(counter)  # noqa: E731
    store = ConfigStore()
    store.apply([KUBE_YAML])
    out = workloads_from_deployments(store.get(m.Deployment), allocate_port)
    if app_ports:
        out = [
            Workload(
                w.name,
                w.namespace,
                w.labels,
                w.service_account,
                w.address,
                app_ports.get(w.name.rsplit("-", 1)[0], w.app_port),
                w.inbound_port,
                w.outbound_port,
                w.admin_port,
            )
            for w in out
        ]
    return out


def workload(workloads: Sequence[Workload], deployment: str) -> Workload:
    return next(w for w in workloads if w.name.rsplit("-", 1)[0] == deployment)


def gateway(port: int = 28080) -> GatewayProxy:
    return GatewayProxy(ports={8080: port})
