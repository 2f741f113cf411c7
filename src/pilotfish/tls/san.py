"""Peer certificate SAN checks, as Envoy's ``SubjectAltNameMatcher`` (match_typed_subject_alt_names)
and the legacy ``match_subject_alt_names`` (one string matcher tried on every SAN type).

A peer passes when any matcher matches any of its SANs (no matchers: every peer passes). SANs
come from ``ssl.SSLObject.getpeercert()`` (a verified certificate): ``(type, value)`` pairs with
OpenSSL's type names, normalized here to Envoy's: DNS, URI, EMAIL, IP_ADDRESS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pilotfish.model.common import StringMatcher, StringMatchKind

DNS, URI, EMAIL, IP_ADDRESS = "DNS", "URI", "EMAIL", "IP_ADDRESS"
SAN_TYPES = (DNS, URI, EMAIL, IP_ADDRESS)
_OPENSSL_TYPES = {"DNS": DNS, "URI": URI, "email": EMAIL, "IP Address": IP_ADDRESS}


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """``san_type`` is one of SAN_TYPES, or "" for a legacy matcher (any type)."""

    san_type: str
    matcher: StringMatcher

    def matches(self, sans: tuple[tuple[str, str], ...]) -> bool:
        for san_type, value in sans:
            if self.san_type and san_type != self.san_type:
                continue
            if san_type == DNS and self.matcher.kind is StringMatchKind.EXACT:
                if dns_name_matches(self.matcher, value):
                    return True
            elif self.matcher.matches(value.encode()):
                return True
        return False


def dns_name_matches(matcher: StringMatcher, san: str) -> bool:
    """An exact DNS matcher also accepts a wildcard SAN covering the name (``*.example.com``
    matches ``a.example.com``, one label only), as Envoy's dnsNameMatch."""
    expected = matcher.value.lower() if matcher.ignore_case else matcher.value
    name = san.lower() if matcher.ignore_case else san
    if name == expected:
        return True
    if name.startswith("*."):
        dot = expected.find(".")
        return dot > 0 and expected[dot:] == name[1:]
    return False


def peer_sans(peercert: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The SANs of a ``getpeercert()`` dict, with Envoy's type names and IPs in canonical
    text (OpenSSL spells IPv6 SANs uncompressed and upper-case)."""
    if not peercert:
        return ()
    out = []
    for kind, value in peercert.get("subjectAltName", ()):
        san_type = _OPENSSL_TYPES.get(kind)
        if san_type is None:
            continue
        if san_type == IP_ADDRESS:
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        out.append((san_type, value))
    return tuple(out)


def sans_match(matchers: tuple[SanMatcher, ...], sans: tuple[tuple[str, str], ...]) -> bool:
    if not matchers:
        return True
    return any(m.matches(sans) for m in matchers)
