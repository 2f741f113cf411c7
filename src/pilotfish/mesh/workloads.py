"""The local mesh's own kind, ``Workload``: a process to run with a sidecar, declared in the
same YAML files as Istio's and Kubernetes' objects::

    apiVersion: pilotfish.io/v1alpha1
    kind: Workload
    metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
    spec:
      serviceAccount: bookinfo-reviews
      command: ["{python}", -m, pilotfish.mesh.bookinfo.reviews, --port, "{port}"]
      env: {SERVICE_VERSION: v1}
      port: 9080

``{port}`` is the loopback port the app is given, ``{python}`` this Python. The labels select
Services and DestinationRule subsets, as a pod's labels do."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import yaml

from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.runner import WorkloadSpec

API_VERSION = "pilotfish.io/v1alpha1"
_SPEC_FIELDS = {"serviceAccount", "command", "env", "port"}


def split_documents(text: str) -> tuple[list[dict[str, Any]], str]:
    """(the Workload documents, the YAML text of every other document)."""
    workloads: list[dict[str, Any]] = []
    others: list[Any] = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "Workload":
            workloads.append(doc)
        elif doc is not None:
            others.append(doc)
    rest = yaml.safe_dump_all(others, sort_keys=False) if others else ""
    return workloads, rest


def parse_workloads(docs: list[dict[str, Any]], source: str) -> list[WorkloadSpec]:
    errors: list[str] = []
    specs: list[WorkloadSpec] = []
    for i, doc in enumerate(docs):
        where = f"{source}: Workload #{i}"
        try:
            specs.append(_workload(doc, where))
        except ValueError as e:
            errors.append(f"{where}: {e}")
    if errors:
        raise ConfigValidationError(errors)
    return specs


def _workload(doc: Mapping[str, Any], where: str) -> WorkloadSpec:
    if doc.get("apiVersion") != API_VERSION:
        raise ValueError(f"apiVersion must be {API_VERSION}")
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name is required")
    spec = doc.get("spec") or {}
    unknown = set(spec) - _SPEC_FIELDS
    if unknown:
        raise ValueError(f"spec.{sorted(unknown)[0]}: unknown field")
    command = spec.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise ValueError("spec.command: a list of strings is required")
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        raise ValueError("spec.env: a map of strings is required")
    port = spec.get("port", 9080)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("spec.port: a port number is required")
    return WorkloadSpec(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        service_account=str(spec.get("serviceAccount") or "default"),
        command=tuple(a.replace("{python}", sys.executable) for a in command),
        env={str(k): str(v) for k, v in env.items()},
        port=port,
    )
