"""The local mesh in iptables capture mode (``pilotfishctl up --capture iptables``, root).

Each workload is a pod (``pods.PodNetwork``): its own network namespace on a bridge that
lives in a "node" namespace, istio-iptables' rules with Istio's default arguments
(``-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020``), the app as
``nobody`` on ``0.0.0.0:<port>`` with no proxy settings (it calls ``http://reviews:9080``),
and the sidecar as uid/gid 1337, its admin on the pod's ``127.0.0.1:15000``. The ingress
gateway is a pod without capture rules, listening on its Gateway ports. Each pod has its own
hostname, ``/etc/hosts`` and a ``resolv.conf`` with Kubernetes' search path pointing at the
mesh's DNS server (``mesh/dns.py``, on the bridge's address in the node namespace), which
resolves the Services' names to their VIPs. pilot-agent's status port (15020, excluded from
capture) is served in each pod by the control plane (``status_port.py``); the readiness
prober reaches it from the node namespace, as the kubelet does.

The control plane stays in the host namespace: sidecars reach its ADS server through a Unix
socket in a runtime directory every uid can traverse (``/tmp/pf-mesh-*``: the state
directory may not be), which also holds the bootstraps. The host reaches admins and the
gateway through port forwards (``forward.PortForward``: ``127.0.0.1:<free port>`` on the
host into the pod's loopback), so ``pilotfishctl status/proxy-config`` and the gateway URL
work as in loopback mode and the host's routes and iptables stay untouched.

``STATE/capture.json`` lists the namespaces, /etc/netns dirs and the runtime directory as
they are made; ``clean_leftovers`` removes them (and ends the processes still inside the
namespaces, found by ``ip netns pids``) after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pilotfish.mesh.bootstrap import proxy_bootstrap
from pilotfish.mesh.capture import pods
from pilotfish.mesh.capture.forward import PortForward, socket_in_netns
from pilotfish.mesh.capture.iptables import CaptureConfig
from pilotfish.mesh.dns import MeshDns
from pilotfish.mesh.node_metadata import istio_node_metadata
from pilotfish.mesh.runner import (
    ManagedProcess,
    RunningProxy,
    Supervisor,
    WorkloadSpec,
    read_setting,
    write_setting,
)
from pilotfish.mesh.status_port import STATUS_PORT, Connect, connect_to

log = logging.getLogger("pilotfish.mesh.capture")

__all__ = [
    "ADMIN_PORT",
    "ISTIO_DEFAULTS",
    "PROXY_UID",
    "CaptureSupervisor",
    "capture_available",
    "capture_translate",
    "clean_leftovers",
    "load_mode",
    "runtime_dir",
    "save_mode",
]

PROXY_UID = 1337
ADMIN_PORT = 15000  # Istio's sidecar admin, on the pod's loopback
POD_SUBNET = "10.244.0.0/16"
MODE_FILE = "capture-mode.json"  # {"capture": "iptables"}: kept for restarts
STATE_FILE = "capture.json"  # what to remove after a crash
# istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020
ISTIO_DEFAULTS = CaptureConfig(
    inbound_ports_include="*",
    outbound_ip_ranges_include="*",
    inbound_ports_exclude="15090,15021,15020",
)


def _app_user() -> tuple[int, int]:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return nobody.pw_uid, nobody.pw_gid


def capture_available() -> str | None:
    """Why capture mode cannot run here (None: it can)."""
    return pods.available()


def load_mode(state_dir: Path) -> str | None:
    return read_setting(state_dir / MODE_FILE, "capture")


def save_mode(state_dir: Path, mode: str | None) -> None:
    write_setting(state_dir / MODE_FILE, "capture", mode if mode and mode != "none" else None)


def runtime_dir(state_dir: Path) -> Path:
    """The runtime directory of this state directory (made on first use, recorded)."""
    record = _read_state(state_dir)
    existing = record.get("runtime_dir")
    if existing and Path(existing).is_dir():
        return Path(existing)
    path = Path(tempfile.mkdtemp(prefix="pf-mesh-"))
    path.chmod(0o755)
    record["runtime_dir"] = str(path)
    _write_state(state_dir, record)
    return path


def _read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _write_state(state_dir: Path, record: Mapping[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def clean_leftovers(state_dir: Path) -> list[str]:
    """Remove what a capture-mode control plane of ``state_dir`` made and did not remove
    (it crashed): processes inside its namespaces, the namespaces, /etc/netns dirs, the
    runtime directory. Returns what it removed."""
    record = _read_state(state_dir)
    removed: list[str] = []
    for ns in record.get("namespaces", []):
        if not (Path("/run/netns") / ns).exists():
            continue
        listed = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout
        for pid in listed.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
                removed.append(f"pid {pid}")
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        removed.append(f"netns {ns}")
    for etc in record.get("etc_dirs", []):
        if Path(etc).exists():
            shutil.rmtree(etc, ignore_errors=True)
            removed.append(etc)
    for uts in record.get("uts_files", []):
        if Path(uts).exists():
            pods.remove_uts(Path(uts))
            removed.append(uts)
    run = record.get("runtime_dir")
    if run and Path(run).exists():
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return removed


class CaptureSupervisor(Supervisor):
    """``Supervisor`` with a pod per workload and one for the gateway."""

    def __init__(
        self,
        state_dir: Path,
        xds_address: str,
        *,
        log_level: str = "warning",
        proxy_binary: str | None = None,
        pod_subnet: str = POD_SUBNET,
    ) -> None:
        super().__init__(state_dir, xds_address, log_level=log_level, proxy_binary=proxy_binary)
        self.runtime = runtime_dir(state_dir)
        self.config_dir = self.runtime / "proxies"
        self.network = pods.PodNetwork(pod_subnet, prefix="pf")
        self.pods: dict[str, pods.Pod] = {}
        self.forwards: dict[str, list[PortForward]] = {}
        self._app_uid = _app_user()
        self._record()
        self.network.create()
        self._record()
        # The cluster DNS, on the bridge's address (the pods' gateway), port 53.
        dns_socket = socket_in_netns(Path("/run/netns") / self.network.ns, socket.SOCK_DGRAM)
        dns_socket.bind((self.network.gateway, 53))
        self.dns = MeshDns(dns_socket)
        self._dns_started = False

    # -- bookkeeping ------------------------------------------------------------------------

    def _record(self) -> None:
        """Everything made so far, for ``clean_leftovers`` (kept across pod removals: a
        namespace already gone is skipped)."""
        record = _read_state(self.state_dir)
        namespaces = set(record.get("namespaces", []))
        namespaces.add(self.network.ns)
        namespaces.update(p.ns for p in self.pods.values())
        etc_dirs = set(record.get("etc_dirs", []))
        etc_dirs.update(str(p.etc_dir) for p in self.pods.values())
        uts_files = set(record.get("uts_files", []))
        uts_files.update(str(p.uts_file) for p in self.pods.values())
        record.update(
            namespaces=sorted(namespaces),
            etc_dirs=sorted(etc_dirs),
            uts_files=sorted(uts_files),
            runtime_dir=str(self.runtime),
        )
        _write_state(self.state_dir, record)

    def _new_pod(self, name: str, namespace: str, capture: bool) -> pods.Pod:
        pod = self.network.pod(name, namespace=namespace, nameserver=self.network.gateway)
        self.pods[name] = pod
        self._record()
        # As Kubernetes does: any port may be bound without privileges inside a pod.
        pod.run(["sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0"])
        if capture:
            pod.apply_capture(ISTIO_DEFAULTS)
        return pod

    def _forward(self, name: str, pod: pods.Pod, port: int) -> int:
        forward = PortForward(Path("/run/netns") / pod.ns, port)
        forward.start()
        self.forwards.setdefault(name, []).append(forward)
        return forward.port

    # -- planning ---------------------------------------------------------------------------

    def plan_workload(self, spec: WorkloadSpec) -> RunningProxy:
        pod = self._new_pod(spec.name, spec.namespace, capture=True)
        return RunningProxy(
            name=spec.name,
            namespace=spec.namespace,
            kind="sidecar",
            labels=dict(spec.labels),
            service_account=spec.service_account,
            admin_port=self._forward(spec.name, pod, ADMIN_PORT),
            app_port=spec.port,
            inbound_port=spec.port,  # the pod's port: the rules send it to 15006
            address=pod.ip,
        )

    def plan_gateway(
        self, name: str, labels: Mapping[str, str], server_ports: Sequence[int]
    ) -> RunningProxy:
        pod = self._new_pod(name, "istio-system", capture=False)
        return RunningProxy(
            name=name,
            namespace="istio-system",
            kind="router",
            labels=dict(labels),
            service_account=name,
            admin_port=self._forward(name, pod, ADMIN_PORT),
            listen_ports={p: self._forward(name, pod, p) for p in server_ports},
            address=pod.ip,
        )

    # -- processes --------------------------------------------------------------------------

    def bootstrap(self, running: RunningProxy) -> dict[str, Any]:
        return proxy_bootstrap(
            self.xds_address,
            running.node_id,
            cluster=f"{running.labels.get('app', running.name)}.{running.namespace}",
            admin_port=ADMIN_PORT,
            metadata={
                **istio_node_metadata(
                    running.name,
                    running.namespace,
                    running.labels,
                    running.service_account,
                    running.kind,
                ),
                "INSTANCE_IPS": running.address,
                "INTERCEPTION_MODE": "REDIRECT",
            },
            initial_fetch_timeout="0s",
            sds_socket=running.sds_socket,
        )

    def _proxy_process(self, running: RunningProxy) -> ManagedProcess:
        process = super()._proxy_process(running)
        (self.config_dir / f"{running.name}.json").chmod(0o644)  # read by uid 1337
        self.config_dir.chmod(0o755)
        pod = self.pods[running.name]
        process.argv = pod.command(process.argv, uid=PROXY_UID, gid=PROXY_UID)
        return process

    def _app_process(self, running: RunningProxy, spec: WorkloadSpec) -> ManagedProcess:
        process = super()._app_process(running, spec)
        # No proxy settings: the rules capture what the app sends; it binds every address.
        for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            process.env[var] = ""
        process.env.setdefault("HOST", "0.0.0.0")
        process.env.update({k: v for k, v in spec.env.items() if k == "HOST"})
        uid, gid = self._app_uid
        process.argv = self.pods[running.name].command(process.argv, uid=uid, gid=gid)
        return process

    # -- readiness: pilot-agent's status port in the pod, the kubelet in the node ----------

    def status_socket(self, running: RunningProxy) -> socket.socket:
        sock = socket_in_netns(Path("/run/netns") / self.pods[running.name].ns)
        sock.bind(("0.0.0.0", STATUS_PORT))
        sock.listen(16)
        return sock

    def app_connect(self, running: RunningProxy) -> Connect:
        netns = Path("/run/netns") / self.pods[running.name].ns
        return lambda port: connect_to("127.0.0.1", port, make=lambda: socket_in_netns(netns))

    def kubelet_connect(self, running: RunningProxy) -> Connect:
        node = Path("/run/netns") / self.network.ns
        ip = running.address
        return lambda port: connect_to(ip, port, make=lambda: socket_in_netns(node))

    def exec_argv(self, running: RunningProxy, argv: Sequence[str]) -> list[str]:
        uid, gid = self._app_uid
        return self.pods[running.name].command(argv, uid=uid, gid=gid)

    # -- config and teardown ----------------------------------------------------------------

    def on_config(self, store: Any) -> None:
        """The cluster DNS answers the services' names with their VIPs."""
        from pilotfish.mesh.translate.services import MeshConfig
        from pilotfish.mesh.translate.vips import hosts_entries, service_vips

        if not self._dns_started:
            self._dns_started = True
            self.dns.start()
        self.dns.set_services(hosts_entries(service_vips(MeshConfig.from_store(store))))

    def release(self, running: RunningProxy) -> None:
        for forward in self.forwards.pop(running.name, []):
            forward.close()
        self.pods.pop(running.name, None)
        try:
            self.network.remove(running.name)
        except pods.PodError as e:
            log.warning("removing pod %s: %s", running.name, e)

    def stop_all(self) -> None:
        super().stop_all()
        for forwards in self.forwards.values():
            for forward in forwards:
                forward.close()
        self.forwards.clear()
        self.dns.close()
        try:
            self.network.close()
        except pods.PodError as e:
            log.warning("removing the pods: %s", e)
        clean_leftovers(self.state_dir)


