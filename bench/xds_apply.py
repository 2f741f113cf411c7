"""How fast Envoy and pilotfish apply an Istio-sized xDS config, and what it costs them.

One ADS server (pilotfish.mesh.xds_server) per mode (SotW, delta) serves both proxies, one
after the other (the same listener ports, so never both at once). Each proxy starts on an
empty config (no clusters, no listeners), goes LIVE, and then gets these pushes:

1. ``initial``: the Istio-sized config at once: 500 EDS clusters with 4 endpoints each
   (2,000 endpoints), 50 route configs (one virtual host of 10 domains and 5 routes each,
   RDS), 50 HTTP listeners on 127.0.0.1 (one per route config);
2. ``full update``: every cluster, every assignment and every route config changed;
3. ``one route``: one route config sends its traffic to another cluster;
4. ``listeners``: every listener changed (the stat prefix).

Per push: the time from the push to every type of it ACKed by the proxy (the server's ACK
records, by node id), for ``initial`` and ``one route`` also to traffic following (a request
through listener 0 polled until the answer comes from the expected backend), the CPU time of
the proxy process (utime+stime of /proc/PID/stat, all threads) over the push, and its VmRSS.

    .venv/bin/python bench/xds_apply.py [--runs N] [--keep-tmp]

Prints a markdown table; results in bench/results/xds-apply-<timestamp>.json. A benchmark,
never a test. Exit status 1 if a push was NACKed or never ACKed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from google.protobuf.message import Message  # noqa: E402
from tests.support.echo_backend import EchoBackend  # noqa: E402
from tests.support.proxies import ENVOY_BIN, ProxyProcess, free_port, get  # noqa: E402
from tests.support.xds import ads_bootstrap, eds_cluster, http_listener, parse  # noqa: E402

from pilotfish.mesh.xds_server import ThreadedXdsServer  # noqa: E402
from pilotfish.xds import resource_types as rt  # noqa: E402

CLUSTERS = 500
ENDPOINTS_PER_CLUSTER = 4
LISTENERS = 50  # = route configs
PROXIES = ("envoy", "pilotfish")
MODES = ("sotw", "delta")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_DIR = ROOT / "bench" / "results"
TIMEOUT_S = 60.0


def cluster_name(i: int) -> str:
    return f"outbound|9080||svc-{i}.ns-{i % 10}.svc.cluster.local"


def node_id(kind: str) -> str:
    return f"sidecar~127.0.0.1~bench-{kind}.default~default.svc.cluster.local"


# --- the config ---------------------------------------------------------------------------------


class Config:
    """The Istio-sized resources; ``generation`` changes every cluster, assignment and route
    config; ``route0_target`` is the cluster route config 0 sends ``/`` to."""

    def __init__(self, backend_ports: tuple[int, int], listener_ports: list[int]) -> None:
        self.backend_ports = backend_ports
        self.listener_ports = listener_ports

    def clusters(self, generation: int) -> list[Message]:
        timeout = f"{1 + generation}s"
        return [eds_cluster(cluster_name(i), connect_timeout=timeout) for i in range(CLUSTERS)]

    def assignments(self, generation: int) -> list[Message]:
        out = []
        for i in range(CLUSTERS):
            if i < 2:  # clusters 0 and 1: the real backends
                ports = [self.backend_ports[i]]
                weights = [1 + generation]
            else:  # never connected to: addresses only
                ports = [
                    20000 + (i * ENDPOINTS_PER_CLUSTER + j) % 40000
                    for j in range(ENDPOINTS_PER_CLUSTER)
                ]
                weights = [1 + generation] * ENDPOINTS_PER_CLUSTER
            endpoints = [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}
                    },
                    "load_balancing_weight": w,
                }
                for p, w in zip(ports, weights, strict=True)
            ]
            if i < 2:  # still ENDPOINTS_PER_CLUSTER endpoints: three on other loopback IPs
                for j in range(1, ENDPOINTS_PER_CLUSTER):
                    endpoints.append(
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": f"127.0.0.{j + 1}",
                                        "port_value": ports[0],
                                    }
                                }
                            },
                            "load_balancing_weight": 1 + generation,
                            "health_status": "UNHEALTHY",
                        }
                    )
            out.append(
                parse(
                    rt.ENDPOINT,
                    {
                        "cluster_name": cluster_name(i),
                        "endpoints": [
                            {"locality": {"region": "r", "zone": "z"}, "lb_endpoints": endpoints}
                        ],
                    },
                )
            )
        return out

    def routes(self, generation: int, route0_target: int = 0) -> list[Message]:
        out = []
        for r in range(LISTENERS):
            target = route0_target if r == 0 else (r * 7) % CLUSTERS
            svc = f"svc-{target}.ns-{target % 10}"
            domains = [f"{svc}.svc.cluster.local", svc.split(".", maxsplit=1)[0], f"{svc}.svc", svc]
            domains += [f"{d}:9080" for d in domains] + [f"alias-{r}-{generation}", "*"]
            routes = [
                {
                    "match": {
                        "prefix": "/api/v1/",
                        "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}],
                    },
                    "route": {"cluster": cluster_name((target + 1) % CLUSTERS), "timeout": "0s"},
                },
                {
                    "match": {"safe_regex": {"regex": f"/items/[0-9]+/{generation}"}},
                    "route": {"cluster": cluster_name((target + 2) % CLUSTERS), "timeout": "0s"},
                },
                {
                    "match": {"path": "/health"},
                    "direct_response": {
                        "status": 200,
                        "body": {"inline_string": f"gen {generation}"},
                    },
                },
                {"match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new"}},
                {
                    "match": {"prefix": "/"},
                    "route": {
                        "weighted_clusters": {
                            "clusters": [
                                {"name": cluster_name(target), "weight": 100},
                                {"name": cluster_name((target + 3) % CLUSTERS), "weight": 0},
                            ]
                        },
                        "timeout": "0s",
                        "retry_policy": {"retry_on": "connect-failure", "num_retries": 2},
                    },
                },
            ]
            out.append(
                parse(
                    rt.ROUTE,
                    {
                        "name": f"routes-{r}",
                        "virtual_hosts": [
                            {"name": f"vh-{r}", "domains": domains, "routes": routes}
                        ],
                    },
                )
            )
        return out

    def listeners(self, generation: int) -> list[Message]:
        return [
            http_listener(
                f"listener-{r}", self.listener_ports[r], f"routes-{r}", f"outbound_{r}_{generation}"
            )
            for r in range(LISTENERS)
        ]


# --- measuring ----------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmRSS")


def acked(server: ThreadedXdsServer, kind: str, versions: dict[str, str]) -> bool:
    """Every type in ``versions`` ACKed at that version by ``kind``'s node; raises on a NACK."""
    done = set()
    for a in server.acks:
        if a.node_id != node_id(kind) or a.type_url not in versions:
            continue
        if a.is_nack:
            raise RuntimeError(f"{kind} NACKed {a.type_url}: {a.error_message}")
        if a.version_info == versions[a.type_url]:
            done.add(a.type_url)
    return len(done) == len(versions)


