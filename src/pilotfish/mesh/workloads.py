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
      workingDir: /srv/reviews              # optional: the app's current directory
      readinessProbe:                       # optional, as a container's (probes.py);
        httpGet: {path: /health}            # default: ready when the port accepts

``{port}`` is the loopback port the app is given, ``{python}`` this Python. The labels select
Services and DestinationRule subsets, as a pod's labels do.

A Workload whose program cannot be found or whose workingDir is not a directory is refused
at ``apply``, before anything of the file starts (a kubelet would start the pod and report
``RunContainerError``; refusing early loses nothing)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.probes import parse_probe
from pilotfish.mesh.runner import WorkloadSpec

API_VERSION = "pilotfish.io/v1alpha1"
_SPEC_FIELDS = {"serviceAccount", "command", "env", "port", "workingDir", "readinessProbe"}


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


def parse_workloads(
    docs: list[dict[str, Any]], source: str, *, check_programs: bool = True
) -> list[WorkloadSpec]:
    """The Workloads of a file; ``check_programs`` (apply, not delete): refuse a command or
    workingDir that is not there."""
    errors: list[str] = []
    specs: list[WorkloadSpec] = []
    for i, doc in enumerate(docs):
        where = f"{source}: Workload #{i}"
        try:
            specs.append(_workload(doc, check_programs))
        except ValueError as e:
            errors.append(f"{where}: {e}")
    if errors:
        raise ConfigValidationError(errors)
    return specs


def _workload(doc: Mapping[str, Any], check_programs: bool) -> WorkloadSpec:
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
    working_dir = spec.get("workingDir")
    if working_dir is not None:
        if not isinstance(working_dir, str) or not os.path.isabs(working_dir):
            raise ValueError("spec.workingDir: an absolute path is required")
        if check_programs and not os.path.isdir(working_dir):
            raise ValueError(f"spec.workingDir: {working_dir}: no such directory")
    probe = None
    if spec.get("readinessProbe") is not None:
        probe = parse_probe(spec["readinessProbe"], "spec.readinessProbe")
    program = command[0].replace("{python}", sys.executable)
    if check_programs and _find_program(program, working_dir, env.get("PATH")) is None:
        raise ValueError(f"spec.command: {program!r}: executable file not found")
    return WorkloadSpec(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        service_account=str(spec.get("serviceAccount") or "default"),
        command=tuple(a.replace("{python}", sys.executable) for a in command),
        env={str(k): str(v) for k, v in env.items()},
        port=port,
        working_dir=working_dir,
        readiness_probe=probe,
    )


def _find_program(program: str, working_dir: str | None, path: Any) -> str | None:
    """Where ``program`` is, as exec would find it (a name with a slash is relative to the
    workingDir; a bare name is looked up on PATH); None when nothing executable is there."""
    if "/" in program:
        full = os.path.join(working_dir or os.getcwd(), program)
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None
    return shutil.which(program, path=str(path) if path else None)
