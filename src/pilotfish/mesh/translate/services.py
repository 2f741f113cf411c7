"""The service registry the translation works from: every Kubernetes Service and ServiceEntry
host with its ports (and their protocols, as Istio infers them) and its endpoints, drawn from
the workloads of the local mesh and from WorkloadEntries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.hosts import fqdn, is_ip
from pilotfish.mesh.translate.workload import Workload, labels_match

__all__ = [
    "Endpoint",
    "MeshConfig",
    "MeshService",
    "ServicePortInfo",
    "build_services",
    "protocol_of",
    "spiffe_id",
]

# Istio's protocol selection: appProtocol, else the port name's prefix (``http-web`` → HTTP).
_PROTOCOLS = {
    "http": "HTTP",
    "http2": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "https": "HTTPS",
    "tls": "TLS",
    "tcp": "TCP",
    "mongo": "Mongo",
    "mysql": "MySQL",
    "redis": "Redis",
    "udp": "UDP",
}
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-Web"})


def protocol_of(
    name: str | None, app_protocol: str | None = None, declared: str | None = None
) -> str:
    """Istio's protocol of a port: ``appProtocol``, a ServiceEntry/Gateway port's ``protocol``,
    else the name (``http``, ``tcp-db``, ...); unknown → ``HTTP`` (Istio would sniff; a sidecar
    used as an HTTP proxy only sees HTTP)."""
    for candidate in (app_protocol, declared):
        if candidate:
            known = _PROTOCOLS.get(candidate.lower())
            if known:
                return known
            return candidate.upper()
    if name:
        lowered = name.lower()
        if lowered in _PROTOCOLS:
            return _PROTOCOLS[lowered]
        prefix = lowered.split("-", 1)[0]
        if prefix in _PROTOCOLS:
            return _PROTOCOLS[prefix]
    return "HTTP"


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """A snapshot of the config store: what the translation reads, and two mesh-wide settings
    (Istio's MeshConfig): ``mtls`` says the proxies have Istio workload certificates (SDS
    secrets ``default``/``ROOTCA`` from ``sds-grpc``); without them the mesh is plaintext
    (PeerAuthentication and ISTIO_MUTUAL have no effect). ``enable_auto_mtls`` is Istio's
    ``enableAutoMtls`` (default true)."""

    services: tuple[m.Service, ...] = ()
    virtual_services: tuple[m.VirtualService, ...] = ()
    destination_rules: tuple[m.DestinationRule, ...] = ()
    gateways: tuple[m.Gateway, ...] = ()
    service_entries: tuple[m.ServiceEntry, ...] = ()
    workload_entries: tuple[m.WorkloadEntry, ...] = ()
    sidecars: tuple[m.Sidecar, ...] = ()
    peer_authentications: tuple[m.PeerAuthentication, ...] = ()
    mtls: bool = True
    enable_auto_mtls: bool = True
    # The proxies run Istio's telemetry extensions (istio.stats, peer metadata exchange):
    # pilotfish and Istio's proxy do; upstream Envoy does not (it would NACK them).
    istio_telemetry: bool = True

    @classmethod
    def from_objects(
        cls, objects: Iterable[m.Resource], *, mtls: bool = True, enable_auto_mtls: bool = True
    ) -> MeshConfig:
        by_kind: dict[type[m.Resource], list[m.Resource]] = {}
        for obj in objects:
            by_kind.setdefault(type(obj), []).append(obj)

        def of(kind: type[m.Resource]) -> tuple[object, ...]:
            return tuple(sorted(by_kind.get(kind, []), key=lambda o: o.key))

        return cls(
            services=of(m.Service),  # type: ignore[arg-type]
            virtual_services=of(m.VirtualService),  # type: ignore[arg-type]
            destination_rules=of(m.DestinationRule),  # type: ignore[arg-type]
            gateways=of(m.Gateway),  # type: ignore[arg-type]
            service_entries=of(m.ServiceEntry),  # type: ignore[arg-type]
            workload_entries=of(m.WorkloadEntry),  # type: ignore[arg-type]
            sidecars=of(m.Sidecar),  # type: ignore[arg-type]
            peer_authentications=of(m.PeerAuthentication),  # type: ignore[arg-type]
            mtls=mtls,
            enable_auto_mtls=enable_auto_mtls,
        )

    @classmethod
    def from_store(cls, store: object, **settings: bool) -> MeshConfig:
        """From a ``ConfigStore`` (anything with ``list_all()``)."""
        return cls.from_objects(store.list_all(), **settings)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    number: int
    name: str
    protocol: str
    target_port: int | str | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a service: ``ports`` maps the service port to the endpoint's port."""

    address: str
    ports: Mapping[int, int]
    labels: Mapping[str, str] = field(default_factory=dict)
    workload: str = ""  # Istio's ``name;namespace;app;version;Kubernetes``
    weight: int = 1
    namespace: str = ""
    service_account: str = ""
    # Has an Istio sidecar (Istio's ``security.istio.io/tlsMode: istio`` label): the workloads
    # of the local mesh, and WorkloadEntries / ServiceEntry endpoints labelled so.
    sidecar: bool = False


