"""The local mesh's objects as the files real istiod reads with ``--configDir`` (pure).

istiod's file mode (``pilot/pkg/config/kube/file``) knows Istio's kinds only (its
``collections.Pilot``): no Kubernetes Service, Deployment or Pod. So, as Istio declares
virtual machines:

- each Kubernetes Service becomes a ``ServiceEntry`` with the Service's hostname
  (``NAME.NS.svc.cluster.local``), its VIP (the address the pods' ``/etc/hosts`` give the
  name), ``location: MESH_INTERNAL``, ``resolution: STATIC``, its ports (protocol from the
  port's name or ``appProtocol``, as Istio infers it for a Service; ``targetPort``) and a
  ``workloadSelector`` of the Service's selector;
- each workload (a pod of the local mesh) becomes a ``WorkloadEntry`` with the pod's IP, its
  labels and service account; istiod finds a sidecar's own entry by the IP in its node id;
- Istio's own objects (``*.istio.io``) are written as applied, with their namespace filled in.

One file per object (``KIND-NAMESPACE-NAME.yaml``), so that a change rewrites one file; istiod
watches the directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import fqdn
from pilotfish.mesh.translate.services import protocol_of

__all__ = ["PodWorkload", "config_files", "service_entry", "workload_entry"]


@dataclass(frozen=True, slots=True)
class PodWorkload:
    """A workload as istiod must know it: a pod's name, namespace, IP, labels, identity."""

    name: str
    namespace: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"


def _istio_kind(doc: Mapping[str, Any]) -> bool:
    group = str(doc.get("apiVersion", "")).split("/", 1)[0]
    return group.endswith(".istio.io")


def _declared_protocol(p: m.ServicePort) -> str | None:
    """The protocol a Service port declares (``appProtocol``, the name's prefix, or a non-TCP
    ``protocol``); None leaves it to istiod, which sniffs it, as for an unnamed port."""
    if p.protocol.upper() != "TCP":
        return p.protocol.upper()
    protocol = protocol_of(p.name, p.app_protocol)
    named_http = (p.name or "").lower().split("-", 1)[0] == "http"
    if p.app_protocol or protocol != "HTTP" or named_http:
        return protocol
    return None


def service_entry(svc: m.Service, vip: str | None) -> dict[str, Any]:
    """A Kubernetes Service as a ServiceEntry selecting its pods' WorkloadEntries."""
    ports = []
    for p in svc.ports:
        name = p.name or f"port-{p.port}"
        port: dict[str, Any] = {"number": p.port, "name": name}
        protocol = _declared_protocol(p)
        if protocol:
            port["protocol"] = protocol
        if isinstance(p.target_port, int) and p.target_port != p.port:
            port["targetPort"] = p.target_port
        ports.append(port)
    spec: dict[str, Any] = {
        "hosts": [fqdn(svc.meta.name, svc.meta.namespace)],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": ports,
        "workloadSelector": {"labels": dict(svc.selector)},
    }
    if vip:
        spec["addresses"] = [vip]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": svc.meta.name, "namespace": svc.meta.namespace},
        "spec": spec,
    }


def workload_entry(pod: PodWorkload) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
        },
        "spec": {
            "address": pod.address,
            "labels": dict(pod.labels),
            "serviceAccount": pod.service_account,
        },
    }


def _file_name(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc['kind'].lower()}-{meta.get('namespace', 'default')}-{meta['name']}.yaml"


def config_files(
    documents: Sequence[tuple[m.ObjectKey, Mapping[str, Any]]],
    services: Sequence[m.Service],
    pods: Sequence[PodWorkload],
    vips: Mapping[str, str],
) -> dict[str, str]:
    """File name → YAML text, for everything istiod should know."""
    docs: list[dict[str, Any]] = []
    for key, raw in documents:
        if not _istio_kind(raw):
            continue
        doc = dict(raw)
        meta = dict(doc.get("metadata") or {})
        meta["namespace"] = key.namespace
        doc["metadata"] = meta
        docs.append(doc)
    for svc in services:
        if svc.selector:  # a Service without a selector has no pods to select
            docs.append(service_entry(svc, vips.get(fqdn(svc.meta.name, svc.meta.namespace))))
    docs += [workload_entry(p) for p in pods]
    out: dict[str, str] = {}
    for doc in docs:
        out[_file_name(doc)] = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    return out
