"""pilotfish vs Envoy, side by side, on this machine (`make bench`).

Starts an nginx backend (core 0), then real Envoy and pilotfish with the same bootstrap
(core 1), and drives each with wrk (core 0) through four cases: 32 connections and
1 connection, small and 4 KiB responses. Runs of the two proxies are interleaved (order
alternating per run) so background load on the machine hits both alike; medians over
`--runs` are reported. Also measures each proxy's RSS with Istio's golden sidecar
bootstrap. See bench/README.md.

    .venv/bin/python bench/run.py [--quick] [--duration S] [--runs N]

A benchmark, never a test: it prints a table and writes raw numbers to
bench/results/<timestamp>.json. Exit status 1 if wrk saw errors or a proxy failed a check.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PILOTFISH = ROOT / ".venv" / "bin" / "pilotfish"
ENVOY = ROOT / ".venv-envoy" / "bin" / "envoy"
ISTIO_GOLDEN = ROOT / "tests/data/istio/pkg/bootstrap/testdata/default_golden.json"

PROXY_CORE = "1"
LOAD_CORE = "0"  # nginx and wrk share it, as in docs/NOTES.md
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMALL_PATH = "/"
BIG_PATH = "/4k"
BIG_SIZE = 4096
KB_PATH = "/1k"  # 1 KiB responses: the payload of Istio's published sidecar figures
ISTIO_SETTLE_S = 3.0
READY_TIMEOUT_S = 30.0
OTHER_LOAD_WARN = 0.05  # cores; above this, foreign work on the two cores is reported

PROXIES = ("envoy", "pilotfish")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    connections: int
    path: str


CASES = (
    Case("32 conns, small", 32, SMALL_PATH),
    Case("1 conn, small", 1, SMALL_PATH),
    Case("32 conns, 4 KiB", 32, BIG_PATH),
    Case("1 conn, 4 KiB", 1, BIG_PATH),
)


class BenchError(Exception):
    """A setup step failed: the numbers would mean nothing."""


class Terminated(Exception):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every started process is cleaned up."""


# --------------------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if this script dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of `pid` (scanning /proc for parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (tells a PID from a reused one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


class Processes:
    """Every process this script starts; `stop_all` ends them (and their children) by PID."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], *, log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with stdout and stderr going to `log`."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                # Own session: a terminal Ctrl-C reaches only this script, which then
                # stops the children in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads here)
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM the process, wait, then SIGKILL it and whatever children it had."""
        family = [(pid, start_time(pid)) for pid in (proc.pid, *descendants(proc.pid))]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        for pid, started in family:
            if pid == proc.pid:
                if proc.poll() is None:
                    proc.kill()
            elif started is not None and start_time(pid) == started:  # not a reused PID
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants (all threads), in seconds."""
    ticks = 0
    for p in (pid, *descendants(pid)):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def rss_kb(pid: int) -> int | None:
    """VmRSS of `pid` plus its live descendants, in kB (None if it is gone)."""
    total = 0
    found = False
    for p in (pid, *descendants(pid)):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
        if m:
            total += int(m.group(1))
            found = True
    return total if found else None


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------- ports, HTTP

_handed_out: set[int] = set()


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (never the same one twice per run)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise BenchError("no free port found")


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {port} within {READY_TIMEOUT_S:.0f}s")


def admin_ready(port: int) -> str | None:
    """Body of GET /ready (LIVE, PRE_INITIALIZING, ...) or None if admin does not answer."""
    try:
        _, body = http_get(port, "/ready", timeout=1.0)
    except (OSError, http.client.HTTPException):
        return None
    return body.decode(errors="replace").strip()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- nginx


@dataclass(slots=True)
class Backend:
    port: int
    small_body: bytes
    big_body: bytes
    proc: subprocess.Popen[bytes]


def start_nginx(procs: Processes, tmp: Path) -> Backend:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    nonce = "".join(random.choices(string.ascii_lowercase + string.digits, k=12))
    small = f"pilotfish-bench {nonce}\n"
    alphabet = string.ascii_letters + string.digits
    big = (f"4k-{nonce}-" + alphabet * (BIG_SIZE // len(alphabet) + 1))[: BIG_SIZE - 1] + "\n"
    assert len(big) == BIG_SIZE
    d = tmp / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    # A quoted nginx token is limited to 4 KiB: build the body from four 1 KiB variables.
    chunks = [big[i : i + 1024] for i in range(0, BIG_SIZE, 1024)]
    big_sets = " ".join(f'set $bench_c{i} "{c}";' for i, c in enumerate(chunks))
    big_vars = "".join(f"$bench_c{i}" for i in range(len(chunks)))
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
# One process doing the worker's job: it dies with this script (PR_SET_PDEATHSIG) even if
# the script is SIGKILLed, where a master's worker would be orphaned.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {BIG_PATH} {{
            {big_sets}
            return 200 "{big_vars}";
        }}
        location = {KB_PATH} {{
            set $bench_k "{chunks[0]}";
            return 200 "$bench_k";
        }}
        location / {{ return 200 "{small}"; }}
    }}
}}
"""
    )
    log = d / "stderr.log"
    proc = procs.start(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            nginx,
            "-e",
            str(d / "error.log"),
            "-p",
            str(d),
            "-c",
            str(conf),
        ],
        log=log,
    )
    wait_for_port(port, proc, "nginx", log)
    backend = Backend(port, small.encode(), big.encode(), proc)
    for path, want in ((SMALL_PATH, backend.small_body), (BIG_PATH, backend.big_body)):
        status, body = http_get(port, path)
        if status != 200 or body != want:
            raise BenchError(f"nginx answered {status} {body[:80]!r} on {path}")
    return backend


