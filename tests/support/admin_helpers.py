"""Helpers for the admin API and lifecycle integration tests (tests/integration/test_admin.py,
tests/integration/test_lifecycle.py).

``Proxy`` runs Envoy or pilotfish with the same Envoy command line (a chosen ``--drain-time-s``,
extra flags) on a bootstrap kept exactly as given, so that listeners on port 0 stay on port 0
(Envoy then names their stats ``listener.127.0.0.1_0.*``);
``admin_request`` sends one request with any method and keeps status, headers and body;
``stats_values`` reads ``/stats`` text into a dict; ``kinds`` parametrizes a test over Envoy
and pilotfish, optionally marking the pilotfish run ``xfail(strict=True)`` where pilotfish
differs from Envoy. Everything binds or connects to 127.0.0.1 (or another loopback address)
only; processes are stopped by the PID they were started with.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from tests.support.proxies import ENVOY_BIN, PILOTFISH_BIN

__all__ = [
    "HCM_TYPE",
    "LOCALHOST",
    "AdminReply",
    "Proxy",
    "admin_request",
    "hcm_listener",
    "kinds",
    "q",
    "refuses_connections",
    "sock_addr",
    "static_cluster",
    "stats_values",
    "wait_until",
]

LOCALHOST = "127.0.0.1"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def kinds(pilotfish_xfail: str | None = None) -> pytest.MarkDecorator:
    """Parametrize ``kind`` over Envoy (the oracle: the expectation must hold for it) and
    pilotfish; with ``pilotfish_xfail``, the pilotfish run is a strict xfail with that reason."""
    envoy = pytest.param(
        "envoy",
        marks=[
            pytest.mark.envoy,
            pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy"),
        ],
    )
    pilotfish_marks = (
        [pytest.mark.xfail(reason=f"pilotfish: {pilotfish_xfail}", strict=True)]
        if pilotfish_xfail
        else []
    )
    return pytest.mark.parametrize(
        "kind", [envoy, pytest.param("pilotfish", marks=pilotfish_marks)]
    )


# --- bootstrap builders --------------------------------------------------------------------


def sock_addr(port: int = 0, host: str = LOCALHOST) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def static_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sock_addr(port)}}]}],
        },
    }


def hcm_listener(
    name: str,
    stat_prefix: str,
    routes: list[dict[str, Any]],
    *,
    host: str = LOCALHOST,
    direction: str | None = None,
    access_log: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A listener on ``host``:0 with an HTTP connection manager and one catch-all vhost."""
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "route_config": {
            "name": f"{name}_route",
            "virtual_hosts": [{"name": f"{name}_vh", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [ROUTER],
    }
    if access_log:
        hcm["access_log"] = access_log
    listener: dict[str, Any] = {
        "name": name,
        "address": sock_addr(0, host),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    if direction:
        listener["traffic_direction"] = direction
    return listener


# --- processes -----------------------------------------------------------------------------


class Proxy:
    """One Envoy or pilotfish process serving ``bootstrap`` exactly as given (port 0 stays
    port 0), with Envoy's command line; a context manager. Files go to ``workdir``."""

    def __init__(
        self,
        kind: str,
        bootstrap: dict[str, Any],
        workdir: Path,
        *,
        drain_time_s: int = 1,
        extra_flags: Sequence[str] = (),
        log_level: str = "warning",
        startup_timeout: float = 30.0,
    ) -> None:
        if kind not in ("envoy", "pilotfish"):
            raise ValueError(f"unknown proxy kind {kind!r}")
        self.kind = kind
        self.bootstrap = bootstrap
        self.workdir = Path(workdir) / kind
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "bootstrap.json"
        self.log_path = self.workdir / "output.log"
        self.admin_address_path = self.workdir / "admin_address"
        self.drain_time_s = drain_time_s
        self.extra_flags = tuple(extra_flags)
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.ports: dict[str, int] = {}

    @property
    def binary(self) -> Path:
        return ENVOY_BIN if self.kind == "envoy" else PILOTFISH_BIN

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--base-id",
            str(random.randint(10_000, 4_000_000)),
            "--drain-time-s",
            str(self.drain_time_s),
            "--admin-address-path",
            str(self.admin_address_path),
            "-l",
            self.log_level,
            *self.extra_flags,
        ]

    def start(self) -> Proxy:
        """Start and wait until ``/ready`` answers LIVE; learn the listener ports."""
        if self.proc is not None:
            raise RuntimeError("already started")
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.kind} binary not found: {self.binary}")
        self.config_path.write_text(json.dumps(self.bootstrap, indent=1))
        self.admin_address_path.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            self._wait(self._admin_written, "wrote no admin address")
            self.admin_port = int(self.admin_address_path.read_text().strip().rsplit(":", 1)[1])
            self._wait(self._live, "never became LIVE")
            self.ports = self.listener_ports()
        except BaseException:
            self.stop()
            raise
        return self

    def _admin_written(self) -> bool:
        return self.admin_address_path.exists() and bool(
            self.admin_address_path.read_text().strip()
        )

    def _live(self) -> bool:
        reply = self.call("/ready")
        return reply.status == 200 and reply.body == b"LIVE\n"

    def _wait(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.kind} exited (code {code}):\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                if cond():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"{self.kind} {what}:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the PID this object started (SIGKILL if it outlives ``timeout``); returns
        the exit code, None if never started."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the PID this object started."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds (TimeoutExpired otherwise)."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def call(self, path: str, method: str = "GET") -> AdminReply:
        """One request to the admin interface."""
        return admin_request(self.admin_port, path, method)

    def listener_ports(self) -> dict[str, int]:
        """name -> bound port of every socket listener, from ``/listeners?format=json``."""
        reply = self.call("/listeners?format=json")
        if reply.status != 200:
            raise RuntimeError(f"{self.kind}: /listeners?format=json answered {reply.status}")
        ports: dict[str, int] = {}
        for entry in reply.json()["listener_statuses"]:
            sock = entry.get("local_address", {}).get("socket_address")
            if sock:
                ports[entry["name"]] = int(sock["port_value"])
        return ports

    def port(self, name: str) -> int:
        return self.ports[name]

    def log(self) -> str:
        """What the process wrote on stdout and stderr so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


# --- admin client --------------------------------------------------------------------------


@dataclass
class AdminReply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def admin_request(port: int, path: str, method: str = "GET", timeout: float = 10.0) -> AdminReply:
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        return AdminReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def q(value: str) -> str:
    """A query-parameter value, percent-encoded (regexes contain ``^``, ``\\``, ``|``...)."""
    return urllib.parse.quote(value, safe="")


def stats_values(port: int, regex: str, *, extra: str = "") -> dict[str, str]:
    """``/stats?filter=regex`` (text format) as name -> value text."""
    reply = admin_request(port, f"/stats?filter={q(regex)}{extra}")
    assert reply.status == 200, reply.text
    out: dict[str, str] = {}
    for line in reply.text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = value
    return out


# --- waiting and sockets -------------------------------------------------------------------


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def refuses_connections(port: int, host: str = LOCALHOST) -> bool:
    """True when a TCP connect to host:port is refused (nothing listens there)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
