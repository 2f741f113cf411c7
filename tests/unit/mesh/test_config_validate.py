"""Per-kind parsing and istioctl-like checks of Gateway, ServiceEntry, WorkloadEntry, Sidecar
and Service, plus host resolution."""

from __future__ import annotations

import pytest

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.hosts import fqdn, gateway_ref, host_matches
from pilotfish.mesh.config.parse import parse_yaml
from pilotfish.mesh.config.reader import parse_duration
from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.config.validate import validate_object

ISTIO = "apiVersion: networking.istio.io/v1\n"


def one(text: str) -> m.Resource:
    (parsed,) = parse_yaml(text)
    return parsed.obj


def problems(text: str) -> list[tuple[str, str]]:
    return validate_object(one(text))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("0.5s", 0.5), ("100ms", 0.1), ("1h30m", 5400.0), ("1.5m", 90.0), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "s", "2 s", "-1s", "2sec", "1d"])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_hosts() -> None:
    assert fqdn("reviews", "default") == "reviews.default.svc.cluster.local"
    assert fqdn("reviews.prod.svc.cluster.local", "default") == "reviews.prod.svc.cluster.local"
    assert fqdn("*.example.com", "default") == "*.example.com"
    assert fqdn("10.0.0.1", "default") == "10.0.0.1"
    assert gateway_ref("bookinfo-gateway", "default") == "default/bookinfo-gateway"
    assert gateway_ref("istio-system/gw", "default") == "istio-system/gw"
    assert gateway_ref("gw.istio-system.svc.cluster.local", "default") == "istio-system/gw"
    assert gateway_ref("mesh", "default") == "mesh"
    assert host_matches("*.example.com", "a.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything")


def test_gateway() -> None:
    gw = one(
        ISTIO
        + """kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bookinfo/*.example.com"]
    tls: {mode: SIMPLE, credentialName: cert}
"""
    )
    assert isinstance(gw, m.Gateway)
    assert gw.selector == {"istio": "ingressgateway"}
    assert gw.servers[0].port == m.Port(443, "HTTPS", "https")
    assert gw.servers[0].tls == m.ServerTLSSettings(mode="SIMPLE", credential_name="cert")
    assert validate_object(gw) == []
    assert problems(
        ISTIO
        + """kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 70000, protocol: HTTPS}
    hosts: []
"""
    ) == [
        ("spec.servers[0].port.number", "port number 70000 is out of range 1..65535"),
        ("spec.servers[0].port.name", "port name is required"),
        ("spec.servers[0].hosts", "at least one host is required"),
        ("spec.servers[0].tls", "an HTTPS server needs tls settings"),
    ]


def test_service_entry_and_workload_entry() -> None:
    se = one(
        ISTIO
        + """kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.5, ports: {tcp: 13306}, labels: {version: v1}}
"""
    )
    assert isinstance(se, m.ServiceEntry)
    assert se.endpoints == (
        m.WorkloadEndpoint(address="10.0.0.5", ports={"tcp": 13306}, labels={"version": "v1"}),
    )
    assert validate_object(se) == []
    assert problems(
        ISTIO
        + """kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: ["*"]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: db.example.com, ports: {mysql: 3306}}]
"""
    ) == [
        ("spec.hosts[0]", "wildcard host * is not allowed"),
        (
            "spec.endpoints[0].address",
            "STATIC resolution needs an IP address, got 'db.example.com'",
        ),
        ("spec.endpoints[0].ports.mysql", "no port named 'mysql' in spec.ports"),
    ]
    we = one(
        ISTIO
        + """kind: WorkloadEntry
metadata: {name: vm1}
spec: {address: 127.0.0.2, ports: {http: 19080}, labels: {app: ratings}, serviceAccount: bookinfo-ratings}
"""
    )
    assert isinstance(we, m.WorkloadEntry)
    assert we.spec == m.WorkloadEndpoint(
        address="127.0.0.2",
        ports={"http": 19080},
        labels={"app": "ratings"},
        service_account="bookinfo-ratings",
    )


