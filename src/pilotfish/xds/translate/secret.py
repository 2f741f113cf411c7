"""Secrets (``envoy.extensions.transport_sockets.tls.v3.Secret``, from the bootstrap's
``static_resources.secrets`` or from SDS) into the SecretStore's values.

The fields are parsed as in TLS contexts (tls/config.py: unimplemented fields refused by
name, SAN matchers compiled). Envoy checks a secret when it builds the SSL context from it
and rejects the update if that fails; the same checks are done here, once per version, so
that a bad certificate is NACKed naming the field and the last good secret keeps serving:
PEM that parses, a private key that matches the leaf certificate, a CA bundle with at least
one certificate (checked with ``ssl`` as OpenSSL loads them, tls/pem.py). Pure but for
``filename`` data sources, which are read (as Envoy reads them).
"""

from __future__ import annotations

from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.tls.config import DataSource, certificate_spec, validation_spec
from pilotfish.tls.pem import PemError, check_certificates, check_key_pair
from pilotfish.tls.secrets import Secret, TlsCertificate, ValidationContext


def decode_secret(msg: Any) -> Secret:
    """The store value of a Secret proto; raises ConfigError naming the offending field."""
    kind = msg.WhichOneof("type")
    if kind == "tls_certificate":
        return _tls_certificate(msg.tls_certificate, "tls_certificate")
    if kind == "validation_context":
        return _validation_context(msg.validation_context, "validation_context")
    if kind is None:
        raise ConfigError("type", "a secret needs one of tls_certificate, validation_context")
    raise ConfigError(kind, "pilotfish serves tls_certificate and validation_context secrets only")


def _tls_certificate(msg: Any, path: str) -> TlsCertificate:
    if not msg.HasField("certificate_chain"):
        raise ConfigError(f"{path}.certificate_chain", "a certificate chain is required")
    if not msg.HasField("private_key"):
        raise ConfigError(f"{path}.private_key", "a private key is required")
    spec = certificate_spec(msg, path)
    chain = _read(spec.certificate_chain, f"{path}.certificate_chain")
    key_pem = _read(spec.private_key, f"{path}.private_key")
    try:
        check_key_pair(chain, key_pem)
    except PemError as e:
        field = "certificate_chain" if e.part == "certificate" else "private_key"
        raise ConfigError(f"{path}.{field}", str(e)) from None
    return TlsCertificate(certificate_chain=chain, private_key=key_pem)


def _validation_context(msg: Any, path: str) -> ValidationContext:
    spec = validation_spec(msg, path)
    if spec.trusted_ca is None:
        raise ConfigError(
            f"{path}.trusted_ca", "pilotfish needs trusted_ca in a validation context"
        )
    trusted = _read(spec.trusted_ca, f"{path}.trusted_ca")
    try:
        check_certificates(trusted)
    except PemError as e:
        raise ConfigError(f"{path}.trusted_ca", str(e)) from None
    return ValidationContext(trusted_ca=trusted, match_subject_alt_names=spec.san_matchers)


def _read(source: DataSource, path: str) -> bytes:
    try:
        return source.read()
    except OSError as e:
        raise ConfigError(
            f"{path}.filename", f"cannot read {source.filename}: {e.strerror}"
        ) from None
    except KeyError:
        raise ConfigError(
            f"{path}.environment_variable",
            f"Environment variable doesn't exist: {source.environment_variable}",
        ) from None
