"""Envoy's MAGLEV load balancer (``MaglevTable``, from Google's Maglev paper).

The hosts, sorted by their hash key (address, hostname or ``envoy.lb`` ``hash_key``), take
turns filling a table of ``table_size`` entries (a prime): each host walks its permutation
``(offset + skip * n) % table_size`` with ``offset = xxHash64(key) % size`` and
``skip = xxHash64(key, seed 1) % (size - 1) + 1``, taking the next free slot; a host of
normalized weight ``w`` takes a turn only when ``iteration * w`` reaches its running target
(which grows by the largest weight per turn taken). A request hash picks entry
``hash % table_size``; a retry avoiding previous hosts first flips the hash's bits with
``~0 - attempt + 1``. Envoy 1.40 stores the table "compact" (host indexes in a bit array)
when that is smaller; which host each entry holds is the same either way.
"""

from __future__ import annotations

from pilotfish.upstream.hash_lb import HashLB, HashTable, WeightedHosts, host_hash_key
from pilotfish.upstream.hashes import xxhash64
from pilotfish.upstream.host import Host

_MASK64 = (1 << 64) - 1


class Maglev(HashTable):
    __slots__ = ("size", "table")

    def __init__(self, wh: WeightedHosts, table_size: int, use_hostname: bool = False) -> None:
        table: list[Host | None] = []
        if wh.hosts:
            entries = sorted((host_hash_key(h, use_hostname), i) for i, h in enumerate(wh.hosts))
            hosts = [wh.hosts[i] for _, i in entries]
            weights = [wh.weights[i] for _, i in entries]
            offsets = [xxhash64(key) % table_size for key, _ in entries]
            skips = [xxhash64(key, 1) % (table_size - 1) + 1 for key, _ in entries]
            max_weight = wh.max_weight
            count = len(hosts)
            nexts = [0] * count
            targets = [0.0] * count
            table = [None] * table_size
            filled = 0
            iteration = 1
            while filled < table_size:
                for i in range(count):
                    if filled >= table_size:
                        break
                    if iteration * weights[i] < targets[i]:
                        continue
                    targets[i] += max_weight
                    offset = offsets[i]
                    skip = skips[i]
                    n = nexts[i]
                    c = (offset + skip * n) % table_size
                    while table[c] is not None:
                        n += 1
                        c = (offset + skip * n) % table_size
                    table[c] = hosts[i]
                    nexts[i] = n + 1
                    filled += 1
                iteration += 1
        self.table = table
        self.size = table_size

    def lookup(self, h: int, attempt: int) -> Host | None:
        table = self.table
        if not table:
            return None
        if attempt:
            h ^= (_MASK64 - attempt + 1) & _MASK64
        return table[h % self.size]


class MaglevLB(HashLB):
    """Envoy's MAGLEV (``Cluster.MaglevLbConfig``)."""

    def build(self, wh: WeightedHosts) -> HashTable:
        c = self.config
        return Maglev(wh, c.table_size, c.use_hostname_for_hashing)
