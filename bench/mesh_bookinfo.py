"""BookInfo end to end through the local mesh, pilotfish vs Envoy as every proxy.

The same control plane (``pilotfishctl up``) runs two meshes side by side, each in its own
temp state directory: one with pilotfish as every sidecar and the ingress gateway, one with
Envoy (``--proxy-binary .venv-envoy/bin/envoy``). They share the machine and are measured in
turn (runs interleaved E P, P E, ...), so drifting background load falls on both.

Cases (``wrk -t1 -c4 --latency`` against the gateway):

1. ``all-v1``: destination-rule-all + virtual-service-all-v1: productpage → details and
   reviews v1 (no ratings), the lightest BookInfo page;
2. ``reviews-v3``: reviews → v3, which calls ratings (one more hop);
3. ``proxy-only``: a second pair of meshes where productpage and details are nginx
   (``master_process off``, one process each) instead of the Python apps: gateway →
   productpage's sidecar (inbound) → nginx → productpage's sidecar (outbound, by the Host
   ``details:9080``) → details' sidecar (inbound) → nginx. Four proxy traversals per request
   and almost no app time: this compares the proxies, where the BookInfo cases mostly
   measure the Python apps.

For each run: requests/s, p50/p99 (wrk), CPU (utime+stime, /proc/PID/stat, all threads) of
every proxy process (sidecars + gateway: the status rows' ``proxy_pid``) and of every app
per request, and the machine's other load (busy time of all cores from /proc/stat minus the
mesh's processes and wrk).

Then apply → traffic: on the full meshes, ``virtual-service-reviews-v3`` and a reviews → v1
VirtualService are applied alternately (``--apply-n`` times), each with the ctl request of
``pilotfishctl apply``; the time from sending it until a request through the gateway shows
the new reviews version (polled every 10 ms over one keep-alive connection).

    .venv/bin/python bench/mesh_bookinfo.py [--duration S] [--runs N] [--apply-n N] [--quick]

Prints markdown tables; raw numbers in bench/results/mesh-bookinfo-<timestamp>.json. A
benchmark, never a test. See bench/README.md ("BookInfo mesh").
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pilotfish.mesh.bookinfo.productpage import reviews_version_in_page  # noqa: E402
from pilotfish.mesh.ctl import gateway_url, request  # noqa: E402

BOOKINFO = ROOT / "examples" / "bookinfo"
NET = BOOKINFO / "networking"
RESULTS_DIR = ROOT / "bench" / "results"
CTL = Path(sys.executable).with_name("pilotfishctl")
ENVOY = Path(os.environ.get("ENVOY_BIN") or ROOT / ".venv-envoy" / "bin" / "envoy")
KINDS = ("envoy", "pilotfish")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 4
POLL_S = 0.010

REVIEWS_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: {subset}
"""

# productpage and details as nginx (proxy-only case): {port} is the app's port (the runner
# fills it in), @PROXY@ its sidecar's outbound listener (from HTTP_PROXY).
NGINX_CONF = """worker_processes 1;
daemon off;
master_process off;
pid @DIR@/@PORT@.pid;
error_log @DIR@/@PORT@.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    default_type application/json;
    upstream sidecar { server @PROXY@; keepalive 16; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        location = /productpage {
            proxy_pass http://sidecar/details/0;
            proxy_http_version 1.1;
            proxy_set_header Host details:9080;
            proxy_set_header Connection "";
        }
        location / { return 200 '@BODY@'; }
    }
}
"""
DETAILS_BODY = (
    '{"id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", '
    '"pages": 200, "publisher": "PublisherA", "language": "English", '
    '"ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}'
)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- /proc


