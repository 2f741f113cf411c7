"""The local mesh's certificate authority, like istiod's self-signed CA: a root for the
trust domain, kept under a state directory so that a restarted control plane keeps its
identity (the private key file is 0600), and short-lived workload certificates whose URI SAN
is the SPIFFE identity ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.

Keys are ECDSA P-256 (Istio's workload default); workload certificates live 24 h by default
(Istio's ``DEFAULT_WORKLOAD_CERT_TTL``) and carry the root after the leaf in their chain, as
istio-agent serves them."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
WORKLOAD_TTL = 24 * 3600.0
ROOT_TTL = 10 * 365 * 24 * 3600.0
ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
# Issued a little in the past, so that a peer's slightly late clock accepts it (Istio too).
BACKDATE = 60.0
BACKDATE_DELTA = datetime.timedelta(seconds=BACKDATE)


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """A workload's certificate chain (leaf, then root) and private key, PEM."""

    certificate_chain: bytes
    private_key: bytes
    not_before: float  # backdated a little before issued_at
    not_after: float
    identity: str
    issued_at: float

    @property
    def lifetime(self) -> float:
        """The TTL it was issued with (its validity without the backdating)."""
        return self.not_after - self.issued_at


class MeshCA:
    """Load the root from ``state_dir`` or create it there; ``issue`` workload certificates."""

    def __init__(
        self,
        state_dir: Path,
        *,
        trust_domain: str = TRUST_DOMAIN,
        workload_ttl: float = WORKLOAD_TTL,
    ) -> None:
        if workload_ttl <= 0:
            raise ValueError(f"workload_ttl: must be positive, not {workload_ttl}")
        self.state_dir = state_dir
        self.trust_domain = trust_domain
        self.workload_ttl = workload_ttl
        self._key, self._root = self._load_or_create()
        self.root_pem = self._root.public_bytes(serialization.Encoding.PEM)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root

    def _load_or_create(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        cert_path = self.state_dir / ROOT_CERT_FILE
        key_path = self.state_dir / ROOT_KEY_FILE
        if cert_path.exists() and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key")
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _utcnow()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)])
        root = build_root(key, name, not_before=now - BACKDATE_DELTA, lifetime=ROOT_TTL)
        key_bytes = private_key_pem(key)
        # The key first, created 0600 (never readable by others, even for a moment).
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_bytes)
        cert_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        return key, root

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        ttl: float | None = None,
        now: float | None = None,
    ) -> WorkloadCertificate:
        """A new key and certificate for ``namespace``/``service_account``."""
        if not namespace or not service_account:
            raise ValueError("a workload identity needs a namespace and a service account")
        lifetime = self.workload_ttl if ttl is None else ttl
        key = ec.generate_private_key(ec.SECP256R1())
        start = _utcnow() if now is None else datetime.datetime.fromtimestamp(now, datetime.UTC)
        not_before = start - datetime.timedelta(seconds=BACKDATE)
        not_after = start + datetime.timedelta(seconds=lifetime)
        identity = spiffe_id(namespace, service_account, self.trust_domain)
        cert = build_leaf(
            self._root,
            self._key,
            key,
            names=[x509.UniformResourceIdentifier(identity)],
            not_before=not_before,
            not_after=not_after,
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.root_pem
        return WorkloadCertificate(
            chain,
            private_key_pem(key),
            not_before.timestamp(),
            not_after.timestamp(),
            identity,
            start.timestamp(),
        )


def build_root(
    key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    *,
    not_before: datetime.datetime,
    lifetime: float,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key``."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(seconds=lifetime))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def build_leaf(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    names: list[x509.GeneralName],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    subject: x509.Name | None = None,
) -> x509.Certificate:
    """An end-entity certificate (client and server auth) for ``key``, signed by ``issuer``.
    Istio's workload certificates have no subject: the SAN is then critical (RFC 5280
    4.2.1.6)."""
    subject = subject if subject is not None else x509.Name([])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=not list(subject)
        )
    return builder.sign(issuer_key, hashes.SHA256())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
