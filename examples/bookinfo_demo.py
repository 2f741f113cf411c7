"""`make demo`: Istio's BookInfo on this machine, with pilotfish as every sidecar and as the
ingress gateway, driven by Istio's own YAML files.

1. `pilotfishctl up examples/bookinfo`: the control plane, the four services (six workloads,
   each with a pilotfish sidecar) and the ingress gateway;
2. Istio's three routing steps, each applied with `pilotfishctl apply` and then exercised
   with N requests through the gateway, with a table of which reviews version answered:
   all traffic to v1; v1 and v3 half each; user `jason` to v2, everyone else to v1;
3. STRICT mTLS between all sidecars (a mesh-wide PeerAuthentication and Istio's
   `destination-rule-all-mtls.yaml`): the same answers, the sidecars' certificates from the
   mesh CA (`pilotfishctl proxy-config secrets`) and their TLS handshakes.

With `--capture` (root) the mesh runs in iptables capture mode: each workload in its own
network namespace with istio-iptables' rules, apps unchanged (no proxy settings).
With `--control-plane istiod` (root, `make istio`) Istio's own istiod, pilot-agent and
istio-iptables drive the same pods (docs/istio.md, "Real istiod on one machine").
The mesh is left running (with the commands to look at it and the dashboard's URL), or torn
down with `--once`."""

from __future__ import annotations

import argparse
import collections
import http.cookiejar
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from pilotfish.mesh.bookinfo.productpage import reviews_version_in_page

HERE = Path(__file__).resolve().parent
BOOKINFO = HERE / "bookinfo"
NETWORKING = BOOKINFO / "networking"
STEPS = [
    ("all traffic to reviews v1", ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]),
    ("reviews v1 and v3, half each", ["virtual-service-reviews-50-v3.yaml"]),
    ("user jason to v2, everyone else to v1", ["virtual-service-reviews-test-v2.yaml"]),
    (
        "STRICT mTLS between all sidecars",
        ["../security/peer-authentication-strict.yaml", "destination-rule-all-mtls.yaml"],
    ),
]


def ctl(state: Path, *args: str) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("pilotfishctl")), "--state", str(state), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"pilotfishctl {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def versions(url: str, n: int, user: str | None = None) -> collections.Counter[str]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), urllib.request.ProxyHandler({})
    )
    if user:
        form = urllib.parse.urlencode({"username": user, "passwd": "password"}).encode()
        opener.open(f"{url}/login", data=form, timeout=10).read()
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        with opener.open(f"{url}/productpage", timeout=10) as r:
            seen[reviews_version_in_page(r.read().decode()) or "none"] += 1
    return seen


def handshakes(state: Path, workload: str, service: str) -> int:
    """The sidecar's upstream TLS handshakes to ``service``'s clusters (its admin stats)."""
    from pilotfish.mesh.ctl import request

    rows = request(state, {"cmd": "status"})["rows"]
    admin = next(r["admin"] for r in rows if r["name"] == workload)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"http://{admin}/stats?filter=ssl.handshake", timeout=10
    ) as r:
        lines = r.read().decode().splitlines()
    return sum(
        int(line.rpartition(": ")[2])
        for line in lines
        if f"|{service}." in line and line.rpartition(": ")[2].isdigit()
    )


def show(title: str, rows: dict[str, collections.Counter[str]], n: int) -> None:
    print(f"\n  {title}")
    print(f"  {'who':<10} {'v1':>5} {'v2':>5} {'v3':>5} {'none':>5}")
    for who, seen in rows.items():
        cells = " ".join(f"{seen.get(v, 0):>5}" for v in ("v1", "v2", "v3", "none"))
        print(f"  {who:<10} {cells}   of {n}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=40, help="requests per step (default 40)")
    parser.add_argument("--once", action="store_true", help="tear the mesh down at the end")
    parser.add_argument("--state", default=".pilotfish-demo")
    parser.add_argument(
        "--capture", action="store_true", help="iptables capture mode (root: pods, istio-iptables)"
    )
    parser.add_argument(
        "--control-plane",
        choices=["embedded", "istiod"],
        default="embedded",
        help="istiod: Istio's real istiod and pilot-agent drive the proxies (root, `make istio`)",
    )
    args = parser.parse_args()
    state = Path(args.state).absolute()
    ctl(state, "down")  # a mesh left from an earlier run: the demo starts from scratch
    shutil.rmtree(state, ignore_errors=True)
    mode = ["--capture", "iptables"] if args.capture else []
    if args.control_plane == "istiod":
        mode = ["--control-plane", "istiod"]
    print(f"== pilotfishctl up {' '.join(mode)} examples/bookinfo".replace("  ", " "), flush=True)
    out = ctl(state, "up", *mode, str(BOOKINFO))
    print(out.rstrip())
    url = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("gateway:"))
    show(
        "before any routing rule (every version: Istio's default balancing)",
        {"anyone": versions(url, args.n)},
        args.n,
    )
    for i, (title, files) in enumerate(STEPS, 1):
        print(f"\n== step {i}: {title}: pilotfishctl apply " + " ".join(files), flush=True)
        ctl(state, "apply", *[a for f in files for a in ("-f", str(NETWORKING / f))])
        if args.control_plane == "istiod":
            from pilotfish.mesh.istio.cli import wait_synced

            wait_synced(state)  # istiod pushed and every proxy ACKed
        else:
            time.sleep(0.5)  # the push reaches the sidecars in milliseconds; be generous
        rows = {"anyone": versions(url, args.n)}
        if i >= 3:
            rows["jason"] = versions(url, args.n, user="jason")
        show(title, rows, args.n)
    print("\n  productpage's sidecar: its certificates (pilotfishctl proxy-config secrets)")
    print(
        "  "
        + ctl(state, "proxy-config", "secrets", "productpage-v1").rstrip().replace("\n", "\n  ")
    )
    if args.control_plane == "istiod":
        # Istio's bootstrap keeps only a list of stats (its stats_matcher): no cluster TLS ones.
        print("  TLS handshakes: not in Istio's default stats (sidecar.istio.io/statsInclusion*)")
    else:
        print(f"  TLS handshakes to reviews: {handshakes(state, 'productpage-v1', 'reviews')}")
    if args.once:
        ctl(state, "down")
        print("\nthe mesh is down")
        return 0
    ctl_cmd = f"{Path(sys.executable).with_name('pilotfishctl')} --state {state}"
    dashboard = ctl(state, "dashboard").strip()
    print(
        f"""
The mesh is still up: open {url}/productpage (log in as jason to see v2).
Dashboard (service graph, charts, proxies' sync; needs Debian's prometheus): {dashboard}
  {ctl_cmd} status
  {ctl_cmd} proxy-config routes productpage-v1
  {ctl_cmd} apply -f examples/bookinfo/networking/virtual-service-reviews-80-20.yaml
  {ctl_cmd} down"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
