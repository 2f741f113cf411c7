"""tls/pem.py: the ssl-only certificate checks and the DER walker for URI SANs, compared
with what ``cryptography`` (the test side) reads from the same certificates."""

from __future__ import annotations

import pytest
from cryptography import x509
from tests.support.certs import CertAuthority

from pilotfish.tls.pem import PemError, check_certificates, check_key_pair, uri_sans


def _cryptography_uris(pem: bytes) -> tuple[str, ...]:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


@pytest.mark.parametrize(
    "sans",
    [
        {"uris": ("spiffe://cluster.local/ns/default/sa/bookinfo-reviews",)},
        {"uris": ("spiffe://a/1", "spiffe://b/2"), "dns": ("x.example",)},
        {"dns": ("only.dns",), "ips": ("10.0.0.1",), "emails": ("a@b.c",)},
        {"common_name": "no-sans-at-all"},
        {"uris": ("spiffe://" + "long/" * 60,), "organization": "o"},  # long-form lengths
    ],
)
def test_uri_sans_read_as_cryptography_reads_them(sans: dict[str, object]) -> None:
    leaf = CertAuthority().issue(**sans)  # type: ignore[arg-type]
    assert uri_sans(leaf.cert_pem) == _cryptography_uris(leaf.cert_pem)
    assert uri_sans(leaf.cert_pem + CertAuthority().cert_pem) == _cryptography_uris(leaf.cert_pem)


def test_uri_sans_of_garbage_is_empty() -> None:
    assert uri_sans(b"") == ()
    assert uri_sans(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") == ()


def test_key_pairs_and_bundles_are_checked() -> None:
    ca = CertAuthority()
    one, other = ca.issue_spiffe("a", "b"), ca.issue_spiffe("a", "c")
    check_key_pair(one.cert_pem + ca.cert_pem, one.key_pem)
    assert check_certificates(one.cert_pem + ca.cert_pem) == 2
    with pytest.raises(PemError, match="does not match") as e:
        check_key_pair(one.cert_pem, other.key_pem)
    assert e.value.part == "key"
    with pytest.raises(PemError) as e:
        check_key_pair(one.cert_pem, b"not a key")
    assert e.value.part == "key"
    with pytest.raises(PemError, match="no certificate") as e:
        check_certificates(b"")
    assert e.value.part == "certificate"
    with pytest.raises(PemError) as e:
        check_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert e.value.part == "certificate"


def test_the_proxy_does_not_load_cryptography() -> None:
    """7 MB of RSS per sidecar: only the mesh CA (control plane) and the tests use it."""
    import subprocess
    import sys

    code = (
        "import sys, pilotfish.server, pilotfish.xds.sds, pilotfish.xds.translate.secret,"
        " pilotfish.tls.context, pilotfish.tls.downstream, pilotfish.tls.upstream;"
        " print('cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
