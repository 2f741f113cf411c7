"""Consistent-hash load balancing (RING_HASH, MAGLEV) without sockets: stickiness, weighted
spread, minimal disruption on host removal, priorities and panic, retries avoiding hosts; and
the request hash computed from a route's hash_policy."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from pilotfish.errors import ConfigError
from pilotfish.http.headers import RequestHeaders
from pilotfish.http.router import request_hash
from pilotfish.model.cluster import Cluster, HealthStatus, LbPolicy
from pilotfish.model.route import HashPolicy
from pilotfish.upstream.host import Host
from pilotfish.upstream.lb import HostSet, LoadBalancer, Maglev, Ring, hash64, make_lb
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

POLICIES = [LbPolicy.RING_HASH, LbPolicy.MAGLEV]
KEYS = [hash64(b"key-%d" % i) for i in range(20000)]


def host(n: int, weight: int = 1, *, healthy: bool = True, priority: int = 0) -> Host:
    return Host(
        ("10.0.0.%d" % n, 8080),
        weight=weight,
        health=HealthStatus.HEALTHY if healthy else HealthStatus.UNHEALTHY,
        priority=priority,
    )


def lb(policy: LbPolicy, hosts: list[Host]) -> LoadBalancer:
    return make_lb(policy, HostSet(hosts), rng=random.Random(1))


def spread(balancer: LoadBalancer) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for k in KEYS:
        h = balancer.choose(hash_key=k)
        assert h is not None
        out[h.address_str] += 1
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_same_key_same_host_and_rebuild_is_stable(policy: LbPolicy) -> None:
    hosts = [host(i) for i in range(1, 6)]
    a = lb(policy, hosts)
    b = lb(policy, list(reversed(hosts)))  # another proxy, hosts in another order
    for k in KEYS[:2000]:
        ha = a.choose(hash_key=k)
        assert ha is a.choose(hash_key=k)
        hb = b.choose(hash_key=k)
        assert ha is not None and hb is not None
        assert ha.address_str == hb.address_str


@pytest.mark.parametrize("policy", POLICIES)
def test_equal_weights_spread_evenly(policy: LbPolicy) -> None:
    counts = spread(lb(policy, [host(i) for i in range(1, 5)]))
    assert len(counts) == 4
    for c in counts.values():
        assert abs(c / len(KEYS) - 0.25) < 0.06, counts


@pytest.mark.parametrize("policy", POLICIES)
def test_weights_spread_keys_by_weight(policy: LbPolicy) -> None:
    hosts = [host(1, 1), host(2, 2), host(3, 5)]
    counts = spread(lb(policy, hosts))
    for h, expected in ((hosts[0], 1 / 8), (hosts[1], 2 / 8), (hosts[2], 5 / 8)):
        assert abs(counts[h.address_str] / len(KEYS) - expected) < 0.05, counts


@pytest.mark.parametrize("policy", POLICIES)
def test_removing_a_host_moves_about_one_nth_of_keys(policy: LbPolicy) -> None:
    n = 8
    hosts = [host(i) for i in range(1, n + 1)]
    before = lb(policy, hosts)
    after = lb(policy, hosts[:-1])
    removed = hosts[-1]
    moved = 0
    for k in KEYS:
        old = before.choose(hash_key=k)
        new = after.choose(hash_key=k)
        if old is not removed:
            moved += old is not new
    # Keys on the remaining hosts mostly stay. Maglev: almost all, by design. Ring: as in
    # Envoy, the ring is rescaled to keep ~minimum_ring_size entries, so each remaining host
    # gains entries that take about another 1/N of the keys.
    assert moved / len(KEYS) < (1.2 / n if policy is LbPolicy.RING_HASH else 0.03)
    on_removed = sum(1 for k in KEYS if before.choose(hash_key=k) is removed)
    assert abs(on_removed / len(KEYS) - 1 / n) < 0.05


@pytest.mark.parametrize("policy", POLICIES)
def test_unhealthy_hosts_are_skipped_and_panic_uses_all(policy: LbPolicy) -> None:
    hosts = [host(1), host(2), host(3), host(4, healthy=False)]
    counts = spread(lb(policy, hosts))
    assert set(counts) == {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}
    panic = [host(1), host(2, healthy=False), host(3, healthy=False)]
    assert len(spread(lb(policy, panic))) == 3


@pytest.mark.parametrize("policy", POLICIES)
def test_priorities_follow_the_loads(policy: LbPolicy) -> None:
    hosts = [host(1), host(2, healthy=False), host(3, priority=1), host(4, priority=1)]
    b = lb(policy, hosts)
    counts = spread(b)
    # Priority 0 is 50% healthy: overprovisioned 70% of the load, priority 1 the rest.
    p0 = counts["10.0.0.1:8080"] / len(KEYS)
    assert abs(p0 - 0.70) < 0.03, counts
    assert counts["10.0.0.3:8080"] and counts["10.0.0.4:8080"]


@pytest.mark.parametrize("policy", POLICIES)
def test_no_hash_is_random(policy: LbPolicy) -> None:
    b = lb(policy, [host(i) for i in range(1, 4)])
    seen = collections.Counter(b.choose().address_str for _ in range(3000))  # type: ignore[union-attr]
    assert len(seen) == 3
    assert min(seen.values()) > 700


@pytest.mark.parametrize("policy", POLICIES)
def test_retry_avoids_previous_hosts(policy: LbPolicy) -> None:
    hosts = [host(i) for i in range(1, 4)]
    b = lb(policy, hosts)
    same = 0
    for k in KEYS[:1000]:
        first = b.choose(hash_key=k)
        assert first is not None
        other = b.choose(frozenset({first}), 5, k)
        assert other is not None
        same += other is first
        assert other is b.choose(frozenset({first}), 5, k)  # deterministic too
    # Not guaranteed (Envoy: the ring's next entries may be the same host's).
    assert same < 20


def test_empty_host_sets() -> None:
    for policy in POLICIES:
        assert lb(policy, []).choose(hash_key=1) is None
    assert Ring([], 1024, 2048).lookup(5, 0) is None
    assert Maglev([], 65537).lookup(5, 0) is None


def test_ring_size_bounds() -> None:
    hosts = [host(1), host(2), host(3)]
    assert 1024 <= len(Ring(hosts, 1024, 8 << 20).hashes) <= 1026
    assert len(Ring(hosts, 4096, 100).hashes) <= 101
    # Weighted: the lightest host gets its share of a ring of at least the minimum size.
    light = host(1, 1)
    weighted = Ring([light, host(2, 9)], 1000, 8 << 20)
    assert len(weighted.hashes) == 1000
    assert sum(1 for h in weighted.hosts if h is light) == 100
    # ...unless that exceeds the maximum size.
    assert len(Ring([light, host(2, 9999)], 1024, 4096).hashes) <= 4097


def test_maglev_table_is_full_and_weighted() -> None:
    hosts = [host(1, 1), host(2, 3)]
    table = Maglev(hosts, 65537).table
    assert len(table) == 65537 and all(h is not None for h in table)
    share = sum(1 for h in table if h is hosts[1]) / 65537
    assert abs(share - 0.75) < 0.01


# -- the request hash ------------------------------------------------------------------------


def _hash(
    policies: tuple[HashPolicy, ...], items: list[tuple[bytes, bytes]], remote: str = "10.1.2.3:5"
) -> int | None:
    headers = RequestHeaders(b"GET", b"/p?a=1&user=bob&z", b"example.com", items)
    return request_hash(policies, headers, remote)[0]


def test_hash_policies() -> None:
    header = (HashPolicy("header", "x-user"),)
    assert _hash(header, [(b"x-user", b"alice")]) == hash64(b"alice")
    assert _hash(header, []) is None
    cookie = (HashPolicy("cookie", "sess"),)
    assert _hash(cookie, [(b"cookie", b'a=b; sess="v1"')]) == hash64(b"v1")
    assert _hash(cookie, [(b"cookie", b"a=b")]) is None
    query = (HashPolicy("query_parameter", "user"),)
    assert _hash(query, []) == hash64(b"bob")
    ip = (HashPolicy("connection_properties", "source_ip"),)
    assert _hash(ip, []) == hash64(b"10.1.2.3")
    assert _hash(ip, [], remote="[::1]:80") == hash64(b"::1")
    assert _hash((HashPolicy("filter_state", "k"),), []) is None


def test_hash_policies_combine_and_terminal() -> None:
    a, b = hash64(b"1"), hash64(b"bob")
    both = (HashPolicy("query_parameter", "a"), HashPolicy("query_parameter", "user"))
    rotated = ((a << 1) & ((1 << 64) - 1)) | (a >> 63)
    assert _hash(both, []) == rotated ^ b
    terminal = (HashPolicy("query_parameter", "a", terminal=True), both[1])
    assert _hash(terminal, []) == a
    # A terminal policy that yields nothing does not stop the others.
    missing = (HashPolicy("header", "x-none", terminal=True), both[1])
    assert _hash(missing, []) == b


def test_cookie_with_ttl_is_generated() -> None:
    headers = RequestHeaders(b"GET", b"/", b"example.com", [])
    hp = (HashPolicy("cookie", "sess", cookie_ttl=60.0, cookie_path="/"),)
    h, set_cookie = request_hash(hp, headers, "10.1.2.3:5")
    assert h is not None and set_cookie is not None
    assert set_cookie.startswith(b'sess="')
    assert set_cookie.endswith(b'"; Max-Age=60; Path=/; HttpOnly')
    value = set_cookie.split(b'"')[1]
    assert h == hash64(value)
    # The client sending it back gets the same hash.
    assert _hash(hp, [(b"cookie", b"sess=" + value)]) == h


# -- translation ----------------------------------------------------------------------------

_CLUSTER = """
static_resources:
  clusters:
  - name: c
    type: STATIC
    lb_policy: %s
