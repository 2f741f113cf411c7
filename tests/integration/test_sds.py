"""SDS: pilotfish's SDS client against the mesh's per-pod SDS server (and a scripted xDS
server) over a Unix socket, SotW and delta: secrets arrive in the store and /config_dump
(private keys redacted), rotation pushes a new version, a bad secret is NACKed with the last
good one kept, the server is not LIVE until its static clusters' secrets are ready (or their
initial_fetch_timeout passes). Real Envoy is the oracle for the SDS server and the dump."""

from __future__ import annotations

import base64
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from tests.support.proxies import ProxyProcess, free_port
from tests.support.sds import ThreadedSds, sds_bootstrap, sds_source
from tests.support.waiting import wait_for
from tests.support.xds import ads_bootstrap, tcp_listener

from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.security.sds_server import root_secret, workload_secret
from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import protos
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

REDACTED = base64.b64encode(b"[redacted]").decode()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> MeshCA:
    return MeshCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "sds.sock"


def secrets(proxy: ProxyProcess, section: str = "dynamic_active_secrets") -> dict[str, Any]:
    reply = proxy.call(f"/config_dump?resource={section}")
    assert reply.status == 200, reply.text
    return {s["name"]: s for s in reply.json().get("configs", [])}


def chain_of(dump: dict[str, Any]) -> bytes:
    return base64.b64decode(dump["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"])


DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