# --------------------------------------------------------------------------- proxies


def bench_bootstrap(admin_port: int, listener_port: int, backend_port: int) -> dict[str, Any]:
    def addr(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "nginx"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": addr(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": addr(listener_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "nginx",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "nginx",
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": addr(backend_port)}}]}
                        ],
                    },
                }
            ],
        },
    }


def istio_bootstrap(admin_port: int) -> dict[str, Any]:
    """Istio's golden sidecar bootstrap with its fixed ports moved to free ones on 127.0.0.1."""
    doc: dict[str, Any] = json.loads(ISTIO_GOLDEN.read_text())
    remap = {15000: admin_port, 15090: free_port(), 15021: free_port(), 15020: free_port()}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            sa = node.get("socket_address")
            if isinstance(sa, dict):
                if sa.get("port_value") in remap:
                    sa["port_value"] = remap[sa["port_value"]]
                if sa.get("address") in ("0.0.0.0", "::"):
                    sa["address"] = "127.0.0.1"
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    if doc["admin"]["address"]["socket_address"]["port_value"] != admin_port:
        raise BenchError("could not rewrite the admin port of the Istio bootstrap")
    return doc


def proxy_argv(name: str, config: Path) -> list[str]:
    if name == "envoy":
        base_id = random.randint(1000, 2**30)
        return [
            str(ENVOY),
            "-c",
            str(config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--base-id",
            str(base_id),
            "-l",
            "warning",
        ]
    return [str(PILOTFISH), "-c", str(config), "--concurrency", "1", "-l", "warning"]


@dataclass(slots=True)
class Proxy:
    name: str
    proc: subprocess.Popen[bytes]
    admin_port: int
    log: Path
    listener_port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


def launch(
    procs: Processes, tmp: Path, name: str, bootstrap: dict[str, Any], tag: str, admin_port: int
) -> Proxy:
    d = tmp / f"{name}-{tag}"
    d.mkdir()
    config = d / "bootstrap.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    log = d / "proxy.log"
    proc = procs.start(["taskset", "-c", PROXY_CORE, *proxy_argv(name, config)], log=log, cwd=d)
    return Proxy(name, proc, admin_port, log)


def wait_live(proxy: Proxy) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    state: str | None = None
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            raise BenchError(
                f"{proxy.name} exited with {proxy.proc.returncode}:\n{tail(proxy.log)}"
            )
        state = admin_ready(proxy.admin_port)
        if state == "LIVE":
            return
        time.sleep(0.05)
    raise BenchError(
        f"{proxy.name} not LIVE after {READY_TIMEOUT_S:.0f}s (/ready: {state!r}):\n"
        f"{tail(proxy.log)}"
    )


def verify_proxied(proxy: Proxy, backend: Backend) -> None:
    """The proxy must hand back nginx's exact bodies (the nonce proves they came from nginx)."""
    for path, want in ((SMALL_PATH, backend.small_body), (BIG_PATH, backend.big_body)):
        try:
            status, body = http_get(proxy.listener_port, path)
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"{proxy.name}: GET {path} failed: {e}\n{tail(proxy.log)}") from e
        if status != 200 or body != want:
            raise BenchError(
                f"{proxy.name}: GET {path} answered {status} {body[:80]!r}, "
                f"expected nginx's body {want[:40]!r}..."
            )


