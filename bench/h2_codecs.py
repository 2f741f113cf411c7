"""Which HTTP/2 library should pilotfish's codec use? h2 vs jh2 vs ngh2, measured.

For each library installed in this interpreter: a minimal uvloop HTTP/2 server (fixed 200,
2-byte body, flow control honoured) is started in a subprocess pinned to core 1 and measured
with
  - h2spec (strict mode off): passed / failed / skipped,
  - h2load -c 32 -m 10 (core 0): requests/s and the server's CPU seconds per 10k requests,
  - RSS growth per idle connection (200 connections that sent the preface and SETTINGS),
and in-process: a client and a server connection of the library exchange unary requests
(HEADERS+DATA each way) with no sockets: µs per exchange.

    python bench/h2_codecs.py [--requests N] [--libs h2,jh2,ngh2]

jh2 and ngh2 are not project dependencies: run this from a venv that has them
(`pip install h2==4.4.1 jh2==5.0.15 ngh2==0.3.0 uvloop==0.23.0`). h2spec is looked up in
.tools/bin (`make h2spec`). A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
H2SPEC = ROOT / ".tools" / "bin" / "h2spec"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b"ok"
IDLE_CONNECTIONS = 200
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# -- servers ------------------------------------------------------------------------------


class HyperServer(asyncio.Protocol):
    """h2 and jh2 (same API): the library leaves flow control of sent DATA to its user."""

    lib: Any = None

    def connection_made(self, transport: Any) -> None:
        lib = self.lib
        self.t = transport
        self.ev = lib.events
        cfg = lib.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = lib.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.pending: dict[int, bytes] = {}
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        ev = self.ev
        try:
            events = conn.receive_data(data)
        except self.lib.exceptions.ProtocolError:
            self.t.write(conn.data_to_send())
            self.t.close()
            return
        for e in events:
            if isinstance(e, ev.RequestReceived):
                if e.stream_ended is not None:
                    self.respond(e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                self.respond(e.stream_id)
            elif isinstance(e, ev.DataReceived):
                if e.flow_controlled_length:
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.WindowUpdated | ev.RemoteSettingsChanged):
                for sid in list(self.pending):
                    self.flush(sid)
            elif isinstance(e, ev.StreamReset):
                self.pending.pop(e.stream_id, None)
            elif isinstance(e, ev.ConnectionTerminated):
                self.t.write(conn.data_to_send())
                self.t.close()
                return
        out = conn.data_to_send()
        if out:
            self.t.write(out)

    def respond(self, sid: int) -> None:
        try:
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
        except self.lib.exceptions.ProtocolError:
            return
        self.pending[sid] = BODY
        self.flush(sid)

    def flush(self, sid: int) -> None:
        conn = self.conn
        data = self.pending[sid]
        try:
            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(data))
        except self.lib.exceptions.ProtocolError:
            del self.pending[sid]
            return
        if n <= 0:
            return
        rest = data[n:]
        conn.send_data(sid, data[:n], end_stream=not rest)
        if rest:
            self.pending[sid] = rest
        else:
            del self.pending[sid]


class Ngh2Server(asyncio.Protocol):
    """ngh2: libnghttp2 queues DATA and honours the peer's windows itself."""

    def connection_made(self, transport: Any) -> None:
        import ngh2

        self.ngh2 = ngh2
        self.t = transport
        self.conn = ngh2.Connection(ngh2.Role.SERVER)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        ngh2 = self.ngh2
        conn = self.conn
        try:
            conn.receive_data(data)
        except ngh2.NGH2Error:
            # Refused outright (bad preface): nghttp2 may have nothing left to send.
            with contextlib.suppress(ngh2.NGH2Error):
                self.t.write(conn.data_to_send())
            self.t.close()
            return
        for e in conn.events():
            if isinstance(e, ngh2.RequestReceived):
                if e.end_stream:
                    self.respond(e.stream_id)
            elif isinstance(e, ngh2.DataReceived | ngh2.TrailersReceived):
                if getattr(e, "end_stream", True):
                    self.respond(e.stream_id)
            elif isinstance(e, ngh2.ConnectionClosed):
                self.t.write(conn.data_to_send())
                self.t.close()
                return
        out = conn.data_to_send()
        if out:
            self.t.write(out)
        if not conn.want_read and not conn.want_write:
            self.t.close()

    def respond(self, sid: int) -> None:
        try:
            self.conn.send_response(sid, [(b":status", b"200"), (b"content-length", b"2")])
            self.conn.send_data(sid, BODY, end_stream=True)
        except self.ngh2.NGH2Error:
            pass


