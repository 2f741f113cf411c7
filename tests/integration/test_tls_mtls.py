"""TLS in the data plane against real peers: Envoy (the oracle) and pilotfish on either side of
Istio-shaped mTLS, PERMISSIVE and STRICT listeners, foreign CAs, SAN mismatches, garbage.

One pilotfish and one Envoy serve every case (ports chosen up front so that each can point at
the other):

    client -> envoy:outbound_pf   -mTLS-> pilotfish:inbound_strict   -> echo      (a)
    client -> pf:outbound_envoy   -mTLS-> envoy:inbound              -> echo      (b)
    client -> pf:outbound_self    -mTLS-> pilotfish:inbound_strict   -> echo      (c)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.certs import CertAuthority, Leaf, spiffe_id
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ProxyProcess, bootstrap, free_port, get, socket_address
from tests.support.waiting import wait_for

from pilotfish.mesh.translate.mtls import SERVER_CIPHERS

TLS = "envoy.transport_sockets.tls"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    },
}


def _certificate(leaf: Leaf) -> dict[str, Any]:
    return {
        "certificate_chain": {"inline_string": leaf.cert_pem.decode()},
        "private_key": {"inline_string": leaf.key_pem.decode()},
    }


def downstream_tls(leaf: Leaf, ca: CertAuthority, *, require: bool = True) -> dict[str, Any]:
    """Istio's inbound shape: client certificate required, SANs in the trust domain."""
    return {
        "name": TLS,
        "typed_config": {
            "@type": DOWNSTREAM,
            "require_client_certificate": require,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                    "cipher_suites": SERVER_CIPHERS,
                },
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [_certificate(leaf)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_subject_alt_names": [{"prefix": "spiffe://cluster.local/"}]
                    },
                    "validation_context_sds_secret_config": {"name": "ROOTCA"},
                },
            },
        },
    }


def upstream_tls(leaf: Leaf, ca: CertAuthority, san: str, sni: str = "") -> dict[str, Any]:
    """Istio's outbound shape: its certificate, the root CA, the server's exact SPIFFE ID."""
    config: dict[str, Any] = {
        "@type": UPSTREAM,
        "common_tls_context": {
            "alpn_protocols": ["istio-peer-exchange", "istio", "h2"],
            "tls_certificates": [_certificate(leaf)],
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": san}}
                    ]
                },
                "validation_context_sds_secret_config": {"name": "ROOTCA"},
            },
        },
    }
    if sni:
        config["sni"] = sni
    return {"name": TLS, "typed_config": config}


def root_secret(ca: CertAuthority) -> dict[str, Any]:
    return {
        "name": "ROOTCA",
        "validation_context": {"trusted_ca": {"inline_string": ca.cert_pem.decode()}},
    }


def _hcm(name: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": name,
            "route_config": {
                "name": name,
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ],
            },
            "forward_client_cert_details": "APPEND_FORWARD",
            "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
        },
    }


