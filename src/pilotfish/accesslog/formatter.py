"""Envoy's substitution formatter: access-log format strings, JSON formats and the values of
``request_headers_to_add`` / ``response_headers_to_add``. Pure: no I/O.

A format is compiled once: each command becomes a small callable (text, and a typed value for
JSON), and a text format becomes a ``str.format`` template filled with their results.

Output strings are *byte strings in latin-1 form*: each character is one byte, so
``line.encode("latin-1")`` gives exactly the bytes Envoy writes. Header values arrive as bytes
(decoded latin-1); text from the configuration and from StreamInfo (UTF-8 in Envoy) is converted
to the same form. This keeps ``:Z`` truncation byte-exact and lets JSON output escape invalid
UTF-8 the way Envoy does.

Behaviour checked against Envoy 1.40 (see tests/integration/test_accesslog_envoy.py):

- text: a missing value prints ``-`` (``""`` with ``omit_empty_values``); nothing is escaped.
- JSON: keys sorted at every level, no spaces, one object per line; a value that is a single
  command keeps its type (numbers, null, nested metadata); a value that mixes text and commands
  is a string. Integers print as integers; doubles (metadata, numbers in the config) print as
  C++ ``std::to_chars`` does (shortest of fixed and exponent form: ``1e+05``, ``0.001``).
  With ``omit_empty_values`` null values are dropped, and maps left empty are dropped too.
"""

from __future__ import annotations

import math
import operator
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from pilotfish.errors import ConfigError
from pilotfish.stream_info import (
    HeaderLookup,
    StreamInfo,
    response_flags_long,
    response_flags_short,
)

__all__ = [
    "DEFAULT_FORMAT",
    "ISTIO_DEFAULT_FORMAT",
    "FilterStateObject",
    "Formatter",
    "JsonFormatter",
    "TextFormatter",
    "TlsInfo",
    "compile_header_value",
    "compile_json_format",
    "compile_text_format",
    "json_dumps",
]

# Envoy's SubstitutionFormatUtils::DEFAULT_FORMAT (newer docs spell REQ as REQUEST_HEADER; the
# output is the same).
DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
    '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

# Istio's EnvoyTextLogFormat (pilot/pkg/model/telemetry_logging.go), used for
# meshConfig.accessLogFile when no accessLogFormat is set.
ISTIO_DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
    '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
    "%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% '
    '%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" '
    "%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% "
    "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

_DASH = "-"

# A command renders a StreamInfo as text (None: no value) and as a typed JSON value.
TextFn = Callable[[StreamInfo], "str | None"]
ValueFn = Callable[[StreamInfo], Any]


class TlsInfo(Protocol):
    """What the TLS commands read from ``StreamInfo.downstream_tls`` / ``upstream_tls``.

    Strings are empty and sequences empty when unknown (the command then prints ``-``);
    certificate validity times are epoch seconds. Implementations may leave attributes out:
    the formatter reads them with defaults.
    """

    tls_version: str  # "TLSv1.3"
    cipher_suite: str  # "TLS_AES_128_GCM_SHA256"
    session_id: str  # hex
    peer_uri_sans: Sequence[str]
    peer_dns_sans: Sequence[str]
    peer_ip_sans: Sequence[str]
    peer_email_sans: Sequence[str]
    peer_othername_sans: Sequence[str]
    local_uri_sans: Sequence[str]
    local_dns_sans: Sequence[str]
    local_ip_sans: Sequence[str]
    local_email_sans: Sequence[str]
    local_othername_sans: Sequence[str]
    peer_subject: str
    local_subject: str
    peer_issuer: str
    peer_serial: str
    peer_fingerprint_256: str  # hex SHA-256 of the DER certificate
    peer_fingerprint_1: str
    peer_chain_fingerprints_256: Sequence[str]
    peer_chain_fingerprints_1: Sequence[str]
    peer_chain_serials: Sequence[str]
    peer_cert: str  # URL-encoded PEM
    peer_cert_valid_from: float | None
    peer_cert_valid_to: float | None


class FilterStateObject(Protocol):
    """An object in ``StreamInfo.filter_state`` (plain str/int values work too).

    ``serialize_as_value`` (optional) returns the JSON value for ``%FILTER_STATE(KEY:TYPED)%``;
    ``get_field`` (optional) serves ``%FILTER_STATE(KEY:FIELD:NAME)%``.
    """

    def serialize_as_string(self) -> str | None: ...


# --------------------------------------------------------------------------------------------
# Byte strings and JSON, as Envoy renders them


def _wire(s: str) -> str:
    """UTF-8 text -> latin-1 form (one char per byte). ``isascii`` is O(1) in CPython."""
    if s.isascii():
        return s
    return s.encode("utf-8", "surrogatepass").decode("latin-1")


# Json::sanitize: valid UTF-8 goes through nlohmann (short escapes, \u00xx for other control
# characters, non-ASCII kept); invalid UTF-8 gets \u00xx for every byte that needs care.
_ESCAPE_UTF8 = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESCAPE_UTF8.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPE_UTF8.update({0x22: '\\"', 0x5C: "\\\\"})
_ESCAPE_BYTES = {c: f"\\u{c:04x}" for c in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}


def json_escape(s: str) -> str:
    """The inside of a JSON string for ``s`` (latin-1 form), as Envoy's Json::sanitize."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return s  # the common case
    try:
        raw = s.encode("latin-1")
    except UnicodeEncodeError:  # a str that was never converted: treat it as UTF-8 text
        s = _wire(s)
        raw = s.encode("latin-1")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return s.translate(_ESCAPE_BYTES)
    return s.translate(_ESCAPE_UTF8)


def json_double(x: float) -> str:
    """A double as Envoy prints it (std::to_chars, shortest round trip): the shorter of the
    fixed and the exponent form, fixed on a tie; integral values in fixed form are exact."""
    if math.isnan(x):
        return "null"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    sign = "-" if x < 0 or (x == 0 and str(x).startswith("-")) else ""
    _, digit_tuple, exp = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exp, int)
    sci_exp = exp + len(digits) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sci = f"{mantissa}e{'-' if sci_exp < 0 else '+'}{abs(sci_exp):02d}"
    if exp >= 0:
        fixed = str(int(abs(x)))
    elif len(digits) + exp > 0:
        fixed = digits[: len(digits) + exp] + "." + digits[len(digits) + exp :]
    else:
        fixed = "0." + "0" * -(len(digits) + exp) + digits
    return sign + (fixed if len(fixed) <= len(sci) else sci)


def json_dumps(v: Any) -> str:
    """Compact JSON with sorted keys, as Envoy's Json::Utility (strings in latin-1 form)."""
    if v is None:
        return "null"
    t = v.__class__
    if t is str:
        return '"' + json_escape(v) + '"'
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return json_double(v)
    if isinstance(v, dict):
        return (
            "{" + ",".join(f'"{json_escape(str(k))}":{json_dumps(v[k])}' for k in sorted(v)) + "}"
        )
    if isinstance(v, list | tuple):
        return "[" + ",".join(json_dumps(x) for x in v) + "]"
    return '"' + json_escape(_wire(str(v))) + '"'


