"""The consistent-hash balancers' common part, Envoy's ``ThreadAwareLoadBalancerBase``.

For each priority level a lookup structure (a ring, a Maglev table) is built from the level's
pickable hosts (healthy, or all in panic) and their normalized weights (weight / sum of the
level's weights; with locality-weighted balancing, also times the locality's share of the
configured locality weights). A pick takes the request's 64-bit hash (a random one when the
request has none), chooses the priority by ``hash % 100`` against the priority loads and looks
the hash up; retries avoiding previous hosts look again with ``attempt`` > 0.

With ``hash_balance_factor`` (bounded loads), a host with more than its share of the
cluster's active requests is passed over for another, chosen by a shuffle seeded with the
hash (Envoy's ``BoundedLoadHashingLoadBalancer``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from pilotfish.model.cluster import ConsistentHashing
from pilotfish.model.common import Locality
from pilotfish.stats.store import Counter, Gauge
from pilotfish.upstream.host import Host
from pilotfish.upstream.lb import HostSet, LoadBalancer, PriorityLevel, Source

_MASK32 = 0xFFFFFFFF


def host_hash_key(host: Host, use_hostname: bool) -> bytes:
    """What a host is hashed by: its ``envoy.lb`` metadata ``hash_key`` when set, else its
    hostname (``use_hostname_for_hashing``) or its address ("ip:port", "[ipv6]:port")."""
    lb_md = host.metadata.get("envoy.lb")
    if isinstance(lb_md, dict):
        key = lb_md.get("hash_key")
        if isinstance(key, str) and key:
            return key.encode()
    return (host.hostname if use_hostname else host.address_str).encode()


class WeightedHosts:
    """A level's hosts with their normalized weights, in the host set's order (Envoy's
    ``NormalizedHostWeightVector``), and the smallest and largest weight."""

    __slots__ = ("hosts", "max_weight", "min_weight", "weights")

    def __init__(self, level: PriorityLevel, locality_weighted: bool) -> None:
        self.hosts: list[Host] = []
        self.weights: list[float] = []
        self.min_weight = 1.0
        self.max_weight = 0.0
        if locality_weighted:
            self._by_locality(level)
        else:
            self._add(level.pickable, 1.0)

    def _add(self, hosts: Sequence[Host], locality_share: float) -> None:
        total = sum(h.weight for h in hosts)
        for h in hosts:
            w = h.weight * locality_share / total
            self.hosts.append(h)
            self.weights.append(w)
            self.min_weight = min(self.min_weight, w)
            self.max_weight = max(self.max_weight, w)

    def _by_locality(self, level: PriorityLevel) -> None:
        # Envoy's hosts per locality are ordered by (region, zone, sub_zone); the configured
        # locality weights are used as they are (not scaled by health).
        by_locality: dict[Locality, list[Host]] = {}
        weights: dict[Locality, int] = {}
        pickable = {id(h) for h in level.pickable}
        for h in level.hosts:
            members = by_locality.setdefault(h.locality, [])
            weights[h.locality] = h.locality_weight
            if id(h) in pickable:
                members.append(h)
        total = sum(weights.values())
        if not total:
            return  # Envoy: no host at all when every locality weighs 0
        for loc in sorted(by_locality, key=lambda x: (x.region, x.zone, x.sub_zone)):
            if weights[loc]:
                self._add(by_locality[loc], weights[loc] / total)


class HashTable:
    """A consistent-hash lookup structure over one priority level's hosts."""

    def lookup(self, h: int, attempt: int) -> Host | None:
        raise NotImplementedError


