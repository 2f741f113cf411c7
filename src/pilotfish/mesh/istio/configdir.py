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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import fqdn
from pilotfish.mesh.translate.services import protocol_of

__all__ = [
    "HASH_ANNOTATION",
    "PodWorkload",
    "config_files",
    "content_hash",
    "file_hashes",
    "service_entry",
    "workload_entry",
]

# Each object's content hash, so that a reader of istiod's /debug/configz can tell whether
# istiod has read the object as last written (``cli.wait_synced``).
HASH_ANNOTATION = "pilotfish.io/content-hash"


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
        out[_file_name(doc)] = yaml.safe_dump(_hashed(doc), sort_keys=False)
    return out


def content_hash(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hashed(doc: dict[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    meta["annotations"] = {**annotations, HASH_ANNOTATION: content_hash(doc)}
    return {**doc, "metadata": meta}


def file_hashes(files: Mapping[str, str]) -> list[str]:
    """The content hashes of ``config_files``' output (what istiod should show)."""
    out = []
    for text in files.values():
        meta = (yaml.safe_load(text) or {}).get("metadata") or {}
        value = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
        if value:
            out.append(str(value))
    return sorted(out)
