"""Real Envoy as the oracle for pilotfish's access-log formatter.

Envoy runs with one listener (routes to a stdlib echo backend, a direct response, and no route
for anything else) and several file access logs: Envoy's default format, Istio's default
format, a text format and a JSON format with many commands, and a JSON format with
``omit_empty_values``. A "facts" log records what only Envoy knows (start time to the
microsecond, durations, request id, its upstream port).

For every request, a StreamInfo is built from what the client sent and saw plus those facts,
and pilotfish's formatter must reproduce each of Envoy's lines byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ENVOY_BIN

from pilotfish.accesslog.formatter import (
    DEFAULT_FORMAT,
    ISTIO_DEFAULT_FORMAT,
    Formatter,
    compile_header_value,
    compile_json_format,
    compile_text_format,
)
from pilotfish.stream_info import ResponseFlag, StreamInfo

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

CLUSTER_METADATA = {"pf": {"n": 100000, "f": 2.5, "s": 'x "y"', "l": [1, "a"], "m": {"k": True}}}

CUSTOM_TEXT = (
    "%REQ(X-BIN)%|%REQ(:PATH):4%|%REQ(X-NOPE):4%|%UPSTREAM_HOST_NAME%|"
    "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_LOCAL_ADDRESS%|%CLUSTER_METADATA(pf)%|"
    "%CLUSTER_METADATA(pf:n)%|%CLUSTER_METADATA(pf:s)%|%START_TIME(%s %3f %Y-%m-%d)%|"
    "%BYTES_RECEIVED%|%RESPONSE_FLAGS_LONG%|%DOWNSTREAM_TLS_VERSION%|100%%|é\n"
)
JSON_FIELDS: dict[str, Any] = {
    "code": "%RESPONSE_CODE%",
    "proto": "%PROTOCOL%",
    "flags": "%RESPONSE_FLAGS%",
    "flags_long": "%RESPONSE_FLAGS_LONG%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes": {"in": "%BYTES_RECEIVED%", "out": "%BYTES_SENT%"},
    "duration": "%DURATION%",
    "upstream": ["%UPSTREAM_HOST%", "%UPSTREAM_CLUSTER%", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"],
    "route": "%ROUTE_NAME%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_REMOTE_PORT%",
    "client_port": "%DOWNSTREAM_REMOTE_PORT%",
    "local_port": "%DOWNSTREAM_LOCAL_PORT%",
    "ua": "%REQ(USER-AGENT)%",
    "ua4": "%REQ(USER-AGENT):4%",
    "bin": "%REQ(X-BIN)%",
    "bin_in_text": "<%REQ(X-BIN)%>",
    "bin_after_utf8": "é%REQ(X-BIN)%",  # each piece is escaped on its own
    "missing": "%REQ(X-NOPE)%",
    "missing_in_text": "[%REQ(X-NOPE)%]",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "svc_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "started": "%START_TIME(%Y/%m/%dT%H:%M:%S.%6f%z)%",
    "meta": "%CLUSTER_METADATA(pf)%",
    "meta_n": "%CLUSTER_METADATA(pf:n)%",
    "meta_in_text": "m=%CLUSTER_METADATA(pf:s)%",
    "literals": {"n": 100000, "f": 2.5, "t": True, "z": None, "s": 'é "q" %%', "e": []},
    "sni": "%REQUESTED_SERVER_NAME%",
    "tls": "%DOWNSTREAM_TLS_VERSION%",
    "hs": "%DOWNSTREAM_HANDSHAKE_DURATION%",
    "Zz": "sorted after 'Z' and before 'a'",
}
OMIT_FIELDS: dict[str, Any] = {
    "code": "%RESPONSE_CODE%",
    "up": "%UPSTREAM_HOST%",
    "m": {"a": "%REQ(X-NOPE)%"},
    "l": ["%UPSTREAM_CLUSTER%", "%REQ(X-NOPE)%"],
    "mix": "a%UPSTREAM_HOST%b",
    "z": None,
}
# response_headers_to_add values (Envoy's header formatter: a missing value is "", and an
# empty header is not added).
HEADER_VALUES = {
    "x-pf-missing": "%REQ(X-NOPE)%",
    "x-pf-mixed": "a%REQ(X-NOPE)%b",
    "x-pf-facts": "%PROTOCOL% %UPSTREAM_HOST% %RESPONSE_FLAGS% %ROUTE_NAME%",
    "x-pf-client": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "x-pf-pct": "100%%",
    "x-pf-start": "%START_TIME(%s.%3f)%",
    "x-pf-meta": "%CLUSTER_METADATA(pf)%",
    "x-pf-host-meta": "%UPSTREAM_METADATA(pf:k)%",
    "x-pf-ua": "%REQ(USER-AGENT):4%",
    "x-pf-env": "%ENVIRONMENT(PF_SURELY_UNSET_VARIABLE)%",
}
# What only Envoy knows, read back to build the equivalent StreamInfo.
FACTS: dict[str, Any] = {
    "start": "%START_TIME(%s.%6f)%",
    "duration": "%DURATION%",
    "rx": "%REQUEST_DURATION%",
    "utx": "%REQUEST_TX_DURATION%",
    "urx": "%RESPONSE_DURATION%",
    "rtx": "%RESPONSE_TX_DURATION%",
    "rid": "%REQ(X-REQUEST-ID)%",
    "uplocal": "%UPSTREAM_LOCAL_ADDRESS%",
}

LOGS: dict[str, dict[str, Any]] = {
    "default": {},
    "istio": {"log_format": {"text_format": ISTIO_DEFAULT_FORMAT}},
    "custom": {"log_format": {"text_format": CUSTOM_TEXT}},
    "json": {"log_format": {"json_format": JSON_FIELDS}},
    "omit": {"log_format": {"json_format": OMIT_FIELDS, "omit_empty_values": True}},
    "facts": {"log_format": {"json_format": FACTS}},
}
FORMATTERS: dict[str, Formatter] = {
    "default": compile_text_format(DEFAULT_FORMAT),
    "istio": compile_text_format(ISTIO_DEFAULT_FORMAT),
    "custom": compile_text_format(CUSTOM_TEXT),
    "json": compile_json_format(JSON_FIELDS),
    "omit": compile_json_format(OMIT_FIELDS, omit_empty_values=True),
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes = b""
    # What Envoy should decide.
    code: int = 200
    route: str = "backend_route"
    details: str = "via_upstream"
    flags: int = 0

    @property
    def routed(self) -> bool:
        return self.route == "backend_route"


REQUESTS = [
    Request(
        "GET",
        "/be/ok?x=1",
        {
            "user-agent": b"pilotfish-test/1.0",
            "x-forwarded-for": b"1.2.3.4",
            "x-bin": b'caf\xc3\xa9 \xff "q" \\ \t.',
        },
    ),
    Request("POST", "/be/post", {"content-type": b"text/plain"}, body=b"hello world"),
    Request("GET", "/direct", code=201, route="direct_route", details="direct_response"),
    Request(
        "GET",
        "/missing",
        {"user-agent": b"x"},
        code=404,
        route="",
        details="route_not_found",
        flags=ResponseFlag.NO_ROUTE_FOUND,
    ),
]


@dataclass
class Exchange:
    """One request as the client saw it."""

    request: Request
    client_address: str
    status: int
    response_headers: dict[bytes, bytes]
    response_body: bytes


class Headers:
    def __init__(self, items: dict[bytes, bytes]) -> None:
        self._d = items

    def get(self, name: bytes) -> bytes | None:
        return self._d.get(name)


# -- Envoy --------------------------------------------------------------------------------------


def _bootstrap(log_dir: Path, backend_port: int) -> dict[str, Any]:
    access_logs = []
    for name, extra in LOGS.items():
        typed = {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log_dir / f"{name}.log"),
            **extra,
        }
        access_logs.append({"name": "envoy.access_loggers.file", "typed_config": typed})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "access_log": access_logs,
        "route_config": {
            "name": "rc",
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "response_headers_to_add": [
                        {"header": {"key": k, "value": v}} for k, v in HEADER_VALUES.items()
                    ],
                    "routes": [
                        {
                            "name": "backend_route",
                            "match": {"prefix": "/be"},
                            "route": {"cluster": "backend"},
                        },
                        {
                            "name": "direct_route",
                            "match": {"prefix": "/direct"},
                            "direct_response": {"status": 201, "body": {"inline_string": "hi"}},
                        },
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    backend = {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}
    return {
        "admin": {"address": address},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": address,
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "metadata": {"filter_metadata": CLUSTER_METADATA},
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": backend}}]}],
                    },
                }
            ],
        },
    }


@contextlib.contextmanager
def _envoy(tmp: Path, backend_port: int) -> Iterator[int]:
    """Run Envoy; yield its listener port. Only the process started here is killed."""
    config = tmp / "envoy.json"
    config.write_text(json.dumps(_bootstrap(tmp, backend_port)))
    admin_file = tmp / "admin.txt"
    with (tmp / "envoy.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [
                str(ENVOY_BIN),
                "-c",
                str(config),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--base-id",
                str(random.randint(10_000, 1_000_000)),
                "--admin-address-path",
                str(admin_file),
                "-l",
                "error",
                "--file-flush-interval-msec",
                "50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield _listener_port(proc, admin_file, tmp / "envoy.stderr")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listener_port(proc: subprocess.Popen[bytes], admin_file: Path, stderr: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Envoy exited: {stderr.read_text()[-2000:]}")
        if admin_file.exists() and admin_file.read_text().strip():
            admin = admin_file.read_text().strip()
            try:
                with urllib.request.urlopen(f"http://{admin}/listeners?format=json") as r:
                    statuses = json.loads(r.read())["listener_statuses"]
                port = statuses[0]["local_address"]["socket_address"]["port_value"]
                if port:
                    return int(port)
            except (OSError, KeyError, IndexError, ValueError):
                pass
        time.sleep(0.05)
    pytest.fail("Envoy did not start")


def _send(port: int, req: Request) -> Exchange:
    head = [f"{req.method} {req.path} HTTP/1.1".encode(), b"host: example.com"]
    head += [k.encode() + b": " + v for k, v in req.headers.items()]
    if req.body:
        head.append(b"content-length: %d" % len(req.body))
    head.append(b"connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        host, client_port = sock.getsockname()[:2]
        client = f"{host}:{client_port}"
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + req.body)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += _recv(sock)
        head_bytes, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.split(b"\r\n")
        headers = {b":status": status_line.split()[1]}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        # Read the body by its length: waiting for Envoy to close would cost its delayed close.
        while len(body) < int(headers[b"content-length"]):
            body += _recv(sock)
    return Exchange(req, client, int(headers[b":status"]), headers, body)


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise AssertionError("Envoy closed the connection early")
    return data


def _read_logs(log_dir: Path, count: int) -> dict[str, list[bytes]]:
    """The complete lines of every log, once each has ``count`` of them."""
    deadline = time.monotonic() + 10
    while True:
        logs = {}
        for name in LOGS:
            lines = (log_dir / f"{name}.log").read_bytes().splitlines(keepends=True)
            logs[name] = [line for line in lines if line.endswith(b"\n")]
        if all(len(lines) >= count for lines in logs.values()):
            return logs
        if time.monotonic() > deadline:
            pytest.fail(f"access logs incomplete: { {k: len(v) for k, v in logs.items()} }")
        time.sleep(0.05)


# -- the equivalent StreamInfo -----------------------------------------------------------------


def _ms_after(base: float, ms: int | None) -> float | None:
    """A monotonic time ``ms`` whole milliseconds after ``base`` (plus a fraction, as real)."""
    return None if ms is None else base + ms / 1000 + 0.0004


def _stream_info(ex: Exchange, facts: dict[str, Any], port: int, backend_port: int) -> StreamInfo:
    req = ex.request
    info = StreamInfo()
    info.start_time = float(facts["start"])
    info.start_monotonic = 100.0
    info.end_monotonic = _ms_after(100.0, facts["duration"])
    info.last_downstream_rx = _ms_after(100.0, facts["rx"])
    info.last_upstream_tx = _ms_after(100.0, facts["utx"])
    info.first_upstream_rx = _ms_after(100.0, facts["urx"])
    if info.first_upstream_rx is not None and facts["rtx"] is not None:
        info.last_downstream_tx = info.first_upstream_rx + facts["rtx"] / 1000 + 0.0002
    info.protocol = "HTTP/1.1"
    info.response_code = req.code
    info.response_code_details = req.details
    info.response_flags = req.flags
    info.bytes_received = len(req.body)
    info.bytes_sent = len(ex.response_body)
    info.downstream_direct_remote_address = ex.client_address
    # Without use_remote_address Envoy takes the client from the last X-Forwarded-For entry,
    # with port 0 (an HTTP connection manager fact, mirrored here).
    xff = req.headers.get("x-forwarded-for")
    last_hop = xff.decode().rsplit(",", 1)[-1].strip() if xff else ""
    info.downstream_remote_address = f"{last_hop}:0" if last_hop else ex.client_address
    info.downstream_local_address = f"127.0.0.1:{port}"
    info.route_name = req.route
    info.request_id = facts["rid"]
    request_headers = {
        b":method": req.method.encode(),
        b":path": req.path.encode(),
        b":authority": b"example.com",
        b":scheme": b"http",
        b"x-request-id": facts["rid"].encode(),
    }
    request_headers.update({k.encode(): v for k, v in req.headers.items()})
    info.request_headers = Headers(request_headers)
    info.response_headers = Headers(ex.response_headers)
    if req.routed:
        info.upstream_host = f"127.0.0.1:{backend_port}"
        info.upstream_local_address = facts["uplocal"]
        info.upstream_cluster = "backend"
        info.upstream_request_attempt_count = 1
        setattr(info, "upstream_cluster_metadata", CLUSTER_METADATA)  # noqa: B010
    return info


def test_access_log_lines_match_envoy(tmp_path: Path) -> None:
    with EchoBackend() as backend, _envoy(tmp_path, backend.port) as port:
        exchanges = [_send(port, req) for req in REQUESTS]
        logs = _read_logs(tmp_path, len(REQUESTS))
    assert [ex.status for ex in exchanges] == [req.code for req in REQUESTS]
    for i, ex in enumerate(exchanges):
        facts = json.loads(logs["facts"][i])
        info = _stream_info(ex, facts, port, backend.port)
        for name, formatter in FORMATTERS.items():
            ours = formatter.format(info).encode("latin-1")
            assert ours.decode("latin-1") == logs[name][i].decode("latin-1"), (name, ex.request)
        if ex.request.route:  # headers_to_add apply once a route is chosen
            _check_added_headers(ex, info)


def _check_added_headers(ex: Exchange, info: StreamInfo) -> None:
    seen = ex.response_headers
    for name, value in HEADER_VALUES.items():
        expected = compile_header_value(value, name)(info).encode("latin-1")
        assert seen.get(name.encode()) == (expected or None), (name, ex.request)


def test_json_lines_are_valid_json_with_typed_values(tmp_path: Path) -> None:
    """Envoy's JSON lines parse as JSON: numbers are numbers, missing values null."""
    with EchoBackend() as backend, _envoy(tmp_path, backend.port) as port:
        _send(port, REQUESTS[0])
        _send(port, REQUESTS[3])
        logs = _read_logs(tmp_path, 2)
    ok, missing = (json.loads(line) for line in logs["json"])
    assert (ok["code"], ok["bytes"]["in"], ok["upstream"][2]) == (200, 0, 1)
    assert isinstance(ok["duration"], int) and isinstance(ok["client_port"], int)
    assert (ok["missing"], ok["missing_in_text"], ok["tls"]) == (None, "[-]", None)
    assert ok["meta_n"] == 100000 and ok["meta"]["m"] == {"k": True}
    assert list(ok) == sorted(ok)  # keys sorted, not in config order
    assert (missing["code"], missing["flags"], missing["upstream"]) == (404, "NR", [None, None, 0])
