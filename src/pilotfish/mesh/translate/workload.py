"""What the translation knows about the processes of the local mesh.

A ``Workload`` is one instance of a Deployment (one app process with its sidecar) on loopback;
a ``GatewayProxy`` is an ingress gateway. Their labels select Services, DestinationRule subsets
and Gateways, as pod labels do on Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pilotfish.mesh.config.model import DEFAULT_NAMESPACE, Deployment

__all__ = ["GatewayProxy", "Workload", "labels_match", "workloads_from_deployments"]

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Workload:
    """One app instance and its sidecar.

    ``inbound_port`` is the sidecar's inbound listener, the "pod address" other sidecars reach
    (EDS endpoints are ``address:inbound_port``); ``app_port`` is where the app listens;
    ``outbound_port`` the sidecar's HTTP-proxy listener the app reaches other services through
    (``HTTP_PROXY=http://127.0.0.1:<outbound_port>``). ``tcp_outbound`` maps
    ``"<service fqdn>:<port>"`` to a local port the sidecar listens on for that TCP service
    (an HTTP proxy cannot carry raw TCP); services without an entry get no TCP listener.
    """

    name: str  # the pod-like name, e.g. reviews-v2-0
    namespace: str = DEFAULT_NAMESPACE
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    address: str = LOCALHOST
    app_port: int = 0
    inbound_port: int = 0
    outbound_port: int = 0
    admin_port: int = 0
    tcp_outbound: Mapping[str, int] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return self.labels.get("app", self.name)

    @property
    def version(self) -> str:
        return self.labels.get("version", "")

    def node_id(self) -> str:
        """Istio's sidecar node id: ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``."""
        ns = self.namespace
        return f"sidecar~{self.address}~{self.name}.{ns}~{ns}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class GatewayProxy:
    """An ingress gateway: its labels select Gateways; ``ports`` maps each Gateway server port
    number (e.g. 8080) to the local port its listener binds on ``address``."""

    name: str = "istio-ingressgateway"
    namespace: str = "istio-system"
    labels: Mapping[str, str] = field(
        default_factory=lambda: {"istio": "ingressgateway", "app": "istio-ingressgateway"}
    )
    address: str = LOCALHOST
    ports: Mapping[int, int] = field(default_factory=dict)
    admin_port: int = 0

    def node_id(self) -> str:
        ns = self.namespace
        return f"router~{self.address}~{self.name}.{ns}~{ns}.svc.cluster.local"


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Kubernetes equality selector: every selector label present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


def workloads_from_deployments(
    deployments: Iterable[Deployment], allocate_port: Callable[[], int]
) -> list[Workload]:
    """One workload per replica of each Deployment, named ``<deployment>-<i>``, with the pod
    template's labels and service account and four ports from ``allocate_port`` (app,
    inbound, outbound, admin)."""
    out = []
    for d in deployments:
        for i in range(max(d.replicas, 1)):
            out.append(
                Workload(
                    name=f"{d.meta.name}-{i}",
                    namespace=d.meta.namespace,
                    labels=dict(d.pod_labels),
                    service_account=d.service_account_name or "default",
                    app_port=allocate_port(),
                    inbound_port=allocate_port(),
                    outbound_port=allocate_port(),
                    admin_port=allocate_port(),
                )
            )
    return out
