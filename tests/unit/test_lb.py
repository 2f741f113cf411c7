"""Load balancing without sockets: Envoy's EDF scheduler, the policies' distributions (seeded),
localities, priorities and panic, and original-destination address parsing."""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Sequence

import pytest

from pilotfish.model.cluster import HealthStatus, LbPolicy
from pilotfish.model.common import Locality
from pilotfish.stats.store import Counter
from pilotfish.upstream.cluster import parse_ip_port
from pilotfish.upstream.host import Host
from pilotfish.upstream.lb import Edf, HostSet, LoadBalancer, make_lb

ZONE_A, ZONE_B = Locality(zone="a"), Locality(zone="b")


def host(
    n: int,
    weight: int = 1,
    *,
    healthy: bool = True,
    priority: int = 0,
    locality: Locality = Locality(),
    locality_weight: int = 0,
) -> Host:
    return Host(
        ("127.0.0.1", 10000 + n),
        weight=weight,
        health=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
        priority=priority,
        locality=locality,
        locality_weight=locality_weight,
    )


def lb_for(
    policy: LbPolicy,
    hosts: Sequence[Host],
    *,
    seed: int = 7,
    locality_weighted: bool = False,
    panic: Counter | None = None,
) -> LoadBalancer:
    host_set = HostSet(hosts, locality_weighted=locality_weighted)
    return make_lb(policy, host_set, rng=random.Random(seed), panic_counter=panic)


def counts(lb: LoadBalancer, picks: int) -> dict[int, int]:
    chosen: collections.Counter[int] = collections.Counter()
    for _ in range(picks):
        h = lb.choose()
        assert h is not None
        assert isinstance(h.address, tuple)
        chosen[h.address[1] - 10000] += 1
    return dict(chosen)


# --- the EDF scheduler -------------------------------------------------------------------------


def test_edf_picks_by_weight_with_ties_in_insertion_order() -> None:
    edf = Edf([1.0, 3.0])
    assert [edf.pick() for _ in range(8)] == [1, 1, 0, 1, 1, 1, 0, 1]


@pytest.mark.parametrize(
    ("weights", "picks"),
    [([1.0, 3.0], 5), ([2.0, 3.0, 7.0], 23), ([25.0, 75.0], 23), ([1.0, 1.5, 4.0], 1000)],
)
def test_edf_created_with_picks_continues_like_one_made_pick_by_pick(
    weights: list[float], picks: int
) -> None:
    # As Envoy's own test does: the same deadline per entry, whatever the tie-break order.
    fresh = Edf(weights)
    for _ in range(picks):
        fresh.pick()
    warmed = Edf(weights, picks)
    assert {i: d for d, _, i in warmed.heap} == pytest.approx({i: d for d, _, i in fresh.heap})


def test_edf_advance_adds_the_entry_back_with_the_given_weight() -> None:
    edf = Edf([1.0, 1.0])
    assert edf.peek() == 0
    edf.advance(10.0)  # entry 0 now weighs 0.1: entry 1 comes ten times before it again
    seen = []
    for _ in range(11):
        seen.append(edf.peek())
        edf.advance(1.0)
    assert seen == [1] * 10 + [0]


# --- round robin -------------------------------------------------------------------------------


def test_round_robin_takes_hosts_in_turn() -> None:
    lb = lb_for(LbPolicy.ROUND_ROBIN, [host(0), host(1), host(2)])
    first = counts(lb, 1)
    assert sum(first.values()) == 1
    assert counts(lb, 30) == {0: 10, 1: 10, 2: 10}


def test_round_robin_with_weights_is_smooth_and_exact() -> None:
    lb = lb_for(LbPolicy.ROUND_ROBIN, [host(0, 1), host(1, 3)])
    picks = [lb.choose() for _ in range(40)]
    heavy = picks[0]
    assert heavy is not None
    by_port = collections.Counter(h.address for h in picks if h is not None)
    assert sorted(by_port.values()) == [10, 30]
    # Smooth: the light host never comes twice in a row.
    light = [i for i, h in enumerate(picks) if h is not None and h.weight == 1]
    assert all(b - a > 1 for a, b in itertools.pairwise(light))


def test_round_robin_starts_at_a_random_point() -> None:
    hosts = [host(0), host(1), host(2), host(3)]
    firsts = {lb_for(LbPolicy.ROUND_ROBIN, hosts, seed=s).choose() for s in range(40)}
    assert len(firsts) > 1


# --- least request -----------------------------------------------------------------------------


def test_least_request_with_weights_and_no_active_requests_splits_by_weight() -> None:
    lb = lb_for(LbPolicy.LEAST_REQUEST, [host(0, 1), host(1, 3)])
    assert counts(lb, 60) == {0: 15, 1: 45}


def test_least_request_weight_is_divided_by_active_requests_plus_one() -> None:
    light, heavy = host(0, 1), host(1, 3)
    heavy.rq_active = 5  # effective weight 3 / 6 = 0.5 against 1
    lb = lb_for(LbPolicy.LEAST_REQUEST, [light, heavy])
    got = counts(lb, 300)
    assert abs(got[0] - 200) <= 2, got


def test_least_request_active_request_bias_zero_ignores_active_requests() -> None:
    light, heavy = host(0, 1), host(1, 3)
    heavy.rq_active = 5
    host_set = HostSet([light, heavy])
    lb = make_lb(LbPolicy.LEAST_REQUEST, host_set, active_request_bias=0.0, rng=random.Random(1))
    assert counts(lb, 60) == {0: 15, 1: 45}