def listener(
    name: str,
    port: int,
    cluster: str,
    transport_socket: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [_hcm(name, cluster)]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    return {"name": name, "address": socket_address(port), "filter_chains": [chain]}


def permissive_listener(name: str, port: int, cluster: str, tls: dict[str, Any]) -> dict[str, Any]:
    """Istio's PERMISSIVE inbound: one port, a TLS chain and a plain-text chain."""
    return {
        "name": name,
        "address": socket_address(port),
        "listener_filters": [TLS_INSPECTOR],
        "filter_chains": [
            {
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": [_hcm(name + "_tls", cluster)],
                "transport_socket": tls,
            },
            {
                "filter_chain_match": {"transport_protocol": "raw_buffer"},
                "filters": [_hcm(name + "_plain", cluster)],
            },
        ],
    }


def cluster(name: str, port: int, transport_socket: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}],
        },
    }
    if transport_socket is not None:
        c["transport_socket"] = transport_socket
    return c


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.ca = CertAuthority("mesh root")
        self.other_ca = CertAuthority("unrelated root")
        self.pf_leaf = self.ca.issue_spiffe("default", "pilotfish")
        self.envoy_leaf = self.ca.issue_spiffe("default", "envoy")
        self.foreign_leaf = self.other_ca.issue_spiffe("default", "intruder")
        self.ports = {
            n: free_port()
            for n in (
                *("pf_strict", "pf_permissive", "pf_out_envoy", "pf_out_self", "pf_badsan"),
                *("pf_foreign", "envoy_inbound", "envoy_out_pf", "envoy_foreign"),
            )
        }
        self.tmp = tmp

    def pilotfish_bootstrap(self, echo_port: int) -> dict[str, Any]:
        p, ca = self.ports, self.ca
        inbound = downstream_tls(self.pf_leaf, ca)
        envoy_id = spiffe_id("default", "envoy")
        pf_id = spiffe_id("default", "pilotfish")
        b = bootstrap(
            [
                listener("inbound_strict", p["pf_strict"], "echo", inbound),
                permissive_listener("inbound_permissive", p["pf_permissive"], "echo", inbound),
                listener("outbound_envoy", p["pf_out_envoy"], "envoy_inbound"),
                listener("outbound_self", p["pf_out_self"], "self_inbound"),
                listener("outbound_badsan", p["pf_badsan"], "envoy_badsan"),
                listener("outbound_foreign", p["pf_foreign"], "envoy_foreign_cert"),
            ],
            [
                cluster("echo", echo_port),
                cluster(
                    "envoy_inbound",
                    p["envoy_inbound"],
                    upstream_tls(self.pf_leaf, ca, envoy_id, sni="outbound_.80_._.envoy"),
                ),
                cluster("self_inbound", p["pf_strict"], upstream_tls(self.pf_leaf, ca, pf_id)),
                cluster(
                    "envoy_badsan",
                    p["envoy_inbound"],
                    upstream_tls(self.pf_leaf, ca, spiffe_id("default", "someone-else")),
                ),
                cluster(
                    "envoy_foreign_cert",
                    p["envoy_inbound"],
                    upstream_tls(self.foreign_leaf, ca, envoy_id),
                ),
            ],
        )
        b["static_resources"]["secrets"] = [root_secret(ca)]
        return b

    def envoy_bootstrap(self, echo_port: int) -> dict[str, Any]:
        p, ca = self.ports, self.ca
        pf_id = spiffe_id("default", "pilotfish")
        b = bootstrap(
            [
                listener(
                    "inbound", p["envoy_inbound"], "echo", downstream_tls(self.envoy_leaf, ca)
                ),
                listener("outbound_pf", p["envoy_out_pf"], "pf_inbound"),
                listener("outbound_foreign", p["envoy_foreign"], "pf_inbound_foreign"),
            ],
            [
                cluster("echo", echo_port),
                cluster("pf_inbound", p["pf_strict"], upstream_tls(self.envoy_leaf, ca, pf_id)),
                cluster(
                    "pf_inbound_foreign",
                    p["pf_strict"],
                    upstream_tls(self.foreign_leaf, ca, pf_id),
                ),
            ],
        )
        b["static_resources"]["secrets"] = [root_secret(ca)]
        return b

    def client_context(self, leaf: Leaf | None = None) -> ssl.SSLContext:
        """A Python mTLS client trusting the mesh root (hostname checks off, as in the mesh)."""
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        ctx.check_hostname = False
        if leaf is not None:
            cert, key = leaf.write(self.tmp, f"client-{id(leaf)}")
            ctx.load_cert_chain(cert, key)
        return ctx


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    return Mesh(tmp_path_factory.mktemp("mtls"))


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoBackend]:
    with EchoBackend("tls-echo") as backend:
        yield backend


