"""mTLS between two proxies, pilotfish vs Envoy (`make bench`).

Topology, for each proxy kind (Envoy pair and pilotfish pair measured in turn, runs
interleaved):

    wrk (plain) -> proxy A (plain in, Istio-shaped mTLS out) -> proxy B (mTLS in, plain out)
                -> nginx

Both proxies run on core 1 (nginx and wrk on core 0, as bench/run.py). Cases:

1. ``mtls keep-alive``: wrk -c32 through A; A keeps its mTLS connections to B;
2. ``handshakes``: wrk -c8 with ``connection: close`` straight to a server-TLS listener of B
   (no client certificate: wrk has none), so every request is a new TLS handshake.

Reported per case: requests/s, CPU ms per 1000 requests of A+B (and per proxy, vCPU per
1000 rps, to compare with Istio's published sidecar figure of 0.20 vCPU and 60 MB per 1000
rps with 1 KB payloads), RSS of each proxy.

    .venv/bin/python bench/mtls.py [--duration S] [--runs N] [--quick]

A benchmark, never a test. Raw numbers in bench/results/mtls-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as base  # noqa: E402
from tests.support.certs import CertAuthority, Leaf, spiffe_id  # noqa: E402

ISTIO_VCPU_PER_1K_RPS = 0.20
ISTIO_MB_PER_1K_RPS = 60
KINDS = ("envoy", "pilotfish")
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TLS_PREFIX = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cert(leaf: Leaf) -> dict[str, Any]:
    return {
        "certificate_chain": {"inline_string": leaf.cert_pem.decode()},
        "private_key": {"inline_string": leaf.key_pem.decode()},
    }


def _validation(ca: CertAuthority, san: dict[str, Any]) -> dict[str, Any]:
    return {
        "trusted_ca": {"inline_string": ca.cert_pem.decode()},
        "match_subject_alt_names": [san],
    }


def _listener(name: str, port: int, cluster: str, tls: dict[str, Any] | None) -> dict[str, Any]:
    hcm = {
        "@type": HCM,
        "stat_prefix": name,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if tls is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return {"name": name, "address": _addr(port), "filter_chains": [chain]}


def _cluster(name: str, port: int, tls: dict[str, Any] | None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
    }
    if tls is not None:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return c


def bootstraps(
    ports: dict[str, int], backend_port: int, ca: CertAuthority, a: Leaf, b: Leaf
) -> tuple[dict[str, Any], dict[str, Any]]:
    upstream = {
        "@type": TLS_PREFIX + "UpstreamTlsContext",
        "sni": "outbound_.80_._.b.default.svc.cluster.local",
        "common_tls_context": {
            "alpn_protocols": ["istio-peer-exchange", "istio"],
            "tls_certificates": [_cert(a)],
            "validation_context": _validation(ca, {"exact": spiffe_id("default", "b")}),
        },
    }
    inbound = {
        "@type": TLS_PREFIX + "DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [_cert(b)],
            "validation_context": _validation(ca, {"prefix": "spiffe://cluster.local/"}),
        },
    }
    server_only = {
        "@type": TLS_PREFIX + "DownstreamTlsContext",
        "common_tls_context": {"tls_certificates": [_cert(b)]},
    }
    proxy_a = {
        "admin": {"address": _addr(ports["a_admin"])},
        "static_resources": {
            "listeners": [_listener("a_out", ports["a_out"], "b", None)],
            "clusters": [_cluster("b", ports["b_in"], upstream)],
        },
    }
    proxy_b = {
        "admin": {"address": _addr(ports["b_admin"])},
        "static_resources": {
            "listeners": [
                _listener("b_in", ports["b_in"], "nginx", inbound),
                _listener("b_tls", ports["b_tls"], "nginx", server_only),
            ],
            "clusters": [_cluster("nginx", backend_port, None)],
        },
    }
    return proxy_a, proxy_b


def wrk(
    procs: base.Processes, url: str, conns: int, duration: float, tmp: Path, close: bool
) -> base.WrkResult:
    argv = ["taskset", "-c", base.LOAD_CORE, "wrk", "-t1", f"-c{conns}"]
    argv += [f"-d{max(1, round(duration))}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    log = tmp / "wrk.out"
    proc = procs.start([*argv, url], log=log)
    try:
        proc.wait(duration + 30)
    finally:
        procs.stop(proc)
    out = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise base.BenchError(f"wrk exited with {proc.returncode}:\n{out}")
    return base.parse_wrk(out)


def measure(
    procs: base.Processes,
    pair: tuple[base.Proxy, base.Proxy],
    url: str,
    conns: int,
    close: bool,
    duration: float,
    tmp: Path,
) -> dict[str, Any]:
    cpu0 = [base.cpu_seconds(p.pid) for p in pair]
    result = wrk(procs, url, conns, duration, tmp, close)
    cpu1 = [base.cpu_seconds(p.pid) for p in pair]
    for p in pair:
        if p.proc.poll() is not None:
            raise base.BenchError(f"{p.name} died:\n{base.tail(p.log)}")
    requests = max(1, result.requests)
    cpu = [(c1 - c0) * 1000 / requests * 1000 for c0, c1 in zip(cpu0, cpu1, strict=True)]
    return {
        "rps": result.rps,
        "errors": result.errors,
        "cpu_ms_per_1k_a": cpu[0],
        "cpu_ms_per_1k_b": cpu[1],
        "rss_kb_a": base.rss_kb(pair[0].pid),
        "rss_kb_b": base.rss_kb(pair[1].pid),
    }


CASES = (
    ("mtls keep-alive (32 conns)", "a_out", "http", 32, False, "/"),
    ("mtls keep-alive 1 KiB (32 conns)", "a_out", "http", 32, False, base.KB_PATH),
    ("handshakes (8 conns, close)", "b_tls", "https", 8, True, "/"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 3.0, 1
    ca = CertAuthority("bench root")
    a_leaf, b_leaf = ca.issue_spiffe("default", "a"), ca.issue_spiffe("default", "b")
    procs = base.Processes()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {c[0]: {k: [] for k in KINDS} for c in CASES}
    try:
        with tempfile.TemporaryDirectory(prefix="pilotfish-mtls-bench-") as d:
            tmp = Path(d)
            backend = base.start_nginx(procs, tmp)
            pairs: dict[str, tuple[base.Proxy, base.Proxy]] = {}
            ports_by_kind: dict[str, dict[str, int]] = {}
            for kind in KINDS:
                names = ("a_admin", "a_out", "b_admin", "b_in", "b_tls")
                ports = {n: base.free_port() for n in names}
                boot_a, boot_b = bootstraps(ports, backend.port, ca, a_leaf, b_leaf)
                b = base.launch(procs, tmp, kind, boot_b, "b", ports["b_admin"])
                a = base.launch(procs, tmp, kind, boot_a, "a", ports["a_admin"])
                for p in (a, b):
                    base.wait_live(p)
                a.listener_port = ports["a_out"]
                base.verify_proxied(a, backend)
                pairs[kind], ports_by_kind[kind] = (a, b), ports
                print(f"{kind}: A pid {a.pid}, B pid {b.pid}: mTLS path verified", flush=True)
            for kind in KINDS:  # warm-up
                for _, port_name, scheme, conns, close, path in CASES:
                    url = f"{scheme}://127.0.0.1:{ports_by_kind[kind][port_name]}{path}"
                    wrk(procs, url, conns, 1.0, tmp, close)
            for n, (case, port_name, scheme, conns, close, path) in enumerate(CASES):
                for i in range(args.runs):
                    order = KINDS if (n + i) % 2 == 0 else KINDS[::-1]
                    for kind in order:
                        url = f"{scheme}://127.0.0.1:{ports_by_kind[kind][port_name]}{path}"
                        r = measure(procs, pairs[kind], url, conns, close, args.duration, tmp)
                        raw[case][kind].append(r)
                        print(
                            f"  {case:28} {kind:9} {r['rps']:9,.0f} rps  cpu A "
                            f"{r['cpu_ms_per_1k_a']:6.1f} B {r['cpu_ms_per_1k_b']:6.1f} ms/1k"
                            + (f"  ERRORS {r['errors']}" if r["errors"] else ""),
                            flush=True,
                        )
    finally:
        procs.stop_all()
    print()
    print("| case | proxy | rps | CPU ms/1k req (A+B) | vCPU per 1k rps per proxy | RSS A/B MB |")
    print("|---|---|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for case, *_ in CASES:
        for kind in KINDS:
            runs = raw[case][kind]
            rps = statistics.median(r["rps"] for r in runs)
            cpu = statistics.median(r["cpu_ms_per_1k_a"] + r["cpu_ms_per_1k_b"] for r in runs)
            rss_a = max((r["rss_kb_a"] or 0) for r in runs) / 1024
            rss_b = max((r["rss_kb_b"] or 0) for r in runs) / 1024
            # CPU seconds per 1000 requests = vCPU at 1000 rps; per proxy: half of A+B.
            vcpu = cpu / 1000 / 2
            summary.setdefault(case, {})[kind] = {
                "rps": rps,
                "cpu_ms_per_1k": cpu,
                "vcpu_per_1k_rps_per_proxy": vcpu,
                "rss_mb": [rss_a, rss_b],
            }
            print(
                f"| {case} | {kind} | {rps:,.0f} | {cpu:.1f} | {vcpu:.3f} | "
                f"{rss_a:.0f}/{rss_b:.0f} |"
            )
    print(
        f"\nIstio's published sidecar figure: {ISTIO_VCPU_PER_1K_RPS} vCPU and "
        f"{ISTIO_MB_PER_1K_RPS} MB per 1000 rps (1 KB payloads, telemetry on)."
    )
    base.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = base.RESULTS_DIR / f"mtls-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"summary": summary, "raw": raw}, indent=1))
    print(f"raw numbers: {out}")
    errors = any(r["errors"] for c in raw.values() for k in c.values() for r in k)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
