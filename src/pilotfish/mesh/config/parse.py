"""Multi-document YAML into typed objects (``ParsedObject``), with errors that say where:
``virtual-service-all-v1.yaml (document 2): VirtualService default/reviews:
spec.http[0].route[0].destination.subsett: unknown field``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.parse_networking import SPEC_PARSERS
from pilotfish.mesh.config.parse_security import SECURITY_SPEC_PARSERS
from pilotfish.mesh.config.reader import Node, Problems

__all__ = [
    "ISTIO_API_VERSIONS",
    "ParsedObject",
    "load_documents",
    "parse_document",
    "parse_documents",
    "parse_file",
    "parse_yaml",
]

ISTIO_API_VERSIONS = frozenset(f"networking.istio.io/{v}" for v in ("v1", "v1beta1", "v1alpha3"))
SECURITY_API_VERSIONS = frozenset(f"security.istio.io/{v}" for v in ("v1", "v1beta1"))
# Istio kinds: their spec parser and the apiVersions their CRDs serve.
_ISTIO_KINDS = {
    **{kind: (parser, ISTIO_API_VERSIONS) for kind, parser in SPEC_PARSERS.items()},
    **{kind: (parser, SECURITY_API_VERSIONS) for kind, parser in SECURITY_SPEC_PARSERS.items()},
}
_KUBE_API_VERSIONS = {"Service": "v1", "ServiceAccount": "v1", "Deployment": "apps/v1"}
# Metadata the API server fills in; accepted so that `kubectl get -o yaml` output applies.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass(frozen=True, slots=True)
class ParsedObject:
    obj: m.Resource
    raw: Mapping[str, Any]  # the document as written: what the state directory keeps
    source: str  # file name (or "<inline>"), for `get` and `delete -f`
    where: str  # source and document number, for messages

    @property
    def key(self) -> m.ObjectKey:
        return self.obj.key


def load_documents(text: str, source: str) -> list[tuple[str, Any]]:
    """(where, document) for each non-empty document; ``kind: List`` items are unwrapped."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ConfigValidationError([f"{source}: invalid YAML: {e}"]) from e
    out: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source} (document {i})"
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items") or []
            out += [(f"{where}, items[{j}]", item) for j, item in enumerate(items)]
        else:
            out.append((where, doc))
    return out


def parse_yaml(text: str, source: str = "<inline>") -> list[ParsedObject]:
    return parse_documents(load_documents(text, source), source)


def parse_file(path: Path) -> list[ParsedObject]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigValidationError([f"{path}: cannot read: {e.strerror}"]) from e
    return parse_yaml(text, str(path))


def parse_documents(docs: Iterable[tuple[str, Any]], source: str) -> list[ParsedObject]:
    """Parse every document; raise one ConfigValidationError listing all problems."""
    parsed, messages = [], []
    for where, doc in docs:
        obj, problems = parse_document(doc, where)
        if problems:
            messages += problems
        elif obj is not None:
            parsed.append(ParsedObject(obj, doc, source, where))
    if messages:
        raise ConfigValidationError(messages)
    return parsed


def parse_document(doc: Any, where: str) -> tuple[m.Resource | None, list[str]]:
    """One document into an object, or the messages saying why not."""
    if not isinstance(doc, dict):
        return None, [f"{where}: expected a Kubernetes object, got {type(doc).__name__}"]
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None, [f"{where}: apiVersion and kind are required"]
    meta_raw = doc.get("metadata")
    if not isinstance(meta_raw, dict):
        meta_raw = {}
    label = f"{kind} {meta_raw.get('namespace') or m.DEFAULT_NAMESPACE}/{meta_raw.get('name')}"
    problems = Problems()
    obj = _parse(doc, kind, api_version, problems)
    messages = [f"{where}: {label}: {path}: {msg}" for path, msg in problems.items]
    return (None if messages else obj), messages


