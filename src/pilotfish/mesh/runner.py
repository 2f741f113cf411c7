"""The local mesh's processes: each workload's app and its pilotfish sidecar, and the ingress
gateway, all on loopback and without root.

An app listens on its own loopback port and reaches other services through its sidecar as an
HTTP proxy (``HTTP_PROXY``), so an unmodified app that honours the standard proxy variables
(Python's requests and urllib, curl, Go's net/http, ...) needs no code change; hostnames
such as ``reviews`` are resolved by the sidecar's routes, not by DNS. Other sidecars reach
the app through its sidecar's inbound listener (the "pod address").

The processes are children of the control plane; their output goes to ``STATE/logs/NAME.*``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotfish.mesh.bootstrap import node_id, proxy_bootstrap
from pilotfish.mesh.node_metadata import istio_node_metadata
from pilotfish.mesh.probes import Probe, default_probe
from pilotfish.mesh.processes import end_process
from pilotfish.mesh.status_port import (
    Connect,
    Prober,
    ProbeTarget,
    StatusServer,
    connect_to,
    http_probe,
    run_exec,
)
from pilotfish.mesh.translate.workload import GatewayProxy, Workload


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pilotfish_command() -> list[str]:
    """The proxy next to this Python (``.venv/bin/pilotfish``), or ``python -m pilotfish``."""
    script = Path(sys.executable).with_name("pilotfish")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pilotfish"]


PROXY_SETTINGS = "proxy.json"  # in the state directory: {"binary": PATH} (absent: pilotfish)


def read_setting(path: Path, key: str) -> str | None:
    """A setting ``pilotfishctl up`` stored in the state directory (a one-key JSON file)."""
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get(key)
    return str(value) if value else None


def write_setting(path: Path, key: str, value: str | None) -> None:
    """Store (or, for None, forget) a setting, so that a restarted control plane keeps it."""
    if value is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: value}) + "\n")


def saved_proxy_binary(state_dir: Path) -> str | None:
    """The proxy binary ``pilotfishctl up --proxy-binary`` stored for this state directory
    (``None``: pilotfish)."""
    return read_setting(state_dir / PROXY_SETTINGS, "binary")


def save_proxy_binary(state_dir: Path, binary: str | None) -> None:
    """Store the proxy binary for this state directory (``None`` or ``pilotfish``: pilotfish)."""
    if binary == "pilotfish":
        binary = None
    write_setting(
        state_dir / PROXY_SETTINGS,
        "binary",
        None if binary is None else str(Path(binary).absolute()),
    )


def proxy_argv(binary: str | None, config: Path, *, base_id: int, log_level: str) -> list[str]:
    """The command line of a mesh proxy: Envoy's, for pilotfish (the default) or any binary
    that takes Envoy's options (Envoy itself). One worker (pilotfish is one event loop; Envoy
    would start one worker per core), no hot restart, and a ``--base-id`` of its own, since
    several proxies run on the machine at once."""
    command = [binary] if binary else pilotfish_command()
    return [
        *command,
        "-c",
        str(config),
        "--drain-time-s",
        "2",
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--base-id",
        str(base_id),
        "-l",
        log_level,
    ]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A workload as the user declares it: what to run and how it is labelled.
    ``{port}`` in ``command`` and ``env`` values is replaced by the app's port."""

    name: str
    command: tuple[str, ...]
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 9080  # the port the app serves (its Service's targetPort)
    working_dir: str | None = None  # the app's current directory (a container's workingDir)
    readiness_probe: Probe | None = None  # None: ready when ``port`` accepts

    @property
    def probe(self) -> Probe:
        return self.readiness_probe or default_probe()


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    error: str = ""  # why it could not be started (the process never ran)

    def start(self) -> None:
        """Start the process; a program that cannot be run (missing, not executable, bad
        workingDir) is recorded in ``error`` (Kubernetes' RunContainerError), not raised:
        one workload that cannot start must not stop the others."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with self.log_path.open("ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env},
                    cwd=self.cwd,
                    start_new_session=True,  # a Ctrl-C of the CLI goes to the control plane only
                )
            except OSError as e:
                self.error = f"exec {self.argv[0]!r}: {e.strerror or e}"
                log.write(f"RunContainerError: {self.error}\n".encode())

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            end_process(self.proc, timeout)


@dataclass
class RunningProxy:
    """A sidecar (with its workload's app) or the gateway, and the ports it was given."""

    name: str
    namespace: str
    kind: str  # "sidecar" or "router" (Istio's node type for gateways)
    labels: Mapping[str, str]
    service_account: str
    admin_port: int
    app_port: int = 0
    inbound_port: int = 0
    outbound_port: int = 0
    listen_ports: dict[int, int] = field(default_factory=dict)  # gateway: server port -> local
    app: ManagedProcess | None = None
    proxy: ManagedProcess | None = None
    address: str = "127.0.0.1"  # the pod's IP in capture mode
    sds_socket: str | None = None  # its SDS server's socket (the bootstrap's sds-grpc)
    status_server: StatusServer | None = None  # pilot-agent's status port (sidecars)
    prober: Prober | None = None  # the app's readiness (sidecars)

    @property
    def node_id(self) -> str:
        return node_id(self.kind, self.name, self.namespace, self.address)

    def as_workload(self, **overrides: Any) -> Workload:
        """This sidecar's workload, as the translation sees it."""
        fields: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels,
            "service_account": self.service_account,
            "address": self.address,
            "app_port": self.app_port,
            "inbound_port": self.inbound_port,
            "outbound_port": self.outbound_port,
            "admin_port": self.admin_port,
        }
        return Workload(**{**fields, **overrides})

    def as_gateway(self, **overrides: Any) -> GatewayProxy:
        """This gateway, as the translation sees it."""
        fields: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels,
            "ports": self.listen_ports,
            "admin_port": self.admin_port,
        }
        return GatewayProxy(**{**fields, **overrides})

    def describe(self) -> dict[str, Any]:
        def state(p: ManagedProcess | None) -> str:
            if p is None:
                return "-"
            if p.error:
                return "RunContainerError"
            if p.running:
                return "Running"
            return f"Exited({p.exit_code})"

        readiness = self.prober.readiness if self.prober is not None else None
        return {
            "name": self.name,
            "namespace": self.namespace,
            "kind": self.kind,
            "app": state(self.app),
            "proxy": state(self.proxy),
            "admin": f"127.0.0.1:{self.admin_port}",
            "address": self.address,
            "inbound": f"{self.address}:{self.inbound_port}" if self.inbound_port else "",
            "outbound": f"127.0.0.1:{self.outbound_port}" if self.outbound_port else "",
            "listen": {str(k): v for k, v in self.listen_ports.items()},
            "app_pid": self.app.proc.pid if self.app is not None and self.app.proc else None,
            "app_ready": readiness.ready if readiness is not None else None,
            "reason": self._reason(),
            "status_port": self.status_server.port if self.status_server is not None else None,
            "proxy_pid": (
                self.proxy.proc.pid if self.proxy is not None and self.proxy.proc else None
            ),
        }

    def _reason(self) -> str:
        """Why the workload is not serving, as ``kubectl describe`` would say it."""
        for p in (self.app, self.proxy):
            if p is None:
                continue
            if p.error:
                return f"RunContainerError: {p.error}"
            if p.proc is not None and not p.running:
                return f"{p.name} exited with code {p.exit_code}: {_last_line(p.log_path)}"
        if self.prober is not None and not self.prober.readiness.ready:
            return self.prober.readiness.reason
        return ""

    def stop(self) -> None:
        """End the app and the proxy, the prober and the status port."""
        if self.prober is not None:
            self.prober.stop()
        if self.status_server is not None:
            self.status_server.close()
        for process in (self.app, self.proxy):
            if process is not None:
                process.stop()