@dataclass(frozen=True, slots=True)
class MeshService:
    hostname: str  # reviews.default.svc.cluster.local
    namespace: str
    ports: tuple[ServicePortInfo, ...]
    endpoints: tuple[Endpoint, ...] = ()
    resolution: str = "EDS"  # EDS | DNS | DNS_ROUND_ROBIN | NONE
    cluster_ip: str | None = None
    kubernetes: bool = True
    mesh_external: bool = False
    subject_alt_names: tuple[str, ...] = ()  # a ServiceEntry's subjectAltNames

    @property
    def service_accounts(self) -> list[str]:
        """The identities its endpoints may present (Istio's SAN list for ISTIO_MUTUAL):
        ``spiffe://cluster.local/ns/<ns>/sa/<sa>`` per endpoint service account, plus a
        ServiceEntry's subjectAltNames; sorted."""
        ids = {
            spiffe_id(ep.namespace, ep.service_account)
            for ep in self.endpoints
            if ep.service_account
        }
        return sorted(ids | set(self.subject_alt_names))

    @property
    def short_name(self) -> str:
        return self.hostname.split(".", 1)[0]

    def port(self, number: int) -> ServicePortInfo | None:
        return next((p for p in self.ports if p.number == number), None)


def _target(p: ServicePortInfo) -> int:
    """A ServiceEntry port's targetPort (a number there), else the port itself."""
    return p.target_port if isinstance(p.target_port, int) else p.number


TRUST_DOMAIN = "cluster.local"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def _labelled_sidecar(labels: Mapping[str, str]) -> bool:
    return labels.get(TLS_MODE_LABEL) == "istio"


def _workload_meta(name: str, namespace: str, labels: Mapping[str, str]) -> str:
    app = labels.get("app", "")
    return f"{name};{namespace};{app};{labels.get('version', '')};Kubernetes"


def _workload_endpoint(w: Workload, ports: Sequence[ServicePortInfo]) -> Endpoint:
    """A workload of the local mesh: every service port reaches its sidecar's inbound
    listener, which forwards to the app."""
    return Endpoint(
        w.address,
        {p.number: w.inbound_port for p in ports},
        w.labels,
        _workload_meta(w.name, w.namespace, w.labels),
        1,
        w.namespace,
        w.service_account,
        True,
    )


