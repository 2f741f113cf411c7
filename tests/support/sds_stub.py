"""A stand-in for Istio's agent SDS (the ``sds-grpc`` cluster): a gRPC SecretDiscoveryService
serving one workload's ``default`` certificate and the mesh's ``ROOTCA``, made with
``cryptography`` (a test CA, leaf certificates with a SPIFFE URI SAN)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf.any_pb2 import Any as AnyProto

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class MeshTestCA:
    """A root certificate and leaf certificates it signs."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def workload(self, spiffe_id: str) -> tuple[bytes, bytes]:
        """(certificate chain PEM, private key PEM) for a workload identity."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class SdsStub(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """Serves ``default`` (``spiffe_id``'s certificate) and ``ROOTCA`` to whoever asks;
    ``requests`` counts the requests per secret name."""

    def __init__(self, ca: MeshTestCA, spiffe_id: str) -> None:
        chain, key = ca.workload(spiffe_id)
        default = secret_pb2.Secret(name="default")
        default.tls_certificate.certificate_chain.inline_bytes = chain
        default.tls_certificate.private_key.inline_bytes = key
        root = secret_pb2.Secret(name="ROOTCA")
        root.validation_context.trusted_ca.inline_bytes = ca.pem
        self.secrets = {"default": default, "ROOTCA": root}
        self.requested: set[str] = set()
        self._server: grpc.Server | None = None
        self.port = 0

    def StreamSecrets(
        self, requests: Iterator[Any], context: Any
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        version, sent = 0, None
        for req in requests:
            names = sorted(n for n in req.resource_names if n in self.secrets)
            self.requested.update(names)
            if names == sent:
                continue  # an ACK (or NACK) of what was sent: nothing new
            sent = names
            version += 1
            resp = discovery_pb2.DiscoveryResponse(
                version_info=str(version), type_url=SECRET_TYPE, nonce=str(version)
            )
            for name in names:
                packed = AnyProto()
                packed.Pack(self.secrets[name])
                resp.resources.append(packed)
            yield resp

    def start(self) -> SdsStub:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    def __enter__(self) -> SdsStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cluster(self) -> dict[str, Any]:
        """The bootstrap's ``sds-grpc`` cluster pointing at this server (HTTP/2)."""
        return {
            "name": "sds-grpc",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "sds-grpc",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": self.port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                    "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
        }
