"""Load balancers over a cluster's hosts, with Envoy's priority, panic and locality semantics.

A ``HostSet`` is what one EDS/DNS update produces: hosts grouped by priority (and, inside a
priority, by locality). Load balancers are rebuilt from it on each update (updates are rare,
picks are per request), so everything a pick needs is computed here, at update time.

A pick follows Envoy's ``ZoneAwareLoadBalancerBase``: choose a priority by its load; in panic,
pick among all of its hosts; otherwise, with ``locality_weighted_lb_config``, choose a locality
by an EDF schedule over the localities' effective weights, then pick among that locality's
healthy hosts; otherwise among the priority's healthy hosts. The policy (round robin, least
request, random) then picks a host of that "source"; each source keeps its own state.

The consistent-hash balancers (RING_HASH, MAGLEV) are Envoy's thread-aware ones, in
``hash_lb``, ``ring_hash`` and ``maglev``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from pilotfish.model.cluster import ConsistentHashing, LbPolicy
from pilotfish.model.common import Locality
from pilotfish.stats.store import Counter, Gauge
from pilotfish.upstream.host import Host

# Envoy limits the pre-picks of a new EDF schedule to UINT32_MAX / 10.
_MAX_PICKS = 429496729


class PriorityLevel:
    """Hosts of one priority and the ones to pick from (healthy, or all in panic).

    ``localities`` holds the healthy hosts of each locality whose effective weight is above 0,
    and ``locality_weights`` those weights (load_balancing_weight scaled by the locality's
    overprovisioned health, as Envoy's ``effectiveLocalityWeight``); both are empty unless
    locality-weighted balancing applies to this level (configured, and not in panic)."""

    __slots__ = ("healthy", "hosts", "localities", "locality_weights", "panic", "pickable")

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.hosts = tuple(hosts)
        self.healthy = tuple(h for h in hosts if h.healthy)
        self.panic = False
        self.pickable = self.healthy
        self.localities: tuple[tuple[Host, ...], ...] = ()
        self.locality_weights: tuple[float, ...] = ()

    def health(self, overprovisioning: int) -> int:
        """Percent of the load this level can take: its overprovisioned health, at most 100."""
        if not self.hosts:
            return 0
        return min(100, overprovisioning * len(self.healthy) // len(self.hosts))

    def in_panic(self, panic_threshold: float) -> bool:
        pct = 100.0 * len(self.healthy) / len(self.hosts) if self.hosts else 0.0
        return pct < panic_threshold

    def finish(self, panic: bool, locality_weighted: bool, overprovisioning: int) -> None:
        self.panic = panic
        self.pickable = self.hosts if panic else self.healthy
        if locality_weighted and self.healthy and not panic:
            self._weigh_localities(overprovisioning)

    def _weigh_localities(self, overprovisioning: int) -> None:
        # Envoy keeps localities in a map ordered by (region, zone, sub_zone).
        by_locality: dict[Locality, list[Host]] = {}
        for h in self.hosts:
            by_locality.setdefault(h.locality, []).append(h)
        localities: list[tuple[Host, ...]] = []
        weights: list[float] = []
        for loc in sorted(by_locality, key=_locality_key):
            members = by_locality[loc]
            healthy = tuple(h for h in members if h.healthy)
            ratio = min(1.0, overprovisioning / 100.0 * len(healthy) / len(members))
            weight = members[-1].locality_weight * ratio
            if weight > 0:
                localities.append(healthy)
                weights.append(weight)
        self.localities = tuple(localities)
        self.locality_weights = tuple(weights)


def _locality_key(loc: Locality) -> tuple[str, str, str]:
    return (loc.region, loc.zone, loc.sub_zone)


class HostSet:
    """Hosts by priority, 0 to the highest one used (a priority without hosts is an empty
    level, as in Envoy), with Envoy's per-priority load and panic."""

    def __init__(
        self,
        hosts: Sequence[Host],
        panic_threshold: float = 50.0,
        overprovisioning: int = 140,
        locality_weighted: bool = False,
    ) -> None:
        self.hosts = tuple(hosts)
        self.locality_weighted = locality_weighted
        by_priority: dict[int, list[Host]] = {}
        for h in hosts:
            by_priority.setdefault(h.priority, []).append(h)
        top = max(by_priority, default=0)
        self.levels = [PriorityLevel(by_priority.get(p, ())) for p in range(top + 1)]
        health = [lv.health(overprovisioning) for lv in self.levels]
        total = min(100, sum(health))
        # No level is in panic when the levels together can take all the load.
        panics = [total < 100 and lv.in_panic(panic_threshold) for lv in self.levels]
        for level, panic in zip(self.levels, panics, strict=True):
            level.finish(panic, locality_weighted, overprovisioning)
        if all(panics):
            self.loads = _total_panic_loads(self.levels)
        else:
            self.loads = _priority_loads(health, total)

    def healthy_count(self) -> int:
        return sum(len(level.healthy) for level in self.levels)


def _priority_loads(health: list[int], total: int) -> list[int]:
    """Envoy's per-priority load (percent): each level takes its overprovisioned health
    percentage, the rest spills to the next level; normalised if total health < 100."""
    if total == 0:
        return [100] + [0] * (len(health) - 1)
    loads = []
    remaining = 100
    for h in health:
        share = min(remaining, h * 100 // total)
        loads.append(share)
        remaining -= share
    if remaining:
        loads[next(i for i, h in enumerate(health) if h)] += remaining
    return loads


def _total_panic_loads(levels: list[PriorityLevel]) -> list[int]:
    """Every level in panic: load in proportion to the levels' host counts (Envoy's
    recalculateLoadInTotalPanic); all of it to priority 0 when there are no hosts at all."""
    total_hosts = sum(len(lv.hosts) for lv in levels)
    if not total_hosts:
        return [100] + [0] * (len(levels) - 1)
    loads = [100 * len(lv.hosts) // total_hosts for lv in levels]
    first = next(i for i, lv in enumerate(levels) if lv.hosts)
    loads[first] += 100 - sum(loads)
    return loads


class Edf:
    """Envoy's EdfScheduler: the entry with the earliest deadline is picked and added back with
    the deadline ``now + 1/weight``; equal deadlines go in insertion order. Entries are indexes
    into the caller's list.

    A new schedule starts as if ``picks`` picks had been made already (Envoy's
    ``createWithPicks``, seeded randomly per load balancer), so that every proxy does not start
    on the same entry."""

    __slots__ = ("heap", "inverse", "now", "order")

    def __init__(self, weights: Sequence[float], picks: int = 0) -> None:
        picks %= _MAX_PICKS
        # As Envoy does, a tiny epsilon keeps weights that are multiples of each other from
        # rounding the emulated picks differently from picks made one by one.
        total = sum(w + 1e-13 for w in weights)
        heap: list[tuple[float, int, int]] = []
        now = 0.0
        done = 0
        for i, w in enumerate(weights):
            aug = w + 1e-13
            made = int(picks * aug / total) if picks else 0
            if made:
                done += made
                now = max(now, made / aug)
            heap.append(((made + 1) / aug, i, i))
        heapq.heapify(heap)
        self.heap = heap
        self.inverse = [1.0 / w for w in weights]
        self.now = now
        self.order = len(heap)
        for _ in range(picks - done):
            self.pick()

    def pick(self) -> int:
        """The next entry, added back with its configured weight."""
        heap = self.heap
        deadline, _, i = heap[0]
        self.now = deadline
        self.order += 1
        heapq.heapreplace(heap, (deadline + self.inverse[i], self.order, i))
        return i

    def peek(self) -> int:
        return self.heap[0][2]

    def advance(self, inverse_weight: float) -> None:
        """Pick the next entry (``peek``) and add it back with weight ``1/inverse_weight``."""
        heap = self.heap
        deadline, _, i = heap[0]
        self.now = deadline
        self.order += 1
        heapq.heapreplace(heap, (deadline + inverse_weight, self.order, i))


class Source:
    """The hosts one pick is made from (a priority level's, or one locality's) and the policy's
    state over them: a round-robin index, or an EDF schedule when host weights differ."""

    __slots__ = ("edf", "hosts", "index")

    def __init__(self, hosts: tuple[Host, ...], seed: int, edf_weights: bool) -> None:
        self.hosts = hosts
        self.index = seed
        self.edf: Edf | None = None
        if edf_weights and len(hosts) > 1 and len({h.weight for h in hosts}) > 1:
            self.edf = Edf([float(h.weight) for h in hosts], seed)


class _Level:
    """A priority level as a load balancer sees it: where picks come from."""

    __slots__ = ("localities", "locality_edf", "panic", "source")

    def __init__(self, level: PriorityLevel, seed: int, edf_weights: bool) -> None:
        self.panic = level.panic
        self.source = Source(level.pickable, seed, edf_weights)
        self.localities: list[Source] = []
        self.locality_edf: Edf | None = None
        if level.locality_weights:
            self.localities = [Source(hs, seed, edf_weights) for hs in level.localities]
            self.locality_edf = Edf(level.locality_weights, seed)


class LoadBalancer:
    """Picks a host. ``choose`` returns None when there is no host to pick.

    ``rng`` gives the randomness (priority choice, random and least-request picks, the initial
    schedule position); tests pass a seeded ``random.Random``."""

    def __init__(
        self,
        host_set: HostSet,
        rng: random.Random | None = None,
        panic_counter: Counter | None = None,
    ) -> None:
        self.host_set = host_set
        self.rng: random.Random = rng if rng is not None else random.Random()
        self.panic_counter = panic_counter
        seed = self.rng.getrandbits(32)
        weighted = self.uses_weights()
        self._levels = [_Level(lv, seed, weighted) for lv in host_set.levels]
        self._single = len(self._levels) == 1

    def choose(
        self,
        exclude: AbstractSet[Host] = frozenset(),
        attempts: int = 1,
        hash_key: int | None = None,
    ) -> Host | None:
        """One host. With ``exclude`` (hosts a retry should avoid), the choice is made again up
        to ``attempts`` more times while it falls on an excluded host; then the last one is
        used (Envoy's host_selection_retry_max_attempts). ``hash_key``, the request's hash, is
        only used by the consistent-hash balancers."""
        host = self._choose_once()
        if exclude:
            while host is not None and host in exclude and attempts > 0:
                attempts -= 1
                host = self._choose_once()
        return host

    def _choose_once(self) -> Host | None:
        levels = self._levels
        if not levels:
            return None
        if self._single:
            level = levels[0]
        else:
            r = self.rng.randrange(100)
            level = levels[0]
            for i, load in enumerate(self.host_set.loads):
                if r < load:
                    level = levels[i]
                    break
                r -= load
        if level.panic:
            counter = self.panic_counter
            if counter is not None:
                counter.value += 1
        edf = level.locality_edf
        if edf is not None:
            return self.pick(level.localities[edf.pick()])
        return self.pick(level.source)

    def uses_weights(self) -> bool:
        """Whether unequal host weights make an EDF schedule."""
        return True

    def uses_hash(self) -> bool:
        """Whether picks take the request's hash (the consistent-hash balancers)."""
        return False

    def pick(self, source: Source) -> Host | None:
        raise NotImplementedError


class RoundRobinLB(LoadBalancer):
    """Envoy's ROUND_ROBIN: in turn when weights are equal, else weighted EDF (smooth)."""

    def pick(self, source: Source) -> Host | None:
        hosts = source.hosts
        if not hosts:
            return None
        edf = source.edf
        if edf is not None:
            return hosts[edf.pick()]
        i = source.index
        source.index = i + 1
        return hosts[i % len(hosts)]


class LeastRequestLB(LoadBalancer):
    """Envoy's LEAST_REQUEST: among equally weighted hosts, the least busy of ``choice_count``
    random ones; with unequal weights, an EDF schedule where a host is added back with the
    weight ``weight / (active_requests + 1) ** active_request_bias``."""

    def __init__(
        self,
        host_set: HostSet,
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        rng: random.Random | None = None,
        panic_counter: Counter | None = None,
    ) -> None:
        self.choice_count = choice_count
        self.bias = active_request_bias
        super().__init__(host_set, rng, panic_counter)

    def pick(self, source: Source) -> Host | None:
        hosts = source.hosts
        n = len(hosts)
        if not n:
            return None
        edf = source.edf
        if edf is not None:
            host = hosts[edf.peek()]
            bias = self.bias
            if bias == 1.0:
                edf.advance((host.rq_active + 1) / host.weight)
            elif bias == 0.0:
                edf.advance(1.0 / host.weight)
            else:
                edf.advance((host.rq_active + 1) ** bias / host.weight)
            return host
        rng = self.rng
        best = hosts[rng.randrange(n)]
        for _ in range(self.choice_count - 1):
            h = hosts[rng.randrange(n)]
            if h.rq_active < best.rq_active:
                best = h
        return best


class RandomLB(LoadBalancer):
    """Envoy's RANDOM: any host of the source, weights ignored."""

    def uses_weights(self) -> bool:
        return False

    def pick(self, source: Source) -> Host | None:
        hosts = source.hosts
        if not hosts:
            return None
        return hosts[self.rng.randrange(len(hosts))]


def make_lb(
    policy: LbPolicy,
    host_set: HostSet,
    choice_count: int = 2,
    active_request_bias: float = 1.0,
    rng: random.Random | None = None,
    panic_counter: Counter | None = None,
    hashing: ConsistentHashing | None = None,
    rq_active: Gauge | None = None,
) -> LoadBalancer:
    """``hashing``: the RING_HASH/MAGLEV settings; ``rq_active``: the cluster's active
    requests (their bounded loads)."""
    if policy is LbPolicy.RING_HASH or policy is LbPolicy.MAGLEV:
        # Imported here: those modules build on this one.
        from pilotfish.upstream.maglev import MaglevLB
        from pilotfish.upstream.ring_hash import RingHashLB

        cls = RingHashLB if policy is LbPolicy.RING_HASH else MaglevLB
        return cls(
            host_set,
            hashing or ConsistentHashing(),
            rng,
            panic_counter,
            rq_active,
            host_set.locality_weighted,
        )
    if policy is LbPolicy.LEAST_REQUEST:
        return LeastRequestLB(host_set, choice_count, active_request_bias, rng, panic_counter)
    if policy is LbPolicy.RANDOM:
        return RandomLB(host_set, rng, panic_counter)
    return RoundRobinLB(host_set, rng, panic_counter)
