"""The local mesh's objects as istiod's --configDir files (mesh/istio/configdir.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.istio.agent import AgentSpec, agent_env, proxy_config
from pilotfish.mesh.istio.cli import proxy_sync
from pilotfish.mesh.istio.configdir import HASH_ANNOTATION, PodWorkload, config_files

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  ports: [{port: 5432, targetPort: 15432}]
  selector: {app: db}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""


def _files(tmp_path: Path) -> dict[str, dict]:
    store = ConfigStore(tmp_path / "state")
    store.apply_yaml(SERVICES)
    pods = [
        PodWorkload(
            "reviews-v1",
            "default",
            "10.244.0.2",
            {"app": "reviews", "version": "v1"},
            "bookinfo-reviews",
        )
    ]
    files = config_files(
        store.documents(),
        store.get(m.Service),
        pods,
        {"reviews.default.svc.cluster.local": "10.96.0.9"},
    )
    return {name: yaml.safe_load(text) for name, text in files.items()}


def test_services_become_service_entries_selecting_workload_entries(tmp_path: Path) -> None:
    files = _files(tmp_path)
    se = files["serviceentry-default-reviews.yaml"]
    assert se["spec"] == {
        "hosts": ["reviews.default.svc.cluster.local"],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
        "workloadSelector": {"labels": {"app": "reviews"}},
        "addresses": ["10.96.0.9"],
    }
    db = files["serviceentry-data-db.yaml"]["spec"]
    assert db["ports"] == [{"number": 5432, "name": "port-5432", "targetPort": 15432}]
    assert "addresses" not in db  # no VIP known: none invented
    we = files["workloadentry-default-reviews-v1.yaml"]
    assert we["metadata"]["namespace"] == "default"
    assert we["spec"] == {
        "address": "10.244.0.2",
        "labels": {"app": "reviews", "version": "v1"},
        "serviceAccount": "bookinfo-reviews",
    }


def test_istio_objects_pass_through_with_their_namespace(tmp_path: Path) -> None:
    files = _files(tmp_path)
    dr = files["destinationrule-default-reviews.yaml"]
    annotations = dr["metadata"].pop("annotations")
    assert dr["metadata"] == {"name": "reviews", "namespace": "default"}
    # what istiod's /debug/configz will show once it has read this version of the object
    assert list(annotations) == [HASH_ANNOTATION] and len(annotations[HASH_ANNOTATION]) == 16
    assert dr["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}}]
    # Kubernetes kinds are not for istiod's file mode (it knows Istio's kinds only).
    assert not [n for n in files if n.startswith("service-")]


def test_agent_env_is_the_injectors() -> None:
    spec = AgentSpec(
        "reviews-v1",
        "default",
        "sidecar",
        "10.244.0.2",
        "bookinfo-reviews",
        {"app": "reviews", "version": "v1"},
        app_port=9080,
    )
    config = proxy_config("10.244.0.1:15010", "/venv/bin/pilotfish")
    env = agent_env(spec, config)
    assert env["INSTANCE_IP"] == "10.244.0.2"
    assert env["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert json.loads(env["ISTIO_METAJSON_LABELS"]) == {"app": "reviews", "version": "v1"}
    proxy = json.loads(env["PROXY_CONFIG"])
    assert proxy["binaryPath"] == "/venv/bin/pilotfish"
    assert proxy["discoveryAddress"] == "10.244.0.1:15010"
    assert proxy["controlPlaneAuthPolicy"] == "NONE"
    assert json.loads(env["ISTIO_META_POD_PORTS"])[0]["containerPort"] == 9080


def test_proxy_sync_states() -> None:
    entry = {"cluster_sent": "a", "cluster_acked": "a", "listener_sent": "b", "listener_acked": "x"}
    assert proxy_sync(entry) == {
        "cluster": "SYNCED",
        "listener": "STALE",
        "route": "NOT SENT",
        "endpoint": "NOT SENT",
    }
