"""Istio config → xDS resources in Istio's shape, per proxy (pure functions, no sockets).

    config = MeshConfig.from_store(store)
    sidecar_resources(config, workloads, workload)  # → ProxyResources (protos)
    gateway_resources(config, workloads, gateway)   # → ProxyResources
    ... .by_type_url()  # → {type_url: [protos]} for XdsServer.set_resources

``sidecar_config`` / ``gateway_config`` return the same as Envoy JSON (``ProxyConfig``).
"""

from pilotfish.mesh.translate.proxy import (
    HTTP_PROXY_ROUTE,
    ProxyConfig,
    ProxyResources,
    gateway_config,
    gateway_resources,
    sidecar_config,
    sidecar_resources,
)
from pilotfish.mesh.translate.services import MeshConfig, MeshService, build_services
from pilotfish.mesh.translate.workload import GatewayProxy, Workload, labels_match

__all__ = [
    "HTTP_PROXY_ROUTE",
    "GatewayProxy",
    "MeshConfig",
    "MeshService",
    "ProxyConfig",
    "ProxyResources",
    "Workload",
    "build_services",
    "gateway_config",
    "gateway_resources",
    "labels_match",
    "sidecar_config",
    "sidecar_resources",
]