def _proto_value(v: Any) -> Any:
    """A metadata value as a protobuf Value would hold it: numbers are doubles, text is bytes."""
    if v is None or v is True or v is False:
        return v
    if isinstance(v, str):
        return _wire(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, dict):
        return {_wire(str(k)): _proto_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_proto_value(x) for x in v]
    return _wire(str(v))


# --------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True, slots=True)
class _Command:
    """``text`` renders the value as text (None: no value). ``value`` gives the typed JSON value;
    without it the JSON value is the text as a string (most commands). ``is_int``: the value is
    an int or None, which JSON output can render without inspecting it."""

    text: TextFn
    value: ValueFn | None = None
    is_int: bool = False


# Builds a command from its (SUBCOMMAND, LENGTH); the str is the config path for errors.
Builder = Callable[[str, "int | None", str], _Command]


def _field(name: str, default: Any = "") -> Callable[[StreamInfo], Any]:
    """A fast getter for a StreamInfo attribute. Attributes StreamInfo does not declare (yet)
    are read with a default, so a subclass or a later version can provide them."""
    if hasattr(StreamInfo, name):
        return operator.attrgetter(name)
    return lambda info: getattr(info, name, default)


def _string_command(get: Callable[[StreamInfo], str]) -> _Command:
    """A string field; empty means no value."""

    def text(info: StreamInfo) -> str | None:
        s = get(info)
        if not s:
            return None
        return s if s.isascii() else _wire(s)

    return _Command(text)


def _int_command(get: Callable[[StreamInfo], int]) -> _Command:
    return _Command(lambda info: str(get(info)), get, is_int=True)


def _attr_string(name: str) -> _Command:
    return _string_command(_field(name))


def _attr_int(name: str) -> _Command:
    return _int_command(_field(name, 0))


# -- durations ---------------------------------------------------------------------------------

MonoFn = Callable[[StreamInfo], "float | None"]


def _elapsed(
    start: MonoFn, end: MonoFn, unit_ns: int = 1_000_000
) -> Callable[[StreamInfo], int | None]:
    """Whole units from ``start`` to ``end`` (monotonic seconds), truncated as Envoy's
    duration_cast; None if either is unknown or the span is negative."""

    def get(info: StreamInfo) -> int | None:
        b = start(info)
        e = end(info)
        if b is None or e is None or e < b:
            return None
        return round((e - b) * 1e9) // unit_ns

    return get


def _optional_int_command(get: Callable[[StreamInfo], int | None]) -> _Command:
    """Durations and other numbers that may be unknown (``-`` / null)."""

    def text(info: StreamInfo) -> str | None:
        v = get(info)
        return None if v is None else str(v)

    return _Command(text, get, is_int=True)


_start: MonoFn = operator.attrgetter("start_monotonic")


def _mono(name: str) -> MonoFn:
    return _field(name, None)


def _duration(info: StreamInfo) -> int | None:
    """%DURATION%: to the end of the stream, or to now while it is still open."""
    end = info.end_monotonic
    span = (time.monotonic() if end is None else end) - info.start_monotonic
    return None if span < 0 else round(span * 1e9) // 1_000_000


# %COMMON_DURATION(START:END[:PRECISION])% time points.
_TIME_POINTS: dict[str, MonoFn] = {
    "DS_RX_BEG": _start,
    "DS_RX_END": _mono("last_downstream_rx"),
    "US_CX_BEG": _mono("upstream_connect_start"),
    "US_CX_END": _mono("upstream_connect_complete"),
    "US_HS_END": _mono("upstream_handshake_complete"),
    "US_TX_BEG": _mono("first_upstream_tx"),
    "US_TX_END": _mono("last_upstream_tx"),
    "US_RX_BEG": _mono("first_upstream_rx"),
    "US_RX_BODY_BEG": _mono("first_upstream_rx_body"),
    "US_RX_END": _mono("last_upstream_rx"),
    "DS_HS_END": _mono("downstream_handshake_complete"),
    "DS_TX_BEG": _mono("first_downstream_tx"),
    "DS_TX_END": _mono("last_downstream_tx"),
}
_PRECISION_NS = {"ms": 1_000_000, "us": 1_000, "ns": 1}


def _common_duration(sub: str, max_len: int | None, path: str) -> _Command:
    parts = sub.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(path, f"Invalid common duration configuration: {sub}.")
    unit = parts[2] if len(parts) == 3 else "ms"
    if unit not in _PRECISION_NS:
        raise ConfigError(path, f"Invalid common duration precision: {unit}.")

    def point(name: str) -> MonoFn:
        # Custom names are timings recorded by filters (none in pilotfish yet).
        return _TIME_POINTS.get(name) or (lambda info: None)

    return _optional_int_command(_elapsed(point(parts[0]), point(parts[1]), _PRECISION_NS[unit]))


def _response_tx(info: StreamInfo) -> int | None:
    return _elapsed(_mono("first_upstream_rx"), _mono("last_downstream_tx"))(info)


# -- addresses -----------------------------------------------------------------------------------


def _split_host_port(addr: str) -> tuple[str, str | None]:
    """``1.2.3.4:80`` / ``[::1]:80`` -> host, port; a pipe path has no port."""
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]:")
        return host, port
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return addr, None
    return host, port


