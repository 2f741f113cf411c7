"""Host and gateway names as Istio resolves them on Kubernetes."""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "CLUSTER_DOMAIN",
    "MESH_GATEWAY",
    "fqdn",
    "gateway_ref",
    "host_matches",
    "is_ip",
    "is_valid_dns_name",
]

CLUSTER_DOMAIN = "cluster.local"
MESH_GATEWAY = "mesh"  # the implicit gateway of every sidecar

_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")


def fqdn(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """A short name (``reviews``) belongs to the namespace of the object that names it;
    a name with a dot, a wildcard or an IP is taken as written (Istio does the same)."""
    if "." in host or host.startswith("*") or is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    """``*`` matches all; ``*.example.com`` matches any name ending in ``.example.com``."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:]) and host != pattern[1:].lstrip(".")
    return pattern == host


def gateway_ref(ref: str, namespace: str) -> str:
    """``name``, ``ns/name`` or the legacy ``name.ns.svc.cluster.local`` → ``ns/name``."""
    if ref == MESH_GATEWAY:
        return ref
    if "/" in ref:
        return ref
    if "." in ref:
        name, ns = ref.split(".")[:2]
        return f"{ns}/{name}"
    return f"{namespace}/{ref}"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_valid_dns_name(host: str, wildcard: bool = True) -> bool:
    """A DNS name, optionally with a leading ``*`` label (``*``, ``*.bar.com``, ``*bar.com``)."""
    if wildcard and host == "*":
        return True
    if wildcard and host.startswith("*"):
        host = host[1:].lstrip(".")
    if not host or len(host) > 255:
        return False
    return all(_LABEL.match(label) for label in host.rstrip(".").split("."))
