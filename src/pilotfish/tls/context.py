"""Running TLS contexts: a TlsContextConfig turned into an ``ssl.SSLContext``, rebuilt when a
secret it uses changes (so rotation reaches new connections; established ones keep theirs),
plus the checks Envoy makes on the peer after the handshake (SANs) and its ``ssl.*`` stats.

Certificates and keys are loaded from memory: ``load_cert_chain`` takes only paths, so the PEM
goes into an anonymous memfd read through /proc/self/fd (private keys never touch a disk).
Hostname checks are off: Envoy verifies the peer's chain against the trusted CAs and its SANs
against the configured matchers, never against the SNI.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from pilotfish.tls.config import CertificateSpec, TlsContextConfig
from pilotfish.tls.pem import load_cert_chain, uri_sans
from pilotfish.tls.san import SanMatcher, peer_sans, sans_match
from pilotfish.tls.secrets import SecretStore, TlsCertificate, ValidationContext

log = logging.getLogger("pilotfish.tls")

_VERSIONS = {
    "TLSv1_0": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}
# Envoy's defaults for both sides: TLS 1.2 to 1.3.
_DEFAULT_MIN, _DEFAULT_MAX = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


class NotReady(Exception):
    """The context cannot be built yet (a secret is missing or unreadable)."""


class TlsStats:
    """Envoy's ``<scope>ssl.*`` (listener or cluster scope)."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope.scope("ssl.")
        s = self.scope
        self.connection_error = s.counter("connection_error")
        self.handshake = s.counter("handshake")
        self.session_reused = s.counter("session_reused")
        self.no_certificate = s.counter("no_certificate")
        self.fail_verify_no_cert = s.counter("fail_verify_no_cert")
        self.fail_verify_error = s.counter("fail_verify_error")
        self.fail_verify_san = s.counter("fail_verify_san")
        self.fail_verify_cert_hash = s.counter("fail_verify_cert_hash")

    def handshake_done(self, sslobj: Any) -> None:
        self.handshake.value += 1
        version = sslobj.version()
        if version:
            self.scope.counter(f"versions.{version}").value += 1
        cipher = sslobj.cipher()
        if cipher:
            self.scope.counter(f"ciphers.{cipher[0]}").value += 1

    def handshake_failed(self, exc: BaseException) -> str:
        """Count a failed handshake; returns Envoy's failure reason text."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.fail_verify_error.value += 1
            return "TLS_error:CERTIFICATE_VERIFY_FAILED"
        reason = getattr(exc, "reason", None) or type(exc).__name__
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            self.fail_verify_no_cert.value += 1
        else:
            self.connection_error.value += 1
        return f"TLS_error:{reason}"


class PeerCertificate:
    """What the connection knows of a verified peer certificate (for x-forwarded-client-cert
    and access logs), computed from the handshake once."""

    __slots__ = ("der", "sans", "subject")

    def __init__(self, sslobj: Any) -> None:
        self.der: bytes = sslobj.getpeercert(binary_form=True) or b""
        info = sslobj.getpeercert() or {}
        self.sans = peer_sans(info)
        self.subject = _rfc2253(info.get("subject", ()))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def uri_sans(self) -> list[str]:
        return [v for t, v in self.sans if t == "URI"]

    def dns_sans(self) -> list[str]:
        return [v for t, v in self.sans if t == "DNS"]


_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "emailAddress",
}


def _rfc2253(subject: Any) -> str:
    """A subject in RFC 2253 order and form (most specific RDN first), as Envoy prints it."""
    parts = []
    for rdn in reversed(subject):
        parts.append("+".join(f"{_RDN_NAMES.get(k, k)}={_escape_rdn(v)}" for k, v in rdn))
    return ",".join(parts)


def _escape_rdn(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out


def client_cert_details(
    local_uri_sans: tuple[str, ...], peer: PeerCertificate, fields: tuple[str, ...]
) -> bytes:
    """An x-forwarded-client-cert element for a peer (Envoy's ``By=...;Hash=...;...``)."""
    parts = [f"By={uri}" for uri in local_uri_sans[:1]]
    parts.append(f"Hash={peer.sha256}")
    for field_name in fields:
        if field_name in ("cert", "chain"):
            pem = ssl.DER_cert_to_PEM_cert(peer.der)
            key = "Cert" if field_name == "cert" else "Chain"
            parts.append(f'{key}="{urllib.parse.quote(pem, safe="")}"')
        elif field_name == "subject":
            parts.append(f'Subject="{peer.subject}"')
        elif field_name == "uri":
            parts.extend(f"URI={uri}" for uri in peer.uri_sans())
        elif field_name == "dns":
            parts.extend(f"DNS={dns}" for dns in peer.dns_sans())
    return ";".join(parts).encode()


class TlsContext:
    """One configured TLS context, running. ``ssl_context`` is None until every secret it
    needs is there (connections using it then fail cleanly: closed downstream, a connect
    failure upstream)."""

    def __init__(
        self,
        config: TlsContextConfig,
        secrets: SecretStore | None,
        stats: TlsStats,
        *,
        alpn_filter: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets if secrets is not None else SecretStore()
        self.stats = stats
        self.server_side = config.downstream
        self.alpn = alpn_filter(config.alpn) if alpn_filter is not None else config.alpn
        self.ssl_context: ssl.SSLContext | None = None
        self.san_matchers: tuple[SanMatcher, ...] = ()
        self.local_uri_sans: tuple[str, ...] = ()
        self.error = ""
        self.sni: str | None = config.sni or None
        names = list(config.certificate_secrets)
        if config.validation_secret:
            names.append(config.validation_secret)
        self._unwatch = [self.secrets.watch(n, self._secret_changed) for n in names]
        self.rebuild()

    def close(self) -> None:
        """Stop following secret changes (the listener or cluster is gone)."""
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch = []

    def _secret_changed(self, name: str, value: object) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        try:
            self.ssl_context, self.san_matchers = self._build()
            self.error = ""
        except NotReady as e:
            self.ssl_context, self.error = None, str(e)
            log.warning("TLS context not ready: %s", e)
        except (ssl.SSLError, ValueError, OSError) as e:
            # A secret that does not load (bad PEM, key not matching the certificate): keep
            # serving with the last good context if there is one, as Envoy keeps the old one.
            self.error = f"cannot load TLS credentials: {e}"
            log.error("%s", self.error)

    def _build(self) -> tuple[ssl.SSLContext, tuple[SanMatcher, ...]]:
        cfg = self.config
        context = ssl.SSLContext(
            ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT
        )
        context.check_hostname = False
        context.minimum_version = _VERSIONS.get(cfg.min_version, _DEFAULT_MIN)
        context.maximum_version = _VERSIONS.get(cfg.max_version, _DEFAULT_MAX)
        context.options |= ssl.OP_NO_RENEGOTIATION
        if cfg.cipher_suites:
            context.set_ciphers(":".join(cfg.cipher_suites))
        if cfg.ecdh_curves:
            context.set_ecdh_curve(cfg.ecdh_curves[0])
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))
        certificates = self._certificates()
        for cert in certificates:
            load_cert_chain(context, cert.certificate_chain, cert.private_key)
        if certificates:
            self.local_uri_sans = uri_sans(certificates[0].certificate_chain)
        trusted_ca, matchers = self._validation()
        if trusted_ca:
            context.load_verify_locations(cadata=trusted_ca.decode("ascii", "replace"))
            if self.server_side and not cfg.require_client_certificate:
                context.verify_mode = ssl.CERT_OPTIONAL
            else:
                context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.verify_mode = ssl.CERT_NONE
        return context, matchers

    def _certificates(self) -> list[TlsCertificate]:
        out = [_read_certificate(c) for c in self.config.certificates]
        for name in self.config.certificate_secrets:
            secret = self.secrets.get(name)
            if not isinstance(secret, TlsCertificate):
                raise NotReady(f"secret '{name}' (tls_certificate) is not available")
            out.append(secret)
        return out

    def _validation(self) -> tuple[bytes, tuple[SanMatcher, ...]]:
        cfg = self.config
        trusted_ca = b""
        matchers: tuple[SanMatcher, ...] = ()
        if cfg.validation is not None:
            matchers = cfg.validation.san_matchers
            if cfg.validation.trusted_ca is not None:
                try:
                    trusted_ca = cfg.validation.trusted_ca.read()
                except (OSError, KeyError) as e:
                    raise NotReady(f"trusted_ca: {e}") from None
        if cfg.validation_secret:
            secret = self.secrets.get(cfg.validation_secret)
            if not isinstance(secret, ValidationContext):
                raise NotReady(
                    f"secret '{cfg.validation_secret}' (validation_context) is not available"
                )
            trusted_ca = secret.trusted_ca
            extra = tuple(m for m in secret.match_subject_alt_names if isinstance(m, SanMatcher))
            matchers = matchers + extra
        return trusted_ca, matchers

    # -- per connection -------------------------------------------------------------------------

    def check_peer(self, sslobj: Any) -> str:
        """After a successful handshake: count it and check the peer's SANs. Returns "" when
        the connection may go on, else the failure reason (already counted)."""
        stats = self.stats
        if self.server_side and sslobj.getpeercert(binary_form=True) is None:
            # No client certificate where none is required: Envoy lets the connection in.
            stats.no_certificate.value += 1
        elif self.san_matchers and not sans_match(
            self.san_matchers, peer_sans(sslobj.getpeercert())
        ):
            stats.fail_verify_san.value += 1
            return "TLS_error:SAN_VERIFICATION_FAILED"
        stats.handshake_done(sslobj)
        return ""


def _read_certificate(spec: CertificateSpec) -> TlsCertificate:
    try:
        return TlsCertificate(spec.certificate_chain.read(), spec.private_key.read())
    except (OSError, KeyError) as e:
        raise NotReady(f"tls_certificates: {e}") from None