def _address_commands(get: Callable[[StreamInfo], str]) -> tuple[_Command, _Command, _Command]:
    """With port, without port, and just the port (a number in JSON)."""

    def with_port(info: StreamInfo) -> str | None:
        return get(info) or None

    def without_port(info: StreamInfo) -> str | None:
        addr = get(info)
        return _split_host_port(addr)[0] if addr else None

    def port_text(info: StreamInfo) -> str | None:
        addr = get(info)
        if not addr:
            return None
        return _split_host_port(addr)[1] or ""  # Envoy prints "" for a non-IP address

    def port_value(info: StreamInfo) -> int | None:
        addr = get(info)
        port = _split_host_port(addr)[1] if addr else None
        return int(port) if port else None

    return (
        _Command(with_port),
        _Command(without_port),
        _Command(port_text, port_value, is_int=True),
    )


def _upstream_remote(info: StreamInfo) -> str:
    return getattr(info, "upstream_remote_address", "") or info.upstream_host


def _upstream_host_name(info: StreamInfo) -> str:
    return getattr(info, "upstream_host_name", "") or info.upstream_host


def _strip_port(host: str) -> str:
    """Http::HeaderUtility::stripPortFromHost."""
    if host.endswith("]") or ":" not in host:
        return host
    head, _, port = host.rpartition(":")
    if not port.isdigit() or (":" in head and not head.endswith("]")):
        return host
    return head


# -- text fields that Envoy cleans up -------------------------------------------------------------

_WHITESPACE_TO_UNDERSCORE = str.maketrans({c: "_" for c in " \t\f\v\n\r"})


def _response_code_details(sub: str, max_len: int | None, path: str) -> _Command:
    if sub == "ALLOW_WHITESPACES":
        return _attr_string("response_code_details")

    def details(info: StreamInfo) -> str:
        s = info.response_code_details
        if s.isprintable() and " " not in s:  # the other whitespace is not printable
            return s
        return s.translate(_WHITESPACE_TO_UNDERSCORE)

    return _string_command(details)


def _sanitize_hostname(name: str) -> str:
    """StringUtil::sanitizeInvalidHostname."""
    if not name or (name.isascii() and name.replace(".", "").replace("-", "").isalnum()):
        return name
    clean = "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "_" for c in name)
    return name if clean == name else "invalid:" + clean


# -- times ---------------------------------------------------------------------------------------

_UTC_DEFAULT = "%Y-%m-%dT%H:%M:%S.%3fZ"
_LOCAL_DEFAULT = "%Y-%m-%dT%H:%M:%S.%3f%z"
_NEWLINE_SPEC = re.compile(r"%[-_0^#]*[1-9]*(E|O)?n")


def _split_specials(spec: str) -> list[tuple[str, Any]]:
    """Split out %s and %[1-9]f / %f the way Envoy's DateFormatter finds them (a plain search
    for each, so ``%%s`` is ``%`` followed by the epoch)."""
    out: list[tuple[str, Any]] = []
    lit_start = i = 0
    n = len(spec)
    while (i := spec.find("%", i)) >= 0 and i + 1 < n:
        c = spec[i + 1]
        token: tuple[str, int | None]
        if c == "s":
            token, width = ("epoch", None), 2
        elif c == "f":
            token, width = ("frac", 9), 2
        elif c in "123456789" and i + 2 < n and spec[i + 2] == "f":
            token, width = ("frac", int(c)), 3
        else:
            i += 1
            continue
        if i > lit_start:
            out.extend(_split_zone(spec[lit_start:i]))
        out.append(token)
        i += width
        lit_start = i
    if lit_start < n:
        out.extend(_split_zone(spec[lit_start:]))
    return out


def _split_zone(spec: str) -> list[tuple[str, Any]]:
    """Envoy formats the rest with absl::FormatTime: %Z is "UTC" and %Ez / %E*z are
    ``+00:00`` / ``+00:00:00`` forms, which libc's strftime does not produce."""
    out: list[tuple[str, Any]] = []
    lit_start = i = 0
    while (i := spec.find("%", i)) >= 0:
        rest = spec[i + 1 : i + 4]
        if rest.startswith("%"):
            i += 2
            continue
        for token, kind in (("Z", "zname"), ("Ez", "ezone"), ("E*z", "ezone_sec")):
            if rest.startswith(token):
                if i > lit_start:
                    out.append(("strftime", spec[lit_start:i]))
                out.append((kind, None))
                i += 1 + len(token)
                lit_start = i
                break
        else:
            i += 1
    if lit_start < len(spec):
        out.append(("strftime", spec[lit_start:]))
    return out


