"""TLS without sockets: SAN matching (Envoy's SubjectAltNameMatcher), parsing TLS contexts
(unsupported fields refused by name), building SSL contexts from memory and from secrets."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format
from tests.support.certs import CertAuthority

from pilotfish.errors import ConfigError
from pilotfish.model.common import StringMatcher, StringMatchKind
from pilotfish.stats.store import Store
from pilotfish.tls.config import parse_tls_context
from pilotfish.tls.context import TlsContext, TlsStats
from pilotfish.tls.san import DNS, EMAIL, IP_ADDRESS, URI, SanMatcher, peer_sans, sans_match
from pilotfish.tls.secrets import SecretStore, TlsCertificate, ValidationContext
from pilotfish.tls.upstream import UpstreamTransportSockets

SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"
SANS = ((URI, SPIFFE), (DNS, "*.example.com"), (IP_ADDRESS, "10.0.0.1"), (EMAIL, "a@b.c"))


def m(san_type: str, kind: str, value: str, ignore_case: bool = False) -> SanMatcher:
    return SanMatcher(san_type, StringMatcher(StringMatchKind(kind), value, ignore_case))


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (m(URI, "exact", SPIFFE), True),
        (m(URI, "prefix", "spiffe://cluster.local/"), True),
        (m(URI, "suffix", "/sa/reviews"), True),
        (m(URI, "contains", "/ns/default/"), True),
        (m(URI, "safe_regex", r"spiffe://cluster\.local/ns/[^/]+/sa/rev.*"), True),
        (m(URI, "exact", SPIFFE + "x"), False),
        (m(DNS, "exact", SPIFFE), False),  # the URI's value, but typed DNS
        (m(DNS, "exact", "api.example.com"), True),  # wildcard SAN covers one label
        (m(DNS, "exact", "a.b.example.com"), False),
        (m(DNS, "suffix", ".example.com"), True),  # non-exact: the SAN text as is
        (m(IP_ADDRESS, "exact", "10.0.0.1"), True),
        (m(EMAIL, "exact", "A@B.C", ignore_case=True), True),
        (m("", "exact", "10.0.0.1"), True),  # legacy: any SAN type
        (m("", "prefix", "spiffe://other/"), False),
    ],
)
def test_san_matcher(matcher: SanMatcher, expected: bool) -> None:
    assert matcher.matches(SANS) is expected


def test_no_matchers_accept_any_peer_and_any_match_suffices() -> None:
    assert sans_match((), ())
    assert sans_match((m(URI, "exact", "nope"), m(URI, "exact", SPIFFE)), SANS)
    assert not sans_match((m(URI, "exact", "nope"),), SANS)


def test_peer_sans_normalizes_openssl_names() -> None:
    cert = {
        "subjectAltName": (
            ("URI", SPIFFE),
            ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),
            ("email", "x@y"),
            ("othername", "<unsupported>"),
        )
    }
    assert peer_sans(cert) == ((URI, SPIFFE), (IP_ADDRESS, "2001:db8::1"), (EMAIL, "x@y"))


def _ctx(downstream: bool, body: dict[str, Any]) -> Any:
    msg = tls_pb2.DownstreamTlsContext() if downstream else tls_pb2.UpstreamTlsContext()
    json_format.ParseDict(body, msg)
    return parse_tls_context(msg, downstream, "ts")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"require_sni": True, "common_tls_context": {}}, "ts.require_sni"),
        (
            {"common_tls_context": {"key_log": {"path": "/tmp/k"}}},
            "ts.common_tls_context.key_log",
        ),
        (
            {
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "c"}],
                    "validation_context": {"verify_certificate_spki": ["x"]},
                }
            },
            "ts.common_tls_context.validation_context.verify_certificate_spki",
        ),
        (
            {
                "common_tls_context": {
                    "tls_certificates": [
                        {
                            "certificate_chain": {"inline_string": "x"},
                            "private_key": {"inline_string": "y"},
                            "password": {"inline_string": "z"},
                        }
                    ]
                }
            },
            "ts.common_tls_context.tls_certificates[0].password",
        ),
        ({"common_tls_context": {}}, "ts.common_tls_context"),  # a server needs a certificate
        (
            {
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "c"}],
                    "validation_context": {"match_subject_alt_names": [{"exact": "a"}]},
                }
            },
            "ts.common_tls_context",  # SAN checks without a trusted CA
        ),
    ],
)
def test_unsupported_fields_are_refused_by_name(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as e:
        _ctx(True, body)
    assert e.value.path == path


def test_istio_outbound_context_parses() -> None:
    cfg = _ctx(
        False,
        {
            "sni": "outbound_.9080_._.reviews",
            "allow_renegotiation": True,
            "common_tls_context": {
                "tls_params": {"tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "tls_certificate_sds_secret_configs": [
                    {"name": "default", "sds_config": {"ads": {}}}
                ],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_subject_alt_names": [{"exact": SPIFFE}],
                    },
                    "validation_context_sds_secret_config": {"name": "ROOTCA"},
                },
            },
        },
    )
    assert cfg.sni == "outbound_.9080_._.reviews" and cfg.max_version == "TLSv1_3"
    assert cfg.certificate_secrets == ("default",) and cfg.validation_secret == "ROOTCA"
    assert [r.name for r in cfg.sds_secrets] == ["default", "ROOTCA"]
    assert cfg.validation is not None and cfg.validation.san_matchers[0].san_type == ""


def test_context_waits_for_secrets_and_rebuilds_on_rotation() -> None:
    ca = CertAuthority()
    first, second = ca.issue_spiffe("default", "a"), ca.issue_spiffe("default", "b")
    cfg = _ctx(
        True,
        {
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "default"}],
                "validation_context_sds_secret_config": {"name": "ROOTCA"},
            },
        },
    )
    store = SecretStore()
    tls = TlsContext(cfg, store, TlsStats(Store().scope("listener.x.")))
    assert tls.ssl_context is None and "default" in tls.error
    store.set("default", TlsCertificate(first.cert_pem, first.key_pem))
    assert tls.ssl_context is None  # ROOTCA still missing
    store.set("ROOTCA", ValidationContext(ca.cert_pem))
    built = tls.ssl_context
    assert built is not None and built.verify_mode == ssl.CERT_REQUIRED
    assert tls.local_uri_sans == (first.uri,)
    store.set("default", TlsCertificate(second.cert_pem, second.key_pem))
    assert tls.ssl_context is not built and tls.local_uri_sans == (second.uri,)
    # A bad secret keeps the last good context.
    rotated = tls.ssl_context
    store.set("default", TlsCertificate(b"junk", b"junk"))
    assert tls.ssl_context is rotated and "cannot load" in tls.error
    tls.close()
    store.set("default", TlsCertificate(first.cert_pem, first.key_pem))
    assert tls.ssl_context is rotated  # no longer watching


def test_transport_socket_matches_pick_per_host() -> None:
    """Istio's shape: tlsMode=istio -> mTLS; the empty match catches the rest."""
    from pilotfish.model.cluster import Cluster, DiscoveryType
    from pilotfish.model.common import TypedExtension

    tls_cfg = _ctx(False, {"common_tls_context": {}})
    config = Cluster(
        "c",
        DiscoveryType.STATIC,
        transport_socket_matches=(
            ("tlsMode-istio", {"tlsMode": "istio"}, TypedExtension("tls", "", tls_cfg)),
            ("tlsMode-disabled", {}, TypedExtension("raw", "", None)),
        ),
    )
    store = Store()
    sockets = UpstreamTransportSockets(config, SecretStore(), store.scope("cluster.c."))
    istio = sockets.select({"envoy.transport_socket_match": {"tlsMode": "istio"}}, count=True)
    assert istio is not None and istio.ssl_context is not None
    assert sockets.select({}, count=True) is None
    assert sockets.select({"envoy.transport_socket_match": {"tlsMode": "x"}}, count=True) is None
    counters = {c.name: c.value for c in store.counters()}
    assert counters["cluster.c.tlsMode-istio.total_match_count"] == 1
    assert counters["cluster.c.tlsMode-disabled.total_match_count"] == 2