def _tls_listener(port: int, source: dict[str, Any]) -> dict[str, Any]:
    """A listener serving TLS with the SDS ``default`` certificate; answers 200 itself."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tls",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    tls = {
        "@type": DOWNSTREAM_TLS,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": source}]
        },
    }
    return {
        "name": "tls",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ],
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
            }
        ],
    }


class TlsClient:
    """A keep-alive HTTPS connection that trusts the mesh root."""

    def __init__(self, port: int, root_pem: bytes) -> None:
        context = ssl.create_default_context(cadata=root_pem.decode())
        context.check_hostname = False  # workload certificates name a SPIFFE URI only
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), 5))
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        self.serial = x509.load_der_x509_certificate(der).serial_number

    def get(self) -> bytes:
        self.sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def close(self) -> None:
        self.sock.close()


def test_rotation_reaches_new_connections_without_restart(
    ca: MeshCA, sock: Path, tmp_path: Path
) -> None:
    """The SDS server renews the certificate (2 s lifetime): new TLS connections get the new
    one from the same process, a connection opened before keeps working."""
    with ThreadedSds(ca, sock, ttl=2.0) as sds:
        port = free_port()
        boot = sds_bootstrap(sock, sds_source())
        boot["static_resources"]["listeners"] = [_tls_listener(port, sds_source())]
        with ProxyProcess("pilotfish", boot, tmp_path) as proxy:
            assert proxy.proc is not None
            pid = proxy.proc.pid
            old = TlsClient(port, ca.root_pem)
            try:
                assert old.get() == b"HTTP/1.1 200 OK"
                assert sds.certificate is not None

                def rotated() -> bool:
                    client = TlsClient(port, ca.root_pem)
                    client.close()
                    return client.serial != old.serial

                wait_for(rotated, "a new connection with the renewed certificate", 5)
                assert old.get() == b"HTTP/1.1 200 OK"  # the old connection goes on
                assert proxy.proc.pid == pid and proxy.proc.poll() is None
                assert proxy.stats()["listener.127.0.0.1_%d.ssl.handshake" % port] >= 2
            finally:
                old.close()


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_secrets_arrive_redacted_and_rotate(
    ca: MeshCA, sock: Path, tmp_path: Path, mode: str
) -> None:
    with ThreadedSds(ca, sock, ttl=2.0) as sds:
        boot = sds_bootstrap(sock, sds_source(delta=mode == "delta"))
        with ProxyProcess("pilotfish", boot, tmp_path) as proxy:
            assert proxy.call("/ready").text.strip() == "LIVE"
            dump = secrets(proxy)
            assert list(dump) == ["default", "ROOTCA"]
            default = dump["default"]
            assert default["version_info"] and default["last_updated"]
            assert default["secret"]["tls_certificate"]["private_key"] == {"inline_bytes": REDACTED}
            first = chain_of(default)
            assert sds.certificate is not None and first == sds.certificate.certificate_chain
            root = dump["ROOTCA"]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"]
            assert base64.b64decode(root) == ca.root_pem
            # One stream per secret, as Envoy opens them.
            assert len(sds.server.connected()) == 2
            assert all(i.delta == (mode == "delta") for i in sds.server.connected())
            # Renewed at half the 2 s lifetime: the new certificate arrives by itself.
            wait_for(lambda: chain_of(secrets(proxy)["default"]) != first, "a rotation", 5)
            stats = proxy.stats()
            assert stats["sds.default.update_success"] >= 2
            assert stats["sds.ROOTCA.update_success"] == 1
            assert stats["sds.default.update_rejected"] == 0
            assert stats["sds.default.control_plane.connected_state"] == 1
            text = proxy.call("/stats?filter=sds.default.version_text").text
            assert secrets(proxy)["default"]["version_info"] in text


def test_envoy_gets_the_same_secrets_from_our_sds_server(
    ca: MeshCA, sock: Path, tmp_path: Path
) -> None:
    """The oracle: Envoy fetches from the per-pod SDS server and dumps what pilotfish dumps."""
    with ThreadedSds(ca, sock) as sds:
        boot = sds_bootstrap(sock, sds_source())
        dumps = {}
        for kind in ("envoy", "pilotfish"):
            with ProxyProcess(kind, boot, tmp_path) as proxy:
                dumps[kind] = secrets(proxy)
                stats = proxy.stats()
                assert stats["sds.default.update_success"] == 1, kind
                assert stats["sds.ROOTCA.control_plane.connected_state"] == 1, kind
                assert stats["sds.default.key_rotation_failed"] == 0, kind
        envoy, ours = dumps["envoy"], dumps["pilotfish"]
        assert list(envoy) == list(ours) == ["default", "ROOTCA"]
        for name in envoy:
            assert set(envoy[name]) == set(ours[name])
            assert envoy[name]["version_info"] == ours[name]["version_info"]
            assert envoy[name]["secret"] == ours[name]["secret"]  # redaction included
        assert sds.certificate is not None
        assert chain_of(envoy["default"]) == sds.certificate.certificate_chain


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_bad_secret_is_nacked_and_the_last_good_kept(
    ca: MeshCA, sock: Path, tmp_path: Path, mode: str
) -> None:
    cert = ca.issue("default", "bookinfo", ttl=60)
    with ThreadedXdsServer(f"unix:{sock}") as xds:
        xds.set_resources(
            rt.SECRET.type_url,
            [workload_secret("default", cert), root_secret("ROOTCA", ca.root_pem)],
            version="v1",
        )
        boot = sds_bootstrap(sock, sds_source(delta=mode == "delta"))
        with ProxyProcess("pilotfish", boot, tmp_path) as proxy:
            bad = secret_pb2.Secret(name="default")
            bad.tls_certificate.certificate_chain.inline_bytes = b"not a certificate"
            bad.tls_certificate.private_key.inline_bytes = cert.private_key
            xds.update(rt.SECRET.type_url, [bad], version="v2")
            wait_for(
                lambda: any(a.error_detail is not None for a in xds.acks), "a NACK", timeout=10
            )
            nack = next(a for a in xds.acks if a.error_detail is not None)
            assert (
                "secret 'default': tls_certificate.certificate_chain" in nack.error_detail.message
            )
            kept = secrets(proxy)["default"]
            assert chain_of(kept) == cert.certificate_chain
            assert kept["version_info"] == "v1"
            stats = proxy.stats()
            assert stats["sds.default.update_rejected"] == 1
            assert stats["sds.default.update_success"] == 1


def test_not_live_until_the_secrets_arrive(ca: MeshCA, sock: Path, tmp_path: Path) -> None:
    with ThreadedXdsServer(f"unix:{sock}") as xds:
        boot = sds_bootstrap(sock, sds_source(initial_fetch_timeout="30s"))
        with ProxyProcess("pilotfish", boot, tmp_path, wait_live=False) as proxy:
            wait_for(lambda: len(xds.connected()) == 2, "both SDS streams", 10)
            assert proxy.call("/ready").text.strip() != "LIVE"
            assert proxy.stats()["server.state"] != 0
            assert list(secrets(proxy, "dynamic_warming_secrets")) == ["default", "ROOTCA"]
            cert = ca.issue("default", "bookinfo", ttl=60)
            xds.set_resources(
                rt.SECRET.type_url,
                [workload_secret("default", cert), root_secret("ROOTCA", ca.root_pem)],
            )
            wait_for(lambda: proxy.call("/ready").text.strip() == "LIVE", "LIVE", 10)
            assert list(secrets(proxy)) == ["default", "ROOTCA"]
            assert secrets(proxy, "dynamic_warming_secrets") == {}


def test_initial_fetch_timeout_lets_the_server_go_live(sock: Path, tmp_path: Path) -> None:
    """No SDS server at all: LIVE once initial_fetch_timeout passed, the secrets warming."""
    boot = sds_bootstrap(sock, sds_source(initial_fetch_timeout="0.5s"))
    with ProxyProcess("pilotfish", boot, tmp_path, wait_live=False) as proxy:
        wait_for(lambda: proxy.call("/ready").text.strip() == "LIVE", "LIVE", 10)
        stats = proxy.stats()
        assert stats["sds.default.init_fetch_timeout"] == 1
        assert stats["sds.ROOTCA.init_fetch_timeout"] == 1
        assert stats["sds.default.control_plane.connected_state"] == 0
        assert list(secrets(proxy, "dynamic_warming_secrets")) == ["default", "ROOTCA"]


def test_dynamic_listener_warms_until_its_ads_secret_arrives(ca: MeshCA, tmp_path: Path) -> None:
    """A listener from LDS whose TLS context takes ``default`` over ADS stays warming until the
    secret arrives. Skipped while xDS resources with TLS are refused (before TLS serving)."""
    listener = tcp_listener("tls-in", free_port(), "nowhere")
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [
                {
                    "name": "default",
                    "sds_config": {"ads": {}, "initial_fetch_timeout": "30s"},
                }
            ]
        },
    }
    socket = listener.filter_chains[0].transport_socket  # type: ignore[attr-defined]
    socket.name = "envoy.transport_sockets.tls"
    socket.typed_config.CopyFrom(json_format.ParseDict(protos.load_types_in(tls), AnyProto()))
    with ThreadedXdsServer() as xds:
        xds.set_resources(rt.CLUSTER.type_url, [])
        xds.set_resources(rt.LISTENER.type_url, [listener])
        boot = ads_bootstrap(xds.address)
        with ProxyProcess("pilotfish", boot, tmp_path, wait_live=False) as proxy:

            def lds_answers() -> list[Any]:
                return [a for a in xds.acks if a.type_url == rt.LISTENER.type_url]

            wait_for(lambda: bool(lds_answers()), "an LDS answer", 10)
            assert not [a for a in lds_answers() if a.error_detail is not None]
            wait_for(lambda: "default" in _subscribed(xds), "the SDS subscription over ADS", 10)
            dump = proxy.call("/config_dump?resource=dynamic_listeners").json()["configs"][0]
            assert "warming_state" in dump and "active_state" not in dump
            assert proxy.stats()["listener_manager.total_listeners_warming"] == 1
            assert proxy.call("/ready").text.strip() != "LIVE"  # LDS initializing
            cert = ca.issue("default", "bookinfo", ttl=60)
            xds.set_resources(rt.SECRET.type_url, [workload_secret("default", cert)])
            wait_for(
                lambda: proxy.stats()["listener_manager.total_listeners_warming"] == 0,
                "the listener to warm",
                10,
            )
            dump = proxy.call("/config_dump?resource=dynamic_listeners").json()["configs"][0]
            assert "active_state" in dump and "warming_state" not in dump
            wait_for(lambda: proxy.call("/ready").text.strip() == "LIVE", "LIVE", 10)


def _subscribed(xds: ThreadedXdsServer) -> set[str]:
    return {n for i in xds.connected() for n in i.subscribed.get(rt.SECRET.type_url, ())}
