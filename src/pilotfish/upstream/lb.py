"""Load balancers over a cluster's hosts, with Envoy's priority and panic semantics.

A ``HostSet`` is what one EDS/DNS update produces: hosts grouped by priority. Load balancers are
rebuilt from it on each update (updates are rare, picks are per request).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from pilotfish.model.cluster import LbPolicy
from pilotfish.upstream.host import Host


class PriorityLevel:
    """Hosts of one priority and the ones to pick from (healthy, or all in panic)."""

    __slots__ = ("healthy", "hosts", "panic", "pickable")

    def __init__(self, hosts: Sequence[Host], panic_threshold: float) -> None:
        self.hosts = tuple(hosts)
        self.healthy = tuple(h for h in hosts if h.healthy)
        pct = 100.0 * len(self.healthy) / len(self.hosts) if self.hosts else 0.0
        self.panic = bool(self.hosts) and pct < panic_threshold
        self.pickable = self.hosts if self.panic else self.healthy


class HostSet:
    def __init__(
        self, hosts: Sequence[Host], panic_threshold: float = 50.0, overprovisioning: int = 140
    ) -> None:
        self.hosts = tuple(hosts)
        by_priority: dict[int, list[Host]] = {}
        for h in hosts:
            by_priority.setdefault(h.priority, []).append(h)
        self.levels = [PriorityLevel(by_priority[p], panic_threshold) for p in sorted(by_priority)]
        self.loads = _priority_loads(self.levels, overprovisioning)

    def healthy_count(self) -> int:
        return sum(len(level.healthy) for level in self.levels)


def _priority_loads(levels: list[PriorityLevel], overprovisioning: int) -> list[int]:
    """Envoy's per-priority load (percent): each level takes its overprovisioned health
    percentage, the rest spills to the next level; normalised if total health < 100."""
    health = [
        min(100, overprovisioning * len(lv.healthy) // len(lv.hosts)) if lv.hosts else 0
        for lv in levels
    ]
    total = min(100, sum(health))
    if total == 0:
        # Everything unhealthy: all load to the first level (which is in panic).
        return [100] + [0] * (len(levels) - 1) if levels else []
    loads = []
    remaining = 100
    for h in health:
        share = min(remaining, h * 100 // total)
        loads.append(share)
        remaining -= share
    if remaining and loads:
        loads[next(i for i, h in enumerate(health) if h)] += remaining
    return loads


class LoadBalancer:
    """Picks a host. ``choose`` returns None when there is no host to pick."""

    def __init__(self, host_set: HostSet) -> None:
        self.host_set = host_set
        self._single = len(host_set.levels) == 1

    def choose(self, exclude: AbstractSet[Host] = frozenset()) -> Host | None:
        levels = self.host_set.levels
        if not levels:
            return None
        if self._single:
            index = 0
        else:
            r = random.randrange(100)
            index = 0
            for i, load in enumerate(self.host_set.loads):
                if r < load:
                    index = i
                    break
                r -= load
        return self.pick(index, exclude)

    def pick(self, level: int, exclude: AbstractSet[Host]) -> Host | None:
        raise NotImplementedError


class _Edf:
    """Earliest-deadline-first scheduling by weight (Envoy's weighted round robin)."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self._heap: list[tuple[float, int, Host]] = []
        for i, h in enumerate(hosts):
            heapq.heappush(self._heap, (1.0 / h.weight, i, h))
        self._seq = len(hosts)

    def pick(self) -> Host:
        deadline, _, host = heapq.heappop(self._heap)
        self._seq += 1
        heapq.heappush(self._heap, (deadline + 1.0 / host.weight, self._seq, host))
        return host


class RoundRobinLB(LoadBalancer):
    def __init__(self, host_set: HostSet) -> None:
        super().__init__(host_set)
        self._index = [random.randrange(1 << 16) for _ in host_set.levels]
        self._edf = [
            _Edf(lv.pickable) if len({h.weight for h in lv.pickable}) > 1 else None
            for lv in host_set.levels
        ]

    def pick(self, level: int, exclude: AbstractSet[Host]) -> Host | None:
        hosts = self.host_set.levels[level].pickable
        if not hosts:
            return None
        edf = self._edf[level]
        for _ in range(len(hosts)):
            if edf is not None:
                host = edf.pick()
            else:
                i = self._index[level]
                self._index[level] = i + 1
                host = hosts[i % len(hosts)]
            if host not in exclude:
                return host
        return hosts[0] if not exclude else next((h for h in hosts if h not in exclude), hosts[0])


class LeastRequestLB(LoadBalancer):
    """Power of N choices among equally weighted hosts; weighted EDF by weight/(active+1)
    otherwise (Envoy's active_request_bias of 1)."""

    def __init__(self, host_set: HostSet, choice_count: int = 2) -> None:
        super().__init__(host_set)
        self.choice_count = choice_count
        self._weighted = [len({h.weight for h in lv.pickable}) > 1 for lv in host_set.levels]

    def pick(self, level: int, exclude: AbstractSet[Host]) -> Host | None:
        hosts = self.host_set.levels[level].pickable
        if exclude:
            hosts = tuple(h for h in hosts if h not in exclude) or hosts
        if not hosts:
            return None
        if len(hosts) == 1:
            return hosts[0]
        if self._weighted[level]:
            return max(hosts, key=lambda h: (h.weight / (h.rq_active + 1), random.random()))
        best = None
        for _ in range(self.choice_count):
            h = hosts[random.randrange(len(hosts))]
            if best is None or h.rq_active < best.rq_active:
                best = h
        return best


class RandomLB(LoadBalancer):
    def pick(self, level: int, exclude: AbstractSet[Host]) -> Host | None:
        hosts = self.host_set.levels[level].pickable
        if exclude:
            hosts = tuple(h for h in hosts if h not in exclude) or hosts
        if not hosts:
            return None
        return hosts[random.randrange(len(hosts))]


def make_lb(policy: LbPolicy, host_set: HostSet, choice_count: int = 2) -> LoadBalancer:
    if policy is LbPolicy.LEAST_REQUEST:
        return LeastRequestLB(host_set, choice_count)
    if policy is LbPolicy.RANDOM:
        return RandomLB(host_set)
    return RoundRobinLB(host_set)
