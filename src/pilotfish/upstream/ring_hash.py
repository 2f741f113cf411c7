"""Envoy's RING_HASH load balancer (``RingHashLoadBalancer``): a ring of 64-bit hashes.

Each host gets ``scale * normalized_weight`` entries, where ``scale`` makes the lightest host's
share a whole number of a ring of at least ``minimum_ring_size`` entries, capped at
``maximum_ring_size``; fractional shares are carried from host to host (running sums), so the
ring holds ``ceil(scale)`` entries. Entry ``i`` of a host is the hash (xxHash64, or Envoy's
MurmurHash2 with ``hash_function: MURMUR_HASH_2``) of "<key>_<i>", the key being the host's
address, hostname or ``envoy.lb`` ``hash_key``. A request hash picks the first entry at or
after it, wrapping to the first; a retry avoiding previous hosts moves ``attempt`` entries on.
"""

from __future__ import annotations

import bisect
import math

from pilotfish.upstream.hash_lb import HashLB, HashTable, WeightedHosts, host_hash_key
from pilotfish.upstream.hashes import murmur_hash2_64, xxhash64
from pilotfish.upstream.host import Host


class Ring(HashTable):
    __slots__ = ("hashes", "hosts")

    def __init__(
        self,
        wh: WeightedHosts,
        minimum_size: int,
        maximum_size: int,
        murmur: bool = False,
        use_hostname: bool = False,
    ) -> None:
        entries: list[tuple[int, int]] = []
        hosts = wh.hosts
        if hosts:
            min_weight = wh.min_weight
            scale = min(math.ceil(min_weight * minimum_size) / min_weight, float(maximum_size))
            current = 0.0
            target = 0.0
            for idx, host in enumerate(hosts):
                prefix = host_hash_key(host, use_hostname) + b"_"
                target += scale * wh.weights[idx]
                i = 0
                while current < target:
                    key = prefix + str(i).encode()
                    h = murmur_hash2_64(key) if murmur else xxhash64(key)
                    entries.append((h, idx))
                    i += 1
                    current += 1.0
            entries.sort()
        self.hashes = [e[0] for e in entries]
        self.hosts = [hosts[e[1]] for e in entries]

    def lookup(self, h: int, attempt: int) -> Host | None:
        hosts = self.hosts
        n = len(hosts)
        if not n:
            return None
        i = bisect.bisect_left(self.hashes, h)
        if i == n:
            i = 0
        if attempt:
            i = (i + attempt) % n
        return hosts[i]


class RingHashLB(HashLB):
    """Envoy's RING_HASH (``Cluster.RingHashLbConfig``)."""

    def build(self, wh: WeightedHosts) -> HashTable:
        c = self.config
        return Ring(
            wh,
            c.minimum_ring_size,
            c.maximum_ring_size,
            c.murmur_hash_2,
            c.use_hostname_for_hashing,
        )
