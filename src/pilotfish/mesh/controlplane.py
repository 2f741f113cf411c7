"""The local mesh's control plane: the config store, the ADS server and the workloads'
processes in one process (istiod and the kubelet of a one-machine mesh).

Every change (config applied or deleted, a workload added) recomputes each proxy's
resources and pushes them to that proxy's own resource set on the ADS server; a proxy's set
is filled before the proxy starts, so its first request finds its config.

The CLI talks to it over a Unix socket (``STATE/ctl.sock``): one JSON request per line, one
JSON answer per line (see ``handle``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.probes import parse_probe
from pilotfish.mesh.prometheus import PrometheusAddon, prometheus_binary
from pilotfish.mesh.runner import RunningProxy, Supervisor, WorkloadSpec, saved_proxy_binary
from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.security.sds_server import WorkloadSdsServers
from pilotfish.mesh.workloads import parse_workloads, split_documents
from pilotfish.mesh.xds_server import XdsServer
from pilotfish.xds import resource_types as rt

log = logging.getLogger("pilotfish.mesh")

GATEWAY_NAME = "istio-ingressgateway"

# (store, proxies, istio_telemetry=...) -> {node id: {type URL: resources}}
Translate = Callable[..., Mapping[str, Mapping[str, list[Any]]]]


class ControlPlane:
    def __init__(self, state_dir: Path, translate: Translate, capture: str | None = None) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = ConfigStore(state_dir / "config")
        self.translate = translate
        self.server = XdsServer()
        self.capture = capture
        self.xds_socket = state_dir / "xds.sock"
        if capture:
            # iptables capture mode (capture/supervisor.py): pods, sidecars as uid 1337.
            from pilotfish.mesh.capture import supervisor as cap

            cap.clean_leftovers(state_dir)  # of a control plane that crashed
            self.xds_socket = cap.runtime_dir(state_dir) / "xds.sock"
            self.translate = cap.capture_translate
        self.xds_address = f"unix:{self.xds_socket}"
        self.supervisor = self._supervisor(saved_proxy_binary(state_dir))
        self.specs: dict[str, WorkloadSpec] = {}
        # istio-agent's part: each proxy's certificates from its own SDS socket.
        # Capture mode: the sockets must be reachable by uid 1337 (the state dir may not be).
        sds_dir = self.xds_socket.parent / "sds"
        self.sds = WorkloadSdsServers(MeshCA(state_dir / "ca"), sds_dir)
        self._sds_tasks: set[asyncio.Task[Any]] = set()
        self._sds_last: dict[str, asyncio.Task[Any]] = {}  # per workload, to keep the order
        self._stopped = asyncio.Event()
        self._ctl: asyncio.AbstractServer | None = None
        # Istio's Prometheus add-on, when Debian's prometheus is installed.
        binary = prometheus_binary()
        self.prometheus = PrometheusAddon(state_dir, binary) if binary else None
        self._targets_task: asyncio.Task[None] | None = None
        self.dashboard: Any = None

    def _supervisor(self, proxy_binary: str | None) -> Supervisor:
        if not self.capture:
            return Supervisor(self.state_dir, self.xds_address, proxy_binary=proxy_binary)
        from pilotfish.mesh.capture.supervisor import CaptureSupervisor

        return CaptureSupervisor(self.state_dir, self.xds_address, proxy_binary=proxy_binary)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.xds_socket.unlink(missing_ok=True)
        await self.server.start(self.xds_address)
        if self.capture:
            self.xds_socket.chmod(0o666)  # the sidecars run as uid 1337
        self.store.add_listener(lambda changes: self.push())
        ctl = self.state_dir / "ctl.sock"
        ctl.unlink(missing_ok=True)
        self._ctl = await asyncio.start_unix_server(self._client, path=str(ctl))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        self.add_workloads(self._saved_workloads())
        self.sync_gateway()
        if self.prometheus is not None:
            self.prometheus.start()
            self._targets_task = loop.create_task(self._follow_targets())
        self._start_dashboard(loop)

    def _start_dashboard(self, loop: asyncio.AbstractEventLoop) -> None:
        """The dashboard on a thread; it asks this loop for the proxies' sync state."""
        from pilotfish.mesh.dashboard.server import Dashboard

        def proxies() -> list[dict[str, Any]]:
            future: concurrent.futures.Future[list[dict[str, Any]]] = concurrent.futures.Future()

            def fill() -> None:
                try:
                    future.set_result(self.sync_status())
                except Exception as e:  # reported to the page
                    future.set_exception(e)

            loop.call_soon_threadsafe(fill)
            return future.result(timeout=5)

        prometheus = self.prometheus
        self.dashboard = Dashboard(lambda: prometheus.url if prometheus else "", proxies)
        self.dashboard.start()
        (self.state_dir / "dashboard.url").write_text(self.dashboard.url + "\n")

    async def _follow_targets(self) -> None:
        """Keep Prometheus's targets the running proxies (checked every second)."""
        assert self.prometheus is not None
        while True:
            self.prometheus.update(self.supervisor.proxies.values())
            await asyncio.sleep(1.0)

    async def run(self) -> None:
        await self.start()
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
        if self._targets_task is not None:
            self._targets_task.cancel()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
            (self.state_dir / "dashboard.url").unlink(missing_ok=True)
        self.supervisor.stop_all()
        await self.sds.stop_all()
        await self.server.stop()

    # -- workloads ------------------------------------------------------------------------------

    def add_workload(self, spec: WorkloadSpec) -> RunningProxy:
        """Plan the workload's ports, push its sidecar's config, then start app and sidecar."""
        self.add_workloads([spec])
        return self.supervisor.proxies[spec.name]

    def add_workloads(self, specs: Sequence[WorkloadSpec]) -> None:
        """``add_workload`` for several at once: one push for all of them (a file of
        workloads, or every saved one at a restart), then their processes."""
        new: list[tuple[RunningProxy, WorkloadSpec]] = []
        for spec in specs:
            old = self.supervisor.proxies.get(spec.name)
            if old is not None and self.specs.get(spec.name) == spec:
                continue
            if old is not None:
                self._drop_workload(spec.name)
            running = self.supervisor.plan_workload(spec)
            self._serve_secrets(running)
            self.supervisor.proxies[spec.name] = running
            self.specs[spec.name] = spec
            new.append((running, spec))
        if not new:
            return
        self._save_workloads()
        self.push()
        for running, spec in new:
            self.supervisor.start(running, spec)

    def add_gateway(
        self, name: str, labels: Mapping[str, str], ports: Sequence[int]
    ) -> RunningProxy:
        running = self.supervisor.plan_gateway(name, labels, ports)
        self._serve_secrets(running)
        self.supervisor.proxies[name] = running
        self.push()
        self.supervisor.start(running)
        return running

    def sync_gateway(self) -> None:
        """One ingress gateway proxy (``istio: ingressgateway``), started when a Gateway
        selects it, listening on a loopback port for each server port of the Gateways."""
        from pilotfish.mesh.config import model as m

        labels = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
        ports = sorted(
            {
                server.port.number
                for gw in self.store.get(m.Gateway)
                if all(labels.get(k) == v for k, v in gw.selector.items())
                for server in gw.servers
            }
        )
        current = self.supervisor.proxies.get(GATEWAY_NAME)
        if not ports or (current is not None and sorted(current.listen_ports) == ports):
            return
        if current is not None:
            self.remove_workload(GATEWAY_NAME)
        self.add_gateway(GATEWAY_NAME, labels, ports)

    def remove_workload(self, name: str) -> None:
        self._drop_workload(name)
        self._save_workloads()
        self.push()

    def _drop_workload(self, name: str) -> None:
        """Stop a workload's processes and forget it (no push)."""
        running = self.supervisor.proxies.pop(name, None)
        self.specs.pop(name, None)
        if running is not None:
            running.stop()
            self.supervisor.release(running)
            self._sds_step(name, self.sds.remove(name))

    def _serve_secrets(self, running: RunningProxy) -> None:
        """Start the proxy's SDS server (its socket is bound before the proxy has booted;
        a proxy that is faster retries)."""
        running.sds_socket = str(self.sds.socket_path(running.name))
        self._sds_step(
            running.name, self.sds.add(running.name, running.namespace, running.service_account)
        )

    def _sds_step(self, name: str, step: Any) -> None:
        """Run an SDS server change in the background, after the earlier ones of the same
        workload: a reconfigured workload's old server is removed before its new one is
        made (else the removal could delete the new socket, and the new sidecar would wait
        for its certificates for ever)."""
        previous = self._sds_last.get(name)

        async def in_order() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await step

        task = asyncio.get_running_loop().create_task(in_order())
        self._sds_last[name] = task
        self._sds_tasks.add(task)
        task.add_done_callback(self._sds_tasks.discard)
        task.add_done_callback(
            lambda t: self._sds_last.pop(name, None) if self._sds_last.get(name) is t else None
        )

    def _save_workloads(self) -> None:
        docs = [
            {
                "name": s.name,
                "namespace": s.namespace,
                "labels": dict(s.labels),
                "serviceAccount": s.service_account,
                "command": list(s.command),
                "env": dict(s.env),
                "port": s.port,
                "workingDir": s.working_dir,
                "readinessProbe": s.readiness_probe.to_kubernetes() if s.readiness_probe else None,
            }
            for s in self.specs.values()
        ]
        (self.state_dir / "workloads.json").write_text(json.dumps(docs, indent=1))

    def _saved_workloads(self) -> list[WorkloadSpec]:
        path = self.state_dir / "workloads.json"
        if not path.exists():
            return []
        return [
            WorkloadSpec(
                name=d["name"],
                namespace=d["namespace"],
                labels=d["labels"],
                service_account=d["serviceAccount"],
                command=tuple(d["command"]),
                env=d["env"],
                port=d["port"],
                working_dir=d.get("workingDir"),
                readiness_probe=parse_probe(d["readinessProbe"])
                if d.get("readinessProbe")
                else None,
            )
            for d in json.loads(path.read_text())
        ]

    # -- config -> xDS ----------------------------------------------------------------------------

    def push(self) -> None:
        """Recompute every proxy's resources and hand them to its resource set."""
        self.supervisor.on_config(self.store)
        proxies = list(self.supervisor.proxies.values())
        # Istio's telemetry filters only for proxies that have them (pilotfish; not upstream
        # Envoy, which would NACK Istio's types).
        telemetry = self.supervisor.proxy_binary is None
        per_node = self.translate(self.store, proxies, istio_telemetry=telemetry)
        for node, resources in per_node.items():
            # Clusters and endpoints before listeners and routes (Envoy's order).
            for rtype in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.ROUTE):
                self.server.set_resources(
                    rtype.type_url, resources.get(rtype.type_url, []), node_id=node
                )

    # -- the CLI's requests ---------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = self.handle(json.loads(line))
                except ConfigValidationError as e:
                    answer = {"ok": False, "errors": list(e.messages)}
                except Exception as e:  # a bad request must not end the control plane
                    log.exception("control request failed")
                    answer = {"ok": False, "errors": [f"{type(e).__name__}: {e}"]}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    def sync_status(self) -> list[dict[str, Any]]:
        """Each proxy's xDS state, as ``istioctl proxy-status`` shows it: connected or not,
        per type the last answer (ACK or NACK with its reason) and the NACKs seen."""
        connected = {s.node_id for s in self.server.connected()}
        last: dict[tuple[str, str], Any] = {}
        nacks: dict[str, list[dict[str, Any]]] = {}
        for record in self.server.acks:
            if record.stale:
                continue
            last[(record.node_id, record.type_url)] = record
            if record.is_nack:
                nacks.setdefault(record.node_id, []).append(_ack_row(record))
        rows = []
        for p in self.supervisor.proxies.values():
            node = p.node_id
            types = [_ack_row(r) for (n, _), r in sorted(last.items()) if n == node]
            rows.append(
                {
                    "name": p.name,
                    "namespace": p.namespace,
                    "node_id": node,
                    "connected": node in connected,
                    "types": types,
                    "synced": bool(types) and not any(t["nack"] for t in types),
                    "proxy": p.describe()["proxy"],
                    "nacks": nacks.get(node, [])[-10:],
                }
            )
        return rows

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``apply``/``delete`` (YAML text), ``get`` (kind), ``status``, ``down``."""
        cmd = request.get("cmd")
        if cmd in ("apply", "delete"):
            text = str(request.get("yaml", ""))
            source = str(request.get("source", "<stdin>"))
            workload_docs, config_text = split_documents(text)
            specs = parse_workloads(workload_docs, source, check_programs=cmd == "apply")
            workload_lines = []
            if cmd == "apply":
                changes = self.store.apply_yaml(config_text, source) if config_text.strip() else []
                for spec in specs:
                    old = self.specs.get(spec.name)
                    action = (
                        "created" if old is None else "unchanged" if old == spec else "configured"
                    )
                    workload_lines.append(f"workload/{spec.name} {action}")
                self.add_workloads(specs)
                self.sync_gateway()
            else:
                changes = (
                    self.store.delete(yaml_objects(config_text)) if config_text.strip() else []
                )
                for spec in specs:
                    found = spec.name in self.specs
                    self.remove_workload(spec.name)
                    workload_lines.append(
                        f"workload/{spec.name} deleted"
                        if found
                        else f'Error from server (NotFound): workloads "{spec.name}" not found'
                    )
            lines = [f"{c.key.kind.lower()}/{c.key.name} {c.action}" for c in changes]
            return {"ok": True, "lines": lines + workload_lines}
        if cmd == "get":
            kind = str(request.get("kind", ""))
            if kind.lower() in ("workload", "workloads", "wl"):
                return {
                    "ok": True,
                    "rows": [p.describe() for p in self.supervisor.proxies.values()],
                }
            objects = self.store.get(kind)
            return {
                "ok": True,
                "rows": [{"namespace": o.meta.namespace, "name": o.meta.name} for o in objects],
            }
        if cmd == "status":
            return {
                "ok": True,
                "rows": self.status_rows(),
                "xds": self.xds_address,
                "proxy_binary": self.supervisor.proxy_binary or "pilotfish",
                "capture": self.capture or "none",
                "prometheus": self.prometheus.url if self.prometheus is not None else "",
                "dashboard": self.dashboard.url if self.dashboard is not None else "",
            }
        if cmd == "sync":
            return {"ok": True, "rows": self.sync_status()}
        if cmd == "down":
            asyncio.get_running_loop().call_soon(self._stopped.set)
            return {"ok": True}
        return {"ok": False, "errors": [f"unknown command {cmd!r}"]}

    def status_rows(self) -> list[dict[str, Any]]:
        """Every proxy's row with its xDS sync state per type (``istioctl proxy-status``)."""
        sync = self.server.sync_status()
        rows = []
        for running in self.supervisor.proxies.values():
            row = running.describe()
            states = sync.get(running.node_id, {})
            row["sync"] = {
                rtype.short.upper(): states.get(rtype.type_url, "-")
                for rtype in (rt.CLUSTER, rt.LISTENER, rt.ENDPOINT, rt.ROUTE)
            }
            rows.append(row)
        return rows