def cpu_s(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def busy_s() -> float:
    """Busy time of every core (user+nice+system+irq+softirq+steal), in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- meshes


def ctl(state: Path, *args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [str(CTL), "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    if out.returncode != 0:
        raise BenchError(f"pilotfishctl {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


@dataclass
class Mesh:
    kind: str
    state: Path
    url: str = ""
    proxy_pids: list[int] = field(default_factory=list)
    app_pids: list[int] = field(default_factory=list)

    def up(self, directory: Path) -> None:
        binary = str(ENVOY) if self.kind == "envoy" else "pilotfish"
        ctl(self.state, "up", str(directory), "--proxy-binary", binary)
        rows = request(self.state, {"cmd": "status"})["rows"]
        url = gateway_url(rows)
        if url is None:
            raise BenchError(f"{self.kind}: no gateway")
        self.url = url
        self.proxy_pids = [r["proxy_pid"] for r in rows if r["proxy_pid"]]
        self.app_pids = [r["app_pid"] for r in rows if r["app_pid"]]

    def apply_text(self, text: str, source: str = "<bench>") -> None:
        request(self.state, {"cmd": "apply", "yaml": text, "source": source})

    def apply(self, *names: str) -> None:
        for name in names:
            self.apply_text((NET / name).read_text(), str(NET / name))

    def down(self) -> None:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            ctl(self.state, "down", timeout=60)

    def get(self, path: str = "/productpage", timeout: float = 10) -> tuple[int, str]:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def wait_page(self, check: Any, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                last = self.get()
                if last[0] == 200 and check(last[1]):
                    return
            time.sleep(0.1)
        raise BenchError(f"{self.kind}: {what} not seen; last answer {last[0]} {last[1][:300]!r}")


@contextlib.contextmanager
def meshes(tmp: Path, directory: Path, tag: str) -> Iterator[dict[str, Mesh]]:
    started: dict[str, Mesh] = {}
    try:
        for kind in KINDS:
            mesh = Mesh(kind, tmp / f"{tag}-{kind}")
            started[kind] = mesh
            mesh.up(directory)
        yield started
    finally:
        for mesh in started.values():
            mesh.down()


def proxy_only_dir(tmp: Path) -> Path:
    """BookInfo's Services and gateway, with productpage-v1 and details-v1 as nginx."""
    d = tmp / "proxy-only"
    nginx_dir = d / "nginx"
    nginx_dir.mkdir(parents=True)
    template = nginx_dir / "nginx.conf.in"
    template.write_text(NGINX_CONF.replace("@DIR@", str(nginx_dir)).replace("@BODY@", DETAILS_BODY))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for src in ("10-bookinfo.yaml", "30-bookinfo-gateway.yaml"):
        shutil.copy(BOOKINFO / src, d / src)
    docs = []
    for name, app in (("details-v1", "details"), ("productpage-v1", "productpage")):
        conf = f"{nginx_dir}/{name}-{{port}}.conf"
        script = (
            f"sed -e 's/@PORT@/{{port}}/g' -e \"s|@PROXY@|${{HTTP_PROXY#http://}}|\" "
            f"{template} > {conf} && exec {nginx} -p {nginx_dir} -e {nginx_dir}/{name}.err "
            f"-c {conf}"
        )
        docs.append(
            {
                "apiVersion": "pilotfish.io/v1alpha1",
                "kind": "Workload",
                "metadata": {"name": name, "labels": {"app": app, "version": "v1"}},
                "spec": {"serviceAccount": f"bookinfo-{app}", "command": ["sh", "-c", script]},
            }
        )
    (d / "20-workloads.yaml").write_text("---\n".join(json.dumps(doc) + "\n" for doc in docs))
    return d


# --------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


@dataclass
class Run:
    case: str
    kind: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str
    proxy_cpu_s: float
    app_cpu_s: float
    wrk_cpu_s: float
    other_load: float  # cores busy with work other than this mesh and wrk

    @property
    def proxy_ms_per_req(self) -> float:
        return 1e3 * self.proxy_cpu_s / max(1, self.requests)

    @property
    def app_ms_per_req(self) -> float:
        return 1e3 * self.app_cpu_s / max(1, self.requests)


def run_wrk(mesh: Mesh, case: str, duration: int) -> Run:
    argv = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--latency",
        f"{mesh.url}/productpage",
    ]
    p0, a0, w0, b0, t0 = (
        cpu_s(mesh.proxy_pids),
        cpu_s(mesh.app_pids),
        children_cpu_s(),
        busy_s(),
        time.monotonic(),
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    p1, a1, w1, b1, t1 = (
        cpu_s(mesh.proxy_pids),
        cpu_s(mesh.app_pids),
        children_cpu_s(),
        busy_s(),
        time.monotonic(),
    )
    text = out.stdout
    m_req = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", text, re.M)
    m_rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
    if out.returncode != 0 or not (m_req and m_rps and "50" in dist and "99" in dist):
        raise BenchError(f"wrk failed ({out.returncode}):\n{text}{out.stderr}")
    errors = []
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors.append(f"non-2xx/3xx {m.group(1)}")
    if m := re.search(r"Socket errors: (.*)", text):
        errors.append(m.group(1))
    proxy, app, wrk = p1 - p0, a1 - a0, w1 - w0
    return Run(
        case=case,
        kind=mesh.kind,
        requests=int(m_req.group(1)),
        seconds=_ms(m_req.group(2)) / 1e3,
        rps=float(m_rps.group(1)),
        p50_ms=_ms(dist["50"]),
        p99_ms=_ms(dist["99"]),
        errors=", ".join(errors),
        proxy_cpu_s=proxy,
        app_cpu_s=app,
        wrk_cpu_s=wrk,
        other_load=max(0.0, (b1 - b0 - proxy - app - wrk) / (t1 - t0)),
    )


def measure(case: str, pair: dict[str, Mesh], runs: int, duration: int, warmup: int) -> list[Run]:
    for mesh in pair.values():  # warm-up (connections, caches); not recorded
        run_wrk(mesh, case, warmup)
    out: list[Run] = []
    for i in range(runs):
        order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
        for kind in order:
            r = run_wrk(pair[kind], case, duration)
            print(
                f"  {case:<11} {kind:<9} run {i + 1}: {r.rps:8.1f} rps  p50 {r.p50_ms:6.2f} ms  "
                f"p99 {r.p99_ms:6.2f} ms  proxies {r.proxy_ms_per_req:5.2f} ms/req  "
                f"apps {r.app_ms_per_req:5.2f} ms/req  other load {r.other_load:.2f}"
                + (f"  ⚠ {r.errors}" if r.errors else ""),
                flush=True,
            )
            out.append(r)
    return out


# --------------------------------------------------------------------------- apply → traffic


def apply_latency(mesh: Mesh, n: int) -> dict[str, list[float]]:
    """Alternately reviews → v3 and → v1; per apply: ms until the ctl request returned and
    until the page through the gateway showed the new version."""
    host, port = mesh.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    returned: list[float] = []
    traffic: list[float] = []
    try:
        for i in range(n):
            version = "v3" if i % 2 == 0 else "v1"
            text = REVIEWS_VS.format(subset=version)
            t0 = time.monotonic()
            mesh.apply_text(text, f"virtual-service-reviews-{version}.yaml")
            returned.append(1e3 * (time.monotonic() - t0))
            while True:
                started = time.monotonic()
                conn.request("GET", "/productpage")
                r = conn.getresponse()
                page = r.read().decode(errors="replace")
                now = time.monotonic()
                if r.status == 200 and reviews_version_in_page(page) == version:
                    traffic.append(1e3 * (now - t0))
                    break
                if now - t0 > 30:
                    raise BenchError(f"{mesh.kind}: reviews {version} not seen 30 s after apply")
                time.sleep(max(0.0, POLL_S - (now - started)))
            time.sleep(0.1)
    finally:
        conn.close()
    return {"returned_ms": returned, "traffic_ms": traffic}


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


# --------------------------------------------------------------------------- report


def summarize(runs: Sequence[Run]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for case in dict.fromkeys(r.case for r in runs):
        for kind in KINDS:
            rs = [r for r in runs if r.case == case and r.kind == kind]
            if not rs:
                continue
            out.setdefault(case, {})[kind] = {
                "rps": statistics.median(r.rps for r in rs),
                "p50_ms": statistics.median(r.p50_ms for r in rs),
                "p99_ms": statistics.median(r.p99_ms for r in rs),
                "proxy_ms_per_req": statistics.median(r.proxy_ms_per_req for r in rs),
                "app_ms_per_req": statistics.median(r.app_ms_per_req for r in rs),
                "proxy_cores": statistics.median(r.proxy_cpu_s / r.seconds for r in rs),
                "app_cores": statistics.median(r.app_cpu_s / r.seconds for r in rs),
                "other_load": max(r.other_load for r in rs),
            }
    return out


def render(summary: dict[str, dict[str, dict[str, float]]], latency: dict[str, Any]) -> str:
    lines = [
        "| case | proxy | rps | p50 ms | p99 ms | proxies CPU ms/req | apps CPU ms/req "
        "| proxies cores | apps cores | max other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, kinds in summary.items():
        for kind, s in kinds.items():
            lines.append(
                f"| {case} | {kind} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {s['proxy_ms_per_req']:.3f} | {s['app_ms_per_req']:.3f} "
                f"| {s['proxy_cores']:.2f} | {s['app_cores']:.2f} | {s['other_load']:.2f} |"
            )
    lines += ["", "| case | pilotfish/Envoy rps | pilotfish/Envoy proxy CPU per request |"]
    lines.append("|---|---:|---:|")
    for case, kinds in summary.items():
        if set(kinds) >= set(KINDS):
            e, p = kinds["envoy"], kinds["pilotfish"]
            lines.append(
                f"| {case} | {p['rps'] / e['rps']:.2f}x "
                f"| {p['proxy_ms_per_req'] / e['proxy_ms_per_req']:.2f}x |"
            )
    if latency:
        lines += ["", "| proxy | applies | apply returned p50 / p99 ms | traffic p50 / p99 ms |"]
        lines.append("|---|---:|---:|---:|")
        for kind, d in latency.items():
            ret, tr = d["returned_ms"], d["traffic_ms"]
            lines.append(
                f"| {kind} | {len(tr)} | {pct(ret, 50):.0f} / {pct(ret, 99):.0f} "
                f"| {pct(tr, 50):.0f} / {pct(tr, 99):.0f} |"
            )
    return "\n".join(lines)


def targets(summary: dict[str, dict[str, dict[str, float]]], latency: dict[str, Any]) -> list[str]:
    out = []
    for case, kinds in summary.items():
        if set(kinds) >= set(KINDS):
            e, p = kinds["envoy"], kinds["pilotfish"]
            # "at equal CPU": requests per proxy CPU-second.
            eff = e["proxy_ms_per_req"] / p["proxy_ms_per_req"]
            ratio = p["rps"] / e["rps"]
            verdict = "PASS" if ratio >= 1.0 and eff >= 1.0 else "MISS"
            out.append(
                f"{verdict} {case}: pilotfish {ratio:.2f}x Envoy's requests/s, "
                f"{eff:.2f}x Envoy's requests per proxy CPU-second (target >= 1.0x)"
            )
    for kind, d in latency.items():
        p99 = pct(d["traffic_ms"], 99)
        out.append(
            f"{'PASS' if p99 <= 1000 else 'MISS'} apply->traffic {kind}: p99 {p99:.0f} ms "
            "(target <= 1000 ms)"
        )
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--runs", type=int, default=2, help="runs per case and proxy (default 2)")
    ap.add_argument("--apply-n", type=int, default=20, help="applies per proxy (default 20)")
    ap.add_argument("--quick", action="store_true", help="1 run x 3 s, 6 applies")
    ap.add_argument("--no-v3", action="store_true", help="skip the reviews-v3 case")
    ap.add_argument("--no-proxy-only", action="store_true", help="skip the proxy-only case")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.apply_n = 3, 1, 6
    warmup = 1 if args.quick else 2
    for need in ("wrk", "nginx"):
        if shutil.which(need) is None and not (
            need == "nginx" and Path("/usr/sbin/nginx").exists()
        ):
            print(f"error: {need} is not installed (make apt)", file=sys.stderr)
            return 2
    if not ENVOY.exists():
        print(f"error: no Envoy at {ENVOY} (make envoy)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-mesh-bench-"))
    runs: list[Run] = []
    latency: dict[str, Any] = {}
    started = time.monotonic()
    load_before = os.getloadavg()
    keep = args.keep_tmp
    try:
        print("BookInfo mesh: pilotfish vs Envoy as every proxy (wrk -t1 -c4)", flush=True)
        with meshes(tmp, BOOKINFO, "bookinfo") as pair:
            for mesh in pair.values():
                mesh.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
            for mesh in pair.values():
                mesh.wait_page(lambda page: reviews_version_in_page(page) == "v1", "reviews v1")
            runs += measure("all-v1", pair, args.runs, args.duration, warmup)
            if not args.no_v3:
                for mesh in pair.values():
                    mesh.apply_text(REVIEWS_VS.format(subset="v3"))
                for mesh in pair.values():
                    mesh.wait_page(lambda p: reviews_version_in_page(p) == "v3", "reviews v3")
                runs += measure("reviews-v3", pair, args.runs, args.duration, warmup)
                for mesh in pair.values():
                    mesh.apply_text(REVIEWS_VS.format(subset="v1"))
                    mesh.wait_page(lambda p: reviews_version_in_page(p) == "v1", "reviews v1")
            print(f"apply -> traffic ({args.apply_n} applies each) ...", flush=True)
            for kind in KINDS:
                latency[kind] = apply_latency(pair[kind], args.apply_n)
        if not args.no_proxy_only:
            directory = proxy_only_dir(tmp)
            with meshes(tmp, directory, "proxy-only") as pair:
                for mesh in pair.values():
                    mesh.wait_page(lambda page: '"ISBN-13"' in page, "nginx's details")
                runs += measure("proxy-only", pair, args.runs, args.duration, warmup)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"(state and logs kept in {tmp})", file=sys.stderr)
        keep = True
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs)
    print()
    print(render(summary, latency))
    print()
    verdicts = targets(summary, latency)
    for line in verdicts:
        print(line)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"mesh-bookinfo-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "git": git_state(),
                "cores": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "wall_s": time.monotonic() - started,
                "runs": [asdict(r) for r in runs],
                "summary": summary,
                "apply_latency": latency,
                "targets": verdicts,
            },
            indent=1,
        )
    )
    print(f"\nraw numbers: {out.relative_to(ROOT)} ({time.monotonic() - started:.0f} s)")
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
