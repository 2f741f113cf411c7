"""Cluster IPs (VIPs) of Kubernetes Services in capture mode, and the names pods resolve.

A Service keeps its ``spec.clusterIP`` when it has one; the others get an address of the
service range picked from a hash of their hostname, so a service keeps its VIP across
control plane restarts and across changes to other services (a clash, rare in a /16,
moves the later hostname in sorted order to the next free address).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence

from pilotfish.mesh.config.hosts import fqdn
from pilotfish.mesh.translate.services import MeshConfig, MeshService

__all__ = ["SERVICE_CIDR", "hosts_entries", "service_vips", "with_vips"]

SERVICE_CIDR = "10.96.0.0/16"  # Kubernetes' default service range (kubeadm)


def service_vips(config: MeshConfig, cidr: str = SERVICE_CIDR) -> dict[str, str]:
    """Every Kubernetes Service's VIP by hostname (``reviews.default.svc.cluster.local``);
    headless Services (``clusterIP: None``) get none."""
    network = ipaddress.ip_network(cidr)
    if network.version != 4 or network.num_addresses < 16:
        raise ValueError(f"service range {cidr!r}: need an IPv4 range of at least 16 addresses")
    out: dict[str, str] = {}
    taken: set[str] = set()
    pending: list[str] = []
    for svc in config.services:
        host = fqdn(svc.meta.name, svc.meta.namespace)
        if svc.cluster_ip == "None":
            continue
        if svc.cluster_ip:
            out[host] = svc.cluster_ip
            taken.add(svc.cluster_ip)
        else:
            pending.append(host)
    size = network.num_addresses - 2  # neither the network address nor the first host
    base = int(network.network_address) + 2
    for host in sorted(pending):
        offset = int.from_bytes(hashlib.sha256(host.encode()).digest()[:4], "big") % size
        for step in range(size):
            ip = str(ipaddress.ip_address(base + (offset + step) % size))
            if ip not in taken:
                out[host] = ip
                taken.add(ip)
                break
        else:
            raise ValueError(f"service range {cidr!r} is full")
    return out


def with_vips(services: Sequence[MeshService], vips: Mapping[str, str]) -> list[MeshService]:
    """The services with their VIP as ``cluster_ip`` (the routes' domains name it)."""
    from dataclasses import replace

    return [replace(s, cluster_ip=vips[s.hostname]) if s.hostname in vips else s for s in services]


def hosts_entries(vips: Mapping[str, str]) -> dict[str, str]:
    """What a pod's ``/etc/hosts`` maps to each VIP: ``name``, ``name.ns``, ``name.ns.svc``
    and the full hostname (``name`` alone is ambiguous across namespaces: the first
    namespace in sorted order has it, as if every pod searched that namespace first)."""
    out: dict[str, str] = {}
    for host in sorted(vips, key=lambda h: (h.split(".")[1] != "default", h)):
        ip = vips[host]
        name, ns = host.split(".")[:2]
        for alias in (host, f"{name}.{ns}.svc", f"{name}.{ns}", name):
            out.setdefault(alias, ip)
    return out
