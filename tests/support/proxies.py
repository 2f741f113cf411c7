"""Run Envoy or pilotfish as a process for tests, and talk raw HTTP/1.1 to it.

``ProxyProcess(kind, bootstrap, tmp_path)`` writes the bootstrap (a dict, Envoy v3 JSON shape)
to ``tmp_path``, starts ``envoy`` or ``pilotfish`` with the same Envoy command line, waits until
the admin interface answers ``/ready`` with ``LIVE`` and learns the port of every listener from
``/listeners?format=json``. Static listeners on port 0 are given a free port each (probed by
binding port 0) before the process starts, unless ``free_ports=False`` keeps the bootstrap
exactly as written; the admin may keep port 0. ``call(path)`` sends one admin request,
``stats(prefix)`` reads counters and gauges. ``stop()`` signals the PID it started (SIGTERM,
then SIGKILL) and nothing else.

``http_exchange(port, steps, ...)`` sends exact bytes on one TCP connection and parses every
response that comes back (content-length, chunked with trailers, close-delimited, HEAD,
1xx interim responses, 101), keeping header names in their original case and order, and tells
whether the server closed the connection.

The bootstrap builders (``socket_address``, ``lb_endpoint``, ``static_cluster``,
``http_listener``, ``bootstrap``) and the small one-response client (``connect``,
``read_response``, ``http_request``, ``get``) are kept for simple tests.

Everything binds or connects to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.headers import HeaderLookup

__all__ = [
    "ENVOY_BIN",
    "FLUSH_ACCESS_LOGS",
    "HCM_TYPE",
    "KINDS",
    "LOCALHOST",
    "PILOTFISH_BIN",
    "ROUTER_FILTER",
    "AdminReply",
    "Exchange",
    "ProxyProcess",
    "RawResponse",
    "admin_request",
    "bootstrap",
    "connect",
    "free_port",
    "get",
    "http_exchange",
    "http_listener",
    "http_request",
    "lb_endpoint",
    "parse_responses",
    "read_response",
    "socket_address",
    "static_cluster",
    "with_free_listener_ports",
]

ROOT = Path(__file__).resolve().parents[2]
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN") or ROOT / ".venv-envoy" / "bin" / "envoy")
_PILOTFISH_NEXT_TO_PYTHON = Path(sys.executable).with_name("pilotfish")
# ENVOY_BIN / PILOTFISH_BIN=/path/to/executable run other builds (e.g. pilotfish from a
# pure-Python copy of src/).
PILOTFISH_BIN = Path(
    os.environ.get("PILOTFISH_BIN")
    or (
        _PILOTFISH_NEXT_TO_PYTHON
        if _PILOTFISH_NEXT_TO_PYTHON.exists()
        else ROOT / ".venv" / "bin" / "pilotfish"
    )
)
KINDS = ("pilotfish", "envoy")
LOCALHOST = "127.0.0.1"
# Extra command-line flags: file access logs flushed every 50 ms (the default is seconds).
FLUSH_ACCESS_LOGS = ("--file-flush-interval-msec", "50")


def free_port() -> int:
    """A port nothing listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


# --- processes -----------------------------------------------------------------------------


