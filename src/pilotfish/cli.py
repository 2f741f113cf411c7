"""``pilotfish``: Envoy's command line.

Every flag Envoy 1.40 accepts is accepted (Istio's pilot-agent passes many); those pilotfish
does not honour yet are listed in docs/compatibility.md. An unknown flag is an error, as in
Envoy.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field

from pilotfish import ENVOY_API_VERSION, __version__
from pilotfish import log as plog


@dataclass
class Options:
    config_path: str = ""
    config_yaml: str = ""
    mode: str = "serve"
    log_level: str = "info"
    component_log_level: str = ""
    log_format: str | None = None
    log_path: str = ""
    concurrency: int = 1
    drain_time_s: int = 600
    drain_strategy: str = "gradual"
    parent_shutdown_time_s: int = 900
    local_address_ip_version: str = "v4"
    file_flush_interval_msec: int = 10000
    file_flush_min_size_kb: int = 64
    allow_unknown_static_fields: bool = False
    reject_unknown_dynamic_fields: bool = False
    ignore_unknown_dynamic_fields: bool = False
    service_cluster: str = ""
    service_node: str = ""
    service_zone: str = ""
    base_id: int = 0
    restart_epoch: int = 0
    disable_hot_restart: bool = False
    admin_address_path: str = ""
    stats_tags: list[str] = field(default_factory=list)
    # Accepted for Envoy's sake and reported by /server_info; no effect (docs/compatibility.md).
    enable_mutex_tracing: bool = False
    cpuset_threads: bool = False
    log_format_escaped: bool = False
    disabled_extensions: list[str] = field(default_factory=list)
    use_dynamic_base_id: bool = False
    base_id_path: str = ""
    enable_fine_grain_logging: bool = False
    socket_path: str = "@envoy_domain_socket"
    socket_mode: int = 0
    enable_core_dump: bool = False
    skip_hot_restart_on_no_parent: bool = False
    skip_hot_restart_parent_stats: bool = False
    skip_deprecated_logs: bool = False
    log_stacktrace_single_entry: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Envoy (TCLAP) prints PARSE ERROR and exits 1.
        sys.stderr.write(f"PARSE ERROR: {message}\n")
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pilotfish", add_help=True, allow_abbrev=False)
    a = p.add_argument
    a("-c", "--config-path", default="")
    a("--config-yaml", default="")
    a("--mode", default="serve", choices=["serve", "validate", "init_only"])
    a("-l", "--log-level", default="info")
    a("--component-log-level", default="")
    a("--log-format", default=None)
    a("--log-format-escaped", action="store_true")
    a("--log-path", default="")
    a("--enable-fine-grain-logging", action="store_true")
    a("--log-stacktrace-single-entry", action="store_true")
    a("--concurrency", type=int, default=None)
    a("--cpuset-threads", action="store_true")
    a("--drain-time-s", type=int, default=600)
    a("--drain-strategy", default="gradual", choices=["gradual", "immediate"])
    a("--parent-shutdown-time-s", type=int, default=900)
    a("--local-address-ip-version", default="v4", choices=["v4", "v6"])
    a("--file-flush-interval-msec", type=int, default=10000)
    a("--file-flush-min-size-kb", type=int, default=64)
    a("--allow-unknown-static-fields", action="store_true")
    a("--allow-unknown-fields", action="store_true")
    a("--reject-unknown-dynamic-fields", action="store_true")
    a("--ignore-unknown-dynamic-fields", action="store_true")
    a("--service-cluster", default="")
    a("--service-node", default="")
    a("--service-zone", default="")
    a("--base-id", type=int, default=0)
    a("--use-dynamic-base-id", action="store_true")
    a("--base-id-path", default="")
    a("--restart-epoch", type=int, default=0)
    a("--hot-restart-version", action="store_true")
    a("--disable-hot-restart", action="store_true")
    a("--skip-hot-restart-on-no-parent", action="store_true")
    a("--skip-hot-restart-parent-stats", action="store_true")
    a("--skip-deprecated-logs", action="store_true")
    a("--enable-core-dump", action="store_true")
    a("--enable-mutex-tracing", action="store_true")
    a("--disable-extensions", default="")
    a("--socket-path", default="@envoy_domain_socket")
    a("--socket-mode", default="")
    a("--admin-address-path", default="")
    a("--stats-tag", action="append", default=[])
    a("--version", action="store_true")
    return p


def parse_options(argv: list[str]) -> Options:
    ns = build_parser().parse_args(argv)
    if ns.version:
        print(version_string())
        sys.exit(0)
    if ns.hot_restart_version:
        print("pilotfish: hot restart is not supported")
        sys.exit(0)
    return Options(
        config_path=ns.config_path,
        config_yaml=ns.config_yaml,
        mode=ns.mode,
        log_level=ns.log_level,
        component_log_level=ns.component_log_level,
        log_format=ns.log_format,
        log_path=ns.log_path,
        concurrency=ns.concurrency if ns.concurrency is not None else (os.cpu_count() or 1),
        drain_time_s=ns.drain_time_s,
        drain_strategy=ns.drain_strategy,
        parent_shutdown_time_s=ns.parent_shutdown_time_s,
        local_address_ip_version=ns.local_address_ip_version,
        file_flush_interval_msec=ns.file_flush_interval_msec,
        file_flush_min_size_kb=ns.file_flush_min_size_kb,
        allow_unknown_static_fields=ns.allow_unknown_static_fields or ns.allow_unknown_fields,
        reject_unknown_dynamic_fields=ns.reject_unknown_dynamic_fields,
        ignore_unknown_dynamic_fields=ns.ignore_unknown_dynamic_fields,
        service_cluster=ns.service_cluster,
        service_node=ns.service_node,
        service_zone=ns.service_zone,
        base_id=ns.base_id,
        restart_epoch=ns.restart_epoch,
        disable_hot_restart=ns.disable_hot_restart,
        admin_address_path=ns.admin_address_path,
        stats_tags=list(ns.stats_tag),
        enable_mutex_tracing=ns.enable_mutex_tracing,
        cpuset_threads=ns.cpuset_threads,
        log_format_escaped=ns.log_format_escaped,
        disabled_extensions=[x for x in ns.disable_extensions.split(",") if x],
        use_dynamic_base_id=ns.use_dynamic_base_id,
        base_id_path=ns.base_id_path,
        enable_fine_grain_logging=ns.enable_fine_grain_logging,
        socket_path=ns.socket_path,
        socket_mode=_socket_mode(ns.socket_mode),
        enable_core_dump=ns.enable_core_dump,
        skip_hot_restart_on_no_parent=ns.skip_hot_restart_on_no_parent,
        skip_hot_restart_parent_stats=ns.skip_hot_restart_parent_stats,
        skip_deprecated_logs=ns.skip_deprecated_logs,
        log_stacktrace_single_entry=ns.log_stacktrace_single_entry,
    )


def _socket_mode(text: str) -> int:
    """``--socket-mode`` is octal (``644`` is 420); Envoy takes a value that is not as 0."""
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return 0


def version_string() -> str:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"pilotfish  version: {__version__}/{ENVOY_API_VERSION}/Clean/RELEASE/Python-{py}"


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        plog.configure(
            options.log_level, options.component_log_level, options.log_format, options.log_path
        )
    except plog.LogConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    from pilotfish.errors import ConfigError
    from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

    log = logging.getLogger("pilotfish.main")
    from pilotfish._build import stale_compiled_modules

    stale = stale_compiled_modules()
    if stale:
        log.warning(
            "compiled modules are older than their sources (run `make install`): %s",
            ", ".join(stale),
        )
    origin = options.config_path or "--config-yaml"
    try:
        loaded = load_bootstrap(
            BootstrapSource(
                config_path=options.config_path,
                config_yaml=options.config_yaml,
                allow_unknown_fields=options.allow_unknown_static_fields,
                service_cluster=options.service_cluster,
                service_node=options.service_node,
                service_zone=options.service_zone,
            )
        )
    except ConfigError as e:
        log.critical("error initializing configuration '%s': %s", origin, e)
        sys.stderr.write(f"error initializing configuration '{origin}': {e}\n")
        return 1
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if options.mode == "validate":
        print(f"configuration '{origin}' OK")
        return 0
    if loaded.model.log_format and options.log_format is None:
        plog.set_format(loaded.model.log_format)

    from pilotfish.server import Server

    return Server(options, loaded).run()


if __name__ == "__main__":
    sys.exit(main())
