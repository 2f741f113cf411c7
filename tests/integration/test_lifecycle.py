"""Process lifecycle, held to real Envoy 1.40 where the behaviour is the same: signals,
``/quitquitquit``, bad bootstraps, ``--admin-address-path``, access-log reopening.

Every test starts its own process (stopped by its PID). Tests parametrized over ``kind`` run on
Envoy too, which shows the expectation is Envoy's behaviour; where pilotfish differs, its run is
a strict xfail. docs/compatibility.md makes one deliberate difference: on SIGTERM/SIGINT Envoy
exits at once, pilotfish drains for up to ``--drain-time-s`` (``immediate``: stops accepting
and lets in-flight requests finish; ``gradual``: keeps accepting while a growing share of
responses close their connections) and exits (a second signal exits at once). Those tests run on pilotfish
only, and ``test_envoy_exits_at_once_on_signal`` pins Envoy's side of that difference.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.admin_helpers import hcm_listener, refuses_connections
from tests.support.echo_backend import EchoBackend
from tests.support.pairs import kinds
from tests.support.proxies import (
    ENVOY_BIN,
    FLUSH_ACCESS_LOGS,
    ProxyProcess,
    RawResponse,
    admin_request,
    http_exchange,
    static_cluster,
)
from tests.support.waiting import wait_until

IMMEDIATE = ["--drain-strategy", "immediate"]  # SIGTERM stops accepting at once
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.fixture(scope="module")
def backend() -> Iterator[EchoBackend]:
    with EchoBackend("origin") as b:
        yield b


def bootstrap(
    backend_port: int,
    *,
    access_log_path: Path | None = None,
    listeners: list[dict[str, Any]] | None = None,
    route_to: str = "backend",
) -> dict[str, Any]:
    access_log = None
    if access_log_path is not None:
        access_log = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log_path),
                    "log_format": {
                        "text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE%\n"}
                    },
                },
            }
        ]
    route = [{"match": {"prefix": "/"}, "route": {"cluster": route_to, "timeout": "30s"}}]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners
            if listeners is not None
            else [hcm_listener("ingress", "ingress_http", route, access_log=access_log)],
            "clusters": [static_cluster("backend", backend_port)],
        },
    }


def response(port: int, path: str, extra: str = "", timeout: float = 15.0) -> RawResponse | None:
    """The response to one GET on a new connection; None if the connection ended without one."""
    ex = http_exchange(
        port,
        f"GET {path} HTTP/1.1\r\nhost: svc\r\n{extra}\r\n".encode(),
        timeout=timeout,
        close_wait=0.2,
    )
    finals = [r for r in ex.finals if r.complete]
    return finals[0] if finals else None


class InFlight:
    """A slow request (the backend waits ``delay_ms`` before answering) sent from a thread."""

    def __init__(self, backend: EchoBackend, port: int, path: str, delay_ms: int) -> None:
        self.backend = backend
        self.path = path
        self.result: RawResponse | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(port, f"x-echo-delay-ms: {delay_ms}\r\n"), daemon=True
        )
        self._thread.start()

    def _run(self, port: int, extra: str) -> None:
        try:
            self.result = response(port, self.path, extra, timeout=30)
        except BaseException as e:  # reported by wait()
            self.error = e

    def reached_backend(self, timeout: float = 10.0) -> bool:
        return wait_until(
            lambda: any(r.target == self.path for r in self.backend.requests), timeout=timeout
        )

    def wait(self, timeout: float = 30.0) -> RawResponse | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the in-flight request never ended"
        if self.error is not None:
            raise self.error
        return self.result


def exit_code_within(proxy: ProxyProcess, timeout: float) -> int:
    try:
        return proxy.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proxy.kind} still running {timeout}s later:\n{proxy.log()[-2000:]}")


# --- signals -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
@kinds()
def test_signal_exits_zero(backend: EchoBackend, tmp_path: Path, kind: str, signum: int) -> None:
    with ProxyProcess(kind, bootstrap(backend.port), tmp_path, free_ports=False) as proxy:
        port = proxy.port("ingress")
        assert (r := response(port, "/before-signal")) is not None and r.status == 200
        proxy.signal(signum)
        assert exit_code_within(proxy, 10) == 0
        assert refuses_connections(port)
        assert refuses_connections(proxy.admin_port)


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_drains_in_flight_request(
    backend: EchoBackend, tmp_path: Path, signum: int, request: pytest.FixtureRequest
) -> None:
    """pilotfish (docs/compatibility.md), ``--drain-strategy immediate``: after the signal, new
    connections are refused, the request in flight is answered, then the process exits 0
    without waiting out the drain time. (The gradual drain is in test_drain.py.)"""
    drain_time = 10
    with ProxyProcess(
        "pilotfish",
        bootstrap(backend.port),
        tmp_path,
        drain_time_s=drain_time,
        free_ports=False,
        args=IMMEDIATE,
    ) as proxy:
        port = proxy.port("ingress")
        slow = InFlight(backend, port, f"/slow/{request.node.name}", delay_ms=1000)
        assert slow.reached_backend()
        signalled = time.monotonic()
        proxy.signal(signum)
        assert wait_until(lambda: refuses_connections(port), timeout=3), "still accepting"
        answer = slow.wait()
        assert answer is not None, "the in-flight request got no response"
        assert answer.status == 200
        assert json.loads(answer.body)["target"] == slow.path
        assert exit_code_within(proxy, drain_time) == 0
        # it exited once the request was done, well before the 10 s drain time ran out
        assert time.monotonic() - signalled < drain_time - 3


def test_drain_time_bounds_the_wait(backend: EchoBackend, tmp_path: Path) -> None:
    """pilotfish: a request slower than ``--drain-time-s`` does not hold the exit."""
    with ProxyProcess(
        "pilotfish", bootstrap(backend.port), tmp_path, drain_time_s=1, free_ports=False
    ) as proxy:
        slow = InFlight(backend, proxy.port("ingress"), "/slower-than-drain", delay_ms=8000)
        assert slow.reached_backend()
        signalled = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert exit_code_within(proxy, 6) == 0
        waited = time.monotonic() - signalled
        assert waited >= 0.9, f"exited after {waited:.2f}s, before the 1 s drain time"
        answer = slow.wait()
        assert answer is None or answer.status != 200, "answered although the backend was slower"


def test_second_signal_exits_at_once(backend: EchoBackend, tmp_path: Path) -> None:
    """pilotfish: a second signal during the drain ends the process without waiting."""
    with ProxyProcess(
        "pilotfish",
        bootstrap(backend.port),
        tmp_path,
        drain_time_s=20,
        free_ports=False,
        args=IMMEDIATE,
    ) as proxy:
        port = proxy.port("ingress")
        slow = InFlight(backend, port, "/held-by-second-signal", delay_ms=15000)
        assert slow.reached_backend()
        proxy.signal(signal.SIGTERM)
        assert wait_until(lambda: refuses_connections(port), timeout=3)  # draining now
        time.sleep(0.2)
        assert proxy.proc is not None and proxy.proc.poll() is None  # still draining
        proxy.signal(signal.SIGINT)
        assert exit_code_within(proxy, 5) == 0
        slow.wait(timeout=10)


@pytest.mark.envoy
@pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy")
def test_envoy_exits_at_once_on_signal(backend: EchoBackend, tmp_path: Path) -> None:
    """Envoy's side of the documented difference: SIGTERM ends it at once, the request in
    flight gets no response. (pilotfish drains instead; see the tests above.)"""
    with ProxyProcess(
        "envoy", bootstrap(backend.port), tmp_path, drain_time_s=20, free_ports=False
    ) as proxy:
        slow = InFlight(backend, proxy.port("ingress"), "/cut-by-envoy", delay_ms=5000)
        assert slow.reached_backend()
        proxy.signal(signal.SIGTERM)
        assert exit_code_within(proxy, 3) == 0
        assert slow.wait() is None


@kinds()
def test_sighup_is_ignored(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    with ProxyProcess(kind, bootstrap(backend.port), tmp_path, free_ports=False) as proxy:
        proxy.signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proxy.proc is not None and proxy.proc.poll() is None
        ready = proxy.call("/ready")
        assert (ready.status, ready.body) == (200, b"LIVE\n")
        assert (r := response(proxy.port("ingress"), "/after-hup")) is not None and r.status == 200


# --- /quitquitquit -------------------------------------------------------------------------


@kinds()
def test_quitquitquit(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    with ProxyProcess(kind, bootstrap(backend.port), tmp_path, free_ports=False) as proxy:
        port = proxy.port("ingress")
        reply = proxy.call("/quitquitquit", "POST")
        assert (reply.status, reply.body) == (200, b"OK\n")
        assert exit_code_within(proxy, 10) == 0
        assert refuses_connections(port)
        assert refuses_connections(proxy.admin_port)


# --- startup -------------------------------------------------------------------------------


def pipe_bootstrap(tmp_path: Path, cluster: dict[str, Any], route_to: str) -> dict[str, Any]:
    """Admin and listener on Unix sockets, so that binding leaves a file behind."""
    listener = hcm_listener(
        "ingress", "ingress_http", [{"match": {"prefix": "/"}, "route": {"cluster": route_to}}]
    )
    listener["address"] = {"pipe": {"path": str(tmp_path / "listener.sock")}}
    return {
        "admin": {"address": {"pipe": {"path": str(tmp_path / "admin.sock")}}},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def run_to_exit(
    kind: str, config: dict[str, Any], tmp_path: Path, timeout: float = 20.0
) -> tuple[int | None, str, ProxyProcess]:
    """Start ``kind`` on ``config`` without waiting for it; returns (exit code, output, proxy)
    once it has exited, or (None, output, proxy) as soon as it answers /ready LIVE (it took
    the config) — the process is stopped by its PID either way."""
    proxy = ProxyProcess(kind, config, tmp_path, free_ports=False)
    proc = proxy.launch()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                return code, proxy.log(), proxy
            if _answers_live(proxy):
                return None, proxy.log(), proxy
            time.sleep(0.05)
        pytest.fail(f"{kind} neither exited nor became LIVE:\n{proxy.log()[-2000:]}")
    finally:
        proxy.stop()


def _answers_live(proxy: ProxyProcess) -> bool:
    """The admin interface named in the admin address file answers /ready 200."""
    try:
        text = proxy.admin_address_path.read_text().strip()
    except OSError:
        return False
    try:
        if text.startswith("/"):  # a Unix socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(text)
                sock.sendall(b"GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.1 200 ")
        if ":" in text:
            port = int(text.rsplit(":", 1)[1])
            return admin_request(port, "/ready", timeout=2).status == 200
    except (OSError, ValueError):
        return False
    return False


BAD_BOOTSTRAPS: dict[str, tuple[dict[str, Any], str]] = {
    "bad-duration": ({"connect_timeout": "1x"}, "connect_timeout"),
    "unknown-field": ({"no_such_field": True}, "no_such_field"),
    "wrong-type": (
        {"per_connection_buffer_limit_bytes": "lots"},
        "per_connection_buffer_limit_bytes",
    ),
}


def _bad_cases() -> list[Any]:
    cases = []
    for kind in ("envoy", "pilotfish"):
        for name in BAD_BOOTSTRAPS:
            marks: list[pytest.MarkDecorator] = []
            if kind == "envoy":
                marks.append(pytest.mark.envoy)
                marks.append(
                    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy")
                )
            cases.append(pytest.param(kind, name, marks=marks, id=f"{kind}-{name}"))
    return cases


@pytest.mark.parametrize(("kind", "case"), _bad_cases())
def test_bad_bootstrap_exits_before_binding(
    backend: EchoBackend, tmp_path: Path, kind: str, case: str
) -> None:
    """A bootstrap that does not parse: exit 1, the error names the field, and neither the
    admin socket nor the listener socket was ever bound (no socket file, no admin address)."""
    change, field_name = BAD_BOOTSTRAPS[case]
    cluster = {**static_cluster("backend", backend.port), **change}
    code, output, proxy = run_to_exit(kind, pipe_bootstrap(tmp_path, cluster, "backend"), tmp_path)
    assert code == 1, output[-2000:]
    assert field_name in output
    assert not (tmp_path / "admin.sock").exists()
    assert not (tmp_path / "listener.sock").exists()
    assert not proxy.admin_address_path.exists()


@kinds()
def test_route_to_unknown_cluster_is_rejected(
    backend: EchoBackend, tmp_path: Path, kind: str
) -> None:
    code, output, _ = run_to_exit(kind, bootstrap(backend.port, route_to="nope"), tmp_path)
    assert code == 1, "started serving"
    assert "unknown cluster 'nope'" in output


@kinds()
def test_two_listeners_on_port_zero(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    route = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
    listeners = [hcm_listener("a", "a_http", route), hcm_listener("b", "b_http", route)]
    with ProxyProcess(
        kind, bootstrap(backend.port, listeners=listeners), tmp_path, free_ports=False
    ) as proxy:
        a, b = proxy.port("a"), proxy.port("b")
        assert a != b
        for port in (a, b):
            assert (r := response(port, "/two-listeners")) is not None and r.status == 200


@kinds()
def test_admin_address_path(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    with ProxyProcess(kind, bootstrap(backend.port), tmp_path, free_ports=False) as proxy:
        text = proxy.admin_address_path.read_text()
        assert text == f"127.0.0.1:{proxy.admin_port}"
        reply = admin_request(int(text.rsplit(":", 1)[1]), "/ready")
        assert (reply.status, reply.body) == (200, b"LIVE\n")
        info = proxy.call("/server_info").json()
        assert info["command_line_options"]["admin_address_path"] == str(proxy.admin_address_path)


@kinds()
def test_admin_address_path_for_unix_socket(
    backend: EchoBackend, tmp_path: Path, kind: str
) -> None:
    config = pipe_bootstrap(tmp_path, static_cluster("backend", backend.port), "backend")
    code, _, proxy = run_to_exit(kind, config, tmp_path)  # stops it once LIVE
    assert code is None
    assert proxy.admin_address_path.read_text() == str(tmp_path / "admin.sock")
    # the paths test_bad_bootstrap_exits_before_binding checks are the ones a good start binds
    assert (tmp_path / "admin.sock").exists()
    assert (tmp_path / "listener.sock").exists()


# --- SIGUSR1 -------------------------------------------------------------------------------


@kinds()
def test_sigusr1_reopens_access_logs(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    config = bootstrap(backend.port, access_log_path=log)
    with ProxyProcess(kind, config, tmp_path, args=FLUSH_ACCESS_LOGS, free_ports=False) as proxy:
        port = proxy.port("ingress")

        def contains(path: Path, text: str) -> bool:
            return path.exists() and text in path.read_text()

        assert (r := response(port, "/first")) is not None and r.status == 200
        assert wait_until(lambda: contains(log, "/first 200\n"), timeout=5)
        log.rename(rotated)
        proxy.signal(signal.SIGUSR1)
        assert wait_until(log.exists, timeout=5), "SIGUSR1 did not reopen the log"
        assert (r := response(port, "/second")) is not None and r.status == 200
        assert wait_until(lambda: contains(log, "/second 200\n"), timeout=5)
        assert log.read_text() == "/second 200\n"
        assert rotated.read_text() == "/first 200\n"
