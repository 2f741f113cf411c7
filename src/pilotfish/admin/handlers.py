"""Admin endpoints: each takes the server and the query and returns a Response.

Paths are matched exactly, as Envoy matches them (``/ready/`` is not ``/ready``); ``/help``
and the 404 body list the endpoints with their parameters in Envoy's words; ``GET /`` is an HTML
home page with a form per endpoint.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pilotfish import ENVOY_API_VERSION, __version__
from pilotfish import log as plog
from pilotfish.admin import config_dump
from pilotfish.regex import Regex, RegexError, compile_admin_filter, compile_regex
from pilotfish.stats import render

if TYPE_CHECKING:
    from pilotfish.server import Server

TEXT = "text/plain; charset=UTF-8"
PLAIN = "text/plain"  # /config_dump's errors: Envoy sets no charset there
JSON = "application/json"
HTML = "text/html; charset=UTF-8"


@dataclass
class Response:
    status: int
    body: str | bytes = ""
    content_type: str = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    after: Callable[[], None] | None = None  # run after the response is written

    def body_bytes(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else self.body.encode()


@dataclass(frozen=True)
class Param:
    """A query parameter as Envoy's help and home page describe it."""

    name: str
    help: str
    kind: str = "string"  # string, boolean or enum
    choices: tuple[str, ...] = ()

    def help_line(self) -> str:
        text = f"      {self.name}: {self.help}"
        if self.kind == "enum":
            text += f"; One of ({', '.join(self.choices)})"
        return text


@dataclass(frozen=True)
class Route:
    path: str
    help: str
    handler: Callable[[Server, dict[str, str]], Response]
    post: bool = False
    params: tuple[Param, ...] = ()


Handler = Callable[["Server", dict[str, str]], Response]
_ROUTES: dict[str, Route] = {}