# --------------------------------------------------------------------------- wrk


@dataclass(slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> str:
        parts = [f"{k} {v}" for k, v in self.socket_errors.items() if v]
        if self.non_2xx_3xx:
            parts.insert(0, f"non-2xx/3xx {self.non_2xx_3xx}")
        return ", ".join(parts)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    m_req = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out, re.M)
    m_rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if not (m_req and m_rps and "50" in dist and "99" in dist):
        raise BenchError(f"cannot parse wrk output:\n{out}")
    res = WrkResult(
        requests=int(m_req.group(1)),
        duration_s=_to_ms(m_req.group(2) + m_req.group(3)) / 1e3,
        rps=float(m_rps.group(1)),
        p50_ms=_to_ms(dist["50"]),
        p99_ms=_to_ms(dist["99"]),
    )
    m_non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m_non:
        res.non_2xx_3xx = int(m_non.group(1))
    m_sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m_sock:
        res.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m_sock.groups()), strict=True)
        )
    return res


def run_wrk(procs: Processes, port: int, case: Case, duration: float, tmp: Path) -> WrkResult:
    url = f"http://127.0.0.1:{port}{case.path}"
    argv = [
        "taskset",
        "-c",
        LOAD_CORE,
        "wrk",
        "-t1",
        f"-c{case.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        url,
    ]
    log = tmp / "wrk.out"
    proc = procs.start(argv, log=log)
    try:
        proc.wait(duration + 30)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk hung: {' '.join(argv)}") from e
    finally:
        procs.stop(proc)
    out = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{out}")
    return parse_wrk(out)


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Run:
    wrk: WrkResult
    cpu_s: float
    rss_kb: int | None
    other_load: float  # cores' worth of CPU on cores 0-1 used by processes not ours

    @property
    def cpu_ms_per_1k(self) -> float:
        return self.cpu_s * 1e3 / (self.wrk.requests / 1e3) if self.wrk.requests else float("nan")


