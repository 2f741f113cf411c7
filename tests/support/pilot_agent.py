"""A small stand-in for Istio's pilot-agent, written from its documented behaviour, to drive a
proxy (pilotfish, or Envoy) the way pilot-agent does in a sidecar.

What pilot-agent does, and where (istio/istio at 86c9f01f, fetched for this module):

- renders a bootstrap (``pkg/bootstrap``); here Istio's rendered goldens
  (``pkg/bootstrap/testdata/*_golden.json``) *are* the rendered output, changed only where
  this machine needs it: the admin and the static listeners (15090, 15021) bind 127.0.0.1 on
  free ports (the ``prometheus_stats`` cluster follows the admin port), the ``xds-grpc`` pipe (``/tmp/XDS`` in the goldens) and the ``sds-grpc`` pipe
  (``./var/run/secrets/workload-spiffe-uds/test.sock``, relative to the working directory)
  move into a short temporary directory (Unix socket paths are limited to 107 bytes), which
  is also the proxy's working directory;
- starts the proxy with the argument list of ``pkg/envoy/proxy.go`` ``(*envoy).args``:
  ``-c FILE --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4
  --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields``, then
  the agent's extra args (``-l warning --component-log-level misc:error``, from
  ``pilot/cmd/pilot-agent/app/cmd.go``), then ``--concurrency 2``;
- polls readiness (``pilot/cmd/pilot-agent/status/util/stats.go``): ``GET
  /stats?usedonly&filter=^(cluster_manager\\.cds|listener_manager\\.lds)\\.(update_success|update_rejected)$``
  and ``GET /stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started)``,
  the regex sent unescaped as Go's client sends it, parsed as ``name: value`` lines; ready
  when CDS and LDS ``update_success`` > 0, ``server.state`` is 0 (LIVE) and
  ``listener_manager.workers_started`` is 1;
- on termination (``pkg/envoy/agent.go`` ``terminate``, ``pkg/envoy/admin.go``
  ``DrainListeners``) POSTs ``/drain_listeners?inboundonly&graceful`` (sidecars), waits the
  termination drain duration, then kills the proxy (SIGKILL); ``/quitquitquit`` is how the
  agent asks the proxy to exit on its own.

The UDS peers the bootstrap names are stubbed: ``xds-grpc`` by a
:class:`~pilotfish.mesh.xds_server.ThreadedXdsServer` the caller provides resources to,
``sds-grpc`` by :class:`SdsStub`, a gRPC server that answers each SDS request with secrets
of a throw-away mesh CA (as istio-agent serves ``default``, ``ROOTCA`` and the ``file-cert:``
/ ``file-root:`` secrets of the goldens' TLS clusters), so that no proxy waits for them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from tests.support.istio_data import BOOTSTRAP_GOLDENS
from tests.support.proxies import LOCALHOST, PILOTFISH_BIN, free_port

from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.security.sds_server import root_secret, workload_secret

__all__ = [
    "GOLDEN_DIR",
    "LDS_CDS_FILTER",
    "SERVER_FILTER",
    "PilotAgent",
    "SdsStub",
    "render_bootstrap",
]

GOLDEN_DIR = BOOTSTRAP_GOLDENS
LDS_CDS_FILTER = (
    "^(cluster_manager\\.cds|listener_manager\\.lds)\\.(update_success|update_rejected)$"
)
SERVER_FILTER = "^(server\\.state|listener_manager\\.workers_started)"
XDS_SOCKET = "XDS"
SDS_SOCKET = "sds.sock"


def render_bootstrap(golden: Path, directory: Path) -> dict[str, Any]:
    """The golden bootstrap with admin and static listeners on free 127.0.0.1 ports and the
    xds-grpc / sds-grpc pipes under ``directory``."""
    boot: dict[str, Any] = json.loads(golden.read_text())
    taken: set[int] = set()

    def port() -> int:
        value = free_port()
        while value in taken:
            value = free_port()
        taken.add(value)
        return value

    admin = boot["admin"]["address"]["socket_address"]
    old_admin = int(admin["port_value"])
    admin.update(address=LOCALHOST, port_value=port())
    for listener in boot["static_resources"].get("listeners", []):
        listener["address"]["socket_address"].update(address=LOCALHOST, port_value=port())
    pipes = {"xds-grpc": directory / XDS_SOCKET, "sds-grpc": directory / SDS_SOCKET}
    for cluster in boot["static_resources"].get("clusters", []):
        for group in cluster.get("load_assignment", {}).get("endpoints", []):
            for lb in group["lb_endpoints"]:
                address = lb["endpoint"]["address"]
                sock = address.get("socket_address", {})
                if cluster["name"] in pipes:
                    lb["endpoint"]["address"] = {"pipe": {"path": str(pipes[cluster["name"]])}}
                elif sock.get("address") == LOCALHOST and sock.get("port_value") == old_admin:
                    # prometheus_stats: admin's port, as pilot-agent renders it.
                    sock["port_value"] = admin["port_value"]
    return boot


class SdsStub:
    """A gRPC server on a Unix socket serving SecretDiscoveryService (SotW): each request
    naming secrets not sent yet on its stream gets them; the stream is then held open.
    ``ROOTCA`` and ``file-root:`` names are CA bundles, others a certificate and its key."""

    SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.streams = 0
        self._server: grpc.Server | None = None
        self._ca_dir = tempfile.mkdtemp(prefix="sds-stub-ca")
        self._ca = MeshCA(Path(self._ca_dir))
        self._cert = self._ca.issue("default", "default")

    def _secret(self, name: str) -> Any:
        if name == "ROOTCA" or name.startswith("file-root:"):
            return root_secret(name, self._ca.root_pem)
        return workload_secret(name, self._cert)

    def _hold(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.streams += 1
        sent: set[str] = set()
        for raw in requests:
            request = discovery_pb2.DiscoveryRequest.FromString(raw)
            names = [n for n in request.resource_names if n not in sent]
            if not names:
                continue
            sent.update(names)
            response = discovery_pb2.DiscoveryResponse(
                version_info="1", type_url=request.type_url, nonce=str(len(sent))
            )
            for name in sorted(sent):
                response.resources.add().Pack(self._secret(name))
            yield response.SerializeToString()

    def start(self) -> SdsStub:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            name: grpc.stream_stream_rpc_method_handler(self._hold)
            for name in ("StreamSecrets", "DeltaSecrets")
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self.SERVICE, handlers),)
        )
        server.add_insecure_port(f"unix:{self.path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
        shutil.rmtree(self._ca_dir, ignore_errors=True)

    def __enter__(self) -> SdsStub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PilotAgent:
    """Renders ``golden`` into a short temporary directory and runs the proxy like
    pilot-agent. The xDS and SDS peers are the caller's (see :meth:`xds_path`,
    :meth:`sds_path`); start them before :meth:`start`."""

    def __init__(
        self,
        golden: Path,
        *,
        binary: Path = PILOTFISH_BIN,
        drain_time_s: int = 45,
        concurrency: int = 2,
        log_level: str = "warning",
    ) -> None:
        self.golden = golden
        self.binary = binary
        self.drain_time_s = drain_time_s
        self.concurrency = concurrency
        self.log_level = log_level
        self.dir = Path(tempfile.mkdtemp(prefix="pa-"))
        self.bootstrap = render_bootstrap(golden, self.dir)
        self.config_path = self.dir / "envoy-rev.json"
        self.log_path = self.dir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def xds_path(self) -> Path:
        return self.dir / XDS_SOCKET

    @property
    def sds_path(self) -> Path:
        return self.dir / SDS_SOCKET

    @property
    def admin_port(self) -> int:
        return int(self.bootstrap["admin"]["address"]["socket_address"]["port_value"])

    def static_port(self, name: str) -> int:
        for listener in self.bootstrap["static_resources"]["listeners"]:
            if listener["name"] == name:
                return int(listener["address"]["socket_address"]["port_value"])
        raise KeyError(name)

    def args(self) -> list[str]:
        """pilot-agent's command line (pkg/envoy/proxy.go ``args`` + the agent's extras)."""
        return [
            "-c",
            str(self.config_path),
            "--drain-time-s",
            str(self.drain_time_s),
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "-l",
            self.log_level,
            "--component-log-level",
            "misc:error",
            "--concurrency",
            str(self.concurrency),
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PilotAgent:
        self.config_path.write_text(json.dumps(self.bootstrap, indent=2))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), *self.args()],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> int | None:
        """SIGKILL the PID this agent started (what pilot-agent does after the drain)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return proc.returncode

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PilotAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- admin -------------------------------------------------------------------------------

    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, str]:
        """One admin request; ``path`` is sent as is (no escaping, like Go's client with
        pilot-agent's URLs)."""
        conn = http.client.HTTPConnection(LOCALHOST, self.admin_port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def stats(self, regex: str) -> dict[str, int]:
        status, text = self.admin(f"/stats?usedonly&filter={regex}")
        if status != 200:
            raise RuntimeError(f"/stats answered {status}: {text}")
        values = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep:
                values[name.strip()] = int(value.strip())
        return values

    def readiness(self) -> tuple[bool, str]:
        """pilot-agent's readiness check: (ready, why not)."""
        try:
            update = self.stats(LDS_CDS_FILTER)
            server = self.stats(SERVER_FILTER)
        except (OSError, http.client.HTTPException, RuntimeError, ValueError) as err:
            return False, f"admin: {err}"
        if update.get("cluster_manager.cds.update_success", 0) <= 0:
            return False, f"CDS not updated: {update}"
        if update.get("listener_manager.lds.update_success", 0) <= 0:
            return False, f"LDS not updated: {update}"
        if "server.state" not in server or "listener_manager.workers_started" not in server:
            return False, f"server stats missing: {server}"
        if server["server.state"] != 0:
            return False, f"server.state {server['server.state']}"
        if server["listener_manager.workers_started"] != 1:
            return False, "workers not started"
        return True, ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        why = "not polled"
        while time.monotonic() < deadline:
            if not self.running():
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"proxy exited (code {code}): {self.log()[-3000:]}")
            ready, why = self.readiness()
            if ready:
                return
            time.sleep(0.1)
        raise TimeoutError(f"never ready ({why}); log: {self.log()[-3000:]}")

    def drain(self, inbound_only: bool = True) -> tuple[int, str]:
        """pkg/envoy/admin.go DrainListeners."""
        path = (
            "/drain_listeners?inboundonly&graceful" if inbound_only else "/drain_listeners?graceful"
        )
        return self.admin(path, method="POST")

    def quit(self) -> tuple[int, str]:
        return self.admin("/quitquitquit", method="POST")
