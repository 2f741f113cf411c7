"""envoy.filters.network.http_connection_manager: config validation (the runtime is
``pilotfish.http.conn_manager``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.model.http import HttpConnectionManagerConfig, RdsSource, UpgradeConfig
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.listener import access_logs
from pilotfish.xds.translate.route import route_configuration

ROUTER = "envoy.filters.http.router"
_CODECS = {0: "AUTO", 1: "HTTP1", 2: "HTTP2", 3: "HTTP3"}
_SERVER_HEADER = {0: "OVERWRITE", 1: "APPEND_IF_ABSENT", 2: "PASS_THROUGH"}
_UNDERSCORES = {0: "ALLOW", 1: "REJECT_REQUEST", 2: "DROP_HEADER"}
_ESCAPED_SLASHES = {
    0: "KEEP_UNCHANGED",
    1: "KEEP_UNCHANGED",
    2: "REJECT_REQUEST",
    3: "UNESCAPE_AND_REDIRECT",
    4: "UNESCAPE_AND_FORWARD",
}
_FCC = {
    0: "SANITIZE",
    1: "FORWARD_ONLY",
    2: "APPEND_FORWARD",
    3: "SANITIZE_SET",
    4: "ALWAYS_FORWARD_ONLY",
}


class HttpConnectionManagerFactory(ExtensionFactory):
    category = Category.NETWORK_FILTER
    name = "envoy.filters.network.http_connection_manager"
    type_names = (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    )
    terminal: ClassVar[bool] = True

    def parse(self, msg: Any, ctx: Any, path: str) -> HttpConnectionManagerConfig:
        tc = f"{path}.typed_config"
        if not msg.stat_prefix:
            raise ConfigError(f"{tc}.stat_prefix", "value length must be at least 1")
        codec = _CODECS.get(msg.codec_type, "AUTO")
        if codec in ("HTTP2", "HTTP3"):
            raise ConfigError(
                f"{tc}.codec_type", f"codec {codec} is not supported yet (HTTP/1.1 only)"
            )
        for unsupported in ("scoped_routes", "local_reply_config"):
            if msg.HasField(unsupported):
                raise ConfigError(
                    f"{tc}.{unsupported}", f"{unsupported} is not supported by pilotfish"
                )
        for repeated in ("original_ip_detection_extensions", "early_header_mutation_extensions"):
            if len(getattr(msg, repeated)):
                raise ConfigError(f"{tc}.{repeated}", f"{repeated} is not supported by pilotfish")

        route_config = None
        rds = None
        spec = msg.WhichOneof("route_specifier")
        if spec == "route_config":
            route_config = route_configuration(
                msg.route_config, ctx, f"{tc}.route_config", inline=True
            )
        elif spec == "rds":
            if not msg.rds.route_config_name:
                raise ConfigError(f"{tc}.rds.route_config_name", "value length must be at least 1")
            rds = RdsSource(msg.rds.route_config_name, msg.rds.config_source)
        else:
            raise ConfigError(tc, "route_specifier is required (route_config or rds)")

        filters = self._http_filters(msg, ctx, tc)

        chpo = msg.common_http_protocol_options
        hpo = msg.http_protocol_options
        max_kb = c.uint32_value(msg, "max_request_headers_kb", 60)
        if not 1 <= max_kb <= 8192:
            raise ConfigError(
                f"{tc}.max_request_headers_kb", "value must be inside range [1, 8192]"
            )
        upgrades = []
        for i, u in enumerate(msg.upgrade_configs):
            if len(u.filters):
                raise ConfigError(
                    f"{tc}.upgrade_configs[{i}].filters", "upgrade filter chains are not supported"
                )
            upgrades.append(
                UpgradeConfig(u.upgrade_type.lower().encode(), c.bool_value(u, "enabled", True))
            )
        if msg.HasField("request_id_extension"):
            ctx.extension(
                Category.REQUEST_ID,
                "envoy.request_id.uuid",
                msg.request_id_extension.typed_config,
                f"{tc}.request_id_extension",
            )
        if msg.HasField("tracing") and msg.tracing.HasField("provider"):
            # Tracing is telemetry: no spans are produced (docs/compatibility.md); the provider
            # is still checked, so an unknown tracer type is refused as Envoy refuses it.
            ctx.extension(
                Category.TRACER,
                msg.tracing.provider.name,
                msg.tracing.provider.typed_config,
                f"{tc}.tracing.provider",
            )
        internal_cidrs = None
        if msg.HasField("internal_address_config"):
            internal_cidrs = tuple(
                str(n)
                for n in c.cidr_ranges(
                    msg.internal_address_config.cidr_ranges,
                    f"{tc}.internal_address_config.cidr_ranges",
                )
            )
        strip = msg.WhichOneof("strip_port_mode")
        return HttpConnectionManagerConfig(
            stat_prefix=msg.stat_prefix,
            codec_type=codec,
            route_config=route_config,
            rds=rds,
            http_filters=filters,
            access_log=access_logs(msg.access_log, ctx, f"{tc}.access_log"),
            server_name=(msg.server_name or "envoy").encode(),
            server_header_transformation=_SERVER_HEADER.get(
                msg.server_header_transformation, "OVERWRITE"
            ),
            use_remote_address=c.bool_value(msg, "use_remote_address", False),
            xff_num_trusted_hops=msg.xff_num_trusted_hops,
            skip_xff_append=msg.skip_xff_append,
            via=msg.via.encode(),
            generate_request_id=c.bool_value(msg, "generate_request_id", True),
            preserve_external_request_id=msg.preserve_external_request_id,
            always_set_request_id_in_response=msg.always_set_request_id_in_response,
            idle_timeout=c.duration(chpo, "idle_timeout", 3600.0),
            max_connection_duration=c.duration(chpo, "max_connection_duration", 0.0),
            max_requests_per_connection=c.uint32_value(chpo, "max_requests_per_connection", 0),
            max_headers_count=c.uint32_value(chpo, "max_headers_count", 100),
            max_request_headers_kb=max_kb,
            headers_with_underscores_action=_UNDERSCORES.get(
                chpo.headers_with_underscores_action, "ALLOW"
            ),
            stream_idle_timeout=c.duration(msg, "stream_idle_timeout", 300.0),
            request_timeout=c.duration(msg, "request_timeout", 0.0),
            request_headers_timeout=c.duration(msg, "request_headers_timeout", 0.0),
            drain_timeout=c.duration(msg, "drain_timeout", 5.0),
            delayed_close_timeout=c.duration(msg, "delayed_close_timeout", 1.0),
            accept_http_10=hpo.accept_http_10,
            default_host_for_http_10=hpo.default_host_for_http_10.encode(),
            allow_absolute_url=c.bool_value(hpo, "allow_absolute_url", True),
            allow_chunked_length=hpo.allow_chunked_length,
            enable_trailers=hpo.enable_trailers,
            preserve_header_case=hpo.HasField("header_key_format"),
            upgrade_configs=tuple(upgrades),
            proxy_100_continue=msg.proxy_100_continue,
            normalize_path=c.bool_value(msg, "normalize_path", False),
            merge_slashes=msg.merge_slashes,
            path_with_escaped_slashes_action=_ESCAPED_SLASHES.get(
                msg.path_with_escaped_slashes_action, "KEEP_UNCHANGED"
            ),
            strip_matching_host_port=strip is None and msg.strip_matching_host_port,
            strip_any_host_port=strip == "strip_any_host_port" and msg.strip_any_host_port,
            forward_client_cert_details=_FCC.get(msg.forward_client_cert_details, "SANITIZE"),
            set_current_client_cert_details=tuple(
                f
                for f in ("cert", "chain", "subject", "uri", "dns")
                if getattr(msg.set_current_client_cert_details, f)
            ),
            add_user_agent=c.bool_value(msg, "add_user_agent", False),
            append_x_forwarded_port=msg.append_x_forwarded_port,
            internal_address_cidrs=internal_cidrs,
        )

    def build(
        self, config: HttpConnectionManagerConfig, ctx: Any, *, listener_prefix: str = ""
    ) -> Any:
        from pilotfish.http.conn_manager import HttpConnectionManager

        routes = None
        if config.rds is not None and getattr(ctx, "rds", None) is not None:
            routes = ctx.rds.provider(config.rds.route_config_name, config.stat_prefix)
        return HttpConnectionManager(
            config, ctx, listener_stat_prefix=listener_prefix, routes=routes
        )

    @staticmethod
    def _http_filters(msg: Any, ctx: Any, tc: str) -> tuple[Any, ...]:
        filters = []
        total = len(msg.http_filters)
        for i, f in enumerate(msg.http_filters):
            fpath = f"{tc}.http_filters[{i}]"
            if f.WhichOneof("config_type") == "config_discovery":
                raise ConfigError(f"{fpath}.config_discovery", "ECDS is not supported")
            ext = ctx.extension(
                Category.HTTP_FILTER,
                f.name,
                f.typed_config if f.HasField("typed_config") else None,
                fpath,
                optional=f.is_optional,
            )
            if ext is None:
                continue
            is_router = ext.factory is not None and ext.factory.name == ROUTER
            if is_router and i != total - 1:
                raise ConfigError(
                    fpath,
                    f"Error: terminal filter named {f.name} of type {ROUTER} must be the last "
                    "filter "
                    "in a http filter chain.",
                )
            if f.disabled:
                # Disabled until a route enables it: per-route enabling is not supported yet,
                # so such a filter never runs.
                ctx.warn(f"{fpath}: filter '{f.name}' is disabled by default; skipped")
                continue
            filters.append(ext)
        if not filters or filters[-1].factory is None or filters[-1].factory.name != ROUTER:
            last = filters[-1].name if filters else "(none)"
            raise ConfigError(
                f"{tc}.http_filters",
                f"Error: non-terminal filter named {last} is the last filter in a http filter "
                "chain.",
            )
        return tuple(filters)
