"""envoy.config.bootstrap.v3.Bootstrap -> model.bootstrap."""

from __future__ import annotations

from typing import Any

from pilotfish import regex
from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category
from pilotfish.model.bootstrap import Admin, Bootstrap, Node, StatsConfig, StatsMatcher, StatsTag
from pilotfish.model.common import Locality
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.cluster import cluster
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.listener import access_logs, listener


def bootstrap(msg: Any, ctx: TranslateContext) -> Bootstrap:
    if msg.header_prefix:
        raise ConfigError("header_prefix", "a custom header prefix is not supported")
    runtime: dict[str, Any] = {}
    if msg.HasField("layered_runtime"):
        for layer in msg.layered_runtime.layers:
            if layer.HasField("static_layer"):
                runtime.update(c.struct_to_dict(layer.static_layer))
    # Before any regex is compiled: the RE2 program size limits come from the runtime.
    regex.configure(runtime)
    if msg.HasField("default_regex_engine"):
        _check_regex_engine(msg.default_regex_engine)
    node = Node()
    if msg.HasField("node"):
        n = msg.node
        node = Node(
            id=n.id,
            cluster=n.cluster,
            metadata=c.struct_to_dict(n.metadata) if n.HasField("metadata") else {},
            locality=c.locality(n.locality) if n.HasField("locality") else Locality(),
        )

    admin = None
    if msg.HasField("admin"):
        a = msg.admin
        addr = c.address(a.address, "admin.address") if a.HasField("address") else None
        admin = Admin(
            address=addr,
            access_log=access_logs(a.access_log, ctx, "admin.access_log"),
            profile_path=a.profile_path,
        )

    clusters = []
    names: set[str] = set()
    for i, cl in enumerate(msg.static_resources.clusters):
        path = f"static_resources.clusters[{i}]"
        model = cluster(cl, ctx, path)
        if model.name in names:
            raise ConfigError(f"{path}.name", f"cluster manager: duplicate cluster '{model.name}'")
        names.add(model.name)
        clusters.append(model)
    ctx.static_clusters = names

    listeners = []
    lnames: set[str] = set()
    addresses: dict[str, str] = {}
    for i, ls in enumerate(msg.static_resources.listeners):
        path = f"static_resources.listeners[{i}]"
        model_l = listener(ls, ctx, path)
        if model_l.name in lnames:
            raise ConfigError(
                f"{path}.name",
                f"error adding listener named '{model_l.name}': duplicate listener name",
            )
        lnames.add(model_l.name)
        key = str(model_l.address)
        # Port 0 asks the kernel for a fresh port: two such listeners do not collide.
        if model_l.bind_to_port and key in addresses and getattr(model_l.address, "port", 1) != 0:
            raise ConfigError(
                f"{path}.address",
                f"error adding listener '{key}': listener '{addresses[key]}' already uses "
                "this address",
            )
        addresses[key] = model_l.name
        listeners.append(model_l)

    for i, ext in enumerate(msg.bootstrap_extensions):
        ctx.extension(Category.BOOTSTRAP, ext.name, ext.typed_config, f"bootstrap_extensions[{i}]")
    for i, sink in enumerate(msg.stats_sinks):
        ctx.extension(Category.STAT_SINK, sink.name, sink.typed_config, f"stats_sinks[{i}]")
    if msg.HasField("tracing") and msg.tracing.HasField("http"):
        t = msg.tracing.http
        ctx.extension(Category.TRACER, t.name, t.typed_config, "tracing.http")

    max_cx = None
    if msg.HasField("overload_manager"):
        for i, mon in enumerate(msg.overload_manager.resource_monitors):
            ext = ctx.extension(
                Category.RESOURCE_MONITOR,
                mon.name,
                mon.typed_config,
                f"overload_manager.resource_monitors[{i}]",
            )
            if ext is not None and isinstance(ext.config, int):
                max_cx = ext.config

    runtime_max = runtime.get("overload.global_downstream_max_connections")
    if max_cx is None and isinstance(runtime_max, int | float):
        max_cx = int(runtime_max)

    log_format = None
    log_json = None
    if msg.HasField("application_log_config") and msg.application_log_config.HasField("log_format"):
        lf = msg.application_log_config.log_format
        if lf.WhichOneof("log_format") == "text_format":
            log_format = lf.text_format
        elif lf.WhichOneof("log_format") == "json_format":
            log_json = c.struct_to_dict(lf.json_format)

    _check_grpc_clusters(msg, names)

    return Bootstrap(
        node=node,
        admin=admin,
        listeners=tuple(listeners),
        clusters=tuple(clusters),
        stats=stats_config(msg),
        runtime=runtime,
        max_downstream_connections=max_cx,
        log_format=log_format,
        log_format_json=log_json,
        dynamic_resources=msg.dynamic_resources if msg.HasField("dynamic_resources") else None,
        static_secrets=tuple(msg.static_resources.secrets),
        local_cluster_name=msg.cluster_manager.local_cluster_name,
        outlier_event_log_path=msg.cluster_manager.outlier_detection.event_log_path,
    )


