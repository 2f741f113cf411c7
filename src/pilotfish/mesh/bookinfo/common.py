"""What the four BookInfo apps share: an HTTP/1.1 server on a configurable address that prints
its port and stops on SIGTERM, an outgoing HTTP client that honours ``HTTP_PROXY`` like
``requests`` does, and the trace-header propagation of Istio's sample.

Standard library only, so that the apps run anywhere pilotfish runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SERVICE_HEADERS_TO_PROPAGATE",
    "BookinfoHandler",
    "Response",
    "b3_multi_headers",
    "copy_headers",
    "http_get",
    "json_response",
    "run_app",
    "service_url",
]

DEFAULT_HOST = "127.0.0.1"  # the original binds every address; loopback is the safe default here
DEFAULT_PORT = 9080  # every BookInfo container listens on 9080

# The list details (details.rb ``get_forward_headers``) and reviews (LibertyRestEndpoint.java
# ``headers_to_propagate``) copy from the incoming request to their outgoing calls, in their
# order. productpage's list differs: see productpage.PRODUCTPAGE_HEADERS_TO_PROPAGATE.
SERVICE_HEADERS_TO_PROPAGATE: tuple[str, ...] = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)


def service_url(hostname_var: str, default_host: str, port_var: str) -> str:
    """``http://{HOSTNAME}{.SERVICES_DOMAIN}:{PORT}`` from the environment, as the originals
    build it (``SERVICES_DOMAIN`` unset: no domain; port default 9080)."""
    domain = os.environ.get("SERVICES_DOMAIN")
    suffix = "" if domain is None else "." + domain
    host = os.environ.get(hostname_var, default_host)
    port = os.environ.get(port_var, str(DEFAULT_PORT))
    return f"http://{host}{suffix}:{port}"


def copy_headers(incoming: Message, names: Iterable[str]) -> dict[str, str]:
    """The headers among ``names`` that ``incoming`` has; a repeated header is joined with
    ``,`` (what JAX-RS ``getHeaderString`` does)."""
    out: dict[str, str] = {}
    for name in names:
        values = incoming.get_all(name)
        if values:
            out[name] = ",".join(values)
    return out


# -- B3 multi-header, as OpenTelemetry's B3MultiFormat extracts and injects it ----------------

_HEX = frozenset("0123456789abcdefABCDEF")
_SAMPLED_VALUES = frozenset({"1", "True", "true", "d"})


def _is_hex(value: str, *lengths: int) -> bool:
    return len(value) in lengths and all(c in _HEX for c in value)


def b3_multi_headers(incoming: Message) -> dict[str, str]:
    """The ``x-b3-*`` headers productpage sends: the context read from the incoming ``b3``
    single header (preferred) or ``x-b3-traceid``/``-spanid``/``-sampled``/``-flags``, written
    back as ``x-b3-traceid`` (32 hex), ``x-b3-spanid`` (16 hex) and ``x-b3-sampled`` (1/0).

    ``x-b3-parentspanid`` and ``x-b3-flags`` are not sent (flags ``1`` becomes sampled ``1``);
    an invalid or missing trace or span id sends nothing. This is what the original's
    ``B3MultiFormat().extract`` + ``inject`` on a remote, non-recording span context yield.
    """
    single = incoming.get("b3")
    flags: str | None = None
    if single:
        sampled = "1"  # deferred: OpenTelemetry records it
        fields = single.split("-", 4)
        trace_id = span_id = ""
        if len(fields) == 1:
            sampled = fields[0]
        elif len(fields) in (2, 3, 4):
            trace_id, span_id = fields[0], fields[1]
            if len(fields) >= 3:
                sampled = fields[2]
    else:
        trace_id = incoming.get("x-b3-traceid") or ""
        span_id = incoming.get("x-b3-spanid") or ""
        sampled = incoming.get("x-b3-sampled") or "0"
        flags = incoming.get("x-b3-flags")
    if not (_is_hex(trace_id, 16, 32) and _is_hex(span_id, 16)):
        return {}
    trace_int, span_int = int(trace_id, 16), int(span_id, 16)
    if trace_int == 0 or span_int == 0:
        return {}
    is_sampled = sampled in _SAMPLED_VALUES or flags == "1"
    return {
        "x-b3-traceid": format(trace_int, "032x"),
        "x-b3-spanid": format(span_int, "016x"),
        "x-b3-sampled": "1" if is_sampled else "0",
    }


# -- outgoing calls ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment sets for ``scheme`` (``http_proxy`` before
    ``HTTP_PROXY``), unless ``no_proxy``/``NO_PROXY`` exempts ``host``."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


def http_get(url: str, headers: Mapping[str, str], timeout: float) -> UpstreamResponse:
    """GET ``url`` with exactly ``headers`` (lower-case names kept as given) on a fresh
    connection, like the originals, which do not pool (productpage says so, to spread load
    across versions). Through the environment's HTTP proxy when one is set: the request goes
    to the proxy in absolute form (``GET http://details:9080/details/0``), Host unchanged.

    ``timeout`` applies to connecting and to each read, as in ``requests``. Raises OSError
    (connection refused, timeout) and http.client.HTTPException on failure.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    proxy = _proxy_for("http", parts.hostname)
    if proxy is not None:
        p = urllib.parse.urlsplit(proxy)
        conn = http.client.HTTPConnection(p.hostname or "", p.port or 80, timeout=timeout)
        target = urllib.parse.urlunsplit(("http", parts.netloc, target, "", ""))
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", parts.netloc)
        for name, value in headers.items():
            if name.lower() != "host":
                conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return UpstreamResponse(resp.status, resp.read())
    finally:
        conn.close()


# -- serving ----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(obj: object, status: int = 200, *, compact: bool = False) -> Response:
    """JSON as the original serialises it: compact for Node and Ruby (``JSON.stringify``,
    ``to_json``), with spaces for Python (``json.dumps``)."""
    seps = (",", ":") if compact else (", ", ": ")
    return Response(status, json.dumps(obj, separators=seps).encode())


class BookinfoHandler(BaseHTTPRequestHandler):
    """Dispatches GET/POST to :meth:`route`, answers HTTP/1.1 with keep-alive and a
    Content-Length always. Subclasses set ``app_name`` and implement ``route``."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle the body waits
    # for the ACK of the headers, which a keep-alive peer (a sidecar reusing its connection)
    # delays by 40 ms, so every request but a connection's first took 40 ms more.
    disable_nagle_algorithm = True
    app_name = "bookinfo"
    quiet = False

    def version_string(self) -> str:
        return f"pilotfish-bookinfo-{self.app_name}"

    def route(self, method: str, path: str, query: str, body: bytes) -> Response | None:
        raise NotImplementedError

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urllib.parse.urlsplit(self.path)
        try:
            resp = self.route(method, parts.path, parts.query, body)
        except Exception as exc:  # an app bug answers 500 rather than dropping the connection
            self.log_error("error serving %s: %r", self.path, exc)
            resp = Response(500, b"Internal Server Error", "text/plain")
        if resp is None:
            resp = Response(404, b"Not Found", "text/plain")
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers:
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"{self.app_name} {self.address_string()} {format % args}\n")


class AppServer(ThreadingHTTPServer):
    """One thread per connection; IPv6 when the bind address is one (``::``)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BookinfoHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own FQDN up in DNS, which in a pod with no DNS
        # (capture mode) blocks for the resolver's timeout (10 s) before the app listens.
        if self.allow_reuse_address:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name = "localhost"
        self.server_port = int(self.server_address[1])


def parse_args(name: str, argv: list[str] | None) -> argparse.Namespace:
    """``[port] [--host H] [--port P] [--quiet]``: the originals take the port as their only
    argument; ``PORT`` in the environment is also read. Precedence: --port, argument, PORT,
    9080."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pilotfish.mesh.bookinfo.{name}",
        description=f"BookInfo {name}, behaving like Istio's sample on the wire.",
    )
    parser.add_argument("port_arg", nargs="?", type=int, metavar="port", help="listening port")
    parser.add_argument("--port", type=int, help="listening port (0: any free port)")
    parser.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST), help="bind address")
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else args.port_arg
    if port is None:
        port = int(os.environ.get("PORT", DEFAULT_PORT))
    args.port = port
    return args


def run_app(
    name: str,
    handler: type[BookinfoHandler],
    argv: list[str] | None = None,
    describe: Callable[[], str] | None = None,
) -> int:
    """Serve ``handler`` until SIGTERM or SIGINT, then exit 0. Prints
    ``<name> listening on <host>:<port>`` (the real port when 0 was asked) once bound."""
    args = parse_args(name, argv)
    handler.quiet = args.quiet
    server = AppServer((args.host, args.port), handler)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name=f"{name}-serve", daemon=True
    )
    thread.start()
    port = server.server_address[1]
    extra = f" ({describe()})" if describe else ""
    print(f"{name} listening on {args.host}:{port}{extra}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    print(f"{name} stopped", flush=True)
    return 0
