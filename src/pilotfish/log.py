"""Application logging with Envoy's knobs: ``-l LEVEL``, ``--component-log-level c:l,...``,
``--log-format`` in spdlog syntax (and the bootstrap's application_log_config), ``--log-path``.

Loggers are ``pilotfish.<component>`` with Envoy's component names, so
``--component-log-level upstream:debug`` means what it means for Envoy.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
_LEVEL_NAMES = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_SHORT_LEVEL = {
    "trace": "T",
    "debug": "D",
    "info": "I",
    "warning": "W",
    "error": "E",
    "critical": "C",
}

# Envoy 1.40's logger components, in its registry's order (source/common/common/logger.h):
# /logging lists them in this order. pilotfish's loggers are ``pilotfish.<component>``; a
# few pilotfish modules log under names of their own, not listed (as Envoy lists only these).
LOGGERS: tuple[str, ...] = (
    "a2a",
    "admin",
    "ai_protocol_manager",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "basic_auth",
    "cache_filter",
    "client",
    "config",
    "connection",
    "conn_handler",
    "compression",
    "credential_injector",
    "decompression",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "ext_proc",
    "rocketmq",
    "file",
    "filter",
    "forward_proxy",
    "geolocation",
    "grpc",
    "happy_eyeballs",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "json_rpc",
    "kafka",
    "key_value_store",
    "lua",
    "local_rate_limit",
    "main",
    "matcher",
    "mcp",
    "misc",
    "mongo",
    "multi_connection",
    "notification",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rate_limit_quota",
    "rbac",
    "rds",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "sse",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
    "golang",
    "stats_sinks",
    "dynamic_modules",
    "ip_tagging",
)
COMPONENTS = frozenset(LOGGERS)
# The levels /logging takes (spdlog's level names; ``warn`` is only a command-line alias).
ADMIN_LEVELS: tuple[str, ...] = ("trace", "debug", "info", "warning", "error", "critical", "off")

ENVOY_DEFAULT_FORMAT = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"


class LogConfigError(ValueError):
    pass


def _level_name(record: logging.LogRecord) -> str:
    return _LEVEL_NAMES.get(record.levelno, record.levelname.lower())


def _component(record: logging.LogRecord) -> str:
    name = record.name
    return name[10:] if name.startswith("pilotfish.") else name


def _compile(pattern: str) -> list[Callable[[logging.LogRecord, time.struct_time, float], str]]:
    parts: list[Callable[[logging.LogRecord, time.struct_time, float], str]] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            text = "".join(literal)
            parts.append(lambda r, t, s: text)
            literal.clear()

    simple: dict[str, Callable[[logging.LogRecord, time.struct_time, float], str]] = {
        "Y": lambda r, t, s: f"{t.tm_year:04d}",
        "m": lambda r, t, s: f"{t.tm_mon:02d}",
        "d": lambda r, t, s: f"{t.tm_mday:02d}",
        "H": lambda r, t, s: f"{t.tm_hour:02d}",
        "M": lambda r, t, s: f"{t.tm_min:02d}",
        "S": lambda r, t, s: f"{t.tm_sec:02d}",
        "T": lambda r, t, s: f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}",
        "e": lambda r, t, s: f"{int(s * 1000) % 1000:03d}",
        "f": lambda r, t, s: f"{int(s * 1_000_000) % 1_000_000:06d}",
        "F": lambda r, t, s: f"{int(s * 1_000_000_000) % 1_000_000_000:09d}",
        "z": lambda r, t, s: "+00:00",
        "l": lambda r, t, s: _level_name(r),
        "L": lambda r, t, s: _SHORT_LEVEL.get(_level_name(r), "?"),
        "n": lambda r, t, s: _component(r),
        "v": lambda r, t, s: r.getMessage(),
        "j": lambda r, t, s: json.dumps(r.getMessage())[1:-1],
        "t": lambda r, t, s: str(threading.get_native_id()),
        "P": lambda r, t, s: str(os.getpid()),
        "g": lambda r, t, s: r.pathname,
        "s": lambda r, t, s: os.path.basename(r.pathname),
        "#": lambda r, t, s: str(r.lineno),
        "!": lambda r, t, s: r.funcName,
        "_": lambda r, t, s: "",
        "^": lambda r, t, s: "",
        "$": lambda r, t, s: "",
    }
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            key = pattern[i + 1]
            i += 2
            if key == "%":
                literal.append("%")
                continue
            fn = simple.get(key)
            if fn is None:
                literal.append("%" + key)
                continue
            flush()
            parts.append(fn)
            continue
        literal.append(ch)
        i += 1
    flush()
    return parts


class SpdlogFormatter(logging.Formatter):
    """A logging.Formatter for spdlog patterns (UTC times, as Envoy's %Y..%e)."""

    def __init__(self, pattern: str = ENVOY_DEFAULT_FORMAT) -> None:
        super().__init__()
        self.parts = _compile(pattern)

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        line = "".join(p(record, t, record.created) for p in self.parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def level_name(level: str) -> str:
    """A ``-l`` value as Envoy reports it (``warn`` is ``warning``)."""
    return "warning" if level == "warn" else level


def parse_component_levels(spec: str) -> dict[str, int]:
    """``upstream:debug,config:trace`` -> {component: level}. Raises LogConfigError."""
    out: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, level = item.partition(":")
        if not sep or level not in LEVELS:
            raise LogConfigError(f"error: component log level not correctly specified '{item}'")
        if name not in COMPONENTS:
            raise LogConfigError(f"error: invalid component specified '{name}'")
        out[name] = LEVELS[level]
    return out


def configure(
    level: str = "info", component_levels: str = "", fmt: str | None = None, path: str = ""
) -> None:
    if level not in LEVELS:
        raise LogConfigError(f"error: invalid log level specified '{level}'")
    components = parse_component_levels(component_levels)
    root = logging.getLogger("pilotfish")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler = (
        logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(SpdlogFormatter(fmt or ENVOY_DEFAULT_FORMAT))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    root.propagate = False
    for name, lvl in components.items():
        logging.getLogger(f"pilotfish.{name}").setLevel(lvl)


def set_format(fmt: str) -> None:
    for h in logging.getLogger("pilotfish").handlers:
        h.setFormatter(SpdlogFormatter(fmt))


def set_all_levels(level: int) -> None:
    root = logging.getLogger("pilotfish")
    root.setLevel(level)
    for name in COMPONENTS:
        logging.getLogger(f"pilotfish.{name}").setLevel(logging.NOTSET)


def component_levels() -> dict[str, str]:
    """For /logging: every component with its effective level, in Envoy's order."""
    out = {}
    for name in LOGGERS:
        lvl = logging.getLogger(f"pilotfish.{name}").getEffectiveLevel()
        out[name] = _LEVEL_NAMES.get(lvl, "off")
    return out