def with_free_listener_ports(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``bootstrap`` where every static listener bound to port 0 gets a free port
    (probed by binding port 0). The admin address is left alone."""
    config = json.loads(json.dumps(bootstrap))
    taken: set[int] = set()
    for listener in config.get("static_resources", {}).get("listeners", []):
        sock = listener.get("address", {}).get("socket_address")
        if sock is None or int(sock.get("port_value", 0)) != 0:
            continue
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        sock["port_value"] = port
    return config


class ProxyProcess:
    """One Envoy or pilotfish process serving ``bootstrap``; a context manager.

    Files (bootstrap, log, admin address) go to ``tmp_path/<kind>/``. ``port(name)`` is the
    port a listener is bound to, ``admin_url`` the admin interface, ``stop()`` ends the
    process by PID.
    """

    def __init__(
        self,
        kind: str,
        bootstrap: dict[str, Any],
        tmp_path: Path,
        *,
        args: Sequence[str] = (),
        wait_live: bool = True,
        log_level: str = "warning",
        drain_time_s: int = 1,
        startup_timeout: float = 30.0,
        free_ports: bool = True,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown proxy kind {kind!r}")
        self.kind = kind
        # Static listeners on port 0 get a probed free port each (two listeners on port 0 are
        # a bootstrap some proxies refuse); free_ports=False keeps the bootstrap as given (port
        # 0 stays port 0, and Envoy then names listener stats ``listener.127.0.0.1_0.*``).
        self.config = with_free_listener_ports(bootstrap) if free_ports else bootstrap
        self.workdir = Path(tmp_path) / kind
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "bootstrap.json"
        self.log_path = self.workdir / "stderr.log"
        self.admin_address_path = self.workdir / "admin_address"
        self.args = tuple(args)
        self.wait_live = wait_live
        self.log_level = log_level
        self.drain_time_s = drain_time_s
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.ports: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def binary(self) -> Path:
        return ENVOY_BIN if self.kind == "envoy" else PILOTFISH_BIN

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def command(self) -> list[str]:
        """The same Envoy command line for both kinds (pilotfish takes Envoy's flags)."""
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
            *self.args,
        ]

    def launch(self) -> subprocess.Popen[bytes]:
        """Write the bootstrap and start the process, without waiting for anything."""
        if self.proc is not None:
            raise RuntimeError("already started")
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.kind} binary not found: {self.binary}")
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.admin_address_path.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        return self.proc

    def start(self) -> ProxyProcess:
        """Launch; wait for the admin address and (``wait_live``) for ``/ready`` LIVE, then
        learn the listener ports."""
        self.launch()
        try:
            self.wait_until(self._admin_written, "no admin address written")
            text = self.admin_address_path.read_text().strip()
            self.admin_port = int(text.rsplit(":", 1)[1])
            if self.wait_live:
                self.wait_until(self._live, "never became LIVE")
                self.ports = self.listener_ports()
        except BaseException:
            self.stop()
            raise
        return self

    def _admin_written(self) -> bool:
        return (
            self.admin_address_path.exists() and self.admin_address_path.read_text().strip() != ""
        )

    def _live(self) -> bool:
        reply = self.call("/ready", timeout=2.0)
        return reply.status == 200 and reply.body.strip() == b"LIVE"

    def wait_until(
        self, cond: Callable[[], bool], message: str, timeout: float | None = None
    ) -> None:
        """Poll ``cond`` while the process runs; raises if it exits or the time is up."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.kind} exited (code {code}): {self.log()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if cond():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"{self.kind}: {message}; log: {self.log()[-2000:]}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the PID this object started."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds (TimeoutExpired otherwise)."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the PID this object started; SIGKILL it if it has not exited in time.
        Returns the exit code (None if it was never started)."""
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

    def __enter__(self) -> ProxyProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- queries -----------------------------------------------------------------------------

    def port(self, listener_name: str) -> int:
        """The port listener ``listener_name`` is bound to."""
        if listener_name not in self.ports:
            self.ports = self.listener_ports()
        try:
            return self.ports[listener_name]
        except KeyError:
            raise KeyError(
                f"{self.kind} has no listener {listener_name!r} (has {sorted(self.ports)})"
            ) from None

    def listener_ports(self) -> dict[str, int]:
        """name -> port of every socket listener, from ``/listeners?format=json``."""
        reply = self.call("/listeners?format=json")
        if reply.status != 200:
            raise RuntimeError(f"{self.kind}: /listeners?format=json answered {reply.status}")
        ports = {}
        for entry in reply.json().get("listener_statuses", []):  # Envoy: {} without listeners
            sock = entry.get("local_address", {}).get("socket_address")
            if sock:
                ports[entry["name"]] = int(sock["port_value"])
        return ports

    def call(self, path: str, method: str = "GET", timeout: float = 10.0) -> AdminReply:
        """One request to the admin interface; any status is returned, not raised."""
        return admin_request(self.admin_port, path, method, timeout)

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from ``/stats`` as name -> value; with ``prefix``, only those
        whose name starts with it, named without it."""
        path = "/stats"
        if prefix:
            path += "?filter=" + urllib.parse.quote("^" + re.escape(prefix))
        reply = self.call(path)
        assert reply.status == 200, reply.text
        values = {}
        for line in reply.text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                values[name[len(prefix) :]] = int(value)
        return values

    def log(self) -> str:
        """What the process wrote on stdout/stderr so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __repr__(self) -> str:
        pid = None if self.proc is None else self.proc.pid
        return f"ProxyProcess({self.kind!r}, pid={pid}, admin={self.admin_port})"


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
    """One request to the admin interface on 127.0.0.1:``port``."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        return AdminReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


# --- bootstrap builders --------------------------------------------------------------------


def socket_address(port: int, host: str = LOCALHOST) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def lb_endpoint(port: int, weight: int | None = None, host: str = LOCALHOST) -> dict[str, Any]:
    """An LbEndpoint on host:port, with a ``load_balancing_weight`` when ``weight`` is given."""
    endpoint: dict[str, Any] = {"endpoint": {"address": socket_address(port, host)}}
    if weight is not None:
        endpoint["load_balancing_weight"] = weight
    return endpoint


def static_cluster(
    name: str,
    port: int | None = None,
    *,
    endpoints: Sequence[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A STATIC cluster with one endpoint on 127.0.0.1:port, or with the LbEndpoints
    ``endpoints`` in one locality (none at all when empty); ``extra`` sets other fields."""
    if endpoints is None:
        assert port is not None, "a port or endpoints"
        endpoints = [lb_endpoint(port)]
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": list(endpoints)}] if endpoints else [],
        },
    }
    cluster.update(extra)
    return cluster


ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def http_listener(
    name: str,
    routes: list[dict[str, Any]] | None = None,
    *,
    domains: list[str] | None = None,
    hcm: dict[str, Any] | None = None,
    http_filters: list[dict[str, Any]] | None = None,
    route_config: dict[str, Any] | None = None,
    host: str = LOCALHOST,
) -> dict[str, Any]:
    """A listener on ``host``:0 with an HTTP connection manager: either one virtual host
    with ``routes`` or a whole ``route_config``; ``hcm`` adds or overrides manager fields."""
    if route_config is None:
        route_config = {
            "name": "local",
            "virtual_hosts": [{"name": "vh", "domains": domains or ["*"], "routes": routes or []}],
        }
    manager: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "route_config": route_config,
        "http_filters": http_filters or [ROUTER_FILTER],
    }
    manager.update(hcm or {})
    return {
        "name": name,
        "address": socket_address(0, host),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": socket_address(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# --- raw HTTP/1.1 client -------------------------------------------------------------------


@dataclass
class RawResponse(HeaderLookup):
    """One response as it came on the wire."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]  # original case and order; values without OWS
    body: bytes = b""  # de-chunked
    trailers: list[tuple[str, str]] = field(default_factory=list)
    framing: str = "none"  # content-length | chunked | close | none
    complete: bool = True  # False: the connection ended (or the wait ran out) mid-message
    raw: bytes = b""  # the exact bytes of this response

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101

    @property
    def status_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}".rstrip(" ")

    def connection_tokens(self) -> set[str]:
        return {t.strip().lower() for v in self.header_values("connection") for t in v.split(",")}

    def announces_close(self) -> bool:
        tokens = self.connection_tokens()
        if "close" in tokens:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in tokens


@dataclass
class Exchange:
    """Everything that happened on one client connection."""

    responses: list[RawResponse]  # interim (1xx) and final, in order
    raw: bytes  # every byte received (before the probe, if any)
    closed: bool  # the server closed the connection (FIN or RST)
    close_kind: str | None = None  # "FIN" | "RST" | "EPIPE" | None
    close_after: float | None = None  # seconds from the end of the last response to the close
    timed_out: bool = False  # fewer final responses than expected within the timeout
    probe_response: RawResponse | None = None
    error: str | None = None

    @property
    def finals(self) -> list[RawResponse]:
        return [r for r in self.responses if not r.informational]


class _NeedMore(Exception):
    pass


def _parse_head(block: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    lines = block.split(b"\r\n")
    first = lines[0].decode("latin-1")
    parts = first.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {first!r}")
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) == 3 else ""
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.decode("latin-1")
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return version, status, reason, headers


def _parse_chunked(
    data: bytes, pos: int, eof: bool
) -> tuple[bytes, list[tuple[str, str]], int, bool]:
    """De-chunk from ``pos``; returns (body, trailers, end, complete)."""
    body = bytearray()
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            if eof:
                return bytes(body), [], len(data), False
            raise _NeedMore
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), [], len(data), False
        if size == 0:
            pos = eol + 2
            trailers: list[tuple[str, str]] = []
            while True:
                tl_end = data.find(b"\r\n", pos)
                if tl_end < 0:
                    if eof:
                        return bytes(body), trailers, len(data), False
                    raise _NeedMore
                line = data[pos:tl_end]
                pos = tl_end + 2
                if not line:
                    return bytes(body), trailers, pos, True
                name, _, value = line.decode("latin-1").partition(":")
                trailers.append((name, value.strip(" \t")))
        start = eol + 2
        if len(data) < start + size + 2:
            if eof:
                body += data[start : start + size]
                return bytes(body), [], len(data), False
            raise _NeedMore
        body += data[start : start + size]
        pos = start + size + 2


def parse_responses(
    data: bytes, eof: bool, head: Sequence[bool] = ()
) -> tuple[list[RawResponse], int]:
    """Parse every response in ``data``. ``head[i]`` says whether the i-th *final* response
    answers a HEAD request (no body). Returns the responses (the last one may be incomplete
    when ``eof``) and how many bytes were consumed by complete ones."""
    out: list[RawResponse] = []
    pos = 0
    finals = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if eof and data[pos:].strip():
                try:
                    version, status, reason, headers = _parse_head(data[pos:].rstrip(b"\r\n"))
                except ValueError:
                    version, status, reason, headers = "", 0, "", []
                out.append(
                    RawResponse(version, status, reason, headers, complete=False, raw=data[pos:])
                )
            break
        try:
            version, status, reason, headers = _parse_head(data[pos:end])
        except ValueError:
            out.append(RawResponse("", 0, "", [], complete=False, raw=data[pos:]))
            return out, pos
        resp = RawResponse(version, status, reason, headers)
        body_start = end + 4
        is_head = finals < len(head) and head[finals]
        lower = {k.lower(): v for k, v in headers}
        te = lower.get("transfer-encoding", "").lower()
        try:
            if resp.informational or status in (101, 204, 304) or is_head:
                resp.framing = "none"
                stop = body_start
            elif "chunked" in te:
                resp.framing = "chunked"
                resp.body, resp.trailers, stop, resp.complete = _parse_chunked(
                    data, body_start, eof
                )
            elif "content-length" in lower and lower["content-length"].strip().isdigit():
                resp.framing = "content-length"
                n = int(lower["content-length"].strip())
                if len(data) < body_start + n:
                    if not eof:
                        raise _NeedMore
                    resp.complete = False
                    stop = len(data)
                else:
                    stop = body_start + n
                resp.body = data[body_start:stop]
            else:
                resp.framing = "close"
                if not eof:
                    raise _NeedMore
                stop = len(data)
                resp.body = data[body_start:stop]
        except _NeedMore:
            break
        resp.raw = data[pos:stop]
        out.append(resp)
        if not resp.complete:
            break
        pos = stop
        if not resp.informational:
            finals += 1
        if status == 101:
            break  # the rest is a tunnel
    return out, pos


def _count_complete_finals(responses: list[RawResponse]) -> int:
    return sum(1 for r in responses if r.complete and not r.informational)


class _Conn:
    """A client socket with the bookkeeping of http_exchange."""

    def __init__(self, port: int, host: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data = bytearray()
        self.eof = False
        self.close_kind: str | None = None
        self.eof_at: float | None = None

    def recv_some(self, deadline: float) -> bool:
        """Wait for bytes until ``deadline``; False when nothing more can come in time."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            self._ended("RST")
            return False
        except OSError:
            self._ended("RST")
            return False
        if not chunk:
            self._ended("FIN")
            return False
        self.data += chunk
        return True

    def _ended(self, kind: str) -> None:
        self.eof = True
        self.close_kind = kind
        self.eof_at = time.monotonic()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except BrokenPipeError:
            self._ended("EPIPE")
            return False
        except OSError:
            self._ended("RST")
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


Step = bytes | float  # bytes to send, or seconds to wait (reading meanwhile)


def http_exchange(
    port: int,
    steps: bytes | Sequence[Step],
    *,
    expect: int = 1,
    head: bool | Sequence[bool] = False,
    timeout: float = 5.0,
    close_wait: float = 3.0,
    probe: bytes | None = None,
    linger: float = 0.0,
    host: str = LOCALHOST,
    on_responses: Callable[[], None] | None = None,
) -> Exchange:
    """Send ``steps`` on a new connection and read ``expect`` final responses.

    Then decide whether the server closed the connection: at once if it already did; if the
    last response announced a close (``connection: close``, HTTP/1.0), by waiting up to
    ``close_wait`` seconds for it; otherwise by sending ``probe`` (a complete request) and
    seeing whether it is answered (open) or the connection ends (closed); without a probe, by
    waiting ``linger`` seconds. ``on_responses`` is called once the responses are in (or the
    wait for them is over), before that close detection.
    """
    if isinstance(steps, bytes):
        steps = [steps]
    head_flags: list[bool] = [head] * max(expect, 1) if isinstance(head, bool) else list(head)
    conn = _Conn(port, host)
    error: str | None = None
    try:
        for step in steps:
            if isinstance(step, bytes):
                if not conn.send(step):
                    error = "send failed: the server closed the connection"
                    break
            else:
                end = time.monotonic() + float(step)
                while conn.recv_some(end):
                    pass
                if conn.eof:
                    break
        deadline = time.monotonic() + timeout
        while True:
            responses, _ = parse_responses(bytes(conn.data), conn.eof, head_flags)
            if _count_complete_finals(responses) >= expect or conn.eof:
                break
            if not conn.recv_some(deadline):
                if not conn.eof:
                    break
        responses, consumed = parse_responses(bytes(conn.data), conn.eof, head_flags)
        timed_out = _count_complete_finals(responses) < expect and not conn.eof
        done_at = time.monotonic()
        if on_responses is not None:
            on_responses()
        raw = bytes(conn.data)
        probe_response: RawResponse | None = None
        finals = [r for r in responses if not r.informational]
        if not conn.eof and not timed_out:
            if finals and finals[-1].announces_close():
                end = time.monotonic() + close_wait
                while conn.recv_some(end):
                    pass
            elif probe is not None:
                probe_response = _probe(conn, probe, consumed, timeout)
            elif linger > 0:
                end = time.monotonic() + linger
                while conn.recv_some(end):
                    pass
        if probe_response is None and len(conn.data) > len(raw):
            # bytes after the expected responses (not a probe answer): show them
            raw = bytes(conn.data)
            responses, _ = parse_responses(raw, conn.eof, head_flags)
        close_after = None
        if conn.eof_at is not None:
            close_after = max(0.0, conn.eof_at - done_at)
        return Exchange(
            responses=responses,
            raw=raw,
            closed=conn.eof,
            close_kind=conn.close_kind,
            close_after=close_after,
            timed_out=timed_out,
            probe_response=probe_response,
            error=error,
        )
    finally:
        conn.close()


def _probe(conn: _Conn, probe: bytes, consumed: int, timeout: float) -> RawResponse | None:
    if not conn.send(probe):
        return None
    deadline = time.monotonic() + timeout
    while True:
        tail = bytes(conn.data[consumed:])
        found, _ = parse_responses(tail, conn.eof)
        finals = [r for r in found if not r.informational and r.complete]
        if finals:
            return finals[0]
        if not conn.recv_some(deadline):
            return None


# --- one request, one response (for simple tests) ------------------------------------------


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(
    sock: socket.socket, *, head_only: bool = False
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Read one final response from ``sock``: (status, headers with lower-case names, body).
    Interim 1xx responses are skipped."""
    data = b""
    eof = False
    while True:
        responses, _ = parse_responses(data, eof, [head_only])
        finals = [r for r in responses if not r.informational]
        if finals and (finals[0].complete or eof):
            if not finals[0].complete:
                raise ConnectionError(f"closed inside a response: {data!r}")
            r = finals[0]
            return r.status, [(k.lower(), v) for k, v in r.headers], r.body
        if eof:
            raise ConnectionError(f"closed before a full response: {data!r}")
        chunk = sock.recv(65536)
        if chunk:
            data += chunk
        else:
            eof = True


def http_request(
    port: int, raw: bytes, *, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a fresh connection and read one response; headers as a dict."""
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        status, headers, body = read_response(sock, head_only=raw.startswith(b"HEAD "))
        return status, dict(headers), body


def get(
    port: int, path: str = "/", host: str = "example.com", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    raw = f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode()
    return http_request(port, raw)
