"""Envoy's substitution formatter. Expected values come from Envoy 1.40 runs (see
tests/integration/test_accesslog_envoy.py for the live comparison)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pilotfish.accesslog.formatter import (
    DEFAULT_FORMAT,
    ISTIO_DEFAULT_FORMAT,
    compile_header_value,
    compile_json_format,
    compile_text_format,
    json_double,
    json_escape,
)
from pilotfish.errors import ConfigError
from pilotfish.stream_info import ResponseFlag, StreamInfo

START = 1795645182.055301  # 2026-11-25T22:19:42.055301Z


class Headers:
    """A minimal header map: lower-case byte names, byte values."""

    def __init__(self, items: dict[str, str | bytes]) -> None:
        self._d = {
            k.encode(): v if isinstance(v, bytes) else v.encode("latin-1") for k, v in items.items()
        }

    def get(self, name: bytes) -> bytes | None:
        return self._d.get(name)

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self._d.items())


def make_info(**overrides: Any) -> StreamInfo:
    info = StreamInfo()
    info.start_time = START
    info.start_monotonic = 1000.0
    info.last_downstream_rx = 1000.0004
    info.first_upstream_tx = 1000.001
    info.last_upstream_tx = 1000.0012
    info.first_upstream_rx = 1000.0025
    info.last_upstream_rx = 1000.003
    info.first_downstream_tx = 1000.0026
    info.last_downstream_tx = 1000.0061
    info.end_monotonic = 1000.0079
    info.protocol = "HTTP/1.1"
    info.response_code = 200
    info.response_code_details = "via_upstream"
    info.bytes_received = 12
    info.bytes_sent = 292
    info.upstream_bytes_sent = 259
    info.upstream_bytes_received = 565
    info.upstream_header_bytes_sent = 233
    info.upstream_header_bytes_received = 77
    info.downstream_header_bytes_received = 129
    info.downstream_header_bytes_sent = 185
    info.downstream_remote_address = "10.0.0.1:36142"
    info.downstream_direct_remote_address = "10.0.0.2:36143"
    info.downstream_local_address = "127.0.0.1:15001"
    info.upstream_host = "10.1.2.3:8080"
    info.upstream_local_address = "10.0.0.9:51218"
    info.upstream_cluster = "outbound|80||svc"
    info.upstream_request_attempt_count = 1
    info.requested_server_name = "svc.example.com"
    info.route_name = "default"
    info.connection_id = 7
    info.request_id = "uuid-1"
    info.request_headers = Headers(
        {
            ":method": "GET",
            ":path": "/p?q=1",
            ":authority": "example.com",
            ":scheme": "http",
            "user-agent": "curl/8.0",
            "x-request-id": "uuid-1",
            "x-forwarded-for": "10.0.0.1",
        }
    )
    info.response_headers = Headers(
        {
            ":status": "200",
            "content-type": "text/plain",
            "x-envoy-upstream-service-time": "1",
        }
    )
    for k, v in overrides.items():
        setattr(info, k, v)
    return info


def text(fmt: str, info: StreamInfo | None = None, **kw: Any) -> str:
    return compile_text_format(fmt, "fmt", **kw).format(info or make_info())


def as_json(fields: dict[str, Any], info: StreamInfo | None = None, **kw: Any) -> str:
    return compile_json_format(fields, path="fmt", **kw).format(info or make_info())


TLS = SimpleNamespace(
    tls_version="TLSv1.3",
    cipher_suite="TLS_AES_128_GCM_SHA256",
    session_id="abcd",
    peer_uri_sans=["spiffe://cluster.local/ns/a/sa/b", "spiffe://x"],
    local_uri_sans=["spiffe://cluster.local/ns/c/sa/d"],
    peer_dns_sans=[],
    peer_subject="CN=client",
    local_subject="",
    peer_issuer="CN=ca",
    peer_serial="0a1b",
    peer_fingerprint_256="9f86d081",
    peer_fingerprint_1="a94a8fe5",
    peer_chain_fingerprints_256=["aa", "bb"],
    peer_cert="-----BEGIN%20CERTIFICATE-----",
    peer_cert_valid_from=1700000000.0,
    peer_cert_valid_to=None,
)


class FilterObject:
    def serialize_as_string(self) -> str:
        return "plain-form"

    def serialize_as_value(self) -> Any:
        return {"a": 1, "b": "x"}

    def get_field(self, name: str) -> str | int | None:
        fields: dict[str, str | int] = {"f": "field-value", "n": 42}
        return fields.get(name)


# (format, expected, StreamInfo overrides)
TEXT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    # literals
    ("", "", {}),
    ("plain text", "plain text", {}),
    ("100%% sure", "100% sure", {}),
    ("%%PROTOCOL%%", "%PROTOCOL%", {}),
    ("a{b}c %PROTOCOL%", "a{b}c HTTP/1.1", {}),
    ("é→", "\xc3\xa9\xe2\x86\x92", {}),  # config text is UTF-8: output in latin-1 form
    # protocol, response
    ("%PROTOCOL%", "HTTP/1.1", {}),
    ("%PROTOCOL%", "-", {"protocol": ""}),
    ("%UPSTREAM_PROTOCOL%", "-", {}),
    ("%UPSTREAM_PROTOCOL%", "HTTP/2", {"upstream_protocol": "HTTP/2"}),
    ("%RESPONSE_CODE%", "200", {}),
    ("%RESPONSE_CODE%", "0", {"response_code": 0}),
    ("%RESPONSE_CODE_DETAILS%", "via_upstream", {}),
    ("%RESPONSE_CODE_DETAILS%", "-", {"response_code_details": ""}),
    ("%RESPONSE_CODE_DETAILS%", "a_b_c_d", {"response_code_details": "a b\tc\nd"}),
    ("%RESPONSE_CODE_DETAILS(ALLOW_WHITESPACES)%", "a b", {"response_code_details": "a b"}),
    ("%CONNECTION_TERMINATION_DETAILS%", "-", {}),
    ("%CONNECTION_TERMINATION_DETAILS%", "x", {"connection_termination_details": "x"}),
    ("%RESPONSE_FLAGS%", "-", {}),
    ("%RESPONSE_FLAGS%", "NR", {"response_flags": ResponseFlag.NO_ROUTE_FOUND}),
    (
        "%RESPONSE_FLAGS%",
        "UH,UF",
        {
            "response_flags": ResponseFlag.NO_HEALTHY_UPSTREAM
            | ResponseFlag.UPSTREAM_CONNECTION_FAILURE
        },
    ),
    ("%RESPONSE_FLAGS_LONG%", "NoRouteFound", {"response_flags": ResponseFlag.NO_ROUTE_FOUND}),
    ("%RESPONSE_FLAGS_LONG%", "-", {}),
    # bytes
    ("%BYTES_RECEIVED% %BYTES_SENT%", "12 292", {}),
    ("%UPSTREAM_WIRE_BYTES_SENT% %UPSTREAM_WIRE_BYTES_RECEIVED%", "259 565", {}),
    ("%UPSTREAM_HEADER_BYTES_SENT% %UPSTREAM_HEADER_BYTES_RECEIVED%", "233 77", {}),
    ("%DOWNSTREAM_HEADER_BYTES_SENT% %DOWNSTREAM_HEADER_BYTES_RECEIVED%", "185 129", {}),
    ("%DOWNSTREAM_WIRE_BYTES_SENT% %DOWNSTREAM_WIRE_BYTES_RECEIVED%", "0 0", {}),
    (
        "%DOWNSTREAM_WIRE_BYTES_SENT%",
        "650",
        {"downstream_wire_bytes_sent": 650},
    ),
    ("%REQUEST_HEADERS_BYTES%", "112", {}),
    ("%RESPONSE_HEADERS_BYTES%", "62", {}),
    ("%RESPONSE_TRAILERS_BYTES%", "0", {}),
    ("%REQUEST_HEADERS_BYTES%", "0", {"request_headers": None}),
    # durations (ms, truncated)
    ("%DURATION%", "7", {}),
    ("%REQUEST_DURATION%", "0", {}),
    ("%REQUEST_TX_DURATION%", "1", {}),
    ("%RESPONSE_DURATION%", "2", {}),
    ("%RESPONSE_TX_DURATION%", "3", {}),
    ("%RESPONSE_DURATION% %RESPONSE_TX_DURATION%", "- -", {"first_upstream_rx": None}),
    ("%REQUEST_TX_DURATION%", "-", {"last_upstream_tx": None}),
    ("%DOWNSTREAM_HANDSHAKE_DURATION%", "-", {}),
    ("%DOWNSTREAM_HANDSHAKE_DURATION%", "12", {"downstream_handshake_complete": 1000.0125}),
    ("%ROUNDTRIP_DURATION%", "-", {}),
    ("%COMMON_DURATION(DS_RX_BEG:DS_TX_END)%", "6", {}),
    ("%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%", "6100", {}),
    ("%COMMON_DURATION(US_TX_BEG:US_RX_END:ns)%", "2000000", {}),
    ("%COMMON_DURATION(US_RX_END:US_TX_BEG)%", "-", {}),  # negative span
    ("%COMMON_DURATION(DS_RX_BEG:MY_TIMING)%", "-", {}),
    # upstream
    ("%UPSTREAM_HOST%", "10.1.2.3:8080", {}),
    ("%UPSTREAM_HOST%", "-", {"upstream_host": ""}),
    ("%UPSTREAM_HOST_NAME%", "10.1.2.3:8080", {}),
    ("%UPSTREAM_HOST_NAME%", "svc.local:8080", {"upstream_host_name": "svc.local:8080"}),
    ("%UPSTREAM_HOST_NAME_WITHOUT_PORT%", "svc.local", {"upstream_host_name": "svc.local:8080"}),
    ("%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", "outbound|80||svc outbound|80||svc", {}),
    (
        "%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%",
        "alt outbound|80||svc",
        {"upstream_cluster_observability_name": "alt"},
    ),
    ("%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", "- -", {"upstream_cluster": ""}),
    ("%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1", {}),
    ("%UPSTREAM_CONNECTION_ID%", "0", {}),
    ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-", {}),
    (
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        "TLS_error:_268435581:SSL_routines",
        {"upstream_transport_failure_reason": "TLS error: 268435581:SSL routines"},
    ),
    # addresses
    ("%UPSTREAM_LOCAL_ADDRESS%", "10.0.0.9:51218", {}),
    ("%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT%", "10.0.0.9 51218", {}),
    ("%UPSTREAM_REMOTE_ADDRESS%", "10.1.2.3:8080", {}),
    ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT%", "10.1.2.3 8080", {}),
    ("%UPSTREAM_REMOTE_ADDRESS%", "10.9.9.9:1", {"upstream_remote_address": "10.9.9.9:1"}),
    ("%UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_PORT%", "- -", {"upstream_local_address": ""}),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.1:36142", {}),
    ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT%", "10.0.0.1 36142", {}),
    ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "10.0.0.2:36143", {}),
    (
        "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_DIRECT_REMOTE_PORT%",
        "10.0.0.2 36143",
        {},
    ),
    ("%DOWNSTREAM_LOCAL_ADDRESS%", "127.0.0.1:15001", {}),
    ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT%", "127.0.0.1 15001", {}),
    ("%DOWNSTREAM_DIRECT_LOCAL_ADDRESS%", "127.0.0.1:15001", {}),
    (
        "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
        "%DOWNSTREAM_REMOTE_PORT%",
        "[::1]:443 ::1 443",
        {"downstream_remote_address": "[::1]:443"},
    ),
    (
        "%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|"
        "%DOWNSTREAM_REMOTE_PORT%",
        "/tmp/sock|/tmp/sock|",
        {"downstream_remote_address": "/tmp/sock"},
    ),
    # names and ids
    ("%REQUESTED_SERVER_NAME%", "svc.example.com", {}),
    ("%REQUESTED_SERVER_NAME%", "-", {"requested_server_name": ""}),
    ("%REQUESTED_SERVER_NAME%", "invalid:a_b_", {"requested_server_name": "a b!"}),
    ("%ROUTE_NAME%", "default", {}),
    ("%ROUTE_NAME%", "-", {"route_name": ""}),
    ("%ROUTE_NAME%", "ruta-\xc3\xa9", {"route_name": "ruta-é"}),
    ("%VIRTUAL_CLUSTER_NAME%", "-", {}),
    ("%VIRTUAL_CLUSTER_NAME%", "vc", {"virtual_cluster_name": "vc"}),
    ("%FILTER_CHAIN_NAME%", "-", {}),
    ("%CONNECTION_ID%", "7", {}),
    ("%STREAM_ID%", "uuid-1", {}),
    ("%STREAM_ID%", "-", {"request_id": ""}),
    ("%LOCAL_REPLY_BODY%|%ACCESS_LOG_TYPE%", "|NotSet", {}),
    ("%ACCESS_LOG_TYPE%", "DownstreamEnd", {"access_log_type": "DownstreamEnd"}),
    # headers
    ("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:SCHEME)%", "GET /p?q=1 http", {}),
    ("%REQ(:path):3%", "/p?", {}),
    ("%REQ(:path):0%", "", {}),
    ("%REQ(x-nope):3%", "-", {}),
    ("%REQ(X-NOPE?:AUTHORITY)%", "example.com", {}),
    ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/p?q=1", {}),
    ("%REQ(HOST)%", "example.com", {}),  # Host is :authority in Envoy's header map
    ("%REQ(User-Agent)% %REQUEST_HEADER(user-agent)%", "curl/8.0 curl/8.0", {}),
    ("%REQ(x-nope)%", "-", {}),
    ("%REQ(:method)%", "-", {"request_headers": None}),
    ("%REQ(x-empty)%|", "|", {"request_headers": Headers({"x-empty": ""})}),
    (
        "%REQ(x-bin)%",
        "caf\xc3\xa9 \xff",
        {"request_headers": Headers({"x-bin": b"caf\xc3\xa9 \xff"})},
    ),
    ("%REQ(x-bin):4%", "caf\xc3", {"request_headers": Headers({"x-bin": b"caf\xc3\xa9"})}),
    ("%REQ(x-q)%", 'a "b" \\ c', {"request_headers": Headers({"x-q": 'a "b" \\ c'})}),
    ("%RESP(CONTENT-TYPE)% %RESPONSE_HEADER(:status)%", "text/plain 200", {}),
    ("%RESP(x-envoy-upstream-service-time)%", "1", {}),
    ("%TRAILER(grpc-status)%", "-", {}),
    ("%RESPONSE_TRAILER(grpc-status)%", "0", {"response_trailers": Headers({"grpc-status": "0"})}),
    # gRPC status
    ("%GRPC_STATUS%", "-", {}),
    (
        "%GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)% %GRPC_STATUS_NUMBER%",
        "Unavailable UNAVAILABLE 14 14",
        {
            "request_headers": Headers({"content-type": "application/grpc"}),
            "response_trailers": Headers({"grpc-status": "14"}),
        },
    ),
    (
        "%GRPC_STATUS%",
        "Unimplemented",
        {
            "request_headers": Headers({"content-type": "application/grpc+proto"}),
            "response_code": 404,
        },
    ),
    (
        "%GRPC_STATUS%",
        "42",
        {
            "request_headers": Headers({"content-type": "application/grpc"}),
            "response_headers": Headers({"grpc-status": "42"}),
        },
    ),
    # metadata and filter state
    ("%DYNAMIC_METADATA(ns)%", "-", {}),
    ("%DYNAMIC_METADATA(ns:k)%", "v", {"dynamic_metadata": {"ns": {"k": "v"}}}),
    ("%DYNAMIC_METADATA(ns:k):1%", "v", {"dynamic_metadata": {"ns": {"k": "vvv"}}}),
    (
        "%DYNAMIC_METADATA(ns)%",
        '{"k":"v","n":12.5,"s":{"x":"y","z":[1,2]}}',
        {"dynamic_metadata": {"ns": {"s": {"z": [1, 2], "x": "y"}, "n": 12.5, "k": "v"}}},
    ),
    ("%DYNAMIC_METADATA(ns:s):4%", '{"x"', {"dynamic_metadata": {"ns": {"s": {"x": "y"}}}}),
    ("%DYNAMIC_METADATA(ns:n):1%", "1", {"dynamic_metadata": {"ns": {"n": 12.5}}}),
    ("%DYNAMIC_METADATA(ns:s:x)%", "y", {"dynamic_metadata": {"ns": {"s": {"x": "y"}}}}),
    ("%DYNAMIC_METADATA(ns:k:y)%", "-", {"dynamic_metadata": {"ns": {"k": "v"}}}),
    ("%DYNAMIC_METADATA(ns:z)%", "-", {"dynamic_metadata": {"ns": {"z": None}}}),
    ("%DYNAMIC_METADATA(ns:t)%", "true", {"dynamic_metadata": {"ns": {"t": True}}}),
    (
        "%CLUSTER_METADATA(ns:n)% %CLUSTER_METADATA(ns:i)%",
        "1e+05 7",
        {"upstream_cluster_metadata": {"ns": {"n": 100000, "i": 7}}},
    ),
    ("%CLUSTER_METADATA(ns:n)%", "-", {}),
    ("%UPSTREAM_METADATA(ns:k)%", "-", {}),
    ("%UPSTREAM_METADATA(ns:k)%", "hv", {"upstream_host_metadata": {"ns": {"k": "hv"}}}),
    ("%FILTER_STATE(k)%", "-", {}),
    (
        "%FILTER_STATE(k)%|%FILTER_STATE(k:PLAIN)%",
        '"fsval"|fsval',
        {"filter_state": {"k": "fsval"}},
    ),
    ("%FILTER_STATE(k):3%|%FILTER_STATE(k:PLAIN):3%", '"fs|fsv', {"filter_state": {"k": "fsval"}}),
    ("%FILTER_STATE(k:PLAIN)%", "5", {"filter_state": {"k": 5}}),
    (
        "%FILTER_STATE(o:PLAIN)%|%FILTER_STATE(o:TYPED)%|%FILTER_STATE(o:FIELD:f)%|"
        "%FILTER_STATE(o:FIELD:n)%|%FILTER_STATE(o:FIELD:zz)%",
        'plain-form|{"a":1,"b":"x"}|field-value|42|-',
        {"filter_state": {"o": FilterObject()}},
    ),
    # TLS
    ("%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_TLS_VERSION%", "- - -", {}),
    ("%DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_PEER_FINGERPRINT_256%", "- -", {}),
    ("%DOWNSTREAM_PEER_CERT_V_START%", "-", {}),
    (
        "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %DOWNSTREAM_TLS_SESSION_ID%",
        "TLSv1.3 TLS_AES_128_GCM_SHA256 abcd",
        {"downstream_tls": TLS},
    ),
    (
        "%DOWNSTREAM_PEER_URI_SAN%|%DOWNSTREAM_LOCAL_URI_SAN%|%DOWNSTREAM_PEER_DNS_SAN%",
        "spiffe://cluster.local/ns/a/sa/b,spiffe://x|spiffe://cluster.local/ns/c/sa/d|-",
        {"downstream_tls": TLS},
    ),
    (
        "%DOWNSTREAM_PEER_SUBJECT%|%DOWNSTREAM_LOCAL_SUBJECT%|%DOWNSTREAM_PEER_ISSUER%|"
        "%DOWNSTREAM_PEER_SERIAL%",
        "CN=client|-|CN=ca|0a1b",
        {"downstream_tls": TLS},
    ),
    (
        "%DOWNSTREAM_PEER_FINGERPRINT_256% %DOWNSTREAM_PEER_FINGERPRINT_1% "
        "%DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256% %DOWNSTREAM_PEER_CHAIN_SERIALS%",
        "9f86d081 a94a8fe5 aa,bb -",
        {"downstream_tls": TLS},
    ),
    ("%DOWNSTREAM_PEER_CERT%", "-----BEGIN%20CERTIFICATE-----", {"downstream_tls": TLS}),
    (
        "%DOWNSTREAM_PEER_CERT_V_START%|%DOWNSTREAM_PEER_CERT_V_START(%s)%|"
        "%DOWNSTREAM_PEER_CERT_V_END%",
        "2023-11-14T22:13:20.000Z|1700000000|-",
        {"downstream_tls": TLS},
    ),
    (
        "%UPSTREAM_PEER_URI_SAN% %UPSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_VERSION%",
        "spiffe://cluster.local/ns/a/sa/b,spiffe://x TLSv1.3 -",
        {"upstream_tls": TLS},
    ),
    # times
    ("%START_TIME%", "2026-11-25T22:19:42.055Z", {}),
    ("%START_TIME()%", "2026-11-25T22:19:42.055Z", {}),
    ("%START_TIME(%s)%", "1795645182", {}),
    ("%START_TIME(%s.%3f)%", "1795645182.055", {}),
    ("%START_TIME(%Y-%m-%d %H:%M:%S.%f %z %Z)%", "2026-11-25 22:19:42.055301000 +0000 UTC", {}),
    ("%START_TIME(%1f %2f %6f %9f)%", "0 05 055301 055301000", {}),
    ("%START_TIME(%4f%4f)%", "05530553", {}),
    ("%START_TIME(%%)%", "%", {}),
    ("%START_TIME(%%s %H%%)%", "%1795645182 22%", {}),  # Envoy finds %s inside %%s
    ("%START_TIME(%Ez|%E*z)%", "+00:00|+00:00:00", {}),
    ("%START_TIME(%e %j %a %b %p %y)%", "25 329 Wed Nov PM 26", {}),
    ("%START_TIME(%H)(x)%", "22)(x", {}),
    ("[%START_TIME(%d/%b/%Y:%H:%M:%S %z)%]", "[25/Nov/2026:22:19:42 +0000]", {}),
    ("%START_TIME%", "2026-11-25T22:19:43.000Z", {"start_time": 1795645182.9999999}),
]


@pytest.mark.parametrize(("fmt", "expected", "overrides"), TEXT_CASES)
def test_text_format(fmt: str, expected: str, overrides: dict[str, Any]) -> None:
    assert text(fmt, make_info(**overrides)) == expected


def test_default_formats() -> None:
    info = make_info(response_flags=ResponseFlag.NO_ROUTE_FOUND)
    assert text(DEFAULT_FORMAT, info) == (
        '[2026-11-25T22:19:42.055Z] "GET /p?q=1 HTTP/1.1" 200 NR 12 292 7 1 "10.0.0.1" '
        '"curl/8.0" "uuid-1" "example.com" "10.1.2.3:8080"\n'
    )
    assert text(ISTIO_DEFAULT_FORMAT, info) == (
        '[2026-11-25T22:19:42.055Z] "GET /p?q=1 HTTP/1.1" 200 NR via_upstream - "-" 12 292 7 1 '
        '"10.0.0.1" "curl/8.0" "uuid-1" "example.com" "10.1.2.3:8080" outbound|80||svc '
        "10.0.0.9:51218 127.0.0.1:15001 10.0.0.1:36142 svc.example.com default\n"
    )
    bare = StreamInfo()  # a stream that knows nothing
    bare.end_monotonic = 0.0
    assert text(DEFAULT_FORMAT, bare) == (
        '[1970-01-01T00:00:00.000Z] "- - HTTP/1.1" 0 - 0 0 0 - "-" "-" "-" "-" "-"\n'
    )


def test_omit_empty_values_text() -> None:
    assert text("%REQ(x-nope)%|%PROTOCOL%|%RESPONSE_FLAGS%|", omit_empty_values=True) == (
        "|HTTP/1.1|-|"
    )


def test_duration_of_an_open_stream_runs_to_now() -> None:
    info = make_info(start_monotonic=time.monotonic() - 5, end_monotonic=None)
    assert 5000 <= int(text("%DURATION%", info)) < 6000


def test_values_computed_per_line() -> None:
    uid = text("%UNIQUE_ID%")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", uid)
    assert uid != text("%UNIQUE_ID%")
    assert text("%HOSTNAME%") == socket.gethostname()
    before = time.time()
    emitted = float(text("%EMIT_TIME(%s.%6f)%"))
    assert before - 0.001 <= emitted <= time.time() + 0.001
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text("%EMIT_TIME%"))


def test_environment_is_read_at_compile_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_AL_TEST", "envval")
    monkeypatch.delenv("PF_AL_MISSING", raising=False)
    fmt = compile_text_format(
        "%ENVIRONMENT(PF_AL_TEST)%|%ENVIRONMENT(PF_AL_TEST):3%|%ENVIRONMENT(PF_AL_MISSING)%"
    )
    monkeypatch.setenv("PF_AL_TEST", "changed")
    assert fmt.format(make_info()) == "envval|env|-"
    # Missing prints "-" even where other missing values print nothing.
    assert text("%ENVIRONMENT(PF_AL_MISSING)%", omit_empty_values=True) == "-"
    assert as_json({"e": "%ENVIRONMENT(PF_AL_MISSING)%"}) == '{"e":"-"}\n'


@pytest.fixture
def kolkata_time() -> Iterator[None]:
    """A fixed +05:30 local time zone (no DST)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    mp.undo()
    time.tzset()