def serve(lib: str) -> None:
    import uvloop

    if lib == "pilotfish":
        # pilotfish's own codec (codec/http2.py, on ngh2): the cost of its layer over ngh2.
        sys.path.insert(0, str(ROOT))
        from tests.support.h2_server import H2FixedResponse

        factory: Any = lambda: H2FixedResponse(None)  # noqa: E731
    elif lib == "ngh2":
        factory = Ngh2Server
    else:
        module = importlib.import_module(lib)
        for sub in ("config", "connection", "events", "exceptions"):
            importlib.import_module(f"{lib}.{sub}")
        factory = type("Server", (HyperServer,), {"lib": module})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# -- in-process unary exchange -------------------------------------------------------------

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/svc/Method"),
    (b":authority", b"backend"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def unary_hyper(lib: str, n: int) -> float:
    mod = importlib.import_module(lib)
    for sub in ("config", "connection", "events"):
        importlib.import_module(f"{lib}.{sub}")
    ev = mod.events
    cli = mod.connection.H2Connection(
        mod.config.H2Configuration(client_side=True, header_encoding=None)
    )
    srv = mod.connection.H2Connection(
        mod.config.H2Configuration(client_side=False, header_encoding=None)
    )
    cli.initiate_connection()
    srv.initiate_connection()
    srv.receive_data(cli.data_to_send())
    cli.receive_data(srv.data_to_send())
    srv.receive_data(cli.data_to_send())
    req = REQUEST
    resp = RESPONSE
    t0 = time.perf_counter()
    for _ in range(n):
        sid = cli.get_next_available_stream_id()
        cli.send_headers(sid, req)
        cli.send_data(sid, b"x" * 64, end_stream=True)
        for e in srv.receive_data(cli.data_to_send()):
            if isinstance(e, ev.DataReceived):
                srv.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                srv.send_headers(e.stream_id, resp)
                srv.send_data(e.stream_id, b"y" * 64)
                srv.send_headers(e.stream_id, [(b"grpc-status", b"0")], end_stream=True)
        for e in cli.receive_data(srv.data_to_send()):
            if isinstance(e, ev.DataReceived):
                cli.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        srv.receive_data(cli.data_to_send())
    return (time.perf_counter() - t0) / n * 1e6


def unary_ngh2(n: int) -> float:
    import ngh2

    cli = ngh2.Connection(ngh2.Role.CLIENT)
    srv = ngh2.Connection(ngh2.Role.SERVER)
    cli.initiate_connection()
    srv.initiate_connection()
    srv.receive_data(cli.data_to_send())
    cli.receive_data(srv.data_to_send())
    srv.receive_data(cli.data_to_send())
    cli.events()
    srv.events()
    req = REQUEST
    resp = RESPONSE
    t0 = time.perf_counter()
    for _ in range(n):
        sid = cli.send_request(req)
        cli.send_data(sid, b"x" * 64, end_stream=True)
        srv.receive_data(cli.data_to_send())
        for e in srv.events():
            if isinstance(e, ngh2.DataReceived) and e.end_stream:
                srv.send_response(e.stream_id, resp)
                srv.send_data(e.stream_id, b"y" * 64)
                srv.send_trailers(e.stream_id, [(b"grpc-status", b"0")])
        cli.receive_data(srv.data_to_send())
        cli.events()
        srv.receive_data(cli.data_to_send())
        srv.events()
    return (time.perf_counter() - t0) / n * 1e6


def unary_pilotfish(n: int) -> float:
    from pilotfish.codec.events import Data
    from pilotfish.codec.http2 import Http2ClientCodec, Http2ServerCodec
    from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

    cli = Http2ClientCodec()
    srv = Http2ServerCodec()
    srv.receive(cli.data_to_send())
    cli.receive(srv.data_to_send())
    srv.receive(cli.data_to_send())
    t0 = time.perf_counter()
    for _ in range(n):
        req = RequestHeaders(
            b"POST",
            b"/svc/Method",
            b"backend",
            [(b"content-type", b"application/grpc"), (b"te", b"trailers")],
        )
        sid = cli.encode_request(req, False)
        cli.encode_data(sid, b"x" * 64, True)
        for e in srv.receive(cli.data_to_send()):
            if isinstance(e, Data):
                srv.consumed(e.stream_id, len(e.data))
                if e.end_stream:
                    resp = ResponseHeaders(200, [(b"content-type", b"application/grpc")])
                    srv.encode_headers(e.stream_id, resp, False)
                    srv.encode_data(e.stream_id, b"y" * 64, False)
                    srv.encode_trailers(e.stream_id, HeaderMap([(b"grpc-status", b"0")]))
        for e in cli.receive(srv.data_to_send()):
            if isinstance(e, Data):
                cli.consumed(e.stream_id, len(e.data))
        srv.receive(cli.data_to_send())
    return (time.perf_counter() - t0) / n * 1e6


# -- the driver ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_h2spec(port: int) -> dict[str, int]:
    if not H2SPEC.exists():
        return {}
    out = subprocess.run(
        [str(H2SPEC), "-h", "127.0.0.1", "-p", str(port), "-o", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    m = re.search(r"(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed", out)
    if not m:
        return {}
    return {"tests": int(m[1]), "passed": int(m[2]), "skipped": int(m[3]), "failed": int(m[4])}


def run_h2load(port: int, requests: int) -> tuple[float, int]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            "h2load",
            "-c",
            "32",
            "-m",
            "10",
            "-n",
            str(requests),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"(\d+) succeeded", out)
    return (float(rps[1]) if rps else 0.0, int(ok[1]) if ok else 0)


def idle_connection_kib(pid: int, port: int) -> float:
    before = rss_kib(pid)
    socks = []
    for _ in range(IDLE_CONNECTIONS):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREFACE + EMPTY_SETTINGS)
        socks.append(s)
    for s in socks:
        s.settimeout(5)
        s.recv(4096)  # the server's SETTINGS: the connection is set up on its side
    time.sleep(0.3)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    return (after - before) / IDLE_CONNECTIONS


ENVOY = ROOT / ".venv-envoy" / "bin" / "envoy"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def envoy_config(port: int) -> dict[str, Any]:
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "h2",
        "codec_type": "HTTP2",
        "delayed_close_timeout": "0s",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                        }
                    ],
                }
            ]
        },
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    listener = {
        "name": "h2",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    return {"static_resources": {"listeners": [listener]}}


def start_server(lib: str) -> tuple[subprocess.Popen[str], int]:
    if lib != "envoy":
        proc = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, __file__, "--serve", lib],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())
    # Envoy, for reference: a direct_response route (no upstream), one worker.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = Path(f"/tmp/h2_codecs_envoy_{os.getpid()}.json")
    config.write_text(json.dumps(envoy_config(port)))
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            str(ENVOY),
            "-c",
            str(config),
            "--concurrency",
            "1",
            "-l",
            "error",
            "--disable-hot-restart",
            "--base-id",
            str(os.getpid()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


def measure(lib: str, requests: int) -> dict[str, Any]:
    proc, port = start_server(lib)
    try:
        result: dict[str, Any] = {"lib": lib, "h2spec": run_h2spec(port)}
        run_h2load(port, 2000)  # warm up
        cpu0 = cpu_seconds(proc.pid)
        rps, ok = run_h2load(port, requests)
        cpu = cpu_seconds(proc.pid) - cpu0
        result.update(rps=rps, succeeded=ok, cpu_s_per_10k=cpu / max(ok, 1) * 10_000)
        result["kib_per_idle_conn"] = idle_connection_kib(proc.pid, port)
        if lib == "envoy":
            result["unary_us"] = float("nan")
        elif lib == "pilotfish":
            result["unary_us"] = unary_pilotfish(5000)
        elif lib == "ngh2":
            result["unary_us"] = unary_ngh2(5000)
        else:
            result["unary_us"] = unary_hyper(lib, 2000)
        return result
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--libs", default="h2,jh2,ngh2,pilotfish,envoy")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("h2load") is None:
        sys.exit("h2load is missing: apt-get install nghttp2-client")
    results = []
    for lib in args.libs.split(","):
        try:
            if lib == "envoy" and not ENVOY.exists():
                raise ImportError
            if lib != "envoy":
                importlib.import_module("pilotfish.codec.http2" if lib == "pilotfish" else lib)
        except ImportError:
            print(f"{lib}: not installed, skipped", file=sys.stderr)
            continue
        r = measure(lib, args.requests)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(
        "| library | h2spec passed/failed | h2load req/s | server CPU s / 10k req "
        "| KiB / idle conn | in-process unary µs |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        spec = r["h2spec"]
        spec_s = f"{spec['passed']}/{spec['failed']}" if spec else "n/a"
        print(
            f"| {r['lib']} | {spec_s} | {r['rps']:.0f} | {r['cpu_s_per_10k']:.2f} "
            f"| {r['kib_per_idle_conn']:.1f} | {r['unary_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