def wait(cond: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > TIMEOUT_S:
            raise TimeoutError(what)
        time.sleep(0.002)
    return time.monotonic()


def answered_by(port: int) -> str:
    try:
        status, headers, _ = get(port, "/", host="anything")
    except OSError:
        return "<no answer>"
    return headers.get("x-backend", f"<{status}>")


def measure(
    kind: str,
    mode: str,
    config: Config,
    backends: dict[str, EchoBackend],
    tmp: Path,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ThreadedXdsServer() as server:
        for t in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.ROUTE):
            server.set_resources(t.type_url, [])
        boot = ads_bootstrap(server.address, delta=mode == "delta", node_id=node_id(kind))
        proxy = ProxyProcess(kind, boot, tmp / f"{kind}-{mode}", startup_timeout=60).start()
        try:
            pid = proxy.pid
            wait(
                lambda: acked(server, kind, {rt.CLUSTER.type_url: "1", rt.LISTENER.type_url: "1"}),
                "empty config ACKed",
            )
            time.sleep(0.5)
            rss0 = rss_mb(pid)
            results["rss_empty_mb"] = rss0
            port0 = config.listener_ports[0]

            def push(
                name: str, steps: list[tuple[rt.ResourceType, list[Message]]], expect: str | None
            ) -> None:
                cpu_before = cpu_s(pid)
                start = time.monotonic()
                versions = {t.type_url: server.set_resources(t.type_url, msgs) for t, msgs in steps}
                pushed = time.monotonic()
                row: dict[str, Any] = {"push_s": pushed - start}
                if expect is not None:
                    row["traffic_s"] = (
                        wait(lambda: answered_by(port0) == expect, f"{name}: traffic to {expect}")
                        - start
                    )
                row["acked_s"] = (
                    wait(lambda: acked(server, kind, versions), f"{name}: ACKs") - start
                )
                time.sleep(0.3)  # work the proxy does after ACKing (Envoy's workers, drains)
                row["cpu_s"] = cpu_s(pid) - cpu_before
                row["rss_mb"] = rss_mb(pid)
                results[name] = row

            push(
                "initial",
                [
                    (rt.ENDPOINT, config.assignments(0)),
                    (rt.CLUSTER, config.clusters(0)),
                    (rt.ROUTE, config.routes(0)),
                    (rt.LISTENER, config.listeners(0)),
                ],
                "A",
            )
            push(
                "full update",
                [
                    (rt.CLUSTER, config.clusters(1)),
                    (rt.ENDPOINT, config.assignments(1)),
                    (rt.ROUTE, config.routes(1)),
                ],
                None,
            )
            push("one route", [(rt.ROUTE, config.routes(1, route0_target=1))], "B")
            push("listeners", [(rt.LISTENER, config.listeners(1))], None)
            results["rss_growth_mb"] = rss_mb(pid) - rss0
        finally:
            proxy.stop()
    return results


# --- main -------------------------------------------------------------------------------------

PUSHES = ("initial", "full update", "one route", "listeners")


def fmt_ms(v: float | None) -> str:
    return "" if v is None else f"{v * 1000:,.0f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mode | push | Envoy ACKed ms | pilotfish ACKed ms "
        "| Envoy traffic ms | pilotfish traffic ms "
        "| Envoy CPU ms | pilotfish CPU ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        e, p = results[f"envoy/{mode}"], results[f"pilotfish/{mode}"]
        for push in PUSHES:
            lines.append(
                f"| {mode} | {push} | {fmt_ms(e[push]['acked_s'])} | {fmt_ms(p[push]['acked_s'])} "
                f"| {fmt_ms(e[push].get('traffic_s'))} | {fmt_ms(p[push].get('traffic_s'))} "
                f"| {fmt_ms(e[push]['cpu_s'])} | {fmt_ms(p[push]['cpu_s'])} |"
            )
    lines += [
        "",
        "| mode | Envoy RSS empty MB | pilotfish RSS empty MB "
        "| Envoy RSS growth MB | pilotfish RSS growth MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        e, p = results[f"envoy/{mode}"], results[f"pilotfish/{mode}"]
        lines.append(
            f"| {mode} | {e['rss_empty_mb']:.1f} | {p['rss_empty_mb']:.1f} "
            f"| {e['rss_growth_mb']:.1f} | {p['rss_growth_mb']:.1f} |"
        )
    return "\n".join(lines)


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over the runs (same shape as one run)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = median_runs([r[key] for r in runs])
        else:
            out[key] = statistics.median(r[key] for r in runs)
    return out


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for mode in MODES:
        e, p = results[f"envoy/{mode}"], results[f"pilotfish/{mode}"]
        for push in PUSHES:
            ok = p[push]["acked_s"] <= e[push]["acked_s"]
            out.append(
                f"{'PASS' if ok else 'MISS'} {mode} {push}: "
                f"time to ACK {fmt_ms(p[push]['acked_s'])} ms "
                f"vs Envoy {fmt_ms(e[push]['acked_s'])} ms"
            )
        ok = p["rss_growth_mb"] <= 2 * max(e["rss_growth_mb"], 0.1)
        out.append(
            f"{'PASS' if ok else 'MISS'} {mode} RSS growth {p['rss_growth_mb']:.1f} MB "
            f"vs 2x Envoy's {2 * e['rss_growth_mb']:.1f} MB"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--only", choices=PROXIES, help="one proxy (no comparison)")
    args = parser.parse_args(argv)
    if not ENVOY_BIN.exists() and args.only != "pilotfish":
        print(f"no Envoy at {ENVOY_BIN}: make envoy", file=sys.stderr)
        return 2
    kinds = (args.only,) if args.only else PROXIES
    tmp = Path(tempfile.mkdtemp(prefix="xds-apply-"))
    backends = {name: EchoBackend(name).start() for name in ("A", "B")}
    runs: list[dict[str, Any]] = []
    try:
        config = Config(
            (backends["A"].port, backends["B"].port), [free_port() for _ in range(LISTENERS)]
        )
        for run in range(args.runs):
            results = {}
            for mode in MODES:
                for kind in kinds if run % 2 == 0 else tuple(reversed(kinds)):
                    started = time.monotonic()
                    results[f"{kind}/{mode}"] = measure(kind, mode, config, backends, tmp)
                    print(
                        f"run {run + 1}: {kind} {mode} measured "
                        f"in {time.monotonic() - started:.1f} s",
                        file=sys.stderr,
                    )
            runs.append(results)
    except (TimeoutError, RuntimeError) as exc:
        print(f"xds_apply: {exc}", file=sys.stderr)
        return 1
    finally:
        for b in backends.values():
            b.stop()
        if not args.keep_tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    results = median_runs(runs)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"xds-apply-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"median": results, "runs": runs}, indent=1))
    if args.only:
        print(json.dumps(results, indent=1))
        return 0
    print(
        f"xDS apply: {CLUSTERS} EDS clusters, {CLUSTERS * ENDPOINTS_PER_CLUSTER} endpoints, "
        f"{LISTENERS} listeners and route configs; median of {args.runs} run(s)\n"
    )
    print(table(results))
    print()
    print("\n".join(targets(results)))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