def _last_line(path: Path) -> str:
    """The last line a process wrote (why it exited, most of the time)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-200:] if lines else ""


class Supervisor:
    """Starts, watches and stops the mesh's processes."""

    def __init__(
        self,
        state_dir: Path,
        xds_address: str,
        *,
        log_level: str = "warning",
        proxy_binary: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.xds_address = xds_address
        self.log_level = log_level
        self.proxy_binary = proxy_binary  # None: pilotfish
        self.proxies: dict[str, RunningProxy] = {}
        self.config_dir = state_dir / "proxies"  # the proxies' bootstrap files

    def on_config(self, store: Any) -> None:
        """The config changed (before the proxies get it); capture mode refreshes the pods'
        hosts files here."""

    def release(self, running: RunningProxy) -> None:
        """A workload's processes have stopped; free what it held (capture mode: its pod)."""

    def plan_workload(self, spec: WorkloadSpec) -> RunningProxy:
        """Give a workload its ports (before the control plane computes its config)."""
        return RunningProxy(
            name=spec.name,
            namespace=spec.namespace,
            kind="sidecar",
            labels=dict(spec.labels),
            service_account=spec.service_account,
            admin_port=free_port(),
            app_port=free_port(),
            inbound_port=free_port(),
            outbound_port=free_port(),
        )

    def plan_gateway(
        self, name: str, labels: Mapping[str, str], server_ports: Sequence[int]
    ) -> RunningProxy:
        return RunningProxy(
            name=name,
            namespace="istio-system",
            kind="router",
            labels=dict(labels),
            service_account=name,
            admin_port=free_port(),
            listen_ports={p: free_port() for p in server_ports},
        )

    def start(self, running: RunningProxy, spec: WorkloadSpec | None = None) -> None:
        """Start the proxy (its config must be on the control plane already), then the app."""
        self.proxies[running.name] = running
        running.proxy = self._proxy_process(running)
        running.proxy.start()
        if spec is not None:
            running.app = self._app_process(running, spec)
            running.app.start()
            self._start_prober(running, spec)

    # -- readiness (the kubelet's prober and pilot-agent's status port) ----------------------

    def status_socket(self, running: RunningProxy) -> socket.socket:
        """The listening socket of the workload's status port (pilot-agent's 15020)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        return sock

    def app_connect(self, running: RunningProxy) -> Connect:
        """Connect to a port on the pod's loopback (where pilot-agent probes the app)."""
        return lambda port: connect_to("127.0.0.1", port)

    def kubelet_connect(self, running: RunningProxy) -> Connect:
        """Connect to a port of the pod, from where the kubelet is."""
        return lambda port: connect_to("127.0.0.1", port)

    def exec_argv(self, running: RunningProxy, argv: Sequence[str]) -> list[str]:
        """An exec probe's command line, run as the app is."""
        return list(argv)

    def _start_prober(self, running: RunningProxy, spec: WorkloadSpec) -> None:
        probe = spec.probe
        server = StatusServer(self.status_socket(running), self.app_connect(running))
        server.targets[running.name] = ProbeTarget(probe, running.app_port)
        server.start()
        running.status_server = server
        path = f"/app-health/{running.name}/readyz"
        kubelet = self.kubelet_connect(running)

        async def check() -> str | None:
            if probe.kind == "exec":
                argv = self.exec_argv(running, probe.command)
                return await run_exec(argv, probe.timeout, cwd=spec.working_dir)
            return await http_probe(kubelet, server.port, path, probe.timeout)

        running.prober = Prober(probe, check)
        running.prober.start()

    def bootstrap(self, running: RunningProxy) -> dict[str, Any]:
        return proxy_bootstrap(
            self.xds_address,
            running.node_id,
            cluster=f"{running.labels.get('app', running.name)}.{running.namespace}",
            admin_port=running.admin_port,
            metadata={
                **istio_node_metadata(
                    running.name,
                    running.namespace,
                    running.labels,
                    running.service_account,
                    running.kind,
                ),
            },
            initial_fetch_timeout="0s",
            sds_socket=running.sds_socket,
        )

    def _proxy_process(self, running: RunningProxy) -> ManagedProcess:
        boot = self.bootstrap(running)
        config = self.config_dir / f"{running.name}.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(boot, indent=1))
        # The admin port is unique among the live proxies of the machine: so is the base id.
        argv = proxy_argv(
            self.proxy_binary, config, base_id=running.admin_port, log_level=self.log_level
        )
        return ManagedProcess(
            f"{running.name}/proxy", argv, self.state_dir / "logs" / f"{running.name}.proxy.log"
        )

    def _app_process(self, running: RunningProxy, spec: WorkloadSpec) -> ManagedProcess:
        port = str(running.app_port)
        proxy = f"http://127.0.0.1:{running.outbound_port}"
        env = {
            "PORT": port,
            "HOSTNAME": running.name,
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NO_PROXY": "",
            "no_proxy": "",
            "POD_NAME": running.name,
            "POD_NAMESPACE": running.namespace,
            "SERVICE_ACCOUNT": running.service_account,
        }
        env.update({k: v.replace("{port}", port) for k, v in spec.env.items()})
        argv = [arg.replace("{port}", port) for arg in spec.command]
        return ManagedProcess(
            f"{running.name}/app",
            argv,
            self.state_dir / "logs" / f"{running.name}.app.log",
            env,
            cwd=spec.working_dir,
        )

    def status(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.proxies.values()]

    def log_paths(self, name: str) -> list[Path]:
        return sorted((self.state_dir / "logs").glob(f"{name}.*.log"))

    def stop_all(self) -> None:
        """Apps first (they may still be answering), then their proxies."""
        for running in self.proxies.values():
            if running.prober is not None:
                running.prober.stop()
            if running.status_server is not None:
                running.status_server.close()
            if running.app is not None:
                running.app.stop()
        for running in self.proxies.values():
            if running.proxy is not None:
                running.proxy.stop()