def stats_config(msg: Any) -> StatsConfig:
    if not msg.HasField("stats_config"):
        return StatsConfig(flush_interval=c.duration(msg, "stats_flush_interval", 5.0))
    sc = msg.stats_config
    tags = []
    for i, t in enumerate(sc.stats_tags):
        path = f"stats_config.stats_tags[{i}]"
        if not t.tag_name:
            raise ConfigError(f"{path}.tag_name", "value length must be at least 1")
        kind = t.WhichOneof("tag_value")
        if kind == "regex":
            _check_std_regex(t.regex, f"{path}.regex")
            tags.append(StatsTag(t.tag_name, regex=t.regex))
        else:
            tags.append(StatsTag(t.tag_name, fixed_value=t.fixed_value))
    matcher = StatsMatcher()
    if sc.HasField("stats_matcher"):
        sm = sc.stats_matcher
        kind = sm.WhichOneof("stats_matcher")
        if kind == "reject_all":
            matcher = StatsMatcher(reject_all=sm.reject_all)
        elif kind in ("inclusion_list", "exclusion_list"):
            lst = getattr(sm, kind)
            patterns = tuple(
                c.string_matcher(p, f"stats_config.stats_matcher.{kind}.patterns[{i}]")
                for i, p in enumerate(lst.patterns)
            )
            matcher = (
                StatsMatcher(inclusion=patterns)
                if kind == "inclusion_list"
                else StatsMatcher(exclusion=patterns)
            )
    buckets = None
    for hb in sc.histogram_bucket_settings:
        buckets = tuple(sorted(hb.buckets))
    return StatsConfig(
        tags=tuple(tags),
        use_all_default_tags=c.bool_value(sc, "use_all_default_tags", True),
        matcher=matcher,
        histogram_buckets=buckets,
        flush_interval=c.duration(msg, "stats_flush_interval", 5.0),
    )


def _check_regex_engine(ext: Any) -> None:
    """``default_regex_engine``: Envoy 1.40 has one engine, Google RE2 (no options)."""
    path = "default_regex_engine"
    if not ext.HasField("typed_config"):
        raise ConfigError(f"{path}.typed_config", "value is required")
    tname = ext.typed_config.type_url.rpartition("/")[2]
    if tname != "envoy.extensions.regex_engines.v3.GoogleRE2":
        raise ConfigError(
            path,
            f"Didn't find a registered implementation for '{ext.name}' with type URL: '{tname}'",
        )


def _check_std_regex(pattern: str, path: str) -> None:
    """Stats tag regexes are std::regex (ECMAScript) in Envoy, not RE2: lookahead is allowed."""
    from pilotfish.regex import RegexError
    from pilotfish.stats.tags import compile_std_regex

    try:
        compile_std_regex(pattern)
    except RegexError as e:
        raise ConfigError(path, str(e)) from None


def _check_grpc_clusters(msg: Any, clusters: set[str]) -> None:
    """An ``envoy_grpc`` service must name a static cluster (Envoy checks at startup)."""
    if not msg.HasField("dynamic_resources"):
        return
    dr = msg.dynamic_resources
    if dr.HasField("ads_config"):
        for i, gs in enumerate(dr.ads_config.grpc_services):
            if gs.HasField("envoy_grpc") and gs.envoy_grpc.cluster_name not in clusters:
                raise ConfigError(
                    f"dynamic_resources.ads_config.grpc_services[{i}].envoy_grpc.cluster_name",
                    f"Unknown gRPC client cluster '{gs.envoy_grpc.cluster_name}'",
                )