def endpoint(
    path: str, help_text: str, *, post: bool = False, params: tuple[Param, ...] = ()
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES[path] = Route(path, help_text, fn, post, params)
        return fn

    return register


def dispatch(
    server: Server, method: str, path: str, params: dict[str, str], body: bytes
) -> Response:
    route = _ROUTES.get(path)
    if route is None:
        return Response(404, "invalid path. " + _help_text())
    if route.post and method != "POST":
        return Response(405, f"Method {method} not allowed, POST required.")
    return route.handler(server, params)


def _help_text() -> str:
    lines = ["admin commands are:"]
    for path in sorted(_ROUTES):
        route = _ROUTES[path]
        lines.append(f"  {path}{' (POST)' if route.post else ''}: {route.help}")
        lines.extend(p.help_line() for p in route.params)
    return "\n".join(lines) + "\n"


def _regex(params: dict[str, str], key: str = "filter") -> Regex | Response | None:
    """An RE2 query parameter; a Response (400, RE2's error text) if it does not compile.
    ``name_regex`` goes through Envoy's regex engine (Latin-1, program size limits), the
    ``filter`` of /clusters is a plain RE2 (UTF-8, no limit)."""
    value = params.get(key)
    if not value:
        return None
    try:
        return compile_regex(value) if key == "name_regex" else compile_admin_filter(value)
    except RegexError as e:
        if key == "name_regex":
            return Response(
                400,
                f"INVALID_ARGUMENT: Error while parsing name_regex from {value}: {e}",
                PLAIN,
            )
        return Response(400, "Invalid re2 regex")  # /clusters: without RE2's reason


# -- home page and help -------------------------------------------------------------------------

_STYLE = """
.home-table { font-family: sans-serif; font-size: medium; border-collapse: collapse; }
.home-data { text-align: left; padding: 4px; }
.home-form { margin-bottom: 0; }
.button-as-link { background: none!important; border: none; padding: 0!important;
  font-family: sans-serif; font-size: medium; color: #069; text-decoration: underline;
  cursor: pointer; }
.gray { background-color: #dddddd; }
.vert-space { height: 4px; }
.option { padding-bottom: 4px; padding-top: 4px; padding-right: 4px; padding-left: 20px;
  text-align: right; }
"""


def _html_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n"
        f"  <title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


def _home_rows(index: int, route: Route) -> list[str]:
    name = route.path.lstrip("/")
    cls = " class='gray'" if index % 2 else ""
    e = html.escape
    rows = ["<tr class='vert-space'><td></td><td></td></tr>", f"<tr{cls}>"]
    if not route.post and not route.params:
        rows.append(f"  <td class='home-data'><a href='{e(name)}'>{e(name)}</a></td>")
    else:
        method = "post" if route.post else "get"
        button = "<button>" if route.post else "<button class='button-as-link'>"
        rows.append(
            f"  <td class='home-data'><form action='{e(name)}' method='{method}' "
            f"id='{e(name)}' class='home-form'>\n    {button}{e(name)}</button>\n  </form></td>"
        )
    rows += [f"  <td class='home-data'>{e(route.help)}</td>", "</tr>"]
    for p in route.params:
        pid = f"param-{index}-{name.replace('/', '-')}-{p.name}"
        if p.kind == "enum":
            options = "".join(f"<option value='{e(c)}'>{e(c)}</option>" for c in p.choices)
            field_html = (
                f"<select name='{e(p.name)}' id='{pid}' form='{e(name)}'>{options}</select>"
            )
        else:
            kind = "checkbox" if p.kind == "boolean" else "text"
            field_html = f"<input type='{kind}' name='{e(p.name)}' id='{pid}' form='{e(name)}' />"
        rows += [
            f"<tr{cls}>",
            f"  <td class='option'>{field_html}</td>",
            f"  <td class='home-data'><label for='{pid}'>{e(p.help)}</label></td>",
            "</tr>",
        ]
    return rows


@endpoint("/", "Admin home page")
def home(server: Server, params: dict[str, str]) -> Response:
    rows: list[str] = []
    for index, path in enumerate(sorted(p for p in _ROUTES if p != "/"), start=1):
        rows += _home_rows(index, _ROUTES[path])
    table = (
        "  <table class='home-table'>\n    <thead>\n      <tr>\n"
        "        <th class='home-data'>Command</th>\n"
        "        <th class='home-data'>Description</th>\n      </tr>\n    </thead>\n"
        "    <tbody>\n" + "\n".join(rows) + "\n    </tbody>\n  </table>"
    )
    return Response(200, _html_page("Envoy Admin", table), HTML)


@endpoint("/help", "print out list of admin commands")
def help_(server: Server, params: dict[str, str]) -> Response:
    return Response(200, _help_text())


# -- server state -------------------------------------------------------------------------------


@endpoint("/ready", "print server state, return 200 if LIVE, otherwise return 503")
def ready(server: Server, params: dict[str, str]) -> Response:
    name = server.reported_state.name
    return Response(200 if name == "LIVE" else 503, name + "\n")


def _duration(seconds: float) -> str:
    """A google.protobuf.Duration as proto3 JSON prints it: ``10s``, ``1.500s``."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if not frac else f"{whole}.{frac:03d}s"


def command_line_options(server: Server) -> dict[str, object]:
    """envoy.admin.v3.CommandLineOptions as Envoy 1.40 prints it: every field, in field-number
    order (``file_flush_min_size`` is 0 whatever the flag: Envoy does not fill it in)."""
    o = server.options
    return {
        "base_id": str(o.base_id),
        "concurrency": o.concurrency,
        "config_path": o.config_path,
        "config_yaml": o.config_yaml,
        "allow_unknown_static_fields": o.allow_unknown_static_fields,
        "admin_address_path": o.admin_address_path,
        "local_address_ip_version": o.local_address_ip_version,
        "log_level": plog.level_name(o.log_level),
        "component_log_level": o.component_log_level,
        "log_format": o.log_format or plog.ENVOY_DEFAULT_FORMAT,
        "log_path": o.log_path,
        "service_cluster": o.service_cluster,
        "service_node": o.service_node,
        "service_zone": o.service_zone,
        "file_flush_interval": _duration(o.file_flush_interval_msec / 1000),
        "drain_time": _duration(o.drain_time_s),
        "parent_shutdown_time": _duration(o.parent_shutdown_time_s),
        "mode": {"validate": "Validate", "init_only": "InitOnly"}.get(o.mode, "Serve"),
        "disable_hot_restart": o.disable_hot_restart,
        "enable_mutex_tracing": o.enable_mutex_tracing,
        "restart_epoch": o.restart_epoch,
        "cpuset_threads": o.cpuset_threads,
        "reject_unknown_dynamic_fields": o.reject_unknown_dynamic_fields,
        "log_format_escaped": o.log_format_escaped,
        "disabled_extensions": list(o.disabled_extensions),
        "ignore_unknown_dynamic_fields": o.ignore_unknown_dynamic_fields,
        "use_dynamic_base_id": o.use_dynamic_base_id,
        "base_id_path": o.base_id_path,
        "drain_strategy": "Immediate" if o.drain_strategy == "immediate" else "Gradual",
        "enable_fine_grain_logging": o.enable_fine_grain_logging,
        "socket_path": o.socket_path,
        "socket_mode": o.socket_mode,
        "enable_core_dump": o.enable_core_dump,
        "stats_tag": list(o.stats_tags),
        "skip_hot_restart_on_no_parent": o.skip_hot_restart_on_no_parent,
        "skip_hot_restart_parent_stats": o.skip_hot_restart_parent_stats,
        "skip_deprecated_logs": o.skip_deprecated_logs,
        "file_flush_min_size": 0,
        "log_stacktrace_single_entry": o.log_stacktrace_single_entry,
    }


@endpoint("/server_info", "print server version/status information")
def server_info(server: Server, params: dict[str, str]) -> Response:
    uptime = f"{int(time.time() - server.start_time)}s"
    info = {
        "version": f"pilotfish-{__version__}/{ENVOY_API_VERSION}/Clean/RELEASE/Python",
        "state": server.reported_state.name,
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": command_line_options(server),
        "node": config_dump.node_dict(server, with_defaults=True),
        "hot_restart_initializing": False,
    }
    return Response(200, json.dumps(info, indent=1) + "\n", JSON)


@endpoint("/hot_restart_version", "print the hot restart compatibility version")
def hot_restart_version(server: Server, params: dict[str, str]) -> Response:
    return Response(200, "disabled")


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
    """Each key's value in every layer ("" where a layer lacks it) and the final value."""
    layers = server.runtime_layers()
    entries: dict[str, dict[str, object]] = {}
    for key in sorted({k for _, values in layers for k in values}):
        per_layer = [values.get(key, "") for _, values in layers]
        final = next((v for v in reversed(per_layer) if v), "")
        entries[key] = {"layer_values": per_layer, "final_value": final}
    body = {"entries": entries, "layers": [name for name, _ in layers]}
    return Response(200, json.dumps(body, indent=1) + "\n", JSON)


# -- config -------------------------------------------------------------------------------------


@endpoint(
    "/config_dump",
    "dump current Envoy configs",
    params=(
        Param("resource", "The resource to dump"),
        Param(
            "mask",
            "The mask to apply. When both resource and mask are specified, the mask is applied "
            "to every element in the desired repeated field so that only a subset of fields are "
            "returned. The mask is parsed as a Protobuf::FieldMask",
        ),
        Param(
            "name_regex",
            "Dump only the currently loaded configurations whose names match the specified "
            "regex. Can be used with both resource and mask query parameters.",
        ),
        Param(
            "include_eds",
            "Dump currently loaded configuration including EDS. See the response definition "
            "for more information",
            "boolean",
        ),
    ),
)
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
        return Response(e.status, str(e), PLAIN)
    return Response(200, body, JSON)


@endpoint(
    "/listeners",
    "print listener info",
    params=(Param("format", "File format to use", "enum", ("text", "json")),),
)
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


@endpoint(
    "/clusters",
    "upstream cluster status",
    params=(Param("filter", "Regular expression (Google re2) for filtering clusters by name"),),
)
def clusters(server: Server, params: dict[str, str]) -> Response:
    from pilotfish.admin.clusters import clusters_json, clusters_text

    cm = server.cluster_manager
    regex = _regex(params)
    if isinstance(regex, Response):
        return regex
    items = sorted(cm.clusters.values(), key=lambda c: c.name) if cm is not None else []
    if regex is not None:
        items = [c for c in items if regex.search_str(c.name)]
    if params.get("format") == "json":
        return Response(200, json.dumps(clusters_json(items), indent=1) + "\n", JSON)
    return Response(200, clusters_text(items))


# -- stats --------------------------------------------------------------------------------------


_STATS_FORMATS = ("html", "active-html", "json", "prometheus", "text")
_HISTOGRAM_BUCKETS = ("cumulative", "disjoint", "detailed", "summary", "prometheusnative")


@dataclass
class _StatsParams:
    filter: Regex | Callable[[str], bool] | None
    used_only: bool
    type: str
    format: str
    histogram_buckets: str


def _stats_params(params: dict[str, str], fmt: str) -> _StatsParams | Response:
    """Envoy's StatsParams::parse, in its order: filter, histogram_buckets, type, format.
    An empty value counts as absent."""
    flt = None
    value = params.get("filter")
    if value:
        try:
            flt = render.compile_filter(value)
        except RegexError as e:
            return Response(400, f"Invalid re2 regex: {e}")
    buckets = params.get("histogram_buckets") or ""
    if buckets and buckets not in _HISTOGRAM_BUCKETS:
        modes = "|".join(_HISTOGRAM_BUCKETS)
        return Response(400, f"usage: /stats?histogram_buckets=({modes})\n")
    type_filter = params.get("type") or "All"
    if type_filter not in render.STATS_TYPES:
        return Response(400, "invalid &type= param")
    fmt = params.get("format") or fmt
    if fmt not in _STATS_FORMATS:
        return Response(400, "usage: /stats?format=(" + "|".join(_STATS_FORMATS) + ")\n\n")
    if flt is not None and "invert_filter" in params:
        return _StatsParams(_inverted(flt), "usedonly" in params, type_filter, fmt, buckets)
    return _StatsParams(flt, "usedonly" in params, type_filter, fmt, buckets)


def _inverted(regex: Regex) -> Callable[[str], bool]:
    """``invert_filter``: the stats the filter does not match (searched, as the filter is)."""
    search = regex.search_str
    return lambda name: not search(name)


_USED_ONLY = Param(
    "usedonly", "Only include stats that have been written by system since restart", "boolean"
)
_FILTER = Param("filter", "Regular expression (Google re2) for filtering stats")
_INVERT = Param("invert_filter", "Invert the filter regex", "boolean")


@endpoint(
    "/stats",
    "print server stats",
    params=(
        _USED_ONLY,
        _FILTER,
        _INVERT,
        Param("format", "Format to use", "enum", ("html", "active-html", "text", "json")),
        Param("type", "Stat types to include.", "enum", render.STATS_TYPES),
        Param(
            "histogram_buckets",
            "Histogram bucket display mode",
            "enum",
            ("cumulative", "disjoint", "detailed", "summary"),
        ),
    ),
)
def stats(server: Server, params: dict[str, str]) -> Response:
    p = _stats_params(params, "text")
    if isinstance(p, Response):
        return p
    if p.format == "prometheus":
        return _prometheus(server, params, p)
    server.refresh_gauges()
    assert server.stats is not None
    if p.format == "json":
        body = render.render_json(
            server.stats,
            filter_regex=p.filter,
            used_only=p.used_only,
            type_filter=p.type,
            histogram_buckets=p.histogram_buckets,
        )
        return Response(200, body, JSON)
    text = render.render_text(
        server.stats,
        filter_regex=p.filter,
        used_only=p.used_only,
        type_filter=p.type,
        histogram_buckets=p.histogram_buckets,
    )
    if p.format in ("html", "active-html"):
        return Response(200, _html_page("stats", f"<pre>{html.escape(text)}</pre>"), HTML)
    return Response(200, text)


@endpoint(
    "/stats/prometheus",
    "print server stats in prometheus format",
    params=(
        _USED_ONLY,
        Param(
            "text_readouts",
            "Render text_readouts as new gaugues with value 0 (increases Prometheus data size)",
            "boolean",
        ),
        _FILTER,
        _INVERT,
        Param(
            "histogram_buckets",
            "Histogram bucket display mode",
            "enum",
            ("cumulative", "summary"),
        ),
    ),
)
def stats_prometheus(server: Server, params: dict[str, str]) -> Response:
    p = _stats_params(params, "prometheus")
    if isinstance(p, Response):
        return p
    return _prometheus(server, params, p)


def _prometheus(server: Server, params: dict[str, str], p: _StatsParams) -> Response:
    """Prometheus text: ``type`` is checked but not applied (as in Envoy); histograms are
    cumulative buckets."""
    from pilotfish.stats.tags import TagExtractor

    if p.histogram_buckets == "prometheusnative":
        return Response(
            400,
            "unsupported prometheusnative histogram type when not using protobuf exposition format",
        )
    if p.histogram_buckets not in ("", "cumulative", "summary"):
        return Response(400, "unsupported prometheus histogram bucket mode")
    server.refresh_gauges()
    assert server.stats is not None
    extractor = getattr(server, "_tag_extractor", None)
    if extractor is None:
        extractor = server._tag_extractor = TagExtractor(server.stats.config)  # type: ignore[attr-defined]
    body = render.render_prometheus(
        server.stats,
        extractor,
        used_only=p.used_only,
        filter_regex=p.filter,
        text_readouts="text_readouts" in params,
        summary=p.histogram_buckets == "summary",
    )
    return Response(200, body)


@endpoint("/reset_counters", "reset all counters to zero", post=True)
def reset_counters(server: Server, params: dict[str, str]) -> Response:
    assert server.stats is not None
    for c in server.stats.counters():
        c.value = 0
    return Response(200, "OK\n")


# -- logging ------------------------------------------------------------------------------------


@endpoint(
    "/logging",
    "query/change logging levels",
    post=True,
    params=(
        Param(
            "paths",
            "Change multiple logging levels by setting to "
            "<logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>. If fine grain "
            "logging is enabled, use __FILE__ or a glob experision as the logger name. For "
            "example, source/common*:warning",
        ),
        Param(
            "level",
            "desired logging level, this will change all loggers's level",
            "enum",
            ("", *plog.ADMIN_LEVELS),
        ),
    ),
)
def logging_(server: Server, params: dict[str, str]) -> Response:
    """Envoy's LogsHandler: ``level=`` (all loggers), ``paths=name:level,...`` or one
    ``name=level``; one parameter at a time. Errors are 400 with the usage; the loggers are
    listed either way."""
    error = _change_log_levels(params)
    body = ""
    if error:
        body = (
            f"error: {error}\n\n"
            "usage: /logging?<name>=<level> (change single level)\n"
            "usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n"
            "usage: /logging?level=<level> (change all levels)\n"
            "usage: /logging?group=<group_name>:<level> (change group of loggers)\n"
            "levels: " + "".join(f"{lvl} " for lvl in plog.ADMIN_LEVELS) + "\n"
        )
    body += "active loggers:\n"
    body += "".join(f"  {k}: {v}\n" for k, v in plog.component_levels().items()) + "\n"
    return Response(400 if error else 200, body)


def _change_log_levels(params: dict[str, str]) -> str:
    """Apply the request's level change; the error message, or "" if it was applied."""
    params = {k: v for k, v in params.items() if not (k in ("level", "paths") and not v)}
    if not params:
        return ""
    if len(params) != 1:
        return "invalid number of parameters"
    levels = {name: plog.LEVELS[name] for name in plog.ADMIN_LEVELS}
    if "level" in params:
        level = levels.get(params["level"])
        if level is None:
            return "unknown logger level"
        plog.set_all_levels(level)
        return ""
    changes: dict[str, int] = {}
    if "paths" in params:
        for pair in params["paths"].split(","):
            if not pair.strip():
                continue
            name, _, value = pair.partition(":")
            if not name or not value:
                return "empty logger name or empty logger level"
            level = levels.get(value)
            if level is None:
                return "unknown logger level"
            changes[name] = level
    else:
        ((name, value),) = params.items()
        level = levels.get(value)
        if level is None:
            return "unknown logger level"
        changes[name] = level
    if any(name not in plog.COMPONENTS for name in changes):
        return "unknown logger name"
    for name, level in changes.items():
        logging.getLogger(f"pilotfish.{name}").setLevel(level)
    return ""


# -- lifecycle ----------------------------------------------------------------------------------


@endpoint("/healthcheck/fail", "cause the server to fail health checks", post=True)
def healthcheck_fail(server: Server, params: dict[str, str]) -> Response:
    server.fail_health_checks(True)
    return Response(200, "OK\n")


@endpoint("/healthcheck/ok", "cause the server to pass health checks", post=True)
def healthcheck_ok(server: Server, params: dict[str, str]) -> Response:
    server.fail_health_checks(False)
    return Response(200, "OK\n")


@endpoint(
    "/drain_listeners",
    "drain listeners",
    post=True,
    params=(
        Param(
            "graceful",
            "When draining listeners, enter a graceful drain period prior to closing "
            "listeners. This behaviour and duration is configurable via server options or CLI",
            "boolean",
        ),
        Param(
            "skip_exit",
            "When draining listeners, drain the connections but never stop the listeners. The "
            "graceful parameter has no effect when this is set, since the drain period only "
            "delays stopping the listeners",
            "boolean",
        ),
        Param(
            "inboundonly",
            "Drains all inbound listeners. traffic_direction field in "
            "envoy_v3_api_msg_config.listener.v3.Listener is used to determine whether a "
            "listener is inbound or outbound.",
            "boolean",
        ),
    ),
)
def drain_listeners(server: Server, params: dict[str, str]) -> Response:
    server.drain_listeners(
        inbound_only="inboundonly" in params,
        graceful="graceful" in params,
        skip_exit="skip_exit" in params,
    )
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