def capture_translate(
    store: Any, proxies: Sequence[RunningProxy], *, istio_telemetry: bool = True
) -> dict[str, Any]:
    """Every proxy's resources in capture mode: sidecars in Istio's capture shape
    (``translate.capture``) with the services' VIPs, the gateway listening on its Gateway
    ports on every address of its pod."""
    from pilotfish.mesh.translate import MeshConfig, gateway_resources
    from pilotfish.mesh.translate.capture import capture_sidecar_resources
    from pilotfish.mesh.translate.vips import service_vips

    config = dataclasses.replace(MeshConfig.from_store(store), istio_telemetry=istio_telemetry)
    vips = service_vips(config)
    workloads = {
        p.name: p.as_workload(outbound_port=0, admin_port=ADMIN_PORT)
        for p in proxies
        if p.kind == "sidecar"
    }
    everyone = list(workloads.values())
    out: dict[str, Any] = {}
    for p in proxies:
        if p.kind == "sidecar":
            resources = capture_sidecar_resources(config, everyone, workloads[p.name], vips)
        else:
            gateway = p.as_gateway(
                address="0.0.0.0",
                ports={port: port for port in p.listen_ports},
                admin_port=ADMIN_PORT,
            )
            resources = gateway_resources(config, everyone, gateway)
        out[p.node_id] = resources.by_type_url()
    return out
