"""Certificate rotation without SDS: a listener whose DownstreamTlsContext names secrets runs
in this process (real sockets, the real listener and TLS code) and the test replaces the
secret in the server's SecretStore, as an SDS update does.

New connections must present the new certificate; a keep-alive connection opened before
keeps working; a listener whose secret has not arrived closes connections cleanly.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import uvloop
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from tests.support.certs import CertAuthority

from pilotfish.context import ServerContext
from pilotfish.net.listener import ListenerManager
from pilotfish.stats.store import Store
from pilotfish.tls.secrets import SecretStore, TlsCertificate, ValidationContext
from pilotfish.upstream.cluster_manager import ClusterManager
from pilotfish.xds.protos import load_types_in
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.listener import listener as translate_listener

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def _listener(name: str, cert_secret: str) -> Any:
    body = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 200,
                                                    "body": {"inline_string": "ok"},
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": DOWNSTREAM,
                        "common_tls_context": {
                            "tls_certificate_sds_secret_configs": [{"name": cert_secret}],
                            "validation_context_sds_secret_config": {"name": "ROOTCA"},
                        },
                    },
                },
            }
        ],
    }
    msg = listener_pb2.Listener()
    json_format.ParseDict(load_types_in(body), msg)
    return translate_listener(msg, TranslateContext())


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.wait_for(reader.readexactly(2), 5)  # "ok"
    return head


def _peer_der(writer: asyncio.StreamWriter) -> bytes:
    sslobj = writer.get_extra_info("ssl_object")
    return bytes(sslobj.getpeercert(binary_form=True))


async def _scenario() -> None:
    ca = CertAuthority()
    first = ca.issue_spiffe("default", "server-v1")
    second = ca.issue_spiffe("default", "server-v2")
    client_leaf = ca.issue_spiffe("default", "client")
    loop = asyncio.get_running_loop()
    stats = Store()
    secrets = SecretStore()
    secrets.set("ROOTCA", ValidationContext(ca.cert_pem))
    secrets.set("default", TlsCertificate(first.cert_pem, first.key_pem))
    ctx = ServerContext(loop=loop, stats=stats, cluster_manager=ClusterManager(stats, loop))
    ctx.secrets = secrets
    ctx.drain_time = 0.1
    lm = ListenerManager(ctx)
    await lm.add_or_update(_listener("rotating", "default"))
    await lm.add_or_update(_listener("waiting", "not-yet"))
    port = lm.listeners["rotating"].port
    waiting_port = lm.listeners["waiting"].port

    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.check_hostname = False
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = client_leaf.write(Path(tmp), "client")
        client.load_cert_chain(cert, key)

    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert b" 200 " in await _request(r1, w1)
        assert _peer_der(w1) == first.der

        secrets.set("default", TlsCertificate(second.cert_pem, second.key_pem))

        r2, w2 = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert b" 200 " in await _request(r2, w2)
        assert _peer_der(w2) == second.der  # new connections: the new certificate
        assert b" 200 " in await _request(r1, w1)  # the old connection keeps going
        assert _peer_der(w1) == first.der
        for w in (w1, w2):
            w.close()
            await w.wait_closed()

        # No secret yet: the handshake ends with a clean close, counted.
        try:
            r3, w3 = await asyncio.open_connection("127.0.0.1", waiting_port, ssl=client)
            await asyncio.wait_for(_request(r3, w3), 5)
            raise AssertionError("a listener without its certificate served a request")
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            pass
        prefix = lm.listeners["waiting"].stat_prefix
        assert {c.name: c.value for c in stats.counters()}[prefix + "ssl.connection_error"] == 1

        # The secret arrives: the same listener serves.
        secrets.set("not-yet", TlsCertificate(first.cert_pem, first.key_pem))
        r4, w4 = await asyncio.open_connection("127.0.0.1", waiting_port, ssl=client)
        assert b" 200 " in await _request(r4, w4)
        w4.close()
        await w4.wait_closed()
    finally:
        lm.stop_all()
        for active in lm.listeners.values():
            for runtime in active.runtimes.values():
                runtime.close_all()
                runtime.release()
        await asyncio.sleep(0.05)


def test_rotation_reaches_new_connections_only() -> None:
    uvloop.run(_scenario())
