"""pilot-agent's status port (15020) of each pod, and the kubelet's readiness prober.

Istio's injector rewrites an app's ``httpGet``/``tcpSocket`` probe to
``GET /app-health/<container>/readyz`` on 15020 and hands the original probe to pilot-agent
(``ISTIO_KUBE_APP_PROBERS``), which runs it from inside the pod against the app. Here the
control plane plays both parts: a :class:`StatusServer` listens on the pod's status port (in
capture mode inside the pod's network namespace, on ``0.0.0.0:15020``, which the capture rules
exclude) and runs the app's probe over the pod's loopback; :class:`Prober` calls that URL (or
runs an ``exec`` probe in the pod) at the probe's period and keeps the workload's readiness.

The HTTP here is a few lines by hand: one GET and its status line each way, no body, no
keep-alive; pulling an HTTP client/server library into the control plane for it would be
more than the job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pilotfish.mesh.probes import Probe

__all__ = [
    "ProbeTarget",
    "Prober",
    "StatusServer",
    "connect_to",
    "http_get_status",
    "http_probe",
    "run_exec",
    "tcp_accepts",
]

log = logging.getLogger("pilotfish.mesh.probes")

STATUS_PORT = 15020  # pilot-agent's status port in a pod
# (port) -> a non-blocking socket connected to 127.0.0.1:port in the pod's network
Connect = Callable[[int], Awaitable[socket.socket]]


async def connect_to(
    host: str, port: int, make: Callable[[], socket.socket] | None = None
) -> socket.socket:
    """A non-blocking TCP socket connected to ``host:port``; ``make`` creates the socket (in
    another network namespace, say)."""
    sock = make() if make is not None else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_accepts(connect: Connect, port: int, timeout: float) -> str | None:
    """None when ``port`` accepts a connection, else why not."""
    try:
        sock = await asyncio.wait_for(connect(port), timeout)
    except (OSError, TimeoutError) as e:
        return f"dial tcp :{port}: {e.strerror if isinstance(e, OSError) else 'timeout'}"
    sock.close()
    return None


async def http_get_status(
    sock: socket.socket, host: str, path: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, str]:
    """Send ``GET path`` on a connected socket; the response's status code and the start of
    its body (the server closes the connection after it)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        head = [f"GET {path} HTTP/1.1", f"Host: {host}", "User-Agent: kube-probe/1.33"]
        head += [f"{k}: {v}" for k, v in headers]
        head += ["Connection: close", "", ""]
        writer.write("\r\n".join(head).encode("latin-1"))
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise OSError(f"not an HTTP response: {status_line[:60]!r}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        body = await reader.read(512)
        return int(parts[1]), body.decode(errors="replace").strip()
    finally:
        writer.close()


async def http_probe(connect: Connect, port: int, path: str, timeout: float) -> str | None:
    """The kubelet's httpGet: None for a 2xx/3xx answer, else why not."""
    try:
        async with asyncio.timeout(timeout):
            sock = await connect(port)
            code, body = await http_get_status(sock, f"127.0.0.1:{port}", path)
    except TimeoutError:
        return f"Get :{port}{path}: timeout"
    except OSError as e:
        return f"Get :{port}{path}: {e.strerror or e}"
    if 200 <= code < 400:
        return None
    # The status port says why the app's own probe failed: keep it.
    return f"HTTP probe failed with statuscode: {code}" + (f" ({body})" if body else "")


@dataclass
class ProbeTarget:
    """A workload's rewritten probe, as pilot-agent holds it."""

    probe: Probe
    app_port: int


class StatusServer:
    """pilot-agent's status port: ``/app-health/<name>/readyz`` runs ``name``'s probe."""

    def __init__(self, sock: socket.socket, connect: Connect) -> None:
        self.targets: dict[str, ProbeTarget] = {}
        self._sock = sock
        self._connect = connect
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = int(sock.getsockname()[1])

    def start(self) -> None:
        """Serve from the running loop (the socket listens already)."""
        self._sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, sock=self._sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        elif self._task is not None:
            self._task.cancel()
        self._sock.close()

    async def check(self, name: str) -> str | None:
        """Run ``name``'s probe against its app: None when it passes, else why not."""
        target = self.targets.get(name)
        if target is None:
            return f"no probe for {name!r}"
        probe = target.probe
        port = probe.port or target.app_port
        if probe.kind == "tcpSocket":
            return await tcp_accepts(self._connect, port, probe.timeout)
        try:
            async with asyncio.timeout(probe.timeout):
                sock = await self._connect(port)
                code, _ = await http_get_status(
                    sock, f"127.0.0.1:{port}", probe.path, probe.headers
                )
        except TimeoutError:
            return f"Get http://127.0.0.1:{port}{probe.path}: timeout"
        except OSError as e:
            return f"Get http://127.0.0.1:{port}{probe.path}: {e.strerror or e}"
        if 200 <= code < 400:
            return None
        return f"HTTP probe failed with statuscode: {code}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            segments = path.split("/")
            if len(segments) == 4 and segments[1] == "app-health" and segments[3] == "readyz":
                why = await self.check(segments[2])
                status, body = ("200 OK", "") if why is None else ("500 Internal Server Error", why)
            else:
                status, body = "404 Not Found", "not found"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


@dataclass
class Readiness:
    """What the prober knows of one workload (``status`` shows it)."""

    ready: bool = False
    reason: str = "not probed yet"
    successes: int = 0
    failures: int = 0
    since: float = 0.0


class Prober:
    """The kubelet's readiness prober for one workload: probes at the probe's period (every
    0.2 s until it first passes, so that ``up`` returns as soon as the app serves), keeps
    ``readiness`` by the success and failure thresholds."""

    FAST_PERIOD = 0.2

    def __init__(
        self,
        probe: Probe,
        check: Callable[[], Awaitable[str | None]],
    ) -> None:
        self.probe = probe
        self._check = check
        self.readiness = Readiness(since=time.monotonic())
        self._task: asyncio.Task[None] | None = None
        self._ever_ready = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def probe_once(self) -> None:
        try:
            why = await self._check()
        except Exception as e:  # a probe's failure must not end the prober
            why = f"{type(e).__name__}: {e}"
        r = self.readiness
        if why is None:
            r.successes, r.failures = r.successes + 1, 0
            if not r.ready and r.successes >= self.probe.success_threshold:
                r.ready, r.reason, r.since = True, "", time.monotonic()
                self._ever_ready = True
        else:
            r.successes, r.failures = 0, r.failures + 1
            if r.ready and r.failures >= self.probe.failure_threshold:
                r.ready, r.since = False, time.monotonic()
            if not r.ready:
                r.reason = f"Readiness probe failed: {why}"

    async def _run(self) -> None:
        await asyncio.sleep(self.probe.initial_delay)
        while True:
            await self.probe_once()
            await asyncio.sleep(self.probe.period if self._ever_ready else self.FAST_PERIOD)


async def run_exec(argv: Sequence[str], timeout: float, cwd: str | None = None) -> str | None:
    """An exec probe: None when the command exits 0, else why not."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
        )
    except OSError as e:
        return f"exec {argv[0]}: {e.strerror or e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return f"command timed out after {timeout:g}s"
    if proc.returncode == 0:
        return None
    text = out.decode(errors="replace").strip()[-200:]
    return f"command exited {proc.returncode}" + (f": {text}" if text else "")
