"""Istio's workload metadata: who a proxy (or its peer) is, for Istio's standard metrics.

The forms it travels in, as istio-proxy reads and writes them (``extensions/common/
metadata_object``): the node metadata pilot-agent puts in the bootstrap (``WORKLOAD_NAME``,
``NAMESPACE``, ``CLUSTER_ID``, ``LABELS``, ``OWNER``, ...); the ``x-envoy-peer-metadata`` header
(base64 of a serialized ``google.protobuf.Struct`` of those fields, deterministic order) with
``x-envoy-peer-metadata-id`` (the node id); the ``baggage`` header (``k8s.namespace.name=...``);
and the compact endpoint encoding istiod puts in endpoint metadata
(``istio.workload: name;namespace;canonical-name;canonical-revision;cluster``).
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"
_APP_LABELS = ("app", "app.kubernetes.io/name")
_VERSION_LABELS = ("version", "app.kubernetes.io/version")
_OWNER_PREFIX = "kubernetes://apis/apps/v1/namespaces/"
_WORKLOAD_TYPES = ("pod", "deployment", "job", "cronjob")


@dataclass(frozen=True, slots=True)
class WorkloadMetadata:
    """Istio's WorkloadMetadataObject (empty string: not known)."""

    instance_name: str = ""
    cluster_name: str = ""
    namespace_name: str = ""
    workload_name: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    app_name: str = ""
    app_version: str = ""
    workload_type: str = ""  # pod, deployment, job, cronjob, or "" (unknown)
    identity: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # additional_labels kept from LABELS

    def label(self, name: str) -> str | None:
        for k, v in self.labels:
            if k == name:
                return v
        return None

    # -- to the wire --------------------------------------------------------------------------

    def owner(self) -> str:
        if not self.workload_type:
            return ""
        return f"{_OWNER_PREFIX}{self.namespace_name}/{self.workload_type}s/{self.workload_name}"

    def to_struct(self) -> struct_pb2.Struct:
        """Istio's convertWorkloadMetadataToStruct (what ``x-envoy-peer-metadata`` carries)."""
        s = struct_pb2.Struct()
        for key, value in (
            ("NAME", self.instance_name),
            ("NAMESPACE", self.namespace_name),
            ("WORKLOAD_NAME", self.workload_name),
            ("CLUSTER_ID", self.cluster_name),
        ):
            if value:
                s.fields[key].string_value = value
        labels = s.fields["LABELS"].struct_value
        for key, value in (
            (CANONICAL_NAME, self.canonical_name),
            (CANONICAL_REVISION, self.canonical_revision),
            ("app", self.app_name),
            ("version", self.app_version),
            *self.labels,
        ):
            if value:
                labels.fields[key].string_value = value
        owner = self.owner()
        if owner:
            s.fields["OWNER"].string_value = owner
        return s

    def header_value(self) -> bytes:
        """The ``x-envoy-peer-metadata`` value: base64 of the deterministic serialization."""
        return base64.b64encode(self.to_struct().SerializeToString(deterministic=True))

    def baggage(self) -> bytes:
        """The ``baggage`` header value (Istio's WorkloadMetadataObject::baggage)."""
        parts = []
        if self.workload_name:
            parts.append(f"k8s.{self.workload_type or 'pod'}.name={self.workload_name}")
        for key, value in (
            ("k8s.namespace.name", self.namespace_name),
            ("k8s.cluster.name", self.cluster_name),
            ("service.name", self.canonical_name),
            ("service.version", self.canonical_revision),
            ("app.name", self.app_name),
            ("app.version", self.app_version),
            ("k8s.instance.name", self.instance_name),
        ):
            if value:
                parts.append(f"{key}={value}")
        return ",".join(parts).encode()


def _workload_type(owner: str, workload: str) -> str:
    """The workload kind from an OWNER such as ``kubernetes://apis/apps/v1/namespaces/default/
    deployments/productpage-v1`` (Istio's parseOwner)."""
    if len(owner) > len(workload) + 2:
        head = owner[: len(owner) - len(workload) - 2]
        kind = head.rsplit("/", 1)[-1]
        if kind in _WORKLOAD_TYPES:
            return kind
    return ""


