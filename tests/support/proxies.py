"""Run pilotfish or real Envoy as a process from a bootstrap dict, for integration tests.

Both proxies get the same command line (Envoy's), write their admin address to a file and are
stopped by PID. Listener ports are read back from ``/listeners?format=json`` so that a
bootstrap can bind port 0.

    with Proxy("pilotfish", bootstrap, tmp_path) as proxy:
        port = proxy.listener_port("http")
        status, headers, body = http_request(port, b"GET / HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n")
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PILOTFISH = Path(sys.executable).with_name("pilotfish")
ENVOY = ROOT / ".venv-envoy" / "bin" / "envoy"
KINDS = ("pilotfish", "envoy")


def socket_address(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def static_cluster(name: str, port: int, **extra: Any) -> dict[str, Any]:
    """A STATIC cluster with one endpoint on 127.0.0.1:port."""
    endpoint = {"endpoint": {"address": socket_address(port)}}
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }
    cluster.update(extra)
    return cluster


def http_listener(
    name: str,
    routes: list[dict[str, Any]],
    *,
    domains: list[str] | None = None,
    hcm: dict[str, Any] | None = None,
    http_filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A listener on 127.0.0.1:0 with an HTTP connection manager and one virtual host."""
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "vh", "domains": domains or ["*"], "routes": routes}],
        },
        "http_filters": http_filters
        or [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    manager.update(hcm or {})
    return {
        "name": name,
        "address": socket_address(0),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": manager}]}
        ],
    }


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": socket_address(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


class Proxy:
    """pilotfish or Envoy running ``bootstrap``; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self,
        kind: str,
        config: dict[str, Any],
        workdir: Path,
        *,
        args: tuple[str, ...] = (),
        wait_live: bool = True,
    ) -> None:
        assert kind in KINDS, kind
        self.kind = kind
        self.config = config
        self.workdir = workdir / kind
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.wait_live = wait_live
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.log_path = self.workdir / "stderr.log"

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Proxy:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self) -> list[str]:
        config_path = self.workdir / "bootstrap.json"
        config_path.write_text(json.dumps(self.config))
        binary = str(PILOTFISH if self.kind == "pilotfish" else ENVOY)
        cmd = [binary, "-c", str(config_path), "--concurrency", "1",
               "--admin-address-path", str(self.workdir / "admin_address"), "-l", "warning"]
        if self.kind == "envoy":
            cmd += ["--disable-hot-restart", "--base-id", str(random.randint(10_000, 10_000_000))]
        return cmd + list(self.args)

    def start(self) -> None:
        address_file = self.workdir / "admin_address"
        address_file.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=log)

        def admin_written() -> bool:
            return address_file.exists() and address_file.read_text().strip() != ""

        self.wait_until(admin_written, "no admin address written")
        self.admin_port = int(address_file.read_text().strip().rsplit(":", 1)[1])
        if self.wait_live:
            self.wait_until(lambda: self.admin("/ready")[1].strip() == "LIVE", "never LIVE")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def wait_until(self, cond: Callable[[], bool], message: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: {self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                if cond():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.kind}: {message}; log: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- admin ---------------------------------------------------------------------------

    def admin(self, path: str, method: str = "GET", **params: str) -> tuple[int, str]:
        """(status, body) of an admin request; HTTP errors are returned, not raised."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        url = f"http://127.0.0.1:{self.admin_port}{path}{query}"
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def listener_ports(self) -> dict[str, int]:
        statuses = json.loads(self.admin("/listeners", format="json")[1])["listener_statuses"]
        return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}

    def listener_port(self, name: str) -> int:
        return self.listener_ports()[name]

    def stats(self) -> dict[str, int]:
        """Counters and gauges from ``/stats`` as name → value."""
        values = {}
        for line in self.admin("/stats")[1].splitlines():
            name, _, value = line.partition(": ")
            if value.lstrip("-").isdigit():
                values[name] = int(value)
        return values


# -- a raw HTTP/1.1 client: tests need to see and send exact bytes ------------------------


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, *, head_only: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
    """Read one response (content-length, chunked or until close) from ``sock``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full response head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
    fields = dict(headers)
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, headers, rest
    if "content-length" in fields:
        size = int(fields["content-length"])
        while len(rest) < size:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed inside a body")
            rest += data
        return status, headers, rest[:size]
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return status, headers, _read_chunked(sock, rest)
    while data := sock.recv(65536):
        rest += data
    return status, headers, rest


def _read_chunked(sock: socket.socket, rest: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in rest:
            rest += sock.recv(65536)
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while not (rest.startswith(b"\r\n") or b"\r\n\r\n" in rest):
                rest += sock.recv(65536)
            return body
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        body += rest[:size]
        rest = rest[size + 2:]


def http_request(
    port: int, raw: bytes, *, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a fresh connection and read one response; headers as a dict."""
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        status, headers, body = read_response(sock, head_only=raw.startswith(b"HEAD "))
        return status, dict(headers), body


def get(port: int, path: str = "/", host: str = "example.com", **headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    raw = f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode()
    return http_request(port, raw)