def _parse(
    doc: dict[str, Any], kind: str, api_version: str, problems: Problems
) -> m.Resource | None:
    top = Node(doc, "", problems)
    top.ignore("apiVersion", "kind", "status")
    meta = _metadata(top.obj("metadata"))
    if kind in _ISTIO_KINDS:
        parser, versions = _ISTIO_KINDS[kind]
        if api_version not in versions:
            problems.add("apiVersion", f"{kind} needs one of {', '.join(sorted(versions))}")
            return None
        spec = top.obj("spec")
        obj = parser(meta, spec)
        spec.finish()
        top.finish()
        return obj
    expected = _KUBE_API_VERSIONS.get(kind)
    if expected is None:
        supported = sorted([*_ISTIO_KINDS, *_KUBE_API_VERSIONS])
        problems.add(
            "kind", f"unsupported kind {kind!r} (the local mesh reads {', '.join(supported)})"
        )
        return None
    if api_version != expected:
        problems.add("apiVersion", f"{kind} needs apiVersion {expected}, got {api_version}")
        return None
    if kind == "Service":
        spec = top.obj("spec")
        obj = _service(meta, spec)
        spec.finish()
        top.finish()
        return obj
    if kind == "Deployment":
        # Deployments carry far more than the mesh uses: read what it needs, check nothing else.
        return _deployment(meta, top.obj("spec"))
    return m.ServiceAccount(meta=meta)


def _metadata(node: Node) -> m.ObjectMeta:
    meta = m.ObjectMeta(
        name=node.req_str("name"),
        namespace=node.string("namespace") or m.DEFAULT_NAMESPACE,
        labels=node.str_map("labels"),
        annotations=node.str_map("annotations"),
        creation_timestamp=_timestamp(node, "creationTimestamp"),
    )
    node.ignore(*_SERVER_METADATA)
    node.finish()
    return meta


def _timestamp(node: Node, key: str) -> str | None:
    """An RFC 3339 time (YAML gives a datetime, the state file a string) as UTC ISO 8601."""
    value = node.raw(key)
    if value is None:
        return None
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
    if not isinstance(when, datetime):
        node.error(key, f"invalid timestamp {value!r} (expected e.g. 2024-01-02T03:04:05Z)")
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


# Kubernetes Service spec fields that mean nothing on one machine but are valid.
_SERVICE_IGNORED = (
    "clusterIPs",
    "sessionAffinity",
    "sessionAffinityConfig",
    "externalName",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "loadBalancerClass",
    "externalIPs",
    "publishNotReadyAddresses",
    "allocateLoadBalancerNodePorts",
    "healthCheckNodePort",
    "trafficDistribution",
)


def _service(meta: m.ObjectMeta, spec: Node) -> m.Service:
    ports = []
    for node in spec.objs("ports"):
        target = node.raw("targetPort")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int | str)):
            node.error("targetPort", "expected a port number or name")
            target = None
        if not node.has("port"):
            node.error("port", "required field is missing")
        ports.append(
            m.ServicePort(
                port=node.integer("port") or 0,
                name=node.string("name"),
                target_port=target,
                protocol=node.string("protocol") or "TCP",
                app_protocol=node.string("appProtocol"),
            )
        )
        node.ignore("nodePort")
        node.finish()
    service = m.Service(
        meta=meta,
        selector=spec.str_map("selector"),
        ports=tuple(ports),
        type=spec.string("type") or "ClusterIP",
        cluster_ip=spec.string("clusterIP"),
    )
    spec.ignore(*_SERVICE_IGNORED)
    return service


def _deployment(meta: m.ObjectMeta, spec: Node) -> m.Deployment:
    template = spec.obj("template")
    pod_meta = template.obj("metadata")
    pod_spec = template.obj("spec")
    containers = []
    for node in pod_spec.objs("containers"):
        ports = tuple(p.integer("containerPort") or 0 for p in node.objs("ports"))
        containers.append(
            m.Container(name=node.req_str("name"), image=node.string("image"), ports=ports)
        )
    replicas = spec.integer("replicas")
    return m.Deployment(
        meta=meta,
        replicas=1 if replicas is None else replicas,
        pod_labels=pod_meta.str_map("labels"),
        containers=tuple(containers),
        service_account_name=pod_spec.string("serviceAccountName"),
    )