def test_local_time(kolkata_time: None) -> None:
    assert text("%START_TIME_LOCAL%") == "2026-11-26T03:49:42.055+0530"
    assert text("%START_TIME_LOCAL(%H:%M %Ez %Z)%") == "03:49 +05:30 IST"


def test_req_without_query_needs_its_extension() -> None:
    extra = {"extra_commands": ("REQ_WITHOUT_QUERY",)}
    fmt = (
        "%REQ_WITHOUT_QUERY(:PATH)%|%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH):2%|"
        "%REQ_WITHOUT_QUERY(x-nope)%|%REQ_WITHOUT_QUERY(x-q)%"
    )
    info = make_info()
    info.request_headers = Headers({":path": "/be/x?q=1&b=2", "x-q": "?abc"})
    assert text(fmt, info, **extra) == "/be/x|/b|-|"
    with pytest.raises(ConfigError, match="Not supported field in StreamInfo: REQ_WITHOUT_QUERY"):
        compile_text_format("%REQ_WITHOUT_QUERY(:PATH)%")


# (format, Envoy's message)
ERROR_CASES = [
    ("%FOO%", "Not supported field in StreamInfo: FOO"),
    ("%PROTOCOL(x)%", "PROTOCOL does not take any parameters or length"),
    ("%PROTOCOL:3%", "PROTOCOL does not take any parameters or length"),
    ("%REQ%", "REQ requires parameters"),
    ("%REQ()%", "REQ requires parameters"),
    ("%REQ(a?b?c)%", "More than 1 alternative header specified in token: a?b?c"),
    ("%REQ(a", "Incorrect configuration: %REQ(a. Couldn't find valid command at position 0"),
    (
        "abc %PROTOCOL",
        "Incorrect configuration: abc %PROTOCOL. Couldn't find valid command at position 4",
    ),
    (
        "%protocol%",
        "Incorrect configuration: %protocol%. Couldn't find valid command at position 0",
    ),
    ("%", "Incorrect configuration: %. Couldn't find valid command at position 0"),
    ("x % y", "Incorrect configuration: x % y. Couldn't find valid command at position 2"),
    (
        "%REQ(a):x%",
        "Incorrect configuration: %REQ(a):x%. Couldn't find valid command at position 0",
    ),
    ("%REQ(a):99999999999999999999999%", "Couldn't find valid command at position 0"),
    ("%REQ(a b)%", "Invalid header configuration. Format string contains invalid characters."),
    ("%REQ(a)b)%", "Invalid header configuration. Format string contains invalid characters."),
    ("%RESP(:)%", "Invalid header configuration. Format string contains invalid characters."),
    ("%START_TIME(%n)%", "Invalid header configuration. Format string contains newline."),
    ("%START_TIME:3%", "START_TIME does not allow length to be specified."),
    ("%RESPONSE_CODE_DETAILS:3%", "RESPONSE_CODE_DETAILS does not allow length to be specified."),
    ("%ENVIRONMENT%", "ENVIRONMENT requires parameters"),
    ("%DYNAMIC_METADATA()%", "DYNAMIC_METADATA requires parameters"),
    ("%CLUSTER_METADATA(ns:k):3%", "CLUSTER_METADATA does not allow length to be specified."),
    ("%UPSTREAM_METADATA(ns:k):3%", "UPSTREAM_METADATA does not allow length to be specified."),
    ("%FILTER_STATE()%", "Invalid filter state configuration, key cannot be empty."),
    (
        "%FILTER_STATE(k:BAD)%",
        "Invalid filter state serialize type, only support PLAIN/TYPED/FIELD.",
    ),
    (
        "%FILTER_STATE(k:FIELD)%",
        "Invalid filter state serialize type, FIELD should be used with the field name.",
    ),
    (
        "%FILTER_STATE(k:PLAIN:x)%",
        "Invalid filter state serialize type, FIELD should be used with the field name.",
    ),
    (
        "%GRPC_STATUS(X)%",
        "GrpcStatusFormatter only supports CAMEL_STRING, SNAKE_STRING or NUMBER. Got: X",
    ),
    ("%COMMON_DURATION(A)%", "Invalid common duration configuration: A."),
    ("%COMMON_DURATION(A:B:xs)%", "Invalid common duration precision: xs."),
    ("%CEL(request.path)%", "%CEL% is not supported by pilotfish"),
    ("ok %METADATA(ROUTE:a:b)%", "%METADATA% is not supported by pilotfish"),
]