def _utc_offset(seconds: int, with_seconds: bool) -> str:
    sign = "-" if seconds < 0 else "+"
    h, rem = divmod(abs(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{h:02d}:{m:02d}" + (f":{s:02d}" if with_seconds else "")


class _TimeFormat:
    """strftime plus Envoy's %f / %Nf / %s, caching the part that changes once a second."""

    __slots__ = ("_cache", "_cache_sec", "_local", "_segments")

    def __init__(self, spec: str, local: bool) -> None:
        self._segments = _split_specials(spec or (_LOCAL_DEFAULT if local else _UTC_DEFAULT))
        self._local = local
        self._cache_sec: int | None = None
        self._cache: list[str | int] = []

    def __call__(self, epoch: float) -> str:
        us = round(epoch * 1_000_000)  # StreamInfo times have microsecond precision
        sec, frac_us = divmod(us, 1_000_000)
        if sec != self._cache_sec:
            self._cache = self._per_second(sec)
            self._cache_sec = sec
        parts = self._cache
        if len(parts) == 1:
            return parts[0]  # type: ignore[return-value]
        frac = f"{frac_us:06d}000"
        if len(parts) == 3:  # the usual "...%S.%3f..." shape
            head, n, tail = parts
            return f"{head}{frac[:n]}{tail}"  # type: ignore[index]
        return "".join(p if isinstance(p, str) else frac[:p] for p in parts)

    def _per_second(self, sec: int) -> list[str | int]:
        """The rendering of one second: text, with the digit count of each fraction."""
        tm = time.localtime(sec) if self._local else time.gmtime(sec)
        offset = tm.tm_gmtoff if self._local else 0
        parts: list[str | int] = [""]
        for kind, arg in self._segments:
            if kind == "frac":
                parts += [arg, ""]  # filled in per call
                continue
            if kind == "epoch":
                text = str(sec)
            elif kind == "zname":
                text = tm.tm_zone if self._local else "UTC"
            elif kind in ("ezone", "ezone_sec"):
                text = _utc_offset(offset, kind == "ezone_sec")
            else:
                text = _wire(time.strftime(arg, tm))
            parts[-1] += text  # type: ignore[operator]
        return parts


def _time_command(get: Callable[[StreamInfo], float | None], local: bool = False) -> Builder:
    def build(sub: str, max_len: int | None, path: str) -> _Command:
        if _NEWLINE_SPEC.search(sub):
            raise ConfigError(path, "Invalid header configuration. Format string contains newline.")
        fmt = _TimeFormat(_wire(sub), local)

        def text(info: StreamInfo) -> str | None:
            t = get(info)
            return None if t is None else fmt(t)

        return _Command(text)

    return build


def _tls_time(side: str, attr: str) -> Callable[[StreamInfo], float | None]:
    def get(info: StreamInfo) -> float | None:
        tls = getattr(info, side)
        return None if tls is None else getattr(tls, attr, None)

    return get


# -- headers -------------------------------------------------------------------------------------

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_HEADER_ALIASES = {b"host": b":authority"}  # Envoy's header map stores Host as :authority


def _valid_header_name(name: str) -> bool:
    """Http::HeaderUtility::headerNameIsValid on the lower-cased name ("" is allowed)."""
    if name.startswith(":"):
        return len(name) > 1 and all(c in _TCHAR for c in name[1:])
    return all(c in _TCHAR for c in name)


def _parse_headers(sub: str, path: str) -> tuple[bytes, bytes]:
    names = sub.split("?")
    if len(names) > 2:
        raise ConfigError(path, f"More than 1 alternative header specified in token: {sub}")
    main, alt = [*names, ""][:2]
    if not (_valid_header_name(main.lower()) and _valid_header_name(alt.lower())):
        raise ConfigError(
            path, "Invalid header configuration. Format string contains invalid characters."
        )
    return main.lower().encode(), alt.lower().encode()


def _lookup(headers: HeaderLookup | None, name: bytes) -> bytes | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and name in _HEADER_ALIASES:
        value = headers.get(_HEADER_ALIASES[name])
    return value


def _header_command(attr: str, *, strip_query: bool = False) -> Builder:
    """%REQ(NAME?ALTERNATIVE):Z% and friends, reading the header map ``info.<attr>``."""

    def build(sub: str, max_len: int | None, path: str) -> _Command:
        main, alt = _parse_headers(sub, path)
        names = tuple(
            n for name in (main, alt) if name for n in (name, _HEADER_ALIASES.get(name)) if n
        )

        def text(info: StreamInfo) -> str | None:
            headers = getattr(info, attr)
            if headers is None:
                return None
            for name in names:
                raw = headers.get(name)
                if raw is not None:
                    break
            else:
                return None
            s = raw.decode("latin-1")
            if strip_query:
                s = s.partition("?")[0]
            return s if max_len is None else s[:max_len]

        return _Command(text)

    return build


def _headers_bytes(attr: str) -> _Command:
    """HeaderMap::byteSize (names plus values); header maps may offer ``byte_size()``."""

    def get(info: StreamInfo) -> int:
        size = getattr(getattr(info, attr), "byte_size", None)
        return int(size()) if size is not None else 0

    return _int_command(get)


# gRPC status names: Grpc::Utility::grpcStatusToString and absl::StatusCodeToString.
_GRPC_CAMEL = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)
_GRPC_SNAKE = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


def _grpc_status(info: StreamInfo) -> int | None:
    """Grpc::Common::getGrpcStatus: trailers, then headers, then inferred from the HTTP code;
    only for gRPC requests."""
    ct = _lookup(info.request_headers, b"content-type")
    if ct is None or not ct.startswith(b"application/grpc"):
        return None
    for headers in (info.response_trailers, info.response_headers):
        raw = _lookup(headers, b"grpc-status")
        if raw is not None:
            return int(raw) if raw.isdigit() else None
    if info.response_code:
        return _HTTP_TO_GRPC.get(info.response_code, 2)
    return None


def _grpc_command(sub: str, max_len: int | None, path: str) -> _Command:
    if sub not in ("", "CAMEL_STRING", "SNAKE_STRING", "NUMBER"):
        raise ConfigError(
            path,
            f"GrpcStatusFormatter only supports CAMEL_STRING, SNAKE_STRING or NUMBER. Got: {sub}",
        )
    if sub == "NUMBER":
        return _optional_int_command(_grpc_status)
    names = _GRPC_SNAKE if sub == "SNAKE_STRING" else _GRPC_CAMEL

    def text(info: StreamInfo) -> str | None:
        code = _grpc_status(info)
        if code is None:
            return None
        return names[code] if code < len(names) else str(code)

    return _Command(text)


# -- metadata and filter state ---------------------------------------------------------------------


def _metadata_command(which: Callable[[StreamInfo], dict[str, Any] | None]) -> Builder:
    """%DYNAMIC_METADATA(NS:KEY:...)%: the value at the path; strings print raw, anything else
    as JSON. ``:Z`` truncates the text, and the JSON value only when it is a string."""

    def build(sub: str, max_len: int | None, path: str) -> _Command:
        namespace, *keys = sub.split(":")

        def value(info: StreamInfo) -> Any:
            md = which(info)
            v: Any = md.get(namespace) if md else None
            for key in keys:
                if not isinstance(v, dict):
                    return None
                v = v.get(key)
            if v is None:
                return None
            v = _proto_value(v)
            if max_len is not None and v.__class__ is str:
                return v[:max_len]
            return v

        def text(info: StreamInfo) -> str | None:
            v = value(info)
            if v is None:
                return None
            s = v if v.__class__ is str else json_dumps(v)
            return s if max_len is None else s[:max_len]

        return _Command(text, value)

    return build


def _filter_state_command(sub: str, max_len: int | None, path: str) -> _Command:
    key, _, rest = sub.partition(":")
    kind, _, field = rest.partition(":")
    if not key:
        raise ConfigError(path, "Invalid filter state configuration, key cannot be empty.")
    kind = kind or "TYPED"
    if kind not in ("PLAIN", "TYPED", "FIELD"):
        raise ConfigError(
            path, "Invalid filter state serialize type, only support PLAIN/TYPED/FIELD."
        )
    if (kind == "FIELD") != bool(field):
        raise ConfigError(
            path, "Invalid filter state serialize type, FIELD should be used with the field name."
        )

    def lookup(info: StreamInfo) -> Any:
        return info.filter_state.get(key) if info.filter_state else None

    def cut(s: str) -> str:
        return s if max_len is None else s[:max_len]

    if kind == "PLAIN":

        def plain(info: StreamInfo) -> str | None:
            s = _plain(lookup(info))
            return None if s is None else cut(_wire(s))

        return _Command(plain)
    if kind == "FIELD":

        def by_field(info: StreamInfo) -> str | None:
            get_field = getattr(lookup(info), "get_field", None)
            v = get_field(field) if get_field is not None else None
            return None if v is None else cut(_wire(str(v)))

        return _Command(by_field)

    def typed_value(info: StreamInfo) -> Any:  # not truncated, as Envoy
        return _typed(lookup(info))

    def typed_text(info: StreamInfo) -> str | None:
        v = typed_value(info)
        return None if v is None else cut(json_dumps(v))

    return _Command(typed_text, typed_value)


def _plain(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    serialize = getattr(obj, "serialize_as_string", None)
    if serialize is not None:
        result: str | None = serialize()
        return result
    if isinstance(obj, int) and not isinstance(obj, bool):
        return str(obj)
    return None


def _typed(obj: Any) -> Any:
    if obj is None:
        return None
    serialize = getattr(obj, "serialize_as_value", None)
    if serialize is not None:
        return _proto_value(serialize())
    if isinstance(obj, str | int | float | dict | list):  # bool is an int
        return _proto_value(obj)
    return None


# -- TLS -------------------------------------------------------------------------------------------


def _tls_command(side: str, attr: str) -> _Command:
    """A TLS connection property; empty values and plain-text connections print ``-``."""

    def text(info: StreamInfo) -> str | None:
        tls = getattr(info, side)
        if tls is None:
            return None
        v = getattr(tls, attr, "")
        if not isinstance(v, str):
            v = ",".join(v)
        return _wire(v) if v else None

    return _Command(text)


_TLS_ATTRS = {
    "PEER_URI_SAN": "peer_uri_sans",
    "PEER_DNS_SAN": "peer_dns_sans",
    "PEER_IP_SAN": "peer_ip_sans",
    "PEER_EMAIL_SAN": "peer_email_sans",
    "PEER_OTHERNAME_SAN": "peer_othername_sans",
    "LOCAL_URI_SAN": "local_uri_sans",
    "LOCAL_DNS_SAN": "local_dns_sans",
    "LOCAL_IP_SAN": "local_ip_sans",
    "LOCAL_EMAIL_SAN": "local_email_sans",
    "LOCAL_OTHERNAME_SAN": "local_othername_sans",
    "PEER_SUBJECT": "peer_subject",
    "LOCAL_SUBJECT": "local_subject",
    "TLS_SESSION_ID": "session_id",
    "TLS_CIPHER": "cipher_suite",
    "TLS_VERSION": "tls_version",
    "PEER_FINGERPRINT_256": "peer_fingerprint_256",
    "PEER_FINGERPRINT_1": "peer_fingerprint_1",
    "PEER_SERIAL": "peer_serial",
    "PEER_CHAIN_FINGERPRINTS_256": "peer_chain_fingerprints_256",
    "PEER_CHAIN_FINGERPRINTS_1": "peer_chain_fingerprints_1",
    "PEER_CHAIN_SERIALS": "peer_chain_serials",
    "PEER_ISSUER": "peer_issuer",
    "PEER_CERT": "peer_cert",
}
# Envoy offers fewer of them on the upstream side.
_UPSTREAM_TLS = (
    "TLS_CIPHER",
    "TLS_VERSION",
    "TLS_SESSION_ID",
    "PEER_ISSUER",
    "PEER_CERT",
    "PEER_SUBJECT",
    "PEER_URI_SAN",
    "PEER_DNS_SAN",
    "PEER_IP_SAN",
    "LOCAL_URI_SAN",
    "LOCAL_DNS_SAN",
    "LOCAL_IP_SAN",
)


# -- the table ---------------------------------------------------------------------------------

# CommandSyntaxChecker flags.
_COMMAND_ONLY = 0
_PARAMS_REQUIRED = 1
_PARAMS_OPTIONAL = 2
_LENGTH_ALLOWED = 4


def _fixed(command: _Command) -> Builder:
    return lambda sub, max_len, path: command


def _environment(sub: str, max_len: int | None, path: str) -> _Command:
    # Read once, when the format is compiled (as Envoy does); missing prints "-" even in JSON.
    env = os.environ.get(sub)
    value = _DASH if env is None else _wire(env)[:max_len]
    return _Command(lambda info: value)


def _hostname() -> _Command:
    name = _wire(socket.gethostname()) or None
    return _Command(lambda info: name)


def _unique_id(info: StreamInfo) -> str:
    return str(uuid.uuid4())


def _build_table() -> dict[str, tuple[int, Builder]]:
    t: dict[str, tuple[int, Builder]] = {}

    def add(name: str, command: _Command) -> None:
        t[name] = (_COMMAND_ONLY, _fixed(command))

    # Durations, in milliseconds from the start of the stream.
    add("DURATION", _optional_int_command(_duration))
    add("REQUEST_DURATION", _optional_int_command(_elapsed(_start, _mono("last_downstream_rx"))))
    add("REQUEST_TX_DURATION", _optional_int_command(_elapsed(_start, _mono("last_upstream_tx"))))
    add("RESPONSE_DURATION", _optional_int_command(_elapsed(_start, _mono("first_upstream_rx"))))
    add("RESPONSE_TX_DURATION", _optional_int_command(_response_tx))
    add(
        "DOWNSTREAM_HANDSHAKE_DURATION",
        _optional_int_command(_elapsed(_start, _mono("downstream_handshake_complete"))),
    )
    add("ROUNDTRIP_DURATION", _optional_int_command(lambda info: None))  # QUIC only
    t["COMMON_DURATION"] = (_PARAMS_REQUIRED, _common_duration)

    # Byte counts.
    for name, attr in (
        ("BYTES_RECEIVED", "bytes_received"),
        ("BYTES_SENT", "bytes_sent"),
        ("UPSTREAM_WIRE_BYTES_SENT", "upstream_bytes_sent"),
        ("UPSTREAM_WIRE_BYTES_RECEIVED", "upstream_bytes_received"),
        ("UPSTREAM_HEADER_BYTES_SENT", "upstream_header_bytes_sent"),
        ("UPSTREAM_HEADER_BYTES_RECEIVED", "upstream_header_bytes_received"),
        ("DOWNSTREAM_HEADER_BYTES_SENT", "downstream_header_bytes_sent"),
        ("DOWNSTREAM_HEADER_BYTES_RECEIVED", "downstream_header_bytes_received"),
    ):
        add(name, _attr_int(attr))
    add("DOWNSTREAM_WIRE_BYTES_SENT", _attr_int("downstream_wire_bytes_sent"))
    add("DOWNSTREAM_WIRE_BYTES_RECEIVED", _attr_int("downstream_wire_bytes_received"))
    add("REQUEST_HEADERS_BYTES", _headers_bytes("request_headers"))
    add("RESPONSE_HEADERS_BYTES", _headers_bytes("response_headers"))
    add("RESPONSE_TRAILERS_BYTES", _headers_bytes("response_trailers"))

    # Protocol, response, flags.
    add("PROTOCOL", _attr_string("protocol"))
    add("UPSTREAM_PROTOCOL", _attr_string("upstream_protocol"))
    add("RESPONSE_CODE", _attr_int("response_code"))
    t["RESPONSE_CODE_DETAILS"] = (_PARAMS_OPTIONAL, _response_code_details)
    add("CONNECTION_TERMINATION_DETAILS", _attr_string("connection_termination_details"))
    # In the order they were set, as Envoy prints them.
    flags = lambda info: response_flags_short(  # noqa: E731
        info.response_flags, info.response_flag_order
    )
    add("RESPONSE_FLAGS", _Command(flags))
    flags_long = lambda info: response_flags_long(  # noqa: E731
        info.response_flags, info.response_flag_order
    )
    add("RESPONSE_FLAGS_LONG", _Command(flags_long))
    t["GRPC_STATUS"] = (_PARAMS_OPTIONAL, _grpc_command)
    add("GRPC_STATUS_NUMBER", _grpc_command("NUMBER", None, ""))
    reply_body = lambda info: _wire(getattr(info, "local_reply_body", ""))  # noqa: E731
    add("LOCAL_REPLY_BODY", _Command(reply_body))  # "" (not "-") when none
    access_log_type = lambda info: getattr(info, "access_log_type", "NotSet")  # noqa: E731
    add("ACCESS_LOG_TYPE", _Command(access_log_type))

    # Upstream.
    add("UPSTREAM_HOST", _address_commands(_field("upstream_host"))[0])
    add("UPSTREAM_HOST_NAME", _string_command(_upstream_host_name))
    add(
        "UPSTREAM_HOST_NAME_WITHOUT_PORT",
        _string_command(lambda info: _strip_port(_upstream_host_name(info))),
    )
    add(
        "UPSTREAM_CLUSTER",
        _string_command(
            lambda info: (
                getattr(info, "upstream_cluster_observability_name", "") or info.upstream_cluster
            )
        ),
    )
    add("UPSTREAM_CLUSTER_RAW", _attr_string("upstream_cluster"))
    add("UPSTREAM_REQUEST_ATTEMPT_COUNT", _attr_int("upstream_request_attempt_count"))
    add("UPSTREAM_CONNECTION_ID", _attr_int("upstream_connection_id"))
    add(
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        _string_command(lambda info: info.upstream_transport_failure_reason.replace(" ", "_")),
    )

    # Addresses.
    for prefix, get in (
        ("UPSTREAM_LOCAL", _field("upstream_local_address")),
        ("UPSTREAM_REMOTE", _upstream_remote),
        ("DOWNSTREAM_REMOTE", _field("downstream_remote_address")),
        ("DOWNSTREAM_DIRECT_REMOTE", _field("downstream_direct_remote_address")),
        ("DOWNSTREAM_LOCAL", _field("downstream_local_address")),
        (
            "DOWNSTREAM_DIRECT_LOCAL",
            lambda info: (
                getattr(info, "downstream_direct_local_address", "")
                or info.downstream_local_address
            ),
        ),
    ):
        full, no_port, port = _address_commands(get)
        add(f"{prefix}_ADDRESS", full)
        add(f"{prefix}_ADDRESS_WITHOUT_PORT", no_port)
        add(f"{prefix}_PORT", port)
    add(
        "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
        _string_command(
            lambda info: getattr(info, "downstream_transport_failure_reason", "").replace(" ", "_")
        ),
    )

    # Names and ids.
    add(
        "REQUESTED_SERVER_NAME",
        _string_command(lambda info: _sanitize_hostname(info.requested_server_name)),
    )
    add("ROUTE_NAME", _attr_string("route_name"))
    add("VIRTUAL_CLUSTER_NAME", _attr_string("virtual_cluster_name"))
    add("FILTER_CHAIN_NAME", _attr_string("filter_chain_name"))
    add("CONNECTION_ID", _attr_int("connection_id"))
    add("STREAM_ID", _attr_string("request_id"))  # Envoy's stream id is the request id
    add("UNIQUE_ID", _Command(_unique_id))
    t["HOSTNAME"] = (_COMMAND_ONLY, lambda sub, max_len, path: _hostname())

    # Headers.
    for names, attr in (
        (("REQ", "REQUEST_HEADER"), "request_headers"),
        (("RESP", "RESPONSE_HEADER"), "response_headers"),
        (("TRAILER", "RESPONSE_TRAILER"), "response_trailers"),
    ):
        for name in names:
            t[name] = (_PARAMS_REQUIRED | _LENGTH_ALLOWED, _header_command(attr))

    # Times.
    start_time = lambda info: info.start_time  # noqa: E731
    t["START_TIME"] = (_PARAMS_OPTIONAL, _time_command(start_time))
    t["START_TIME_LOCAL"] = (_PARAMS_OPTIONAL, _time_command(start_time, local=True))
    emit_time = lambda info: time.time()  # noqa: E731
    t["EMIT_TIME"] = (_PARAMS_OPTIONAL, _time_command(emit_time))
    t["EMIT_TIME_LOCAL"] = (_PARAMS_OPTIONAL, _time_command(emit_time, local=True))
    for side in ("DOWNSTREAM", "UPSTREAM"):
        attr = f"{side.lower()}_tls"
        t[f"{side}_PEER_CERT_V_START"] = (
            _PARAMS_OPTIONAL,
            _time_command(_tls_time(attr, "peer_cert_valid_from")),
        )
        t[f"{side}_PEER_CERT_V_END"] = (
            _PARAMS_OPTIONAL,
            _time_command(_tls_time(attr, "peer_cert_valid_to")),
        )

    # Metadata, filter state, environment.
    t["DYNAMIC_METADATA"] = (
        _PARAMS_REQUIRED | _LENGTH_ALLOWED,
        _metadata_command(lambda info: info.dynamic_metadata),
    )
    t["CLUSTER_METADATA"] = (
        _PARAMS_REQUIRED,
        _metadata_command(_field("upstream_cluster_metadata", None)),
    )
    t["UPSTREAM_METADATA"] = (
        _PARAMS_REQUIRED,
        _metadata_command(_field("upstream_host_metadata", None)),
    )
    t["FILTER_STATE"] = (_PARAMS_OPTIONAL | _LENGTH_ALLOWED, _filter_state_command)
    t["ENVIRONMENT"] = (_PARAMS_REQUIRED | _LENGTH_ALLOWED, _environment)

    # TLS.
    for suffix, attr in _TLS_ATTRS.items():
        add(f"DOWNSTREAM_{suffix}", _tls_command("downstream_tls", attr))
    for suffix in _UPSTREAM_TLS:
        add(f"UPSTREAM_{suffix}", _tls_command("upstream_tls", _TLS_ATTRS[suffix]))
    return t


_COMMANDS = _build_table()

# Commands that an extension in SubstitutionFormatString.formatters adds.
_EXTENSION_COMMANDS: dict[str, tuple[int, Builder]] = {
    "REQ_WITHOUT_QUERY": (
        _PARAMS_REQUIRED | _LENGTH_ALLOWED,
        _header_command("request_headers", strip_query=True),
    ),
}

# Envoy 1.40 commands that pilotfish does not implement: a clear error rather than Envoy's
# "Not supported field" (which would suggest a typo).
_NOT_IMPLEMENTED = frozenset(
    {
        "METADATA",
        "CEL",
        "QUERY_PARAM",
        "PATH",
        "TRACE_ID",
        "SPAN_ID",
        "XFCC_VALUE",
        "STREAM_INFO_REQ",
        "UPSTREAM_FILTER_STATE",
        "CUSTOM_FLAGS",
        "TLS_JA3_FINGERPRINT",
        "TLS_JA4_FINGERPRINT",
        "BYTES_RETRANSMITTED",
        "PACKETS_RETRANSMITTED",
        "UPSTREAM_CONNECTION_POOL_READY_DURATION",
        "UPSTREAM_DETECTED_CLOSE_TYPE",
        "DOWNSTREAM_DETECTED_CLOSE_TYPE",
        "UPSTREAM_LOCAL_CLOSE_REASON",
        "UPSTREAM_DECOMPRESSED_HEADER_BYTES_SENT",
        "UPSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED",
        "DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_SENT",
        "DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED",
    }
)


# --------------------------------------------------------------------------------------------
# Parsing

# Envoy's commandWithArgsRegex: %COMMAND(SUBCOMMAND):LENGTH% (compile time only).
_COMMAND_RE = re.compile(r"%([A-Z0-9_]+)(?:\((.*?)\))?(?::([0-9]+))?%")
_SIZE_MAX = 2**64 - 1

Piece = str | _Command


def _parse(fmt: str, path: str, extra_commands: Collection[str] = ()) -> list[Piece]:
    """SubstitutionFormatParser::parse: literal text (``%%`` is ``%``) and commands."""
    pieces: list[Piece] = []
    literal: list[str] = []
    pos = 0
    while pos < len(fmt):
        pct = fmt.find("%", pos)
        if pct < 0:
            literal.append(fmt[pos:])
            break
        literal.append(fmt[pos:pct])
        if fmt.startswith("%%", pct):
            literal.append("%")
            pos = pct + 2
            continue
        m = _COMMAND_RE.match(fmt, pct)
        if m is None or (m.group(3) is not None and int(m.group(3)) > _SIZE_MAX):
            raise ConfigError(
                path,
                f"Incorrect configuration: {fmt}. Couldn't find valid command at position {pct}",
            )
        if any(literal):
            pieces.append(_wire("".join(literal)))
        literal = []
        name, sub, length = m.group(1), m.group(2) or "", m.group(3)
        pieces.append(
            _command(name, sub, None if length is None else int(length), path, extra_commands)
        )
        pos = m.end()
    if any(literal) or not pieces:
        pieces.append(_wire("".join(literal)))
    return pieces


def _command(
    name: str, sub: str, max_len: int | None, path: str, extra_commands: Collection[str]
) -> _Command:
    entry = _COMMANDS.get(name)
    if entry is None and name in extra_commands:
        entry = _EXTENSION_COMMANDS.get(name)
    if entry is None:
        if name in _NOT_IMPLEMENTED:
            raise ConfigError(path, f"%{name}% is not supported by pilotfish")
        raise ConfigError(path, f"Not supported field in StreamInfo: {name}")
    flags, build = entry
    # CommandSyntaxChecker::verifySyntax
    if flags == _COMMAND_ONLY and (sub or max_len is not None):
        raise ConfigError(path, f"{name} does not take any parameters or length")
    if flags & _PARAMS_REQUIRED and not sub:
        raise ConfigError(path, f"{name} requires parameters")
    if not flags & _LENGTH_ALLOWED and max_len is not None:
        raise ConfigError(path, f"{name} does not allow length to be specified.")
    return build(sub, max_len, path)


# --------------------------------------------------------------------------------------------
# Formatters


class Formatter:
    """A compiled format. ``format(info)`` returns the line as a str in latin-1 form."""

    __slots__ = ()

    def format(self, info: StreamInfo) -> str:
        raise NotImplementedError


class TextFormatter(Formatter):
    """The literal text becomes a ``str.format`` template with one field per command."""

    __slots__ = ("_empty", "_fns", "_template")

    def __init__(self, pieces: Sequence[Piece], empty: str) -> None:
        self._template = "".join(
            p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}" for p in pieces
        )
        self._fns = tuple(p.text for p in pieces if not isinstance(p, str))
        self._empty = empty

    def format(self, info: StreamInfo) -> str:
        empty = self._empty
        return self._template.format(*[empty if (v := f(info)) is None else v for f in self._fns])


def compile_text_format(
    fmt: str,
    path: str = "",
    *,
    omit_empty_values: bool = False,
    extra_commands: Collection[str] = (),
) -> TextFormatter:
    """A text format; missing values print ``-`` (``""`` with ``omit_empty_values``).
    ``extra_commands`` enables commands of formatter extensions (``REQ_WITHOUT_QUERY``)."""
    return TextFormatter(_parse(fmt, path, extra_commands), "" if omit_empty_values else _DASH)


def compile_header_value(
    value: str, path: str, *, extra_commands: Collection[str] = ()
) -> Callable[[StreamInfo], str]:
    """A ``headers_to_add`` value: the same commands, missing values render as ``""`` (the
    header is then left out unless ``keep_empty_value``). The result is in latin-1 form:
    ``.encode("latin-1")`` gives the header bytes."""
    pieces = _parse(value, path, extra_commands)
    if all(isinstance(p, str) for p in pieces):
        constant = "".join(p for p in pieces if isinstance(p, str))
        return lambda info: constant
    return TextFormatter(pieces, "").format


# -- JSON ----------------------------------------------------------------------------------------

JsonFn = Callable[[StreamInfo], "str | None"]  # JSON text of a value; None when omitted


class JsonFormatter(Formatter):
    __slots__ = ("_render",)

    def __init__(self, render: Callable[[StreamInfo], str]) -> None:
        self._render = render

    def format(self, info: StreamInfo) -> str:
        return self._render(info) + "\n"


def compile_json_format(
    fields: dict[str, Any],
    *,
    omit_empty_values: bool = False,
    path: str = "",
    extra_commands: Collection[str] = (),
) -> JsonFormatter:
    """A JSON format (``json_format``): one compact object per line, keys sorted as Envoy."""
    builder = _JsonBuilder(omit_empty_values, extra_commands)
    if omit_empty_values:
        node = builder.node(fields, path)
        return JsonFormatter(lambda info: node(info) or "{}")
    pieces = builder.flat(fields, path)
    render = _join_flat(pieces)
    return JsonFormatter(render)


def _join_flat(pieces: list[str | JsonFn]) -> Callable[[StreamInfo], str]:
    """The line as a ``str.format`` template with one field per value slot."""
    template = "".join(
        p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}" for p in pieces
    )
    slots = tuple(p for p in pieces if not isinstance(p, str))

    def render(info: StreamInfo) -> str:
        return template.format(*["null" if (v := f(info)) is None else v for f in slots])

    return render


