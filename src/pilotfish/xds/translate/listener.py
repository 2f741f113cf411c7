"""envoy.config.listener.v3.Listener -> model.listener."""

from __future__ import annotations

import socket
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category
from pilotfish.model.common import TypedExtension
from pilotfish.model.listener import FilterChain, FilterChainMatch, Listener
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.context import TranslateContext

# Network filters after which no other filter may follow (Envoy: "terminal filters").
TERMINAL_NETWORK_FILTERS = {
    "envoy.filters.network.http_connection_manager",
    "envoy.filters.network.tcp_proxy",
}


def listener(msg: Any, ctx: TranslateContext, path: str = "") -> Listener:
    pre = f"{path}." if path else ""
    for unsupported in (
        "api_listener",
        "udp_listener_config",
        "internal_listener",
        "filter_chain_matcher",
    ):
        if msg.HasField(unsupported):
            raise ConfigError(f"{pre}{unsupported}", f"{unsupported} is not supported by pilotfish")
    if not msg.HasField("address"):
        raise ConfigError(f"{pre}address", "value is required")
    addr = c.address(msg.address, f"{pre}address")
    if getattr(addr, "protocol", "TCP") == "UDP":
        raise ConfigError(
            f"{pre}address.socket_address.protocol", "UDP listeners are not supported"
        )
    ctx.traffic_direction = ("UNSPECIFIED", "INBOUND", "OUTBOUND")[msg.traffic_direction]
    chains = tuple(
        filter_chain(fc, ctx, f"{pre}filter_chains[{i}]") for i, fc in enumerate(msg.filter_chains)
    )
    _check_unique_matches(chains, pre)
    default_chain = None
    if msg.HasField("default_filter_chain"):
        default_chain = filter_chain(msg.default_filter_chain, ctx, f"{pre}default_filter_chain")
    if not chains and default_chain is None:
        raise ConfigError(
            f"{pre}filter_chains", f"error adding listener '{addr}': no filter chains specified"
        )
    listener_filters = []
    for i, lf in enumerate(msg.listener_filters):
        lpath = f"{pre}listener_filters[{i}]"
        if lf.WhichOneof("config_type") == "config_discovery":
            raise ConfigError(f"{lpath}.config_discovery", "ECDS is not supported")
        ext = ctx.extension(Category.LISTENER_FILTER, lf.name, lf.typed_config, lpath)
        if ext is not None:
            listener_filters.append(ext)
    return Listener(
        name=msg.name or str(addr),
        address=addr,
        filter_chains=chains,
        default_filter_chain=default_chain,
        listener_filters=tuple(listener_filters),
        listener_filters_timeout=c.duration(msg, "listener_filters_timeout", 15.0),
        continue_on_listener_filters_timeout=msg.continue_on_listener_filters_timeout,
        use_original_dst=c.bool_value(msg, "use_original_dst", False),
        bind_to_port=c.bool_value(msg, "bind_to_port", True),
        per_connection_buffer_limit_bytes=c.uint32_value(
            msg, "per_connection_buffer_limit_bytes", 1024 * 1024
        ),
        stat_prefix=msg.stat_prefix,
        access_log=access_logs(msg.access_log, ctx, f"{pre}access_log"),
        traffic_direction=("UNSPECIFIED", "INBOUND", "OUTBOUND")[msg.traffic_direction],
        drain_type=("DEFAULT", "MODIFY_ONLY")[msg.drain_type],
        enable_reuse_port=c.bool_value(msg, "enable_reuse_port", True),
        transparent=c.bool_value(msg, "transparent", False),
        freebind=c.bool_value(msg, "freebind", False),
        tcp_backlog_size=c.uint32_value(msg, "tcp_backlog_size", socket.SOMAXCONN),
        additional_addresses=tuple(
            c.address(a.address, f"{pre}additional_addresses[{i}].address")
            for i, a in enumerate(msg.additional_addresses)
        ),
        ignore_global_conn_limit=msg.ignore_global_conn_limit,
        metadata=c.metadata(msg, path),
    )


def access_logs(logs: Any, ctx: TranslateContext, path: str) -> tuple[TypedExtension, ...]:
    out = []
    for i, log in enumerate(logs):
        lpath = f"{path}[{i}]"
        if log.HasField("filter"):
            raise ConfigError(f"{lpath}.filter", "access log filters are not supported yet")
        ext = ctx.extension(Category.ACCESS_LOGGER, log.name, log.typed_config, lpath)
        if ext is not None:
            out.append(ext)
    return tuple(out)


