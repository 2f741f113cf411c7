"""The node metadata pilot-agent puts in a proxy's bootstrap (``node.metadata``), as far as
telemetry reads it: Istio's stats and metadata exchange filters take the workload's identity
from ``WORKLOAD_NAME``, ``NAMESPACE``, ``CLUSTER_ID``, ``LABELS`` (with the canonical service
labels the injector adds), ``OWNER`` and ``ISTIO_VERSION``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What the local mesh calls its cluster and mesh (Istio's defaults for a single cluster).
CLUSTER_ID = "Kubernetes"
MESH_ID = "cluster.local"
ISTIO_VERSION = "1.32-dev"  # the Istio these configs follow (shared/refdata)
CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"


def istio_node_metadata(
    name: str, namespace: str, labels: Mapping[str, str], service_account: str, kind: str
) -> dict[str, Any]:
    """``kind``: ``sidecar`` (a deployment's pod) or ``router`` (the gateway). The canonical
    service is the ``app`` label (else the workload name) and its revision the ``version``
    label (else ``latest``), as the injector sets them."""
    full = dict(labels)
    full.setdefault(CANONICAL_NAME, labels.get("app") or labels.get("istio") or name)
    full.setdefault(CANONICAL_REVISION, labels.get("version") or "latest")
    return {
        "NAME": name,
        "NAMESPACE": namespace,
        "LABELS": full,
        "SERVICE_ACCOUNT": service_account,
        "WORKLOAD_NAME": name,
        "OWNER": f"kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "CLUSTER_ID": CLUSTER_ID,
        "MESH_ID": MESH_ID,
        "ISTIO_VERSION": ISTIO_VERSION,
        "istio": "sidecar" if kind == "sidecar" else "ingressgateway",
    }
