"""Admin endpoints: each takes the server and the query and returns a Response."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pilotfish import ENVOY_API_VERSION, __version__
from pilotfish import log as plog
from pilotfish.admin import config_dump
from pilotfish.model.common import RegexError, compile_regex

if TYPE_CHECKING:
    from pilotfish.server import Server

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


@dataclass
class Response:
    status: int
    body: str | bytes = ""
    content_type: str = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    after: Callable[[], None] | None = None  # run after the response is written

    def body_bytes(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else self.body.encode()


Handler = Callable[["Server", dict[str, str]], Response]
_ROUTES: dict[str, tuple[bool, str, Handler]] = {}


def endpoint(path: str, help_text: str, *, post: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES[path] = (post, help_text, fn)
        return fn

    return register


def dispatch(
    server: Server, method: str, path: str, params: dict[str, str], body: bytes
) -> Response:
    route = _ROUTES.get(path.rstrip("/") or "/")
    if route is None:
        return Response(404, "invalid path. " + _help_text())
    post, _, fn = route
    if post and method != "POST":
        return Response(405, f"Method {method} not allowed, POST required.\n")
    return fn(server, params)


def _help_text() -> str:
    lines = ["admin commands are:"]
    for path in sorted(_ROUTES):
        post, text, _ = _ROUTES[path]
        lines.append(f"  {path}{' (POST)' if post else ''}: {text}")
    return "\n".join(lines) + "\n"


def _regex(params: dict[str, str], key: str = "filter") -> re.Pattern[bytes] | Response | None:
    value = params.get(key)
    if not value:
        return None
    try:
        return compile_regex(value)
    except RegexError as e:
        return Response(400, f"Invalid re2 regex: {str(e).split(': ', 1)[-1]}\n")


# -- server state -------------------------------------------------------------------------------


@endpoint("/", "Admin home page")
def home(server: Server, params: dict[str, str]) -> Response:
    return Response(200, _help_text())


@endpoint("/help", "print out list of admin commands")
def help_(server: Server, params: dict[str, str]) -> Response:
    return Response(200, _help_text())


@endpoint("/ready", "print server state, return 200 if LIVE, otherwise return 503")
def ready(server: Server, params: dict[str, str]) -> Response:
    name = server.state.name
    return Response(200 if name == "LIVE" else 503, name + "\n")


@endpoint("/server_info", "print server version/status information")
def server_info(server: Server, params: dict[str, str]) -> Response:
    uptime = f"{int(time.time() - server.start_time)}s"
    o = server.options
    info = {
        "version": f"pilotfish-{__version__}/{ENVOY_API_VERSION}/Clean/RELEASE/Python",
        "state": server.state.name,
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": {
            "base_id": str(o.base_id),
            "concurrency": o.concurrency,
            "config_path": o.config_path,
            "config_yaml": o.config_yaml,
            "allow_unknown_static_fields": o.allow_unknown_static_fields,
            "admin_address_path": o.admin_address_path,
            "local_address_ip_version": o.local_address_ip_version,
            "log_level": o.log_level,
            "component_log_level": o.component_log_level,
            "log_format": o.log_format or plog.ENVOY_DEFAULT_FORMAT,
            "log_path": o.log_path,
            "service_cluster": o.service_cluster,
            "service_node": o.service_node,
            "service_zone": o.service_zone,
            "file_flush_interval": f"{o.file_flush_interval_msec / 1000:.3f}s",
            "drain_time": f"{o.drain_time_s}s",
            "parent_shutdown_time": f"{o.parent_shutdown_time_s}s",
            "mode": "Serve",
            "disable_hot_restart": o.disable_hot_restart,
            "restart_epoch": o.restart_epoch,
            "drain_strategy": "Immediate" if o.drain_strategy == "immediate" else "Gradual",
            "stats_tag": o.stats_tags,
            "file_flush_min_size": o.file_flush_min_size_kb * 1024,
        },
        "node": config_dump.node_dict(server),
    }
    return Response(200, json.dumps(info, indent=1) + "\n", JSON)


@endpoint("/hot_restart_version", "print the hot restart compatibility version")
def hot_restart_version(server: Server, params: dict[str, str]) -> Response:
    return Response(200, "disabled\n")


@endpoint("/memory", "print current allocation/heap usage")
def memory(server: Server, params: dict[str, str]) -> Response:
    server.refresh_gauges()
    rss = server.g_memory_allocated.value
    body = {
        "allocated": str(rss),
        "heap_size": str(rss),
        "pageheap_unmapped": "0",
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": str(rss),
    }
    return Response(200, json.dumps(body, indent=1) + "\n", JSON)


@endpoint("/runtime", "print runtime values")
def runtime(server: Server, params: dict[str, str]) -> Response:
    assert server.ctx is not None
    entries = {
        k: {"final_value": str(v), "layer_values": [str(v), ""]}
        for k, v in sorted(server.ctx.runtime.items())
    }
    body = {"layers": ["global config", "admin"], "entries": entries}
    return Response(200, json.dumps(body, indent=1) + "\n", JSON)


# -- config -------------------------------------------------------------------------------------


@endpoint("/config_dump", "dump current Envoy configs")
def config_dump_(server: Server, params: dict[str, str]) -> Response:
    name_regex = _regex(params, "name_regex")
    if isinstance(name_regex, Response):
        return name_regex
    try:
        body = config_dump.render(
            server,
            resource=params.get("resource", ""),
            mask=params.get("mask", ""),
            include_eds="include_eds" in params,
            name_regex=name_regex,
        )
    except config_dump.DumpError as e:
        return Response(e.status, str(e) + "\n")
    return Response(200, body, JSON)


@endpoint("/listeners", "print listener info")
def listeners(server: Server, params: dict[str, str]) -> Response:
    from pilotfish.net.listener import describe

    lm = server.listener_manager
    items = list(lm.listeners.values()) if lm is not None else []
    if params.get("format") == "json":
        body = {"listener_statuses": [describe(x) for x in items]}
        return Response(200, json.dumps(body, indent=1) + "\n", JSON)
    lines = []
    for x in items:
        d = describe(x)["local_address"]
        sa = d.get("socket_address")
        addr = f"{sa['address']}:{sa['port_value']}" if sa else next(iter(d.values()))
        lines.append(f"{x.name}::{addr}")
    return Response(200, "".join(line + "\n" for line in lines))


@endpoint("/clusters", "upstream cluster status")
def clusters(server: Server, params: dict[str, str]) -> Response:
    from pilotfish.admin.clusters import clusters_json, clusters_text

    cm = server.cluster_manager
    regex = _regex(params)
    if isinstance(regex, Response):
        return regex
    items = sorted(cm.clusters.values(), key=lambda c: c.name) if cm is not None else []
    if regex is not None:
        items = [c for c in items if regex.search(c.name.encode())]
    if params.get("format") == "json":
        return Response(200, json.dumps(clusters_json(items), indent=1) + "\n", JSON)
    return Response(200, clusters_text(items))


# -- stats --------------------------------------------------------------------------------------


def _stats_filter(params: dict[str, str]) -> Any:
    value = params.get("filter")
    if not value:
        return None
    try:
        return re.compile(value)
    except re.error as e:
        return Response(400, f"Invalid re2 regex: {e}\n")


@endpoint("/stats", "print server stats")
def stats(server: Server, params: dict[str, str]) -> Response:
    from pilotfish.stats import render

    server.refresh_gauges()
    flt = _stats_filter(params)
    if isinstance(flt, Response):
        return flt
    used_only = "usedonly" in params
    fmt = params.get("format", "text")
    type_filter = params.get("type", "All")
    assert server.stats is not None
    if fmt == "json":
        return Response(
            200,
            render.render_json(
                server.stats, filter_regex=flt, used_only=used_only, type_filter=type_filter
            ),
            JSON,
        )
    if fmt == "prometheus":
        return stats_prometheus(server, params)
    return Response(
        200,
        render.render_text(
            server.stats, filter_regex=flt, used_only=used_only, type_filter=type_filter
        ),
    )


@endpoint("/stats/prometheus", "print server stats in prometheus format")
def stats_prometheus(server: Server, params: dict[str, str]) -> Response:
    from pilotfish.stats import render
    from pilotfish.stats.tags import TagExtractor

    server.refresh_gauges()
    flt = _stats_filter(params)
    if isinstance(flt, Response):
        return flt
    assert server.stats is not None
    extractor = getattr(server, "_tag_extractor", None)
    if extractor is None:
        extractor = server._tag_extractor = TagExtractor(server.stats.config)  # type: ignore[attr-defined]
    body = render.render_prometheus(
        server.stats, extractor, used_only="usedonly" in params, filter_regex=flt
    )
    return Response(200, body, "text/plain; version=0.0.4; charset=UTF-8")


@endpoint("/reset_counters", "reset all counters to zero", post=True)
def reset_counters(server: Server, params: dict[str, str]) -> Response:
    assert server.stats is not None
    for c in server.stats.counters():
        c.value = 0
    return Response(200, "OK\n")


# -- logging ------------------------------------------------------------------------------------


@endpoint("/logging", "query/change logging levels", post=True)
def logging_(server: Server, params: dict[str, str]) -> Response:
    level = params.get("level")
    if level is not None:
        if level not in plog.LEVELS:
            return Response(404, "error: unknown logging level\n" + _logging_usage())
        plog.set_all_levels(plog.LEVELS[level])
    paths = params.get("paths")
    if paths:
        try:
            for name, lvl in plog.parse_component_levels(paths).items():
                logging.getLogger(f"pilotfish.{name}").setLevel(lvl)
        except plog.LogConfigError as e:
            return Response(404, f"{e}\n" + _logging_usage())
    for key, value in params.items():
        if key in plog.COMPONENTS and value in plog.LEVELS:
            logging.getLogger(f"pilotfish.{key}").setLevel(plog.LEVELS[value])
    lines = ["active loggers:"] + [f"  {k}: {v}" for k, v in plog.component_levels().items()]
    return Response(200, "\n".join(lines) + "\n")


def _logging_usage() -> str:
    return (
        "usage: /logging?<name>=<level> (change single level)\n"
        "usage: /logging?level=<level> (change all levels)\n"
    )


# -- lifecycle ----------------------------------------------------------------------------------


@endpoint("/healthcheck/fail", "cause the server to fail health checks", post=True)
def healthcheck_fail(server: Server, params: dict[str, str]) -> Response:
    assert server.ctx is not None
    server.ctx.health_check_failed = True
    return Response(200, "OK\n")


@endpoint("/healthcheck/ok", "cause the server to pass health checks", post=True)
def healthcheck_ok(server: Server, params: dict[str, str]) -> Response:
    assert server.ctx is not None
    server.ctx.health_check_failed = False
    return Response(200, "OK\n")


@endpoint("/drain_listeners", "drain listeners", post=True)
def drain_listeners(server: Server, params: dict[str, str]) -> Response:
    server.drain_listeners(inbound_only="inboundonly" in params, graceful="graceful" in params)
    return Response(200, "OK\n")


@endpoint("/quitquitquit", "exit the server", post=True)
def quitquitquit(server: Server, params: dict[str, str]) -> Response:
    return Response(200, "OK\n", after=server.shutdown)


@endpoint("/reopen_logs", "reopen access logs", post=True)
def reopen_logs(server: Server, params: dict[str, str]) -> Response:
    server._reopen_logs()
    return Response(200, "OK\n")


@endpoint("/certs", "print certs on machine")
def certs(server: Server, params: dict[str, str]) -> Response:
    return Response(200, json.dumps({"certificates": []}, indent=1) + "\n", JSON)
