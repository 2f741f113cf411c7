"""`make demo`: pilotfish in front of two small backends, with a few requests through it.

Starts two backends (v1, v2) and pilotfish on examples/front-proxy.yaml (free ports substituted),
sends requests that show header routing, a weighted split, a direct response and a redirect,
prints what answered and a few of pilotfish's Envoy-named stats, then stops everything.
``--keep`` leaves it running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend(name: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"version": name, "path": self.path}).encode() + b"\n"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def wait_ready(admin_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pilotfish exited with {proc.returncode}")
        try:
            status, _, body = get(admin_port, "/ready")
            if status == 200 and body.strip() == b"LIVE":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("pilotfish did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    ports = {"10000": free_port(), "9901": free_port(), "8081": free_port(), "8082": free_port()}
    config = (HERE / "front-proxy.yaml").read_text()
    for old, new in ports.items():
        config = config.replace(f"port_value: {old}", f"port_value: {new}")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"pilotfish-demo-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = workdir / "front-proxy.yaml"
    bootstrap.write_text(config)
    servers = [backend("v1", ports["8081"]), backend("v2", ports["8082"])]
    pilotfish = Path(sys.executable).with_name("pilotfish")
    log = open(workdir / "pilotfish.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(pilotfish), "-c", str(bootstrap), "--concurrency", "1", "-l", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    front, admin = ports["10000"], ports["9901"]
    try:
        wait_ready(admin, proc)
        print(f"pilotfish is live: listener 127.0.0.1:{front}, admin 127.0.0.1:{admin}\n")
        counts: collections.Counter[str] = collections.Counter()
        for _ in range(50):
            _, _, body = get(front, "/api/items")
            counts[json.loads(body)["version"]] += 1
        print(f"GET /api/items x50 (80/20 weighted split)   -> {dict(counts)}")
        _, _, body = get(front, "/api/items", {"end-user": "jason"})
        print(f"GET /api/items with end-user: jason         -> {json.loads(body)}")
        status, _, body = get(front, "/health")
        print(f"GET /health (direct response)               -> {status} {body.decode().strip()}")
        status, headers, _ = get(front, "/old")
        print(f"GET /old (redirect)                         -> {status} to {headers['location']}")
        status, headers, _ = get(front, "/nowhere", {"host": "unknown"})
        print(f"GET /nowhere (no route)                     -> {status} {headers.get('server')}")
        _, _, stats = get(
            admin,
            "/stats?filter=^(cluster\\.v[12]\\.upstream_rq_total|http\\.front\\.downstream_rq_[245]xx)$",
        )
        print("\nstats (Envoy's names, from the admin API):")
        print("".join(f"  {line}\n" for line in stats.decode().splitlines()))
        print(f"access log and logs: {workdir / 'pilotfish.log'}")
        if args.keep:
            print("\nrunning; Ctrl-C to stop")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for server in servers:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