@pytest.mark.parametrize(("fmt", "message"), ERROR_CASES)
def test_bad_formats(fmt: str, message: str) -> None:
    path = "listeners[0].access_log[0].typed_config.log_format.text_format"
    with pytest.raises(ConfigError) as e:
        compile_text_format(fmt, path)
    assert e.value.path == path
    assert message in e.value.reason


def test_accepted_oddities() -> None:
    """Envoy accepts these; so does pilotfish."""
    for fmt in (
        "%PROTOCOL%:3",
        "%REQ(:PATH?)%",
        "%REQ(?:PATH)%",
        "%REQ(A_B)%",
        "%DYNAMIC_METADATA(:k)%",
        "%RESPONSE_CODE_DETAILS(X)%",
        "%FILTER_STATE(k):3%",
        "%DYNAMIC_METADATA(ns:k):3%",
        "%FILTER_STATE(k:FIELD:x)%",
    ):
        compile_text_format(fmt)
    assert text("%PROTOCOL%:3") == "HTTP/1.1:3"


# -- JSON -------------------------------------------------------------------------------------

JSON_CASES: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
    ({}, "{}", {}),
    ({"rc": "%RESPONSE_CODE%"}, '{"rc":200}', {}),
    ({"b": "%PROTOCOL%", "a": "%BYTES_SENT%", "C": "x"}, '{"C":"x","a":292,"b":"HTTP/1.1"}', {}),
    (
        {"d": "%DURATION%", "r": "%RESPONSE_DURATION%", "t": "%REQUEST_TX_DURATION%"},
        '{"d":7,"r":null,"t":1}',
        {"first_upstream_rx": None},
    ),
    (
        {
            "p": "%DOWNSTREAM_REMOTE_PORT%",
            "a": "%DOWNSTREAM_REMOTE_ADDRESS%",
            "u": "%UPSTREAM_LOCAL_PORT%",
        },
        '{"a":"10.0.0.1:36142","p":36142,"u":null}',
        {"upstream_local_address": ""},
    ),
    ({"p": "%DOWNSTREAM_REMOTE_PORT%"}, '{"p":null}', {"downstream_remote_address": "/tmp/s"}),
    (
        {"s": "%START_TIME%", "e": "%START_TIME(%s)%"},
        '{"e":"1795645182","s":"2026-11-25T22:19:42.055Z"}',
        {},
    ),
    ({"m": "%REQ(x-nope)%", "f": "%RESPONSE_FLAGS%"}, '{"f":"-","m":null}', {}),
    ({"mixed": "a%REQ(x-nope)%b %RESPONSE_CODE%"}, '{"mixed":"a-b 200"}', {}),
    ({"pct": "%%", "lit": "100%% %%"}, '{"lit":"100% %","pct":"%"}', {}),
    ({"e": ""}, '{"e":""}', {}),
    (
        {"n": {"y": "%DURATION%", "b": ["%RESPONSE_CODE%", "q", 1.5, True, None, {}]}},
        '{"n":{"b":[200,"q",1.5,true,null,{}],"y":7}}',
        {},
    ),
    (
        {"i": 3, "big": 12345678901, "f": 0.1, "e": 1e21, "k": 100000, "neg": -1.25},
        '{"big":12345678901,"e":1e+21,"f":0.1,"i":3,"k":1e+05,"neg":-1.25}',
        {},
    ),
    ({"n": None, "t": False}, '{"n":null,"t":false}', {}),
    ({"em": {}, "el": []}, '{"el":[],"em":{}}', {}),
    ({'k"ey': "v", "é": "%PROTOCOL%"}, '{"k\\"ey":"v","\xc3\xa9":"HTTP/1.1"}', {}),
    # Escaping as Envoy's Json::sanitize: valid UTF-8 keeps its bytes, invalid gets \u00xx.
    (
        {"h": "%REQ(x-h)%", "h2": "[%REQ(x-h)%]"},
        '{"h":"A\xc3\xa9 \\"q\\" \\\\ \\t \\u0001","h2":"[A\xc3\xa9 \\"q\\" \\\\ \\t \\u0001]"}',
        {"request_headers": Headers({"x-h": b'A\xc3\xa9 "q" \\ \t \x01'})},
    ),
    (
        {"h": "%REQ(x-h)%"},
        '{"h":"A\\u00c3\\u00a9B\\u00e9C\\u0009D\\u0022E\\u005cF/G<>&\'\\u007f"}',
        {"request_headers": Headers({"x-h": b"A\xc3\xa9B\xe9C\tD\"E\\F/G<>&'\x7f"})},
    ),
    (  # each piece of a string is escaped on its own, as in Envoy
        {"m": "é%REQ(x-h)%{}"},
        '{"m":"\xc3\xa9\\u00ff{}"}',
        {"request_headers": Headers({"x-h": b"\xff"})},
    ),
    ({"lit": "é→<>&'/\u0001\n"}, '{"lit":"\xc3\xa9\xe2\x86\x92<>&\'/\\u0001\\n"}', {}),
    (
        {"h": "%REQ(user-agent):4%", "z": "%REQ(x-e)%"},
        '{"h":"curl","z":""}',
        {"request_headers": Headers({"user-agent": "curl/8", "x-e": ""})},
    ),
    # Metadata keeps its type; :Z cuts only strings. Numbers are doubles.
    (
        {
            "dm": "%DYNAMIC_METADATA(ns)%",
            "k3": "%DYNAMIC_METADATA(ns:k):3%",
            "n1": "%DYNAMIC_METADATA(ns:n):1%",
            "s": "%DYNAMIC_METADATA(ns:s):4%",
            "miss": "%DYNAMIC_METADATA(ns:nope)%",
            "mix": "x%DYNAMIC_METADATA(ns:s)%",
        },
        '{"dm":{"k":"dynval","n":12.5,"s":{"x":"y","z":[1,2]}},"k3":"dyn","miss":null,'
        '"mix":"x{\\"x\\":\\"y\\",\\"z\\":[1,2]}","n1":12.5,"s":{"x":"y","z":[1,2]}}',
        {"dynamic_metadata": {"ns": {"k": "dynval", "n": 12.5, "s": {"x": "y", "z": [1, 2]}}}},
    ),
    (
        {"c": "%CLUSTER_METADATA(ns:big)%", "u": "%UPSTREAM_METADATA(ns)%"},
        '{"c":1e+05,"u":null}',
        {"upstream_cluster_metadata": {"ns": {"big": 100000}}},
    ),
    (
        {
            "fs": "%FILTER_STATE(k)%",
            "fsp": "%FILTER_STATE(k:PLAIN)%",
            "fs3": "%FILTER_STATE(k):3%",
            "fsm": "x%FILTER_STATE(k)%",
            "o": "%FILTER_STATE(o)%",
        },
        '{"fs":"fsval","fs3":"fsval","fsm":"x\\"fsval\\"","fsp":"fsval","o":{"a":1,"b":"x"}}',
        {"filter_state": {"k": "fsval", "o": FilterObject()}},
    ),
    (
        {"v": "%DOWNSTREAM_TLS_VERSION%", "san": "%DOWNSTREAM_PEER_URI_SAN%"},
        '{"san":null,"v":null}',
        {},
    ),
]


