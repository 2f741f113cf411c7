"""One real ``pilot-agent`` per proxy, set up as Istio's injector sets up a pod's
``istio-proxy`` container, without Kubernetes.

pilot-agent resolves its files relative to its working directory (the container's ``/``):
``./etc/istio/proxy`` (the bootstrap it renders, the ``XDS`` pipe of its xDS proxy),
``./var/run/secrets/workload-spiffe-uds/socket`` (its SDS server),
``./var/lib/istio/envoy/envoy_bootstrap_tmpl.json`` (the template the proxy image ships) and
``./var/run/secrets/workload-spiffe-credentials/{cert-chain,key,root-cert}.pem``. So each
agent gets a directory of its own as its working directory.

Certificates: istiod's CA authenticates a CSR with a Kubernetes service-account token (or a
client certificate it issued before), which a mesh without Kubernetes has not got. So the
workload certificates are file-mounted, as for VMs provisioned by hand: the mesh CA
(``mesh/security/ca.py``) issues each proxy's certificate into
``workload-spiffe-credentials``, where pilot-agent finds it (``initSdsServer``: "workload
certificate files detected, creating secret manager without caClient") and serves it over
SDS as ``default`` and ``ROOTCA``. istiod gets the same CA as its plugged-in ``cacerts``, so
every identity chains to one root.

xDS: ``discoveryAddress`` is istiod's plaintext gRPC port (15010) and
``controlPlaneAuthPolicy: NONE`` (the agent dials without TLS), as for a debug or
IPsec-protected network; the agent still proxies xDS for the proxy over its ``XDS`` pipe."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotfish.mesh.security.ca import MeshCA

__all__ = [
    "AgentSpec",
    "agent_argv",
    "agent_env",
    "prepare_agent_dir",
    "proxy_config",
    "write_proxy_wrapper",
]

CREDENTIALS = Path("var/run/secrets/workload-spiffe-credentials")
TEMPLATE = Path("var/lib/istio/envoy/envoy_bootstrap_tmpl.json")
CLUSTER_ID = "Kubernetes"  # istiod's default cluster id
TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What pilot-agent is told about its pod."""

    name: str
    namespace: str
    kind: str  # "sidecar" or "router"
    address: str  # the pod's IP (INSTANCE_IP)
    service_account: str
    labels: Mapping[str, str] = field(default_factory=dict)
    app_port: int = 0  # the app container's port (ISTIO_META_POD_PORTS)


def proxy_config(
    discovery_address: str,
    binary_path: str,
    *,
    concurrency: int = 1,
    drain_duration: str = "2s",
    termination_drain_duration: str = "2s",
) -> dict[str, Any]:
    """The ``ProxyConfig`` (``PROXY_CONFIG`` / the mesh's ``defaultConfig``)."""
    return {
        "discoveryAddress": discovery_address,
        "controlPlaneAuthPolicy": "NONE",
        "binaryPath": binary_path,
        "concurrency": concurrency,
        "drainDuration": drain_duration,
        "terminationDrainDuration": termination_drain_duration,
        "proxyAdminPort": 15000,
        "statusPort": 15020,
        "holdApplicationUntilProxyStarts": False,
    }


def agent_argv(pilot_agent: Path, kind: str, log_level: str = "warning") -> list[str]:
    """``pilot-agent proxy sidecar|router``; the proxy's log level follows ``log_level``."""
    return [
        str(pilot_agent),
        "proxy",
        kind,
        "--proxyLogLevel",
        log_level,
        "--log_output_level",
        "default:info",
    ]


def agent_env(spec: AgentSpec, config: Mapping[str, Any]) -> dict[str, str]:
    """The environment Istio's injection template gives the istio-proxy container."""
    labels = dict(spec.labels)
    workload = labels.get("app", spec.name)
    env = {
        "POD_NAME": spec.name,
        "POD_NAMESPACE": spec.namespace,
        "INSTANCE_IP": spec.address,
        "HOST_IP": spec.address,
        "SERVICE_ACCOUNT": spec.service_account,
        "ISTIO_CPU_LIMIT": "1",
        "PROXY_CONFIG": json.dumps(config),
        "ISTIO_META_POD_NAME": spec.name,
        "ISTIO_META_CONFIG_NAMESPACE": spec.namespace,
        "ISTIO_META_CLUSTER_ID": CLUSTER_ID,
        "ISTIO_META_MESH_ID": TRUST_DOMAIN,
        "TRUST_DOMAIN": TRUST_DOMAIN,
        "ISTIO_META_WORKLOAD_NAME": workload,
        "ISTIO_META_OWNER": (
            f"kubernetes://apis/apps/v1/namespaces/{spec.namespace}/deployments/{workload}"
        ),
        "ISTIO_METAJSON_LABELS": json.dumps(labels),
        "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
        "ISTIO_META_APP_CONTAINERS": workload,
        "CA_ADDR": str(config["discoveryAddress"]),
        "PILOT_CERT_PROVIDER": "istiod",
        "GOMAXPROCS": "1",
    }
    if spec.app_port:
        env["ISTIO_META_POD_PORTS"] = json.dumps(
            [{"name": "http", "containerPort": spec.app_port, "protocol": "TCP"}]
        )
    return env


def write_proxy_wrapper(path: Path, binary: str, uid: int, gid: int) -> Path:
    """pilot-agent's ``binaryPath``: a script that runs ``binary`` as ``uid``/``gid``.

    Istio runs pilot-agent and the proxy as uid 1337. Here pilot-agent runs as root with gid
    1337 (so istio-iptables' ``--gid-owner 1337`` rule still keeps its traffic to istiod out
    of the capture) and this wrapper drops the proxy to 1337, because a Python installed under
    a directory uid 1337 cannot traverse (``/root/.pyenv``, mode 700, on the machines this is
    developed on) can be executed by a process that drops from root straight into it
    (setpriv) but not by a process already running as 1337. The proxy's PID is the wrapper's
    (it execs), so pilot-agent's signals reach it."""
    path.write_text(
        "#!/bin/sh\n"
        "# pilot-agent's binaryPath: the proxy as the sidecar user (mesh/istio/agent.py)\n"
        f'exec setpriv --reuid {uid} --regid {gid} --clear-groups -- {binary} "$@"\n'
    )
    path.chmod(0o755)
    return path


def prepare_agent_dir(
    directory: Path, spec: AgentSpec, ca: MeshCA, template: Path, uid: int, gid: int
) -> None:
    """The agent's working directory: the bootstrap template and the file-mounted workload
    certificate, all owned by the proxy's user (pilot-agent writes beside them)."""
    creds = directory / CREDENTIALS
    creds.mkdir(parents=True, exist_ok=True)
    (directory / TEMPLATE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / TEMPLATE)
    cert = ca.issue(spec.namespace, spec.service_account)
    (creds / "cert-chain.pem").write_bytes(cert.certificate_chain)
    key = creds / "key.pem"
    key.write_bytes(cert.private_key)
    key.chmod(0o600)
    (creds / "root-cert.pem").write_bytes(ca.root_pem)
    for root, dirs, files in os.walk(directory):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)
