"""Which mTLS mode applies where: Istio's PeerAuthentication composition.

One workload's policy is composed from at most three PeerAuthentications: the mesh-wide one
(root namespace ``istio-system``, no selector), its namespace's (no selector) and a
workload one (``selector.matchLabels`` matching its labels, not in the root namespace). In
each scope the oldest wins (creation time, then name, then namespace, as Istio sorts). The
narrowest mode that is not UNSET wins; nothing set is PERMISSIVE. A port-level mode of the
workload policy overrides at that (workload) port; UNSET there inherits the workload mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pilotfish.mesh.config import model as m
from pilotfish.mesh.translate.services import MeshConfig
from pilotfish.mesh.translate.workload import labels_match

__all__ = [
    "DEFAULT_MODE",
    "ROOT_NAMESPACE",
    "MtlsPolicy",
    "namespace_mtls_mode",
    "workload_mtls",
]

ROOT_NAMESPACE = "istio-system"
DEFAULT_MODE = "PERMISSIVE"  # Istio's default when no policy says otherwise


@dataclass(frozen=True, slots=True)
class MtlsPolicy:
    """A workload's effective mTLS: ``mode`` is DISABLE, PERMISSIVE or STRICT; ``per_port``
    overrides it at some workload ports."""

    mode: str = DEFAULT_MODE
    per_port: Mapping[int, str] = field(default_factory=dict)

    def mode_at(self, port: int) -> str:
        return self.per_port.get(port, self.mode)


PLAINTEXT = MtlsPolicy("DISABLE")


def _oldest(policies: Iterable[m.PeerAuthentication]) -> m.PeerAuthentication | None:
    return min(
        policies,
        key=lambda p: (p.meta.creation_timestamp or "", p.meta.name, p.meta.namespace),
        default=None,
    )


def _scoped_mode(config: MeshConfig, namespace: str) -> str:
    """The mode the mesh- and namespace-wide policies give a namespace."""
    wide = [p for p in config.peer_authentications if not p.selector]
    mesh = _oldest(p for p in wide if p.meta.namespace == ROOT_NAMESPACE)
    own = (
        _oldest(p for p in wide if p.meta.namespace == namespace)
        if namespace != ROOT_NAMESPACE
        else None
    )
    mode = DEFAULT_MODE
    for policy in (mesh, own):
        if policy is not None and policy.mode != "UNSET":
            mode = policy.mode
    return mode


def namespace_mtls_mode(config: MeshConfig, namespace: str) -> str:
    """Istio's best-effort service mode for auto mTLS: mesh- and namespace-wide policies
    only (workload and port policies are seen per endpoint, in EDS)."""
    if not config.mtls:
        return "DISABLE"
    return _scoped_mode(config, namespace)


def workload_mtls(config: MeshConfig, namespace: str, labels: Mapping[str, str]) -> MtlsPolicy:
    """The composed policy of a workload in ``namespace`` with ``labels``."""
    if not config.mtls:
        return PLAINTEXT
    mode = _scoped_mode(config, namespace)
    workload = None
    if namespace != ROOT_NAMESPACE:
        workload = _oldest(
            p
            for p in config.peer_authentications
            if p.selector and p.meta.namespace == namespace and labels_match(p.selector, labels)
        )
    if workload is None:
        return MtlsPolicy(mode)
    if workload.mode != "UNSET":
        mode = workload.mode
    per_port = {
        port: mode if port_mode == "UNSET" else port_mode
        for port, port_mode in workload.port_level_mtls.items()
    }
    return MtlsPolicy(mode, per_port)
