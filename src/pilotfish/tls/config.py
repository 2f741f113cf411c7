"""TLS contexts as configured: DownstreamTlsContext / UpstreamTlsContext (and SDS ``Secret``
protos) parsed into plain values, with every field pilotfish does not implement refused by
name. Pure: files named by ``filename`` data sources are read when the SSL context is built
(tls/context.py), not here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.tls.san import DNS, EMAIL, IP_ADDRESS, URI, SanMatcher
from pilotfish.tls.secrets import SdsSecretRef


@dataclass(frozen=True, slots=True)
class DataSource:
    """envoy.config.core.v3.DataSource: a file, inline bytes or an environment variable."""

    filename: str = ""
    inline: bytes = b""
    environment_variable: str = ""

    def read(self) -> bytes:
        """The bytes; raises OSError (file) or KeyError (environment variable)."""
        if self.filename:
            with open(self.filename, "rb") as f:
                return f.read()
        if self.environment_variable:
            return os.environ[self.environment_variable].encode()
        return self.inline


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    certificate_chain: DataSource
    private_key: DataSource


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    """A CertificateValidationContext: trusted CAs (None: peers are not verified) and SANs."""

    trusted_ca: DataSource | None = None
    san_matchers: tuple[SanMatcher, ...] = ()


TLS_VERSIONS = ("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")


@dataclass(frozen=True, slots=True)
class TlsContextConfig:
    downstream: bool
    sni: str = ""
    alpn: tuple[str, ...] = ()
    # Secrets the context takes from SDS, with the config source of each (for the SDS
    # subscriptions; the context itself reads them from the SecretStore by name).
    sds_secrets: tuple[SdsSecretRef, ...] = ()
    certificates: tuple[CertificateSpec, ...] = ()  # tls_certificates
    certificate_secrets: tuple[str, ...] = ()  # tls_certificate_sds_secret_configs names
    # validation_context, or combined_validation_context.default_validation_context.
    validation: ValidationSpec | None = None
    validation_secret: str = ""  # validation_context_sds_secret_config name
    require_client_certificate: bool = False
    min_version: str = "TLS_AUTO"
    max_version: str = "TLS_AUTO"
    cipher_suites: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()


def _refuse_unknown(msg: Any, path: str, allowed: frozenset[str]) -> None:
    """Refuse, by name, any field set in ``msg`` that is not in ``allowed``."""
    for fd, _ in msg.ListFields():
        if fd.name not in allowed:
            raise ConfigError(f"{path}.{fd.name}", "not supported by pilotfish's TLS")


_UPSTREAM = frozenset(("common_tls_context", "sni", "allow_renegotiation", "max_session_keys"))
_DOWNSTREAM = frozenset(
    (
        "common_tls_context",
        "require_client_certificate",
        "disable_stateless_session_resumption",
        "disable_stateful_session_resumption",
        "session_timeout",
        "prefer_client_ciphers",
        "full_scan_certs_on_sni_mismatch",
    )
)
_COMMON = frozenset(
    (
        "tls_params",
        "tls_certificates",
        "tls_certificate_sds_secret_configs",
        "validation_context",
        "validation_context_sds_secret_config",
        "combined_validation_context",
        "alpn_protocols",
    )
)
_PARAMS = frozenset(
    ("tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves")
)
_CERT = frozenset(("certificate_chain", "private_key", "watched_directory"))
_VALIDATION = frozenset(
    ("trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names", "watched_directory")
)
_SAN_TYPES = {1: EMAIL, 2: DNS, 3: URI, 4: IP_ADDRESS}


def parse_tls_context(msg: Any, downstream: bool, path: str) -> TlsContextConfig:
    """A DownstreamTlsContext (``downstream``) or UpstreamTlsContext proto."""
    _refuse_unknown(msg, path, _DOWNSTREAM if downstream else _UPSTREAM)
    if downstream and msg.HasField("require_client_certificate"):
        require_client = bool(msg.require_client_certificate.value)
    else:
        require_client = False
    cpath = f"{path}.common_tls_context"
    common = msg.common_tls_context
    _refuse_unknown(common, cpath, _COMMON)
    params = common.tls_params
    _refuse_unknown(params, f"{cpath}.tls_params", _PARAMS)
    proto_names = type(params).TlsProtocol
    min_version = proto_names.Name(params.tls_minimum_protocol_version)
    max_version = proto_names.Name(params.tls_maximum_protocol_version)
    if len(params.ecdh_curves) > 1:
        raise ConfigError(
            f"{cpath}.tls_params.ecdh_curves", "pilotfish supports one ECDH curve at most"
        )
    certificates = tuple(
        certificate_spec(c, f"{cpath}.tls_certificates[{i}]")
        for i, c in enumerate(common.tls_certificates)
    )
    refs: list[SdsSecretRef] = []
    cert_secrets = []
    for i, c in enumerate(common.tls_certificate_sds_secret_configs):
        cert_secrets.append(_sds_name(c, f"{cpath}.tls_certificate_sds_secret_configs[{i}]"))
        refs.append(_sds_ref(c))
    validation: ValidationSpec | None = None
    validation_secret = ""
    kind = common.WhichOneof("validation_context_type")
    if kind == "validation_context":
        validation = validation_spec(common.validation_context, f"{cpath}.validation_context")
    elif kind == "validation_context_sds_secret_config":
        c = common.validation_context_sds_secret_config
        validation_secret = _sds_name(c, f"{cpath}.{kind}")
        refs.append(_sds_ref(c))
    elif kind == "combined_validation_context":
        cvc = common.combined_validation_context
        vpath = f"{cpath}.{kind}"
        _refuse_unknown(
            cvc,
            vpath,
            frozenset(("default_validation_context", "validation_context_sds_secret_config")),
        )
        validation = validation_spec(
            cvc.default_validation_context, f"{vpath}.default_validation_context"
        )
        c = cvc.validation_context_sds_secret_config
        validation_secret = _sds_name(c, f"{vpath}.validation_context_sds_secret_config")
        refs.append(_sds_ref(c))
    elif kind is not None:
        raise ConfigError(f"{cpath}.{kind}", "not supported by pilotfish's TLS")
    if downstream and not certificates and not cert_secrets:
        raise ConfigError(cpath, "a server TLS context needs a certificate")
    if validation is not None and validation.trusted_ca is None and not validation_secret:
        if validation.san_matchers:
            # Envoy: SAN checks of peers whose chain is not verified would be meaningless.
            raise ConfigError(
                cpath, "SAN-based verification of peer certificates without trusted CA is insecure"
            )
        validation = None
    return TlsContextConfig(
        downstream=downstream,
        sni="" if downstream else msg.sni,
        alpn=tuple(common.alpn_protocols),
        sds_secrets=tuple(refs),
        certificates=certificates,
        certificate_secrets=tuple(cert_secrets),
        validation=validation,
        validation_secret=validation_secret,
        require_client_certificate=require_client,
        min_version=min_version,
        max_version=max_version,
        cipher_suites=tuple(params.cipher_suites),
        ecdh_curves=tuple(params.ecdh_curves),
    )


def _sds_name(c: Any, path: str) -> str:
    if not c.name:
        raise ConfigError(f"{path}.name", "value length must be at least 1")
    return str(c.name)


def _sds_ref(c: Any) -> SdsSecretRef:
    return SdsSecretRef(c.name, c.sds_config if c.HasField("sds_config") else None)


def data_source(msg: Any, path: str) -> DataSource:
    kind = msg.WhichOneof("specifier")
    if kind == "filename":
        return DataSource(filename=msg.filename)
    if kind == "inline_bytes":
        return DataSource(inline=bytes(msg.inline_bytes))
    if kind == "inline_string":
        return DataSource(inline=msg.inline_string.encode())
    if kind == "environment_variable":
        return DataSource(environment_variable=msg.environment_variable)
    raise ConfigError(path, "a data source (filename, inline_bytes or inline_string) is required")


def certificate_spec(msg: Any, path: str) -> CertificateSpec:
    _refuse_unknown(msg, path, _CERT)
    return CertificateSpec(
        data_source(msg.certificate_chain, f"{path}.certificate_chain"),
        data_source(msg.private_key, f"{path}.private_key"),
    )


def validation_spec(msg: Any, path: str) -> ValidationSpec:
    _refuse_unknown(msg, path, _VALIDATION)
    from pilotfish.xds.translate.common import string_matcher

    matchers = []
    for i, m in enumerate(msg.match_typed_subject_alt_names):
        mpath = f"{path}.match_typed_subject_alt_names[{i}]"
        san_type = _SAN_TYPES.get(m.san_type)
        if san_type is None:
            raise ConfigError(
                f"{mpath}.san_type", "must be one of EMAIL, DNS, URI, IP_ADDRESS in pilotfish"
            )
        matchers.append(SanMatcher(san_type, string_matcher(m.matcher, f"{mpath}.matcher")))
    for i, m in enumerate(msg.match_subject_alt_names):
        mpath = f"{path}.match_subject_alt_names[{i}]"
        matchers.append(SanMatcher("", string_matcher(m, mpath)))
    trusted_ca = (
        data_source(msg.trusted_ca, f"{path}.trusted_ca") if msg.HasField("trusted_ca") else None
    )
    return ValidationSpec(trusted_ca, tuple(matchers))