@pytest.mark.parametrize(("fields", "expected", "overrides"), JSON_CASES)
def test_json_format(fields: dict[str, Any], expected: str, overrides: dict[str, Any]) -> None:
    assert as_json(fields, make_info(**overrides)) == expected + "\n"


OMIT_CASES: list[tuple[dict[str, Any], str]] = [
    ({"a": "%REQ(x-nope)%", "b": "%PROTOCOL%"}, '{"b":"HTTP/1.1"}'),
    ({"e": "x%REQ(x-nope)%y"}, '{"e":"xy"}'),  # missing pieces of a string are ""
    ({"nm": {"a": "%REQ(x-nope)%"}, "nn": {"a": {"b": "%REQ(x-nope)%"}}}, "{}"),  # maps go
    ({"em": {}, "n": None, "ok": 1}, '{"ok":1}'),
    (
        {"el": [], "nl": ["%REQ(x-nope)%"], "lm": [{}], "ll": [[]]},  # lists stay
        '{"el":[],"ll":[[]],"lm":[],"nl":[]}',
    ),
    ({"g": "", "z": "%REQ(x-e)%"}, '{"g":"","z":""}'),  # empty strings are values
]


@pytest.mark.parametrize(("fields", "expected"), OMIT_CASES)
def test_json_omit_empty_values(fields: dict[str, Any], expected: str) -> None:
    info = make_info(request_headers=Headers({"x-e": ""}))
    assert as_json(fields, info, omit_empty_values=True) == expected + "\n"