def _typed_slot(command: _Command) -> JsonFn:
    """The JSON text of one command's value (None for null)."""
    text, value = command.text, command.value
    if value is None:  # a string

        def string(info: StreamInfo) -> str | None:
            v = text(info)
            return None if v is None else f'"{json_escape(v)}"'

        return string
    if command.is_int:

        def integer(info: StreamInfo) -> str | None:
            v = value(info)
            return None if v is None else str(v)

        return integer

    def typed(info: StreamInfo) -> str | None:
        v = value(info)
        return None if v is None else json_dumps(v)

    return typed


class _JsonBuilder:
    """Turns the configured structure into JSON pieces: pre-rendered text and value slots."""

    def __init__(self, omit_empty: bool, extra_commands: Collection[str]) -> None:
        self._omit = omit_empty
        self._extra = extra_commands

    def slot(self, template: str, path: str) -> str | JsonFn:
        """A string value: literal text, one typed command, or a string mixing both."""
        if "%" not in template:
            return '"' + json_escape(_wire(template)) + '"'
        pieces = _parse(template, path, self._extra)
        if len(pieces) == 1:
            only = pieces[0]
            return f'"{json_escape(only)}"' if isinstance(only, str) else _typed_slot(only)
        # Text and commands mixed: a string. Each piece is escaped on its own (as Envoy: UTF-8
        # validity is judged per piece); missing values print "-" (or nothing).
        template = (
            '"'
            + "".join(
                json_escape(p).replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}"
                for p in pieces
            )
            + '"'
        )
        texts = tuple(p.text for p in pieces if not isinstance(p, str))
        empty = "" if self._omit else _DASH

        def mixed(info: StreamInfo) -> str:
            return template.format(
                *[empty if (v := f(info)) is None else json_escape(v) for f in texts]
            )

        return mixed

    def scalar(self, v: Any, path: str) -> str | JsonFn:
        if isinstance(v, str):
            return self.slot(v, path)
        if v is None or isinstance(v, bool | int | float):
            return json_dumps(float(v) if v.__class__ is int else v)
        raise ConfigError(
            path,
            "Only string values, nested structs, list values, number values, bool values and "
            "null values are supported in structured access log format.",
        )

    # Without omit_empty_values: the whole line is text with holes.
    def flat(self, v: Any, path: str) -> list[str | JsonFn]:
        if isinstance(v, dict):
            out: list[str | JsonFn] = ["{"]
            for i, key in enumerate(sorted(v, key=_wire)):
                out.append(("," if i else "") + '"' + json_escape(_wire(key)) + '":')
                out.extend(self.flat(v[key], _key_path(path, key)))
            out.append("}")
            return out
        if isinstance(v, list | tuple):
            out = ["["]
            for i, item in enumerate(v):
                if i:
                    out.append(",")
                out.extend(self.flat(item, f"{path}[{i}]"))
            out.append("]")
            return out
        return [self.scalar(v, path)]

    # With omit_empty_values: null values are dropped, and so are maps left empty.
    def node(self, v: Any, path: str) -> JsonFn:
        if isinstance(v, dict):
            items = tuple(
                ('"' + json_escape(_wire(k)) + '":', self.node(v[k], _key_path(path, k)))
                for k in sorted(v, key=_wire)
            )

            def render_map(info: StreamInfo) -> str | None:
                parts = []
                for key, child in items:
                    s = child(info)
                    if s is not None:
                        parts.append(key + s)
                return "{" + ",".join(parts) + "}" if parts else None

            return render_map
        if isinstance(v, list | tuple):
            children = tuple(self.node(item, f"{path}[{i}]") for i, item in enumerate(v))

            def render_list(info: StreamInfo) -> str:
                return "[" + ",".join(s for c in children if (s := c(info)) is not None) + "]"

            return render_list
        piece = self.scalar(v, path)
        if isinstance(piece, str):
            constant = None if piece == "null" else piece
            return lambda info: constant
        return piece


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
