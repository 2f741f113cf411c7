"""The mesh CA (root persisted 0600, SPIFFE workload certificates that verify, TTLs), the
secret decoder (NACK reasons naming the field), /config_dump's redaction, and the mesh
bootstrap's sds-grpc cluster."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilotfish.admin.config_dump import redacted
from pilotfish.errors import ConfigError
from pilotfish.mesh.bootstrap import proxy_bootstrap
from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.security.sds_server import root_secret, workload_secret
from pilotfish.tls.secrets import TlsCertificate, ValidationContext
from pilotfish.xds.translate.secret import decode_secret


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> MeshCA:
    return MeshCA(tmp_path_factory.mktemp("ca"), workload_ttl=3600)


def test_workload_certificate_chains_to_the_root_with_its_spiffe_id(ca: MeshCA) -> None:
    cert = ca.issue("bookinfo", "reviews")
    leaf, root = x509.load_pem_x509_certificates(cert.certificate_chain)
    assert root == ca.root_certificate
    leaf.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    ]
    assert cert.identity == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    # The key is the leaf's.
    value = decode_secret(workload_secret("default", cert))
    assert isinstance(value, TlsCertificate) and value.private_key == cert.private_key


def test_ttl_default_and_per_issue(ca: MeshCA) -> None:
    default = ca.issue("ns", "sa")
    assert default.lifetime == pytest.approx(3600, abs=1)
    short = ca.issue("ns", "sa", ttl=2)
    leaf = x509.load_pem_x509_certificates(short.certificate_chain)[0]
    valid_for = leaf.not_valid_after_utc - datetime.datetime.fromtimestamp(
        short.issued_at, datetime.UTC
    )
    assert valid_for.total_seconds() == pytest.approx(2, abs=1)
    assert leaf.not_valid_before_utc.timestamp() < short.issued_at  # backdated for skew
    assert MeshCA(ca.state_dir).workload_ttl == 24 * 3600  # Istio's default
    with pytest.raises(ValueError, match="workload_ttl"):
        MeshCA(ca.state_dir, workload_ttl=0)
    with pytest.raises(ValueError, match="namespace"):
        ca.issue("", "sa")


def test_root_persists_across_restarts_with_a_private_key_file(tmp_path: Path) -> None:
    first = MeshCA(tmp_path / "ca")
    key_file = tmp_path / "ca" / "root-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = MeshCA(tmp_path / "ca")
    assert again.root_pem == first.root_pem
    # Certificates of the restarted CA chain to the same root.
    leaf = x509.load_pem_x509_certificates(again.issue("a", "b").certificate_chain)[0]
    leaf.verify_directly_issued_by(first.root_certificate)
    assert MeshCA(tmp_path / "other").root_pem != first.root_pem


def test_root_secret_decodes(ca: MeshCA) -> None:
    value = decode_secret(root_secret("ROOTCA", ca.root_pem))
    assert isinstance(value, ValidationContext) and value.trusted_ca == ca.root_pem


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda s: s.tls_certificate.certificate_chain.ClearField("inline_bytes"),
            "certificate_chain",
        ),
        (lambda s: setattr(s.tls_certificate.private_key, "inline_bytes", b"junk"), "private_key"),
        (
            lambda s: setattr(s.tls_certificate.certificate_chain, "filename", "/nonexistent"),
            "certificate_chain.filename",
        ),
    ],
)
def test_bad_certificates_name_the_field(ca: MeshCA, mutate: object, field: str) -> None:
    secret = workload_secret("default", ca.issue("a", "b"))
    mutate(secret)  # type: ignore[operator]
    with pytest.raises(ConfigError) as e:
        decode_secret(secret)
    assert e.value.path == f"tls_certificate.{field}"


def test_a_key_of_another_certificate_is_refused(ca: MeshCA) -> None:
    one, other = ca.issue("a", "b"), ca.issue("a", "b")
    secret = workload_secret("default", one)
    secret.tls_certificate.private_key.inline_bytes = other.private_key
    with pytest.raises(ConfigError, match="does not match"):
        decode_secret(secret)


def test_empty_and_unsupported_secrets() -> None:
    with pytest.raises(ConfigError, match="tls_certificate, validation_context"):
        decode_secret(secret_pb2.Secret(name="x"))
    generic = secret_pb2.Secret(name="x")
    generic.generic_secret.secret.inline_string = "s"
    with pytest.raises(ConfigError) as e:
        decode_secret(generic)
    assert e.value.path == "generic_secret"
    empty_ca = secret_pb2.Secret(name="x")
    empty_ca.validation_context.trusted_ca.inline_string = ""
    with pytest.raises(ConfigError) as e:
        decode_secret(empty_ca)
    assert e.value.path == "validation_context.trusted_ca"


def test_redaction_blanks_sensitive_fields_only(ca: MeshCA) -> None:
    secret = workload_secret("default", ca.issue("a", "b"))
    secret.tls_certificate.private_key.ClearField("inline_bytes")
    secret.tls_certificate.private_key.filename = "/etc/key.pem"
    out = redacted(secret)
    assert out.tls_certificate.private_key.filename == "[redacted]"
    assert out.tls_certificate.certificate_chain == secret.tls_certificate.certificate_chain
    assert secret.tls_certificate.private_key.filename == "/etc/key.pem"  # a copy


def test_bootstrap_sds_grpc_cluster_is_a_pipe() -> None:
    boot = proxy_bootstrap("unix:/x/xds.sock", "n", cluster="c", sds_socket="/x/pod.sock")
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    address = clusters["sds-grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"] == {"pipe": {"path": "/x/pod.sock"}}
    assert "http2_protocol_options" in str(clusters["sds-grpc"])
    assert "sds-grpc" not in str(proxy_bootstrap("unix:/x/xds.sock", "n", cluster="c"))