def filter_chain(msg: Any, ctx: TranslateContext, path: str) -> FilterChain:
    match = (
        filter_chain_match(msg.filter_chain_match, f"{path}.filter_chain_match")
        if msg.HasField("filter_chain_match")
        else FilterChainMatch()
    )
    filters = []
    names = [f.name for f in msg.filters]
    for i, f in enumerate(msg.filters):
        fpath = f"{path}.filters[{i}]"
        if f.WhichOneof("config_type") == "config_discovery":
            raise ConfigError(f"{fpath}.config_discovery", "ECDS is not supported")
        ext = ctx.extension(Category.NETWORK_FILTER, f.name, f.typed_config, fpath)
        if ext is None:
            continue
        canonical = ext.factory.name if ext.factory is not None else f.name
        if canonical in TERMINAL_NETWORK_FILTERS and i != len(names) - 1:
            raise ConfigError(
                fpath,
                f"Error: terminal filter named {f.name} of type {canonical} must be the last "
                "filter "
                "in a network filter chain.",
            )
        filters.append(ext)
    if filters:
        last = filters[-1].factory.name if filters[-1].factory is not None else ""
        if last not in TERMINAL_NETWORK_FILTERS:
            raise ConfigError(
                f"{path}.filters",
                f"Error: non-terminal filter named {filters[-1].name} of type {last} is the last "
                "filter in a network filter chain.",
            )
    transport_socket = None
    if msg.HasField("transport_socket"):
        transport_socket = ctx.extension(
            Category.TRANSPORT_SOCKET,
            msg.transport_socket.name,
            msg.transport_socket.typed_config,
            f"{path}.transport_socket",
        )
    return FilterChain(
        match=match,
        filters=tuple(filters),
        name=msg.name,
        transport_socket=transport_socket,
        transport_socket_connect_timeout=c.duration(msg, "transport_socket_connect_timeout", 0.0),
        metadata=c.metadata(msg, path),
    )


def filter_chain_match(msg: Any, path: str) -> FilterChainMatch:
    if msg.address_suffix or msg.HasField("suffix_len"):
        raise ConfigError(
            f"{path}.address_suffix", "address_suffix is not implemented (nor in Envoy)"
        )
    for i, name in enumerate(msg.server_names):
        if "*" in name and not name.startswith("*."):
            raise ConfigError(
                f"{path}.server_names[{i}]",
                "error adding listener: partial wildcards are not supported in "
                f'"server_names": {name}',
            )
    port = c.uint32_value(msg, "destination_port", 0) if msg.HasField("destination_port") else None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{path}.destination_port", "value must be inside range [1, 65535]")
    return FilterChainMatch(
        destination_port=port,
        prefix_ranges=c.cidr_ranges(msg.prefix_ranges, f"{path}.prefix_ranges"),
        server_names=tuple(n.lower() for n in msg.server_names),
        transport_protocol=msg.transport_protocol,
        application_protocols=tuple(msg.application_protocols),
        direct_source_prefix_ranges=c.cidr_ranges(
            msg.direct_source_prefix_ranges, f"{path}.direct_source_prefix_ranges"
        ),
        source_type=("ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL")[msg.source_type],
        source_prefix_ranges=c.cidr_ranges(
            msg.source_prefix_ranges, f"{path}.source_prefix_ranges"
        ),
        source_ports=tuple(msg.source_ports),
    )


def _expanded_keys(m: FilterChainMatch) -> list[tuple[Any, ...]]:
    """Every concrete criteria combination a match stands for (to find duplicates)."""
    keys: list[tuple[Any, ...]] = [()]
    for values in (
        (m.destination_port,),
        m.prefix_ranges or (None,),
        m.server_names or (None,),
        (m.transport_protocol,),
        m.application_protocols or (None,),
        m.direct_source_prefix_ranges or (None,),
        (m.source_type,),
        m.source_prefix_ranges or (None,),
        m.source_ports or (None,),
    ):
        keys = [(*k, v) for k in keys for v in values]
    return keys


def _check_unique_matches(chains: tuple[FilterChain, ...], pre: str) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for i, fc in enumerate(chains):
        for key in _expanded_keys(fc.match):
            if key in seen and seen[key] != i:
                raise ConfigError(
                    f"{pre}filter_chains[{i}].filter_chain_match",
                    "multiple filter chains with the same matching rules are defined",
                )
            seen[key] = i
