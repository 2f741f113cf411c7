"""``security.istio.io`` specs (v1 and v1beta1 share one schema) into the model: for now
PeerAuthentication. Structure and types only; meaning is ``validate``'s job."""

from __future__ import annotations

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.reader import Node

__all__ = ["SECURITY_SPEC_PARSERS"]


def _mode(node: Node | None) -> str:
    """``{mode: STRICT}`` (an ``mtls`` block); an absent block or mode is UNSET."""
    if node is None:
        return "UNSET"
    mode = node.string("mode") or "UNSET"
    node.finish()
    return mode


def _port_key(key: object) -> int | None:
    """portLevelMtls keys: YAML gives ``9080:`` as an int and ``"9080":`` as a string."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def peer_authentication(meta: m.ObjectMeta, spec: Node) -> m.PeerAuthentication:
    selector = None
    sel = spec.opt_obj("selector")
    if sel is not None:
        selector = sel.str_map("matchLabels")
        sel.finish()
    ports: dict[int, str] = {}
    for key, node in spec.obj_map("portLevelMtls").items():
        port = _port_key(key)
        if port is None:
            spec.error(f"portLevelMtls.{key}", "expected a port number")
        else:
            ports[port] = _mode(node)
    return m.PeerAuthentication(
        meta=meta,
        selector=selector,
        mode=_mode(spec.opt_obj("mtls")),
        port_level_mtls=ports,
    )


SECURITY_SPEC_PARSERS = {"PeerAuthentication": peer_authentication}
