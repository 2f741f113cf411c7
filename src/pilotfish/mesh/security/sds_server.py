"""Per-pod SDS servers, the part istio-agent plays: a SecretDiscoveryService on a Unix socket
serving one workload identity's secrets, ``default`` (its certificate and key) and ``ROOTCA``
(the mesh's root), state-of-the-world and delta, and pushing a renewed certificate to the
connected proxies before the current one expires (Istio renews at half its lifetime).

The gRPC side is the mesh's xDS server (mesh/xds_server.py), which serves SDS next to ADS;
this module only issues certificates and keeps them in its resource store.

``WorkloadSdsServers`` hosts every pod's server in one process (the control-plane daemon),
one socket per pod under a state directory."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilotfish.mesh.security.ca import MeshCA, WorkloadCertificate
from pilotfish.mesh.xds_server import XdsServer
from pilotfish.xds import resource_types as rt

log = logging.getLogger("pilotfish.mesh.sds")

WORKLOAD_SECRET = "default"  # Istio's names, as its sidecar TLS contexts ask for them
ROOT_SECRET = "ROOTCA"
RENEW_AT = 0.5  # of the certificate's lifetime, as Istio's SECRET_GRACE_PERIOD_RATIO


def workload_secret(name: str, cert: WorkloadCertificate) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=name)
    secret.tls_certificate.certificate_chain.inline_bytes = cert.certificate_chain
    secret.tls_certificate.private_key.inline_bytes = cert.private_key
    return secret


def root_secret(name: str, root_pem: bytes) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=name)
    secret.validation_context.trusted_ca.inline_bytes = root_pem
    return secret


class WorkloadSdsServer:
    """One workload identity's SDS server on ``socket_path``; ``await start()``, ``await
    stop()``. ``ttl``: the certificates' lifetime (the CA's default if None)."""

    def __init__(
        self,
        ca: MeshCA,
        namespace: str,
        service_account: str,
        socket_path: Path,
        *,
        ttl: float | None = None,
        renew_at: float = RENEW_AT,
    ) -> None:
        if not 0 < renew_at < 1:
            raise ValueError(f"renew_at: a fraction of the lifetime in (0, 1), not {renew_at}")
        self.ca = ca
        self.namespace = namespace
        self.service_account = service_account
        self.socket_path = socket_path
        self.ttl = ttl
        self.renew_at = renew_at
        self.server = XdsServer()
        self.certificate: WorkloadCertificate | None = None
        self.rotations = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.server.set_resources(
            rt.SECRET.type_url, [root_secret(ROOT_SECRET, self.ca.root_pem)], version=_version()
        )
        self.rotate()
        await self.server.start(self.address)
        # The proxy may run as another user (capture mode's uid 1337): connecting to a Unix
        # socket needs write permission on it. The directory keeps others out.
        self.socket_path.chmod(0o666)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # The socket file stays: a restarted server for the same pod replaces it.
        await self.server.stop()

    def rotate(self) -> WorkloadCertificate:
        """Issue a new certificate now, push it, and schedule the next renewal."""
        cert = self.ca.issue(self.namespace, self.service_account, ttl=self.ttl)
        self.certificate = cert
        self.server.update(
            rt.SECRET.type_url, [workload_secret(WORKLOAD_SECRET, cert)], version=_version()
        )
        if self._timer is not None:
            self._timer.cancel()
            self.rotations += 1
        loop = asyncio.get_running_loop()
        age = datetime.datetime.now(datetime.UTC).timestamp() - cert.issued_at
        delay = max(cert.lifetime * self.renew_at - age, 0.0)
        self._timer = loop.call_later(delay, self._renew)
        return cert

    def _renew(self) -> None:
        self._timer = None
        try:
            self.rotate()
            self.rotations += 1
        except Exception:  # keep serving the current one; try again soon
            log.exception("renewing %s failed", self.service_account)
            self._timer = asyncio.get_running_loop().call_later(1.0, self._renew)


def _version() -> str:
    """Istio versions secrets by the time they were generated."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class WorkloadSdsServers:
    """Every pod's SDS server in one process: ``socket_dir/<pod>.sock``."""

    def __init__(self, ca: MeshCA, socket_dir: Path, *, ttl: float | None = None) -> None:
        self.ca = ca
        self.socket_dir = socket_dir
        self.ttl = ttl
        self.servers: dict[str, WorkloadSdsServer] = {}

    def socket_path(self, pod: str) -> Path:
        return self.socket_dir / f"{pod}.sock"

    async def add(self, pod: str, namespace: str, service_account: str) -> WorkloadSdsServer:
        """Start (or restart, for a new identity) the pod's server."""
        old = self.servers.get(pod)
        if old is not None:
            if (old.namespace, old.service_account) == (namespace, service_account):
                return old
            await self.remove(pod)
        server = WorkloadSdsServer(
            self.ca, namespace, service_account, self.socket_path(pod), ttl=self.ttl
        )
        self.servers[pod] = server
        await server.start()
        return server

    async def remove(self, pod: str) -> None:
        server = self.servers.pop(pod, None)
        if server is not None:
            await server.stop()

    async def stop_all(self) -> None:
        for pod in list(self.servers):
            await self.remove(pod)
