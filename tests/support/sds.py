"""SDS test helpers: a per-pod SDS server in its own thread, and bootstraps whose static
cluster names the Istio secrets (``default``, ``ROOTCA``) through the ``sds-grpc`` cluster."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pilotfish.mesh.bootstrap import SDS_SOURCE, sds_cluster
from pilotfish.mesh.security.ca import MeshCA
from pilotfish.mesh.security.sds_server import WorkloadSdsServer

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def sds_source(*, delta: bool = False, initial_fetch_timeout: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = copy.deepcopy(SDS_SOURCE)
    if delta:
        source["api_config_source"]["api_type"] = "DELTA_GRPC"
    if initial_fetch_timeout is not None:
        source["initial_fetch_timeout"] = initial_fetch_timeout
    return source


def tls_cluster(name: str, port: int, source: dict[str, Any]) -> dict[str, Any]:
    """A static cluster whose TLS context takes ``default`` and ``ROOTCA`` from ``source``."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": UPSTREAM_TLS,
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [
                        {"name": "default", "sds_config": source}
                    ],
                    "combined_validation_context": {
                        "default_validation_context": {},
                        "validation_context_sds_secret_config": {
                            "name": "ROOTCA",
                            "sds_config": source,
                        },
                    },
                },
            },
        },
    }


def sds_bootstrap(socket: Path, source: dict[str, Any], upstream_port: int = 1) -> dict[str, Any]:
    """Admin, the ``sds-grpc`` pipe cluster and one TLS cluster ``mtls`` using ``source``."""
    return {
        "node": {"id": "sidecar~127.0.0.1~pod.default~default.svc.cluster.local", "cluster": "c"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "clusters": [
                sds_cluster(str(socket)),
                tls_cluster("mtls", upstream_port, source),
            ]
        },
    }


class ThreadedSds:
    """A WorkloadSdsServer in its own event loop thread; a context manager."""

    def __init__(
        self,
        ca: MeshCA,
        socket: Path,
        *,
        ttl: float | None = None,
        namespace: str = "default",
        service_account: str = "bookinfo",
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ca, self.socket, self.ttl = ca, socket, ttl
        self.namespace, self.service_account = namespace, service_account
        self.sds: WorkloadSdsServer | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def __enter__(self) -> WorkloadSdsServer:
        self.thread.start()

        def make() -> WorkloadSdsServer:
            return WorkloadSdsServer(
                self.ca, self.namespace, self.service_account, self.socket, ttl=self.ttl
            )

        self.sds = self.call(make)
        self.call(self.sds.start)
        return self.sds

    def __exit__(self, *exc: object) -> None:
        if self.sds is not None:
            self.call(self.sds.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