def _k8s_service(
    svc: m.Service, workloads: Sequence[Workload], entries: Sequence[m.WorkloadEntry]
) -> MeshService:
    ns = svc.meta.namespace
    ports = tuple(
        ServicePortInfo(
            p.port, p.name or str(p.port), protocol_of(p.name, p.app_protocol), p.target_port
        )
        for p in svc.ports
    )
    endpoints: list[Endpoint] = []
    if svc.selector:
        for w in workloads:
            if w.namespace == ns and labels_match(svc.selector, w.labels):
                endpoints.append(_workload_endpoint(w, ports))
        for we in entries:
            spec = we.spec
            if we.meta.namespace != ns or not spec.address:
                continue
            if not labels_match(svc.selector, spec.labels):
                continue
            mapped = {}
            for p in ports:
                target = p.target_port if p.target_port is not None else p.number
                if isinstance(target, str):
                    target = spec.ports.get(target, p.number)
                mapped[p.number] = spec.ports.get(p.name, target)
            endpoints.append(
                Endpoint(
                    spec.address,
                    mapped,
                    spec.labels,
                    _workload_meta(we.meta.name, we.meta.namespace, spec.labels),
                    spec.weight or 1,
                    we.meta.namespace,
                    spec.service_account or "",
                    _labelled_sidecar(spec.labels),
                )
            )
    cluster_ip = svc.cluster_ip if svc.cluster_ip and svc.cluster_ip != "None" else None
    return MeshService(
        fqdn(svc.meta.name, ns),
        ns,
        ports,
        tuple(endpoints),
        "EDS",
        cluster_ip,
        True,
    )


def _service_entry_services(
    se: m.ServiceEntry, workloads: Sequence[Workload], entries: Sequence[m.WorkloadEntry]
) -> list[MeshService]:
    ns = se.meta.namespace
    ports = tuple(
        ServicePortInfo(
            p.number, p.name or str(p.number), protocol_of(p.name, None, p.protocol), p.target_port
        )
        for p in se.ports
    )
    endpoints: list[Endpoint] = []
    sources: list[tuple[m.WorkloadEndpoint, str]] = [(e, "") for e in se.endpoints]
    if se.workload_selector:
        for we in entries:
            if we.meta.namespace == ns and labels_match(se.workload_selector, we.spec.labels):
                sources.append((we.spec, we.meta.name))
        for w in workloads:
            if w.namespace == ns and labels_match(se.workload_selector, w.labels):
                endpoints.append(_workload_endpoint(w, ports))
    for spec, name in sources:
        if not spec.address:
            continue
        mapped = {p.number: spec.ports.get(p.name, _target(p)) for p in ports}
        endpoints.append(
            Endpoint(
                spec.address,
                mapped,
                spec.labels,
                _workload_meta(name, ns, spec.labels) if name else "",
                spec.weight or 1,
                ns,
                spec.service_account or "",
                _labelled_sidecar(spec.labels),
            )
        )
    resolution = se.resolution
    out = []
    for host in se.hosts:
        if resolution == "STATIC":
            res = "EDS"
        elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
            res = resolution
        else:
            res = "NONE"
        eps = tuple(endpoints)
        if res.startswith("DNS") and not eps and not host.startswith("*"):
            eps = (Endpoint(host, {p.number: _target(p) for p in ports}),)
        out.append(
            MeshService(
                host,
                ns,
                ports,
                eps,
                res,
                se.addresses[0] if se.addresses and is_ip(se.addresses[0]) else None,
                False,
                se.location != "MESH_INTERNAL",
                se.subject_alt_names,
            )
        )
    return out


def build_services(config: MeshConfig, workloads: Sequence[Workload]) -> list[MeshService]:
    """Every service of the mesh, sorted by hostname (Kubernetes Services win over a
    ServiceEntry naming the same host, as in Istio)."""
    by_host: dict[str, MeshService] = {}
    for svc in config.services:
        s = _k8s_service(svc, workloads, config.workload_entries)
        by_host[s.hostname] = s
    for se in config.service_entries:
        for s in _service_entry_services(se, workloads, config.workload_entries):
            by_host.setdefault(s.hostname, s)
    return [by_host[h] for h in sorted(by_host)]