def test_json_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        compile_json_format({"a": {"b": ["ok", "%FOO%"]}}, path="lf.json_format")
    assert e.value.path == "lf.json_format.a.b[1]"
    assert e.value.reason == "Not supported field in StreamInfo: FOO"
    with pytest.raises(ConfigError, match="Only string values"):
        compile_json_format({"a": object()}, path="lf")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e5, "1e+05"),
        (1e6, "1e+06"),
        (120000.0, "120000"),
        (1e14, "1e+14"),
        (999999999999999.0, "999999999999999"),
        (1e15, "1e+15"),
        (1.5e15, "1.5e+15"),
        (1234567890123456.0, "1234567890123456"),
        (100000.5, "100000.5"),
        (1e20, "1e+20"),
        (4294967296.0, "4294967296"),
        (1e-4, "1e-04"),
        (0.001, "0.001"),
        (0.0001234, "0.0001234"),
        (123e-10, "1.23e-08"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-1e6, "-1e+06"),
        (-100000.0, "-1e+05"),
        (0.5, "0.5"),
        (1e16 + 2, "10000000000000002"),
        (2.0**64, "18446744073709551616"),
        (-0.0, "-0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (12345678.9, "12345678.9"),
        (100.0, "100"),
        (float("nan"), "null"),
    ],
)
def test_json_double_matches_envoy(value: float, expected: str) -> None:
    assert json_double(value) == expected