%s
"""


def _cluster(tmp_path: Path, policy: str, config: str = "") -> Cluster:
    path = tmp_path / "b.yaml"
    path.write_text(_CLUSTER % (policy, config))
    cluster: Cluster = load_bootstrap(BootstrapSource(config_path=str(path))).model.clusters[0]
    return cluster


def test_translate_ring_hash_and_maglev(tmp_path: Path) -> None:
    c = _cluster(tmp_path, "RING_HASH")
    assert c.lb_policy is LbPolicy.RING_HASH
    assert (c.ring_hash_minimum_ring_size, c.ring_hash_maximum_ring_size) == (1024, 8 << 20)
    c = _cluster(
        tmp_path,
        "RING_HASH",
        "    ring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 128, "
        "hash_function: MURMUR_HASH_2}",
    )
    assert (c.ring_hash_minimum_ring_size, c.ring_hash_maximum_ring_size) == (64, 128)
    c = _cluster(tmp_path, "MAGLEV", "    maglev_lb_config: {table_size: 251}")
    assert c.lb_policy is LbPolicy.MAGLEV and c.maglev_table_size == 251
    assert _cluster(tmp_path, "MAGLEV").maglev_table_size == 65537


@pytest.mark.parametrize(
    ("policy", "config", "message"),
    [
        (
            "RING_HASH",
            "    ring_hash_lb_config: {minimum_ring_size: 256, maximum_ring_size: 128}",
            "minimum_ring_size (256) > maximum_ring_size (128)",
        ),
        (
            "RING_HASH",
            "    ring_hash_lb_config: {maximum_ring_size: 8388609}",
            "less than or equal to 8388608",
        ),
        ("MAGLEV", "    maglev_lb_config: {table_size: 65536}", "must be prime"),
        ("MAGLEV", "    maglev_lb_config: {table_size: 5000017}", "less than or equal"),
    ],
)
def test_translate_refuses_bad_configs(
    tmp_path: Path, policy: str, config: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _cluster(tmp_path, policy, config)
    assert message in str(info.value)
