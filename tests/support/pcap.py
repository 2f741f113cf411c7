"""Reading tcpdump's pcap files: the TCP segments with payload, for checks on what went over
the wire (e.g. that sidecar-to-sidecar traffic is TLS). Only what the tests need: classic
pcap (not pcapng), Ethernet or Linux "any" link types, IPv4."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_LINK_HEADER = {1: 14, 113: 16, 276: 20}  # Ethernet, LINUX_SLL, LINUX_SLL2
_ETHERTYPE_OFFSET = {1: 12, 113: 14, 276: 0}


@dataclass(frozen=True, slots=True)
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes

    @property
    def connection(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """The same key for both directions."""
        a, b = sorted((self.src, self.dst))
        return a, b


def tcp_segments(path: Path) -> list[Segment]:
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    link = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if link not in _LINK_HEADER:
        raise ValueError(f"link type {link} is not read here")
    out = []
    pos = 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ethertype = struct.unpack_from("!H", frame, _ETHERTYPE_OFFSET[link])[0]
        ip = frame[_LINK_HEADER[link] :]
        if ethertype != 0x0800 or len(ip) < 20 or ip[9] != socket.IPPROTO_TCP:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack_from("!HH", tcp)
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            src = (socket.inet_ntoa(ip[12:16]), sport)
            dst = (socket.inet_ntoa(ip[16:20]), dport)
            out.append(Segment(src, dst, payload))
    return out
