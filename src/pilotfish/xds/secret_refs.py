"""Which SDS secrets a listener or cluster (model) names through its TLS transport sockets."""

from __future__ import annotations

from typing import Any

from pilotfish.tls.secrets import SdsSecretRef


def listener_secrets(model: Any) -> list[SdsSecretRef]:
    chains = list(model.filter_chains)
    if model.default_filter_chain is not None:
        chains.append(model.default_filter_chain)
    return [ref for chain in chains for ref in _refs(chain.transport_socket)]


def cluster_secrets(model: Any) -> list[SdsSecretRef]:
    refs = _refs(model.transport_socket)
    for _name, _match, socket in model.transport_socket_matches:
        refs += _refs(socket)
    return refs


def _refs(socket: Any) -> list[SdsSecretRef]:
    if socket is None:
        return []
    return list(getattr(socket.config, "sds_secrets", ()))