@pytest.fixture(scope="module")
def pf(
    mesh: Mesh, echo: EchoBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    boot = mesh.pilotfish_bootstrap(echo.port)
    with ProxyProcess("pilotfish", boot, tmp_path_factory.mktemp("pf"), free_ports=False) as p:
        yield p


@pytest.fixture(scope="module")
def envoy(
    mesh: Mesh, echo: EchoBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    boot = mesh.envoy_bootstrap(echo.port)
    with ProxyProcess("envoy", boot, tmp_path_factory.mktemp("envoy"), free_ports=False) as p:
        yield p


def https_get(port: int, ctx: ssl.SSLContext, path: str = "/", **kw: Any) -> tuple[int, bytes]:
    """One HTTP/1.1 request over TLS; returns (status, raw response)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, **kw) as s,
    ):
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def _stat(proxy: ProxyProcess, name: str) -> int:
    return proxy.stats(name).get("", 0)


def test_envoy_client_to_pilotfish_inbound_mtls(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh, echo: EchoBackend
) -> None:
    before = _stat(pf, "listener.127.0.0.1_{}.ssl.handshake".format(mesh.ports["pf_strict"]))
    status = get(mesh.ports["envoy_out_pf"], "/a")[0]
    assert status == 200
    name = "listener.127.0.0.1_{}.ssl.handshake".format(mesh.ports["pf_strict"])
    assert _stat(pf, name) > before
    assert _stat(envoy, "cluster.pf_inbound.ssl.handshake") >= 1
    # The HCM sees the peer's identity: x-forwarded-client-cert with Envoy's URI SAN.
    xfcc = echo.requests[-1].header("x-forwarded-client-cert")
    assert xfcc is not None and "URI=" + spiffe_id("default", "envoy") in xfcc
    assert "Hash=" in xfcc


def test_pilotfish_client_to_envoy_inbound_mtls(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh
) -> None:
    status = get(mesh.ports["pf_out_envoy"], "/b")[0]
    assert status == 200
    assert _stat(pf, "cluster.envoy_inbound.ssl.handshake") >= 1
    inbound = "listener.127.0.0.1_{}.ssl.handshake".format(mesh.ports["envoy_inbound"])
    assert _stat(envoy, inbound) >= 1
    # Envoy's HCM counts TLS connections too: the name pilotfish uses (next test).
    assert _stat(envoy, "http.inbound.downstream_cx_ssl_total") >= 1


def test_pilotfish_to_pilotfish_mtls(pf: ProxyProcess, mesh: Mesh) -> None:
    for _ in range(3):
        assert get(mesh.ports["pf_out_self"], "/c")[0] == 200
    assert _stat(pf, "cluster.self_inbound.ssl.handshake") >= 1
    # Keep-alive upstream: three requests, one handshake.
    assert _stat(pf, "cluster.self_inbound.upstream_cx_total") == 1


def test_permissive_serves_plain_and_mtls(pf: ProxyProcess, mesh: Mesh) -> None:
    port = mesh.ports["pf_permissive"]
    assert get(port, "/plain")[0] == 200
    status, _ = https_get(port, mesh.client_context(mesh.envoy_leaf))
    assert status == 200
    assert _stat(pf, "http.inbound_permissive_tls.downstream_cx_ssl_total") >= 1
    assert _stat(pf, "http.inbound_permissive_plain.downstream_cx_ssl_total") == 0
    assert _stat(pf, "http.inbound_permissive_plain.downstream_cx_total") >= 1


def test_strict_rejects_plain_text_and_counts(pf: ProxyProcess, mesh: Mesh) -> None:
    port = mesh.ports["pf_strict"]
    name = f"listener.127.0.0.1_{port}.ssl.connection_error"
    before = _stat(pf, name)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        _read_until_closed(s)  # closed without an HTTP response
    wait_for(lambda: _stat(pf, name) > before, timeout=5, what="ssl.connection_error")


def _read_until_closed(s: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            data += chunk
    assert not data.startswith(b"HTTP/")
    return data


def test_strict_requires_a_client_certificate(pf: ProxyProcess, mesh: Mesh) -> None:
    with pytest.raises((ssl.SSLError, OSError, IndexError, ValueError)):
        https_get(mesh.ports["pf_strict"], mesh.client_context(None))


def test_client_certificate_from_another_ca_is_rejected_by_pilotfish(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh
) -> None:
    name = "listener.127.0.0.1_{}.ssl.fail_verify_error".format(mesh.ports["pf_strict"])
    before = _stat(pf, name)
    status = get(mesh.ports["envoy_foreign"], "/x")[0]
    assert status == 503
    assert _stat(pf, name) > before


def test_client_of_another_trust_domain_is_rejected_by_pilotfish_and_envoy(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh
) -> None:
    """Same root, but a SPIFFE id outside ``cluster.local``: the inbound SAN prefix check
    (Istio's ``spiffe://cluster.local/``) refuses it, in both proxies."""
    stranger = mesh.ca.issue(uris=("spiffe://other.domain/ns/default/sa/intruder",))
    for proxy, port_name in ((pf, "pf_strict"), (envoy, "envoy_inbound")):
        name = f"listener.127.0.0.1_{mesh.ports[port_name]}.ssl.fail_verify_san"
        before = _stat(proxy, name)
        with pytest.raises((ssl.SSLError, OSError, IndexError, ValueError)):
            https_get(mesh.ports[port_name], mesh.client_context(stranger))
        wait_for(lambda: _stat(proxy, name) > before, timeout=5, what=f"{name} counted")  # noqa: B023
        # The same client with an identity in the trust domain gets through.
        member = mesh.ca.issue_spiffe("default", "member")
        assert https_get(mesh.ports[port_name], mesh.client_context(member))[0] == 200


def test_client_certificate_from_another_ca_is_rejected_by_envoy(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh
) -> None:
    status = get(mesh.ports["pf_foreign"], "/x")[0]
    assert status == 503
    inbound = "listener.127.0.0.1_{}.ssl.fail_verify_error".format(mesh.ports["envoy_inbound"])
    assert _stat(envoy, inbound) >= 1


def test_upstream_san_mismatch_is_503_and_counted(
    pf: ProxyProcess, envoy: ProxyProcess, mesh: Mesh
) -> None:
    status = get(mesh.ports["pf_badsan"], "/x")[0]
    assert status == 503
    assert _stat(pf, "cluster.envoy_badsan.ssl.fail_verify_san") >= 1
    assert _stat(pf, "cluster.envoy_badsan.upstream_cx_connect_fail") >= 1


def test_garbage_client_hello_closes_cleanly(pf: ProxyProcess, mesh: Mesh) -> None:
    port = mesh.ports["pf_strict"]
    name = f"listener.127.0.0.1_{port}.ssl.connection_error"
    before = _stat(pf, name)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # A complete ClientHello record whose body is nonsense: refused at once.
        s.sendall(b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04" + b"\xff\xff\xff\xff")
        _read_until_closed(s)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00" * 4096)
        _read_until_closed(s)
    wait_for(lambda: _stat(pf, name) >= before + 2, timeout=5, what="ssl.connection_error")
    status, _ = https_get(port, mesh.client_context(mesh.envoy_leaf))
    assert status == 200


def test_alpn_never_offers_h2_to_http1_only_manager(pf: ProxyProcess, mesh: Mesh) -> None:
    ctx = mesh.client_context(mesh.envoy_leaf)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", mesh.ports["pf_strict"]), timeout=5) as raw,
        ctx.wrap_socket(raw) as s,
    ):
        assert s.selected_alpn_protocol() == "http/1.1"
