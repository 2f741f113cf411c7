"""Running the shipped BookInfo apps (pilotfish.mesh.bookinfo) as processes, and a recording
HTTP stub standing in for one of them or for an HTTP proxy.

* ``BookinfoApp(service, env)``: ``python -m pilotfish.mesh.bookinfo.<service> --port 0``,
  its port read from the line it prints; the proxy variables of the test's environment are
  removed so that only what a test sets applies.
* ``RecordingStub(answers)``: an HTTP/1.1 server recording every request (method, request
  target as sent: origin or absolute form, headers) and answering from ``answers`` keyed by
  the target's path (404 otherwise).
* ``http_request``: one request on a fresh connection, no proxy, no redirects followed.
"""

from __future__ import annotations

import http.client
import os
import selectors
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["BookinfoApp", "Recorded", "RecordingStub", "Reply", "http_request"]

LOCALHOST = "127.0.0.1"
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")
_APP_VARS = (
    "DETAILS_HOSTNAME",
    "DETAILS_SERVICE_PORT",
    "REVIEWS_HOSTNAME",
    "REVIEWS_SERVICE_PORT",
    "RATINGS_HOSTNAME",
    "RATINGS_SERVICE_PORT",
    "SERVICES_DOMAIN",
    "SERVICE_VERSION",
    "ENABLE_RATINGS",
    "STAR_COLOR",
    "HOSTNAME",
    "CLUSTER_NAME",
    "FLOOD_FACTOR",
    "PORT",
)


class BookinfoApp:
    """One BookInfo app as a process on a free loopback port."""

    def __init__(
        self, service: str, env: Mapping[str, str] | None = None, log_dir: Path | None = None
    ):
        self.service = service
        self.env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS + _APP_VARS}
        self.env.update(env or {})
        self.log_dir = log_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.banner = ""

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        cmd = [sys.executable, "-m", f"pilotfish.mesh.bookinfo.{self.service}", "--port", "0"]
        if self.log_dir is None:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        else:
            log = self.log_dir / f"{self.service}-{id(self)}.log"
            with log.open("wb") as stderr:
                self.proc = subprocess.Popen(
                    cmd, env=self.env, stdout=subprocess.PIPE, stderr=stderr
                )
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        try:
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise RuntimeError(f"{self.service} printed no listening line in {timeout}s")
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    raise RuntimeError(f"{self.service} exited: {self.proc.wait()}")
                line += chunk
        except BaseException:
            self.stop()
            raise
        finally:
            sel.close()
        self.banner = line.decode().strip()
        # "<service> listening on 127.0.0.1:<port> (...)"
        self.port = int(self.banner.split(" listening on ")[1].split()[0].rsplit(":", 1)[1])
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Recorded:
    method: str
    target: str  # as on the request line: /details/0 or http://details:9080/details/0
    headers: Message

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


class RecordingStub:
    """Records requests; answers ``answers[path]`` (a Reply or JSON text), else 404."""

    def __init__(self, answers: Mapping[str, Reply | str] | None = None) -> None:
        self.answers: dict[str, Reply] = {
            k: v if isinstance(v, Reply) else Reply(200, v.encode())
            for k, v in (answers or {}).items()
        }
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with stub._lock:
                    stub.requests.append(Recorded(self.command, self.path, self.headers))
                reply = stub.answers.get(urllib.parse.urlsplit(self.path).path)
                if reply is None:
                    reply = Reply(404, b"not found", "text/plain")
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def recorded(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def http_request(
    url: str,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 15.0,
) -> HttpResult:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or LOCALHOST, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return HttpResult(resp.status, resp.msg, resp.read())
    finally:
        conn.close()
