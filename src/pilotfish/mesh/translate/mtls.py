"""Istio mutual TLS in Envoy's JSON, in the shapes istiod writes (a real sidecar's config
dump: UpstreamTlsContext of outbound clusters, DownstreamTlsContext of inbound chains).

Both sides take the workload certificate (SDS secret ``default``) and the mesh root
(``ROOTCA``) from the ``sds-grpc`` cluster of the bootstrap (the proxy's agent). A client
checks the server's SPIFFE identity against the destination's service accounts; a server
accepts any identity of the trust domain (authorization is another policy's job).
"""

from __future__ import annotations

from collections.abc import Sequence

from pilotfish.mesh.translate.common import JSON

__all__ = [
    "MTLS_APPLICATION_PROTOCOLS",
    "RAW_BUFFER",
    "SDS_CLUSTER",
    "auto_mtls_matches",
    "downstream_istio_mutual",
    "istio_sni",
    "sds_secret",
    "tls_inspector",
    "upstream_istio_mutual",
]

SDS_CLUSTER = "sds-grpc"
DEFAULT_SECRET = "default"  # the workload's certificate and key
ROOT_SECRET = "ROOTCA"  # the mesh's root certificate
TRUST_DOMAIN_PREFIX = "spiffe://cluster.local/"
TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
RAW_BUFFER: JSON = {
    "name": "envoy.transport_sockets.raw_buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
    },
}

# What a client sidecar offers (Istio's ALPNInMeshWithMxc / ALPNInMeshH2WithMxc): "istio"
# tells the server's filter chain match it is mesh traffic.
ALPN_IN_MESH = ["istio-peer-exchange", "istio"]
ALPN_IN_MESH_H2 = ["istio-peer-exchange", "istio", "h2"]
# What a server sidecar negotiates (ALPNHttp; ALPNDownstreamWithMxc for TCP).
ALPN_HTTP = ["h2", "http/1.1"]
ALPN_TCP = ["istio-peer-exchange", "h2", "http/1.1"]
# The inbound chain's match for mTLS from a sidecar in PERMISSIVE mode (allIstioMtlsALPNs);
# "istio-http/*" is what Istio's istio.alpn filter (telemetry, not generated here) offers.
MTLS_APPLICATION_PROTOCOLS = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
]
# Istio's sidecar server ciphers (TLS 1.2; TLS 1.3 suites are not configurable).
SERVER_CIPHERS = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
]


def sds_secret(name: str) -> JSON:
    """An SdsSecretConfig fetching ``name`` from the agent, waiting as long as it takes."""
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
                "transport_api_version": "V3",
            },
            "initial_fetch_timeout": "0s",
            "resource_api_version": "V3",
        },
    }


def istio_sni(port: int, subset: str | None, host: str) -> str:
    """Istio's default SNI for mesh mTLS (BuildDNSSrvSubsetKey):
    ``outbound_.9080_.v1_.reviews.default.svc.cluster.local``, ``_`` for no subset."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def _validation(san_matchers: list[JSON]) -> JSON:
    return {
        "default_validation_context": {"match_subject_alt_names": san_matchers},
        "validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
    }


def upstream_istio_mutual(sans: Sequence[str], sni: str, *, http2: bool = False) -> JSON:
    """The client side (ISTIO_MUTUAL, or auto mTLS): the server must present one of
    ``sans`` (exact match; none: any certificate the root signed)."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "alpn_protocols": list(ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH),
                "tls_certificate_sds_secret_configs": [sds_secret(DEFAULT_SECRET)],
                "combined_validation_context": _validation([{"exact": san} for san in sans]),
            },
            "sni": sni,
        },
    }


def auto_mtls_matches(tls_socket: JSON) -> list[JSON]:
    """Istio's auto mTLS: mTLS to endpoints labelled ``tlsMode: istio`` (in EDS metadata
    ``envoy.transport_socket_match``), plaintext to the others."""
    return [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": tls_socket},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER},
    ]


def downstream_istio_mutual(*, http: bool) -> JSON:
    """The server side of an inbound mTLS chain: a client certificate is required."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                    "cipher_suites": list(SERVER_CIPHERS),
                },
                "alpn_protocols": list(ALPN_HTTP if http else ALPN_TCP),
                "tls_certificate_sds_secret_configs": [sds_secret(DEFAULT_SECRET)],
                "combined_validation_context": _validation([{"prefix": TRUST_DOMAIN_PREFIX}]),
            },
            "require_client_certificate": True,
        },
    }


def tls_inspector() -> JSON:
    return {
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3."
            "TlsInspector"
        },
    }