def test_json_escape_fast_path_returns_the_string() -> None:
    s = "plain ascii"
    assert json_escape(s) is s


# -- header values ------------------------------------------------------------------------------

HEADER_CASES = [
    ("plain", "plain"),
    ("é", "\xc3\xa9"),
    ("%REQ(x-nope)%", ""),
    ("a%REQ(x-nope)%b", "ab"),
    ("100%%", "100%"),
    ("%RESPONSE_FLAGS%", "-"),
    ("%ENVIRONMENT(PF_AL_MISSING)%", "-"),
    ("%PROTOCOL% %UPSTREAM_HOST% %RESPONSE_FLAGS%", "HTTP/1.1  -"),
    ("%START_TIME(%s)%", "1795645182"),
    ("%START_TIME%", "2026-11-25T22:19:42.055Z"),
    ("%REQ(x-bin)%", "\xff"),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.1:36142"),
    ("%UPSTREAM_METADATA(ns:k)%", ""),
    ("%CLUSTER_METADATA(ns)%", '{"k":"v","n":2}'),
]


@pytest.mark.parametrize(("value", "expected"), HEADER_CASES)
def test_header_values(value: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PF_AL_MISSING", raising=False)
    info = make_info(
        upstream_host="",
        request_headers=Headers({"x-bin": b"\xff"}),
        upstream_cluster_metadata={"ns": {"k": "v", "n": 2}},
    )
    assert compile_header_value(value, "h.value")(info) == expected


def test_header_value_errors() -> None:
    with pytest.raises(ConfigError) as e:
        compile_header_value("%NOPE%", "route.response_headers_to_add[0].header.value")
    assert e.value.path == "route.response_headers_to_add[0].header.value"
