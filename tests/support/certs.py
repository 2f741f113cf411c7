"""Test certificates with ``cryptography``: a root CA issuing SPIFFE workload certificates
(``spiffe://cluster.local/ns/NS/sa/SA``, ECDSA P-256 as Istio's), and unrelated CAs.

    ca = CertAuthority("root")
    leaf = ca.issue_spiffe("default", "frontend")      # Leaf: .cert_pem, .key_pem, .uri
    leaf.write(tmp_path, "frontend")                   # -> (cert path, key path)
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pilotfish.mesh.security.ca import TRUST_DOMAIN, build_leaf, build_root, private_key_pem


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Leaf:
    cert_pem: bytes
    key_pem: bytes
    uri: str
    der: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key


class CertAuthority:
    """A root made as the mesh CA makes its own (mesh/security/ca.py), in memory, issuing
    leaves with any SANs and subject."""

    def __init__(self, name: str = "pilotfish test root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        self.cert = build_root(
            self.key, subject, not_before=now - datetime.timedelta(hours=1), lifetime=10 * 86400
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "root") -> Path:
        path = directory / f"{name}-ca.crt"
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        *,
        uris: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        common_name: str = "",
        organization: str = "",
    ) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = []
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        if common_name:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.RFC822Name(e) for e in emails]
        now = datetime.datetime.now(datetime.UTC)
        cert = build_leaf(
            self.cert,
            self.key,
            key,
            names=names,
            subject=x509.Name(attrs),
            not_before=now - datetime.timedelta(minutes=5),
            not_after=now + datetime.timedelta(days=1),
        )
        return Leaf(
            cert.public_bytes(serialization.Encoding.PEM),
            private_key_pem(key),
            uris[0] if uris else "",
            cert.public_bytes(serialization.Encoding.DER),
        )

    def issue_spiffe(self, namespace: str, service_account: str, **kw: object) -> Leaf:
        return self.issue(uris=(spiffe_id(namespace, service_account),), **kw)  # type: ignore[arg-type]