def test_sidecar_egress_hosts_need_a_namespace() -> None:
    sc = one(
        ISTIO
        + """kind: Sidecar
metadata: {name: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress:
  - hosts: ["./*", "istio-system/*"]
"""
    )
    assert isinstance(sc, m.Sidecar)
    assert sc.workload_selector == {"app": "reviews"}
    assert sc.egress == (m.IstioEgressListener(hosts=("./*", "istio-system/*")),)
    assert validate_object(sc) == []
    assert problems(
        ISTIO + "kind: Sidecar\nmetadata: {name: s}\nspec: {egress: [{hosts: [ratings]}]}\n"
    ) == [
        (
            "spec.egress[0].hosts[0]",
            "host 'ratings' must be namespace/dnsName (e.g. ./ratings or */ratings)",
        )
    ]


def test_virtual_service_actions_and_mesh_wildcard() -> None:
    assert problems(
        ISTIO
        + """kind: VirtualService
metadata: {name: v}
spec:
  hosts: ["*"]
  http:
  - redirect: {uri: /new, redirectCode: 302}
    rewrite: {uri: /x}
  - match: [{uri: {}}]
"""
    ) == [
        (
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        ),
        ("spec.http[0].rewrite", "rewrite may not be used with redirect"),
        ("spec.http[1]", "HTTP route needs one of route, redirect, directResponse or delegate"),
        ("spec.http[1].match[0].uri", "one of exact, prefix or regex is required"),
    ]


def test_type_errors_and_missing_fields() -> None:
    with pytest.raises(ConfigValidationError) as err:
        parse_yaml(
            ISTIO
            + """kind: VirtualService
metadata: {name: v, labels: {version: 1}}
spec:
  hosts: reviews
  http:
  - route: [{destination: {subset: v1}, weight: "50"}]
    timeout: 3 seconds
""",
            "v.yaml",
        )
    assert [msg.split("VirtualService default/v: ", 1)[1] for msg in err.value.messages] == [
        "metadata.labels.version: expected a string, got a number",
        "spec.hosts: expected a list, got a string",
        "spec.http[0].route[0].destination.host: required field is missing",
        "spec.http[0].route[0].weight: expected an integer, got a string",
        "spec.http[0].timeout: invalid duration '3 seconds' (expected e.g. '2s', '0.5s', '100ms')",
    ]


def test_kubernetes_service_checks() -> None:
    svc = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
        "  type: ClusterIP\n  sessionAffinity: None\n  selector: {app: s}\n"
        "  ports: [{port: 80, targetPort: http, name: http, appProtocol: http}]\n"
    )
    assert isinstance(svc, m.Service)
    assert svc.ports == (
        m.ServicePort(port=80, name="http", target_port="http", app_protocol="http"),
    )
    assert problems(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
        "  ports: [{port: 80}, {port: 81, protocol: HTTP}]\n"
    ) == [
        ("spec.ports[0].name", "ports must be named when a Service has several"),
        ("spec.ports[1].protocol", "'HTTP' is not one of SCTP, TCP, UDP"),
        ("spec.ports[1].name", "ports must be named when a Service has several"),
    ]


def test_gateway_reference_in_other_namespace() -> None:
    store = ConfigStore()
    vs = (
        ISTIO
        + """kind: VirtualService
metadata: {name: front, namespace: web}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http: [{route: [{destination: {host: shop}}]}]
"""
    )
    with pytest.raises(
        ConfigValidationError,
        match=r"spec\.gateways\[0\]: Gateway istio-system/public does not exist",
    ):
        store.apply_yaml(vs)
    store.apply_yaml(
        ISTIO
        + """kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
        + "---\n"
        + vs
    )
    assert [v.meta.namespace for v in store.get(m.VirtualService)] == ["web"]