def from_node_metadata(
    metadata: dict[str, Any], additional_labels: frozenset[str] = frozenset()
) -> WorkloadMetadata:
    """Istio's convertStructToWorkloadMetadata over node metadata (or a decoded peer Struct).
    ``app``/``version`` fall back to the ``app.kubernetes.io`` labels, then to the canonical
    name/revision (istio-proxy's fallback for workloads without those labels)."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    labels = metadata.get("LABELS")
    labels = labels if isinstance(labels, dict) else {}
    canonical_name = text(labels.get(CANONICAL_NAME))
    canonical_revision = text(labels.get(CANONICAL_REVISION))
    app = next((text(labels[k]) for k in _APP_LABELS if text(labels.get(k))), "")
    version = next((text(labels[k]) for k in _VERSION_LABELS if text(labels.get(k))), "")
    workload = text(metadata.get("WORKLOAD_NAME"))
    extra = tuple(
        (k, text(labels[k])) for k in sorted(labels) if k in additional_labels and text(labels[k])
    )
    return WorkloadMetadata(
        instance_name=text(metadata.get("NAME")),
        cluster_name=text(metadata.get("CLUSTER_ID")),
        namespace_name=text(metadata.get("NAMESPACE")),
        workload_name=workload,
        canonical_name=canonical_name,
        canonical_revision=canonical_revision,
        app_name=app or canonical_name,
        app_version=version or canonical_revision,
        workload_type=_workload_type(text(metadata.get("OWNER")), workload),
        identity=text(metadata.get("IDENTITY")),
        labels=extra,
    )


def _struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in s.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            out[key] = value.string_value
        elif kind == "struct_value":
            out[key] = _struct_to_dict(value.struct_value)
    return out


def from_header(
    value: bytes, additional_labels: frozenset[str] = frozenset()
) -> WorkloadMetadata | None:
    """Decode ``x-envoy-peer-metadata``; None if it is not base64 of a Struct."""
    try:
        raw = base64.b64decode(value + b"=" * (-len(value) % 4), validate=False)
        s = struct_pb2.Struct()
        s.ParseFromString(raw)
    except (binascii.Error, DecodeError, ValueError):
        return None
    return from_node_metadata(_struct_to_dict(s), additional_labels)


_BAGGAGE_FIELDS = {
    "k8s.namespace.name": "namespace_name",
    "k8s.cluster.name": "cluster_name",
    "service.name": "canonical_name",
    "service.version": "canonical_revision",
    "app.name": "app_name",
    "app.version": "app_version",
    "k8s.instance.name": "instance_name",
}


def from_baggage(value: bytes) -> WorkloadMetadata:
    """Istio's convertBaggageToWorkloadMetadata: ``k8s.<type>.name`` gives the workload and its
    type; unknown members are ignored."""
    fields: dict[str, Any] = {}
    for member in value.decode("latin-1").split(","):
        key, _, val = member.strip().partition("=")
        key = key.strip()
        val = val.split(";", 1)[0].strip()  # W3C baggage member properties are not values
        attr = _BAGGAGE_FIELDS.get(key)
        if attr is not None:
            fields[attr] = val
        elif key.startswith("k8s.") and key.endswith(".name"):
            kind = key[4:-5]
            if kind in _WORKLOAD_TYPES:
                fields["workload_name"] = val
                fields["workload_type"] = kind
    return WorkloadMetadata(**fields)


@functools.lru_cache(maxsize=4096)
def from_endpoint_metadata(encoded: str) -> WorkloadMetadata | None:
    """``istio.workload`` endpoint metadata: ``name;namespace;canonical;revision;cluster``
    (cached: the same object for the same string, which the stats' label cache relies on)."""
    parts = encoded.split(";")
    if len(parts) < 5:
        return None
    return WorkloadMetadata(
        workload_name=parts[0],
        namespace_name=parts[1],
        canonical_name=parts[2],
        canonical_revision=parts[3],
        cluster_name=parts[4],
    )
