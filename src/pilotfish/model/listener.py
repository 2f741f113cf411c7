"""Listeners and filter chains: envoy.config.listener.v3."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pilotfish.model.common import Address, TypedExtension

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """Every criterion Envoy matches a connection against, in Envoy's order of precedence."""

    destination_port: int | None = None
    prefix_ranges: tuple[IpNetwork, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()
    direct_source_prefix_ranges: tuple[IpNetwork, ...] = ()
    source_type: str = "ANY"  # ANY, SAME_IP_OR_LOOPBACK, EXTERNAL
    source_prefix_ranges: tuple[IpNetwork, ...] = ()
    source_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FilterChain:
    match: FilterChainMatch
    filters: tuple[TypedExtension, ...]
    name: str = ""
    transport_socket: TypedExtension | None = None
    transport_socket_connect_timeout: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: Address
    filter_chains: tuple[FilterChain, ...]
    default_filter_chain: FilterChain | None = None
    listener_filters: tuple[TypedExtension, ...] = ()
    listener_filters_timeout: float = 15.0
    continue_on_listener_filters_timeout: bool = False
    use_original_dst: bool = False
    bind_to_port: bool = True
    per_connection_buffer_limit_bytes: int = 1024 * 1024
    stat_prefix: str = ""
    access_log: tuple[TypedExtension, ...] = ()
    traffic_direction: str = "UNSPECIFIED"
    drain_type: str = "DEFAULT"
    enable_reuse_port: bool = True
    transparent: bool = False
    freebind: bool = False
    tcp_backlog_size: int = 128
    additional_addresses: tuple[Address, ...] = ()
    ignore_global_conn_limit: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
