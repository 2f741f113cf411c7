"""The mesh's DNS server (the cluster DNS of a one-machine mesh, capture mode).

Pods' ``resolv.conf`` points here, with Kubernetes' search path, so an app resolves
``reviews``, ``reviews.default`` or ``reviews.default.svc.cluster.local`` to the Service's
VIP as in a cluster. It answers A records for the Services' names (``name``,
``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``); a known name asked for
another type gets an empty answer (NODATA, so a resolver asking A and AAAA at once is not
told the name does not exist); every other name is NXDOMAIN, at once (no upstream: the pods
have no route out, and a query that waits for a timeout is what made an app listen 10 s
late). Wire format by dnslib; UDP only (answers are small).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from typing import cast

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

__all__ = ["MeshDns", "answer"]

log = logging.getLogger("pilotfish.mesh.dns")

TTL = 5  # seconds: VIPs can change with the config


def answer(query: bytes, records: Mapping[str, str]) -> bytes | None:
    """The reply to one DNS query; ``records``: lower-case name (no trailing dot) -> IPv4.
    None for a packet that is not a query."""
    try:
        request = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError):
        return None
    if request.header.qr:  # a response, not a query
        return None
    reply = request.reply()
    if not request.questions:
        reply.header.rcode = RCODE.FORMERR
        return bytes(reply.pack())
    question = request.q
    name = str(question.qname).rstrip(".").lower()
    ip = records.get(name)
    if ip is None:
        reply.header.rcode = RCODE.NXDOMAIN
    elif question.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
    return bytes(reply.pack())


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, dns: MeshDns) -> None:
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio's, but has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = answer(data, self.dns.records)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class MeshDns:
    """Serves ``records`` on a bound UDP socket (made by the caller: in capture mode, in the
    pods' node namespace on the bridge's address)."""

    def __init__(self, sock: socket.socket) -> None:
        self.records: dict[str, str] = {}
        self._sock = sock
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] = sock.getsockname()

    def start(self) -> None:
        """Serve from the running loop (the socket is bound already)."""
        self._sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), sock=self._sock
        )

    def set_services(self, hosts: Mapping[str, str]) -> None:
        """The Services' names (``vips.hosts_entries``) and their VIPs."""
        self.records = {name.lower(): ip for name, ip in hosts.items()}

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            if self._task is not None:
                self._task.cancel()
            self._sock.close()