def _ack_row(record: Any) -> dict[str, Any]:
    return {
        "type": record.type_url.rsplit(".", 1)[-1],
        "version": record.version_info,
        "nack": record.is_nack,
        "error": record.error_message,
        "time": record.time,
    }


def istio_translate(
    store: ConfigStore, proxies: Sequence[RunningProxy], *, istio_telemetry: bool = True
) -> dict[str, Mapping[str, list[Any]]]:
    """Every proxy's resources in Istio's shape (``pilotfish.mesh.translate``)."""
    from pilotfish.mesh.translate import MeshConfig, gateway_resources, sidecar_resources

    # Istio's mTLS (auto mTLS, PeerAuthentication): each proxy's SDS server (the bootstrap's
    # sds-grpc) serves its `default` certificate and the `ROOTCA` bundle.
    config = dataclasses.replace(MeshConfig.from_store(store), istio_telemetry=istio_telemetry)
    workloads = {p.name: p.as_workload() for p in proxies if p.kind == "sidecar"}
    everyone = list(workloads.values())
    out: dict[str, Mapping[str, list[Any]]] = {}
    for p in proxies:
        if p.kind == "sidecar":
            resources = sidecar_resources(config, everyone, workloads[p.name])
        else:
            resources = gateway_resources(config, everyone, p.as_gateway())
        out[p.node_id] = resources.by_type_url()
    return out


def yaml_objects(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d]