class BoundedLoad(HashTable):
    """Envoy's BoundedLoadHashingLoadBalancer over another table: a host with more active
    requests than its slots (``hash_balance_factor`` percent of the cluster's average,
    scaled by its weight) is passed over for the first host that is not, in an order
    shuffled by a Mersenne Twister seeded with the hash (as Envoy's ``std::mt19937``, so the
    same hash tries hosts in the same order); failing that, the least overloaded host."""

    __slots__ = ("active", "factor", "hosts", "inner", "weight_of", "weights")

    def __init__(self, inner: HashTable, wh: WeightedHosts, factor: int, active: Gauge) -> None:
        self.inner = inner
        self.hosts = wh.hosts
        self.weights = wh.weights
        self.weight_of = {id(h): w for h, w in zip(wh.hosts, wh.weights, strict=True)}
        self.factor = factor
        self.active = active  # the cluster's upstream_rq_active

    def overload(self, host: Host, weight: float) -> float:
        total_slots = (((self.active.value + 1) * self.factor + 99) // 100) & _MASK32
        slots = max(math.ceil(total_slots * weight), 1)
        return host.rq_active / slots

    def lookup(self, h: int, attempt: int) -> Host | None:
        if not self.hosts:
            return None
        host = self.inner.lookup(h, attempt)
        if host is None:
            return None
        factor = self.overload(host, self.weight_of[id(host)])
        if factor <= 1.0:
            return host
        n = len(self.hosts)
        order = list(range(n))
        rng = mt19937(h & _MASK32)
        least, least_factor = host, factor
        for i in range(n):
            k = n - i
            bucket = (1 << 32) // k
            x = k
            while x >= k:
                x = rng.getrandbits(32) // bucket
            order[i], order[i + x] = order[i + x], order[i]
            alt = self.hosts[order[i]]
            if alt is host:
                continue
            factor = self.overload(alt, self.weights[order[i]])
            if factor <= 1.0:
                return alt
            if least_factor > factor:
                least, least_factor = alt, factor
        return least


def mt19937(seed: int) -> random.Random:
    """A Mersenne Twister seeded as C++'s ``std::mt19937(seed)`` (init_genrand), which Python's
    ``Random.seed`` does not do (it uses init_by_array): its ``getrandbits(32)`` then yields
    the same numbers as the C++ engine."""
    state = [seed & _MASK32]
    for i in range(1, 624):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & _MASK32)
    rng = random.Random()
    rng.setstate((3, (*state, 624), None))
    return rng


class HashLB(LoadBalancer):
    """The consistent-hash balancers: a ``HashTable`` per priority level, built once per host
    set; a request without a hash gets a random one (Envoy)."""

    def __init__(
        self,
        host_set: HostSet,
        config: ConsistentHashing = ConsistentHashing(),
        rng: random.Random | None = None,
        panic_counter: Counter | None = None,
        rq_active: Gauge | None = None,
        locality_weighted: bool = False,
    ) -> None:
        self.config = config
        super().__init__(host_set, rng, panic_counter)
        active = rq_active if rq_active is not None else Gauge("upstream_rq_active")
        tables: list[HashTable] = []
        for level in host_set.levels:
            wh = WeightedHosts(level, locality_weighted)
            table = self.build(wh)
            if config.hash_balance_factor:
                table = BoundedLoad(table, wh, config.hash_balance_factor, active)
            tables.append(table)
        self.tables = tables

    def uses_weights(self) -> bool:
        return False

    def uses_hash(self) -> bool:
        return True

    def build(self, wh: WeightedHosts) -> HashTable:
        raise NotImplementedError

    def choose(
        self,
        exclude: AbstractSet[Host] = frozenset(),
        attempts: int = 1,
        hash_key: int | None = None,
    ) -> Host | None:
        tables = self.tables
        if not tables:
            return None
        h = hash_key if hash_key is not None else self.rng.getrandbits(64)
        index = 0
        if len(tables) > 1:
            # Envoy's choosePriority with the hash: hash % 100 against the priority loads.
            r = h % 100
            for i, load in enumerate(self.host_set.loads):
                if r < load:
                    index = i
                    break
                r -= load
        if self.host_set.levels[index].panic:
            counter = self.panic_counter
            if counter is not None:
                counter.value += 1
        table = tables[index]
        host = table.lookup(h, 0)
        if exclude:
            attempt = 0
            while host is not None and host in exclude and attempt < attempts:
                attempt += 1
                host = table.lookup(h, attempt)
        return host

    def pick(self, source: Source) -> Host | None:
        return None
