"""``pilotfishctl dashboard``: a web page for the local mesh in the spirit of Kiali, served by
the control plane (a thread beside it, so that it lives as long as the mesh).

``/`` the page (static/: the graph with Cytoscape.js from npm, per-service charts, each proxy's
xDS sync state and NACKs, refreshed every few seconds); ``/api/graph`` the service graph from
Prometheus; ``/api/service?name=`` a service's request rate, error rate and p99 over the last
``RANGE`` seconds; ``/api/proxies`` the proxies' sync state from the control plane. Binds
127.0.0.1 only.
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pilotfish.mesh.dashboard.queries import Prometheus, service_queries

STATIC = Path(__file__).resolve().parent / "static"
RANGE = 600.0
STEP = "5s"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the mesh has its own logs
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, doc: Any, status: int = 200) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path.startswith("/api/"):
                self._json(self.server.api(url.path, params))
                return
        except Exception as e:  # a dashboard answers with the reason, never dies
            self._json({"error": f"{type(e).__name__}: {e}"}, 502)
            return
        name = "index.html" if url.path in ("", "/") else url.path.lstrip("/")
        path = (STATIC / name).resolve()
        if STATIC not in path.parents or not path.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), ctype)


class DashboardHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        prometheus_url: Callable[[], str],
        proxies: Callable[[], list[dict[str, Any]]],
    ) -> None:
        super().__init__(address, _Handler)
        self.prometheus_url = prometheus_url
        self.proxies = proxies

    def _prometheus(self) -> Prometheus:
        url = self.prometheus_url()
        if not url:
            raise RuntimeError("no Prometheus (install Debian's prometheus package)")
        return Prometheus(url)

    def api(self, path: str, params: dict[str, str]) -> Any:
        if path == "/api/graph":
            return self._prometheus().graph()
        if path == "/api/service":
            name = params.get("name", "")
            end = time.time()
            prom = self._prometheus()
            series = {}
            for key, q in service_queries(name).items():
                result = prom.query_range(q, end - RANGE, end, STEP)
                series[key] = result[0]["values"] if result else []
            return {"service": name, "series": series}
        if path == "/api/proxies":
            return {"proxies": self.proxies(), "prometheus": self.prometheus_url()}
        raise KeyError(path)


class Dashboard:
    """The dashboard's HTTP server on a thread."""

    def __init__(
        self,
        prometheus_url: Callable[[], str],
        proxies: Callable[[], list[dict[str, Any]]],
        port: int = 0,
    ) -> None:
        self.httpd = DashboardHttpServer(("127.0.0.1", port), prometheus_url, proxies)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="dashboard", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
