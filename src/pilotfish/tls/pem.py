"""Checks and facts about PEM certificates and keys with the ``ssl`` module alone.

The proxy does not import ``cryptography`` (7 MB of resident memory per sidecar): loading
into a throwaway SSLContext is the check OpenSSL itself makes when the real context is built
(PEM parses, the key matches the leaf), and the only certificate field the proxy needs on its
own certificate, the URI SANs (x-forwarded-client-cert's ``By``), is read from the DER with
the small walker below. Peer certificates come decoded from the handshake (getpeercert).
"""

from __future__ import annotations

import os
import re
import ssl

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)-----END CERTIFICATE-----", re.S)
_SAN_OID = bytes.fromhex("551d11")  # 2.5.29.17 subjectAltName
_URI_TAG = 0x86  # GeneralName uniformResourceIdentifier [6] IA5String


class PemError(ValueError):
    """``part`` is "certificate" or "key": which input is wrong."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


def load_cert_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``context.load_cert_chain`` from PEM in memory (an anonymous memfd, never a file)."""
    fd = os.memfd_create("pilotfish-tls", os.MFD_CLOEXEC)
    try:
        data = memoryview(chain + b"\n" + key)
        while data:
            data = data[os.write(fd, data) :]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def check_certificates(pem: bytes) -> int:
    """How many certificates ``pem`` holds; PemError if none or one does not parse."""
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise PemError("certificate", "no certificate found")
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
        raise PemError("certificate", f"Failed to load certificates: {e}") from None
    return len(blocks)


def check_key_pair(chain: bytes, key: bytes) -> None:
    """PemError unless ``key`` is a private key matching the chain's first certificate."""
    check_certificates(chain)
    try:
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), chain, key)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e):
            raise PemError(
                "key", "the private key does not match the certificate chain's leaf"
            ) from None
        raise PemError("key", f"Failed to load private key: {e}") from None


def uri_sans(pem: bytes) -> tuple[str, ...]:
    """The URI SANs of the first certificate of a PEM chain (() if it has none or is not a
    certificate)."""
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        return ()
    try:
        der = ssl.PEM_cert_to_DER_cert(
            "-----BEGIN CERTIFICATE-----\n" + blocks[0].decode() + "-----END CERTIFICATE-----\n"
        )
        return _uri_sans(der)
    except (ValueError, IndexError):
        return ()


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, value, nxt = _tlv(data, start)
        out.append((tag, value, nxt))
        start = nxt
    return out


def _uri_sans(der: bytes) -> tuple[str, ...]:
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { ... [3] extensions }, ... }
    _, cert_start, _ = _tlv(der, 0)
    _, tbs_start, tbs_end = _tlv(der, cert_start)
    for tag, start, _ in _children(der, tbs_start, tbs_end):
        if tag != 0xA3:
            continue
        _, exts_start, exts_end = _tlv(der, start)
        for _, ext_start, ext_end in _children(der, exts_start, exts_end):
            fields = _children(der, ext_start, ext_end)
            oid_tag, oid_start, oid_end = fields[0]
            if oid_tag != 0x06 or der[oid_start:oid_end] != _SAN_OID:
                continue
            _, value_start, _ = fields[-1]  # extnValue OCTET STRING
            _, names_start, names_end = _tlv(der, value_start)
            return tuple(
                der[s:e].decode("ascii", "replace")
                for t, s, e in _children(der, names_start, names_end)
                if t == _URI_TAG
            )
    return ()
