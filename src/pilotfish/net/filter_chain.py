"""Choosing a listener's filter chain for a connection, as Envoy's FilterChainManagerImpl does.

Criteria are tried in Envoy's order: destination port, destination IP, server name, transport
protocol, application protocols, direct source IP, source type, source IP, source port. At each
level the most specific matching value wins; chains that leave the criterion empty are the
fallback. There is no backtracking: once a level picked its branch, a later mismatch means
no chain (or the default chain), exactly as in Envoy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from pilotfish.model.listener import FilterChain, FilterChainMatch
from pilotfish.net.connection import ConnectionInfo

# (is criterion empty for this match?, best-match selection among non-empty ones)
Level = tuple[
    Callable[[FilterChainMatch], bool],
    Callable[[list[FilterChain], ConnectionInfo], list[FilterChain]],
]


def _ip(text: str) -> Any:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _longest_prefix(
    chains: list[FilterChain], ip_text: str, ranges_of: Callable[[FilterChainMatch], Sequence[Any]]
) -> list[FilterChain]:
    ip = _ip(ip_text)
    if ip is None:
        return []
    best = -1
    out: list[FilterChain] = []
    for fc in chains:
        for net in ranges_of(fc.match):
            if net.version == ip.version and ip in net:
                if net.prefixlen > best:
                    best, out = net.prefixlen, [fc]
                elif net.prefixlen == best and fc not in out:
                    out.append(fc)
    return out


def _destination_port(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return [fc for fc in chains if fc.match.destination_port == info.local_port]


def _destination_ip(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return _longest_prefix(chains, info.local_ip, lambda m: m.prefix_ranges)


def _server_name(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    sni = info.server_name.lower()
    if not sni:
        return []
    exact = [fc for fc in chains if sni in fc.match.server_names]
    if exact:
        return exact
    # Wildcards: the longest matching suffix wins ("*.b.c" beats "*.c").
    best = -1
    out: list[FilterChain] = []
    for fc in chains:
        for name in fc.match.server_names:
            if name.startswith("*.") and sni.endswith(name[1:]) and len(sni) > len(name) - 1:
                if len(name) > best:
                    best, out = len(name), [fc]
                elif len(name) == best and fc not in out:
                    out.append(fc)
    return out


def _transport_protocol(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return [fc for fc in chains if fc.match.transport_protocol == info.transport_protocol]


def _application_protocols(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    offered = info.application_protocols
    return [fc for fc in chains if any(p in offered for p in fc.match.application_protocols)]


def _direct_source_ip(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return _longest_prefix(chains, info.remote_ip, lambda m: m.direct_source_prefix_ranges)


def _source_type(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    local = info.remote_is_loopback or (info.remote_ip and info.remote_ip == info.local_ip)
    wanted = "SAME_IP_OR_LOOPBACK" if local else "EXTERNAL"
    return [fc for fc in chains if fc.match.source_type == wanted]


def _source_ip(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return _longest_prefix(chains, info.remote_ip, lambda m: m.source_prefix_ranges)


def _source_port(chains: list[FilterChain], info: ConnectionInfo) -> list[FilterChain]:
    return [fc for fc in chains if info.remote_port in fc.match.source_ports]


LEVELS: tuple[Level, ...] = (
    (lambda m: m.destination_port is None, _destination_port),
    (lambda m: not m.prefix_ranges, _destination_ip),
    (lambda m: not m.server_names, _server_name),
    (lambda m: not m.transport_protocol, _transport_protocol),
    (lambda m: not m.application_protocols, _application_protocols),
    (lambda m: not m.direct_source_prefix_ranges, _direct_source_ip),
    (lambda m: m.source_type == "ANY", _source_type),
    (lambda m: not m.source_prefix_ranges, _source_ip),
    (lambda m: not m.source_ports, _source_port),
)


class FilterChainSelector:
    def __init__(self, chains: Sequence[FilterChain], default: FilterChain | None) -> None:
        self.chains = list(chains)
        self.default = default
        # The common case: one chain that matches everything.
        self._only = (
            self.chains[0]
            if len(self.chains) == 1 and self.chains[0].match == FilterChainMatch()
            else None
        )

    def select(self, info: ConnectionInfo) -> FilterChain | None:
        if self._only is not None:
            return self._only
        candidates = self.chains
        for is_empty, best in LEVELS:
            specific = [fc for fc in candidates if not is_empty(fc.match)]
            if specific:
                matched = best(specific, info)
                if matched:
                    candidates = matched
                    continue
            candidates = [fc for fc in candidates if is_empty(fc.match)]
            if not candidates:
                return self.default
        return candidates[0] if candidates else self.default
