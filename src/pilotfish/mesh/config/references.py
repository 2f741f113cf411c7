"""Checks across objects, run on the store as it would be after a change. ``istioctl
validate`` does not make them (``istioctl analyze`` warns), but on a local mesh a dangling
subset is a 503 at request time, so the store refuses it up front.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import MESH_GATEWAY, fqdn, gateway_ref, host_matches

__all__ = ["Reference", "check_references", "destination_rules_for", "effective_gateways"]


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """A problem found in ``key`` at ``path``."""

    key: m.ObjectKey
    path: str
    message: str


def effective_gateways(vs: m.VirtualService) -> tuple[str, ...]:
    """``ns/name`` of each gateway the VirtualService binds to; none listed means ``mesh``."""
    if not vs.gateways:
        return (MESH_GATEWAY,)
    return tuple(gateway_ref(g, vs.meta.namespace) for g in vs.gateways)


def destination_rules_for(host: str, rules: Iterable[m.DestinationRule]) -> list[m.DestinationRule]:
    """The DestinationRules that apply to a fully qualified host: those naming it exactly,
    else those with the most specific wildcard that matches it (as Istio picks)."""
    matches = [(fqdn(dr.host, dr.meta.namespace), dr) for dr in rules]
    exact = [dr for h, dr in matches if h == host]
    if exact:
        return exact
    wild = [(h, dr) for h, dr in matches if h.startswith("*") and host_matches(h, host)]
    if not wild:
        return []
    longest = max(len(h) for h, _ in wild)
    return [dr for h, dr in wild if len(h) == longest]


def check_references(objects: Iterable[m.Resource]) -> list[Reference]:
    objs = sorted(objects, key=lambda o: o.key)
    vss = [o for o in objs if isinstance(o, m.VirtualService)]
    drs = [o for o in objs if isinstance(o, m.DestinationRule)]
    gateways = {f"{o.meta.namespace}/{o.meta.name}" for o in objs if isinstance(o, m.Gateway)}
    out: list[Reference] = []
    for vs in vss:
        out += _gateway_refs(vs, gateways)
        out += _subset_refs(vs, drs)
    out += _vs_conflicts(vss)
    out += _dr_conflicts(drs)
    return out


def _gateway_refs(vs: m.VirtualService, gateways: set[str]) -> Iterator[Reference]:
    refs = [(f"spec.gateways[{i}]", g) for i, g in enumerate(vs.gateways)]
    for i, route in enumerate(vs.http):
        for j, match in enumerate(route.match):
            refs += [
                (f"spec.http[{i}].match[{j}].gateways[{k}]", g)
                for k, g in enumerate(match.gateways)
            ]
    for kind, l4 in _l4_routes(vs):
        for i, l4_route in enumerate(l4):
            l4_matches: Sequence[m.L4MatchAttributes | m.TLSMatchAttributes] = l4_route.match
            for j, l4_match in enumerate(l4_matches):
                refs += [
                    (f"spec.{kind}[{i}].match[{j}].gateways[{k}]", g)
                    for k, g in enumerate(l4_match.gateways)
                ]
    for path, ref in refs:
        resolved = gateway_ref(ref, vs.meta.namespace)
        if resolved != MESH_GATEWAY and resolved not in gateways:
            yield Reference(vs.key, path, f"Gateway {resolved} does not exist")


def _l4_routes(vs: m.VirtualService) -> list[tuple[str, Sequence[m.TCPRoute | m.TLSRoute]]]:
    return [("tcp", vs.tcp), ("tls", vs.tls)]


def _destinations(vs: m.VirtualService) -> Iterator[tuple[str, m.Destination]]:
    for i, route in enumerate(vs.http):
        for j, d in enumerate(route.route):
            yield f"spec.http[{i}].route[{j}].destination", d.destination
        if route.mirror is not None:
            yield f"spec.http[{i}].mirror", route.mirror
        for j, mirror in enumerate(route.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", mirror.destination
    for kind, l4 in _l4_routes(vs):
        for i, l4_route in enumerate(l4):
            for j, rd in enumerate(l4_route.route):
                yield f"spec.{kind}[{i}].route[{j}].destination", rd.destination


def _subset_refs(vs: m.VirtualService, drs: list[m.DestinationRule]) -> Iterator[Reference]:
    for path, dest in _destinations(vs):
        if dest.subset is None:
            continue
        host = fqdn(dest.host, vs.meta.namespace)
        rules = destination_rules_for(host, drs)
        defined = sorted({s.name for dr in rules for s in dr.subsets})
        if dest.subset in defined:
            continue
        if not rules:
            why = f"no DestinationRule for host {host} defines subsets"
        else:
            names = ", ".join(f"DestinationRule {dr.meta.namespace}/{dr.meta.name}" for dr in rules)
            why = f"{names} for host {host} defines {', '.join(defined) or 'no subsets'}"
        yield Reference(vs.key, f"{path}.subset", f"subset {dest.subset!r} is not defined: {why}")


def _vs_conflicts(vss: list[m.VirtualService]) -> Iterator[Reference]:
    """One VirtualService per host and gateway: Istio would pick one silently (or merge them
    on gateways), which is rarely what the author meant."""
    owner: dict[tuple[str, str], m.VirtualService] = {}
    for vs in vss:
        for i, host in enumerate(vs.hosts):
            name = fqdn(host, vs.meta.namespace)
            for gw in effective_gateways(vs):
                first = owner.setdefault((gw, name), vs)
                if first is not vs:
                    yield Reference(
                        first.key,
                        "spec.hosts",
                        f"host {name} on gateway {gw} is also routed by {vs.key} "
                        f"(spec.hosts[{i}]): one VirtualService per host and gateway",
                    )


def _dr_conflicts(drs: list[m.DestinationRule]) -> Iterator[Reference]:
    owner: dict[tuple[str, str, str], m.DestinationRule] = {}
    for dr in drs:
        selector = repr(sorted((dr.workload_selector or {}).items()))
        slot = (dr.meta.namespace, fqdn(dr.host, dr.meta.namespace), selector)
        first = owner.setdefault(slot, dr)
        if first is not dr:
            yield Reference(
                first.key,
                "spec.host",
                f"host {slot[1]} also has {dr.key} in namespace {dr.meta.namespace}: "
                "one DestinationRule per host and namespace",
            )