def cores_busy_s(cores: Sequence[str]) -> float:
    """Busy time (all but idle and iowait) of the given cores since boot, from /proc/stat."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:] in cores:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, vals[:8])
            total += user + nice + system + irq + softirq + steal
    return total / CLK_TCK


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(
    procs: Processes, proxy: Proxy, case: Case, duration: float, tmp: Path, ours: Sequence[int]
) -> Run:
    """One wrk run through `proxy`; `ours` = PIDs of every long-lived process we started."""
    if proxy.proc.poll() is not None:
        raise BenchError(f"{proxy.name} died ({proxy.proc.returncode}):\n{tail(proxy.log)}")
    cores = (LOAD_CORE, PROXY_CORE)
    t0, busy0, reaped0 = time.monotonic(), cores_busy_s(cores), children_cpu_s()
    ours0 = sum(cpu_seconds(pid) for pid in ours)
    cpu0 = cpu_seconds(proxy.pid)
    wrk = run_wrk(procs, proxy.listener_port, case, duration, tmp)
    cpu1 = cpu_seconds(proxy.pid)
    ours1 = sum(cpu_seconds(pid) for pid in ours)
    t1, busy1, reaped1 = time.monotonic(), cores_busy_s(cores), children_cpu_s()
    if proxy.proc.poll() is not None:
        raise BenchError(f"{proxy.name} died during the run:\n{tail(proxy.log)}")
    # Whatever the two cores did beyond the proxies, nginx and wrk (wrk is reaped by now,
    # so its CPU shows in RUSAGE_CHILDREN): other people's work skewing the numbers.
    other = (busy1 - busy0) - (ours1 - ours0) - (reaped1 - reaped0)
    return Run(wrk, cpu1 - cpu0, rss_kb(proxy.pid), max(0.0, other / (t1 - t0)))


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    rss = [r.rss_kb for r in runs if r.rss_kb is not None]
    return {
        "rps": median([r.wrk.rps for r in runs]),
        "p50_ms": median([r.wrk.p50_ms for r in runs]),
        "p99_ms": median([r.wrk.p99_ms for r in runs]),
        "cpu_ms_per_1k": median([r.cpu_ms_per_1k for r in runs]),
        "rss_kb": median(rss) if rss else None,
        "errors": [r.wrk.errors for r in runs if r.wrk.errors],
        "other_load_max": max((r.other_load for r in runs), default=0.0),
    }


def measure_istio_rss(procs: Processes, tmp: Path, name: str) -> dict[str, Any]:
    admin = free_port()
    proxy = launch(procs, tmp, name, istio_bootstrap(admin), "istio", admin)
    try:
        time.sleep(ISTIO_SETTLE_S)
        alive = proxy.proc.poll() is None
        result: dict[str, Any] = {
            "alive": alive,
            "ready": admin_ready(admin) if alive else None,
            "rss_kb": rss_kb(proxy.pid) if alive else None,
        }
        if not alive:
            result["exit_code"] = proxy.proc.returncode
            result["log_tail"] = tail(proxy.log)
        return result
    finally:
        procs.stop(proxy.proc)


# --------------------------------------------------------------------------- report


def fmt_ms(x: float) -> str:
    return f"{x * 1e3:.0f} µs" if x < 1 else f"{x:.2f} ms"


def fmt_mb(kb: float | None) -> str:
    return "—" if kb is None else f"{kb * 1024 / 1e6:.1f}"


def render_table(
    summary: dict[str, dict[str, dict[str, Any]]], istio: dict[str, dict[str, Any]]
) -> str:
    lines = [
        "| case | Envoy rps | pilotfish rps | pilotfish/Envoy | Envoy p50 / p99 "
        "| pilotfish p50 / p99 | Envoy CPU ms/1k req | pilotfish CPU ms/1k req "
        "| Envoy RSS MB | pilotfish RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        e, p = summary[case.name]["envoy"], summary[case.name]["pilotfish"]
        ratio = p["rps"] / e["rps"] if e["rps"] else float("nan")
        flag = " ⚠" if e["errors"] or p["errors"] else ""
        lines.append(
            f"| {case.name}{flag} | {e['rps']:,.0f} | {p['rps']:,.0f} | {ratio:.2f}x "
            f"| {fmt_ms(e['p50_ms'])} / {fmt_ms(e['p99_ms'])} "
            f"| {fmt_ms(p['p50_ms'])} / {fmt_ms(p['p99_ms'])} "
            f"| {e['cpu_ms_per_1k']:.1f} | {p['cpu_ms_per_1k']:.1f} "
            f"| {fmt_mb(e['rss_kb'])} | {fmt_mb(p['rss_kb'])} |"
        )
    ie, ip = istio["envoy"], istio["pilotfish"]
    lines.append(
        f"| Istio bootstrap, idle {ISTIO_SETTLE_S:.0f} s (/ready: Envoy {ie.get('ready')}, "
        f"pilotfish {ip.get('ready')}) | | | | | | | "
        f"| {fmt_mb(ie.get('rss_kb'))} | {fmt_mb(ip.get('rss_kb'))} |"
    )
    return "\n".join(lines)


def check_targets(
    summary: dict[str, dict[str, dict[str, Any]]], istio: dict[str, dict[str, Any]]
) -> list[tuple[str, bool | None, str]]:
    c32 = summary[CASES[0].name]
    c1 = summary[CASES[1].name]
    out: list[tuple[str, bool | None, str]] = []
    e, p = c32["envoy"]["rps"], c32["pilotfish"]["rps"]
    out.append(("rps ≥ 1.0x Envoy at 32 conns", p >= e, f"{p / e:.2f}x"))
    e, p = c32["envoy"]["cpu_ms_per_1k"], c32["pilotfish"]["cpu_ms_per_1k"]
    out.append(("CPU/request ≤ Envoy at 32 conns", p <= e, f"{p:.1f} vs {e:.1f} ms/1k"))
    e, p = c1["envoy"]["p99_ms"], c1["pilotfish"]["p99_ms"]
    out.append(("p99 ≤ Envoy at 1 conn", p <= e, f"{fmt_ms(p)} vs {fmt_ms(e)}"))
    rss = istio["pilotfish"].get("rss_kb")
    if rss is None:
        out.append(("RSS ≤ 60 MB, Istio bootstrap", None, "not measured"))
    else:
        out.append(("RSS ≤ 60 MB, Istio bootstrap", rss * 1024 <= 60e6, f"{fmt_mb(rss)} MB"))
    return out


def version_of(argv: Sequence[str]) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return r.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# --------------------------------------------------------------------------- main


def preflight() -> None:
    missing = [str(p) for p in (PILOTFISH, ENVOY, ISTIO_GOLDEN) if not p.exists()]
    missing += [
        t
        for t in ("wrk", "nginx", "taskset")
        if not (shutil.which(t) or (t == "nginx" and Path("/usr/sbin/nginx").exists()))
    ]
    if missing:
        raise BenchError("missing: " + ", ".join(missing) + " (try `make install envoy apt`)")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 cores: the proxy on core 1, nginx and wrk on core 0")


def run(args: argparse.Namespace, procs: Processes, tmp: Path) -> int:
    started = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"load average at start: {loadavg()} (other work on the machine skews numbers)", flush=True
    )
    backend = start_nginx(procs, tmp)
    print(f"nginx on 127.0.0.1:{backend.port} (core {LOAD_CORE})", flush=True)

    proxies: dict[str, Proxy] = {}
    idle_rss: dict[str, int | None] = {}
    for name in PROXIES:
        admin, listener = free_port(), free_port()
        proxy = launch(
            procs, tmp, name, bench_bootstrap(admin, listener, backend.port), "bench", admin
        )
        proxy.listener_port = listener
        wait_live(proxy)
        verify_proxied(proxy, backend)
        idle_rss[name] = rss_kb(proxy.pid)
        proxies[name] = proxy
        print(
            f"{name}: pid {proxy.pid}, listener {listener}, admin {admin}, LIVE, "
            f"proxies nginx's bodies, idle RSS {fmt_mb(idle_rss[name])} MB",
            flush=True,
        )

    ours = [backend.proc.pid, *(p.pid for p in proxies.values())]
    warm = 1.0 if args.quick else 2.0
    for name, proxy in proxies.items():
        for case in (CASES[0], CASES[2]):
            w = run_wrk(procs, proxy.listener_port, case, warm, tmp)
            print(
                f"warm-up {name} {case.name}: {w.rps:,.0f} rps"
                + (f" (errors: {w.errors})" if w.errors else ""),
                flush=True,
            )

    raw: dict[str, dict[str, list[Run]]] = {c.name: {n: [] for n in PROXIES} for c in CASES}
    for n, case in enumerate(CASES):
        for i in range(args.runs):
            order = PROXIES if (n + i) % 2 == 0 else PROXIES[::-1]
            for name in order:
                r = measure(procs, proxies[name], case, args.duration, tmp, ours)
                raw[case.name][name].append(r)
                print(
                    f"  {case.name:16} run {i + 1}/{args.runs} {name:9} "
                    f"{r.wrk.rps:9,.0f} rps  p50 {fmt_ms(r.wrk.p50_ms):>9}  "
                    f"p99 {fmt_ms(r.wrk.p99_ms):>9}  cpu {r.cpu_ms_per_1k:5.1f} ms/1k  "
                    f"rss {fmt_mb(r.rss_kb)} MB  other load {r.other_load:.2f} cores"
                    + (f"  ERRORS: {r.wrk.errors}" if r.wrk.errors else ""),
                    flush=True,
                )

    # Still proxying after all that load?
    for proxy in proxies.values():
        verify_proxied(proxy, backend)
    for proxy in proxies.values():
        procs.stop(proxy.proc)

    istio: dict[str, dict[str, Any]] = {}
    for name in PROXIES:
        istio[name] = measure_istio_rss(procs, tmp, name)
        print(
            f"{name} with Istio's golden bootstrap after {ISTIO_SETTLE_S:.0f} s: "
            f"/ready {istio[name]['ready']!r}, RSS {fmt_mb(istio[name]['rss_kb'])} MB"
            + (
                ""
                if istio[name]["alive"]
                else f" (EXITED {istio[name].get('exit_code')}:\n{istio[name].get('log_tail')})"
            ),
            flush=True,
        )

    summary = {c: {n: summarize(runs) for n, runs in per.items()} for c, per in raw.items()}
    table = render_table(summary, istio)
    targets = check_targets(summary, istio)
    print()
    print(
        f"pilotfish vs Envoy, medians of {args.runs} x {args.duration:g} s "
        f"(proxy on core {PROXY_CORE}, nginx + wrk on core {LOAD_CORE}):"
    )
    print()
    print(table)
    print()
    for what, ok, detail in targets:
        mark = "n/a " if ok is None else ("PASS" if ok else "MISS")
        print(f"  {mark}  {what}: {detail}")

    failures = [
        f"{c} / {n}: {e}" for c, per in summary.items() for n, s in per.items() for e in s["errors"]
    ]
    if failures:
        print("\nwrk reported errors (those runs are suspect):")
        for f in failures:
            print(f"  {f}")

    busiest = max(s["other_load_max"] for per in summary.values() for s in per.values())
    if busiest > OTHER_LOAD_WARN:
        print(
            f"\nwarning: other processes used up to {busiest:.2f} cores of cores "
            f"{LOAD_CORE}-{PROXY_CORE} during a run: these numbers are skewed, rerun on an "
            "idle machine before quoting them"
        )

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started}.json"
    out.write_text(
        json.dumps(
            {
                "started": started,
                "args": vars(args),
                "machine": {
                    "cpus": os.cpu_count(),
                    "loadavg_end": loadavg(),
                    "proxy_core": PROXY_CORE,
                    "load_core": LOAD_CORE,
                },
                "versions": {
                    "envoy": version_of([str(ENVOY), "--version"]),
                    "pilotfish": version_of([str(PILOTFISH), "--version"]),
                    "nginx": version_of(["nginx", "-v"]),
                    "wrk": version_of(["wrk", "--version"]),
                    "git": git_state(),
                },
                "idle_rss_kb": idle_rss,
                "cases": {
                    c.name: {
                        "connections": c.connections,
                        "path": c.path,
                        "summary": summary[c.name],
                        "runs": {
                            n: [
                                {
                                    **asdict(r.wrk),
                                    "cpu_s": r.cpu_s,
                                    "cpu_ms_per_1k": r.cpu_ms_per_1k,
                                    "rss_kb": r.rss_kb,
                                    "other_load_cores": r.other_load,
                                }
                                for r in raw[c.name][n]
                            ]
                            for n in PROXIES
                        },
                    }
                    for c in CASES
                },
                "istio_bootstrap": istio,
                "targets": [{"target": t, "met": ok, "detail": d} for t, ok, d in targets],
                "table_markdown": table,
            },
            indent=2,
        )
    )
    print(f"\nraw numbers: {out.relative_to(ROOT)}")
    return 1 if failures else 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 run of 3 s per case")
    ap.add_argument("--duration", type=float, default=None, help="seconds per run (6; quick 3)")
    ap.add_argument("--runs", type=int, default=None, help="runs per case (3; quick 1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 6.0
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.duration < 1 or args.runs < 1:
        ap.error("--duration must be ≥ 1 and --runs ≥ 1")

    # Explicitly: a shell starting this in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-bench-"))
    try:
        preflight()
        return run(args, procs, tmp)
    except BenchError as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        print("\ninterrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        with _signals_ignored():
            procs.stop_all()
        if args.keep_tmp:
            print(f"configs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not interrupt the cleanup itself."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