def test_least_request_equal_weights_is_power_of_two_choices() -> None:
    idle, busy = host(0), host(1)
    busy.rq_active = 3
    lb = lb_for(LbPolicy.LEAST_REQUEST, [idle, busy], seed=3)
    got = counts(lb, 4000)
    # The busy host wins only when both samples fall on it: 1/4 of the picks.
    assert 900 <= got[1] <= 1100, got


# --- random --------------------------------------------------------------------------------------


def test_random_ignores_weights() -> None:
    lb = lb_for(LbPolicy.RANDOM, [host(0, 1), host(1, 9)], seed=11)
    got = counts(lb, 4000)
    assert 1800 <= got[0] <= 2200, got


# --- localities ----------------------------------------------------------------------------------


def _zones(n_b_healthy: int = 2, weight_a: int = 1, weight_b: int = 3) -> list[Host]:
    return [
        host(0, locality=ZONE_A, locality_weight=weight_a),
        host(1, locality=ZONE_B, locality_weight=weight_b),
        host(2, locality=ZONE_B, locality_weight=weight_b, healthy=n_b_healthy >= 2),
    ]


@pytest.mark.parametrize("policy", [LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST])
def test_locality_weighted_picks_a_locality_by_weight_then_a_host_in_it(
    policy: LbPolicy,
) -> None:
    lb = lb_for(policy, _zones(), locality_weighted=True)
    got = counts(lb, 120)
    assert got[0] == 30, got
    if policy is LbPolicy.ROUND_ROBIN:
        assert got == {0: 30, 1: 45, 2: 45}


def test_locality_weights_are_ignored_without_locality_weighted_lb() -> None:
    lb = lb_for(LbPolicy.ROUND_ROBIN, _zones())
    assert counts(lb, 120) == {0: 40, 1: 40, 2: 40}


def test_locality_weight_is_scaled_by_its_overprovisioned_health() -> None:
    # Zone b: one of two hosts healthy, 3 * min(1, 1.4 * 0.5) = 2.1 against zone a's 1.
    lb = lb_for(LbPolicy.ROUND_ROBIN, _zones(n_b_healthy=1), locality_weighted=True)
    got = counts(lb, 310)
    assert abs(got[0] - 100) <= 1 and abs(got[1] - 210) <= 1, got
    assert 2 not in got


def test_localities_without_weight_get_nothing_and_all_unweighted_means_no_locality_lb() -> None:
    lb = lb_for(LbPolicy.ROUND_ROBIN, _zones(weight_a=0), locality_weighted=True)
    assert counts(lb, 40) == {1: 20, 2: 20}
    lb = lb_for(LbPolicy.ROUND_ROBIN, _zones(weight_a=0, weight_b=0), locality_weighted=True)
    assert counts(lb, 30) == {0: 10, 1: 10, 2: 10}


# --- priorities and panic -------------------------------------------------------------------------


def test_priority_loads_follow_overprovisioned_health() -> None:
    hosts = [
        host(0),
        host(1, healthy=False),
        host(2, healthy=False),
        host(3, priority=1),
        host(4, priority=1),
    ]
    host_set = HostSet(hosts)
    # P0: 1.4 * 1/3 = 46%; P1 takes the rest. Together they reach 100%: nobody is in panic.
    assert host_set.loads == [46, 54]
    assert [lv.panic for lv in host_set.levels] == [False, False]
    assert host_set.levels[0].pickable == (hosts[0],)


def test_panic_when_the_priorities_cannot_take_the_load() -> None:
    hosts = [host(0), host(1, healthy=False), host(2, healthy=False)]
    panic = Counter("lb_healthy_panic")
    lb = lb_for(LbPolicy.ROUND_ROBIN, hosts, panic=panic)
    assert counts(lb, 30) == {0: 10, 1: 10, 2: 10}  # in panic: every host
    assert panic.value == 30


def test_total_panic_spreads_load_by_host_count() -> None:
    hosts = [host(0, healthy=False), host(1, healthy=False, priority=1)]
    hosts.append(host(2, healthy=False, priority=1))
    host_set = HostSet(hosts)
    assert host_set.loads == [34, 66]


def test_an_empty_cluster_is_in_panic_and_has_no_host() -> None:
    panic = Counter("lb_healthy_panic")
    lb = lb_for(LbPolicy.ROUND_ROBIN, [], panic=panic)
    assert lb.choose() is None
    assert panic.value == 1


def test_a_missing_priority_is_an_empty_level() -> None:
    host_set = HostSet([host(0, priority=2)])
    assert [len(lv.hosts) for lv in host_set.levels] == [0, 0, 1]
    assert host_set.loads == [0, 0, 100]


# --- retries that avoid hosts ----------------------------------------------------------------


def test_exclude_picks_again_up_to_the_attempts_then_keeps_the_last() -> None:
    a, b = host(0), host(1)
    lb = lb_for(LbPolicy.ROUND_ROBIN, [a, b])
    first = lb.choose()
    assert first is not None
    assert lb.choose(frozenset((first,)), attempts=1) not in (first, None)
    only = lb_for(LbPolicy.ROUND_ROBIN, [a])
    assert only.choose(frozenset((a,)), attempts=3) is a


# --- original destination addresses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("10.1.2.3:0", ("10.1.2.3", 0)),
        ("not-an-address", None),
        ("127.0.0.1", None),
        ("127.0.0.1:x", None),
        ("localhost:80", None),
        ("127.0.0.1:65536", None),
        ("::1:80", None),
        ("[::1]", None),
        ("127.0.0.1:\u00b2", None),
    ],
)
def test_parse_ip_port_accepts_ip_literals_only(
    text: str, expected: tuple[str, int] | None
) -> None:
    assert parse_ip_port(text) == expected
