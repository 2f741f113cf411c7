"""Consistent-hash load balancing (RING_HASH, MAGLEV) without sockets: stickiness, weighted
spread, minimal disruption on host removal, priorities and panic, retries avoiding hosts; and
the request hash computed from a route's hash_policy."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from pilotfish.errors import ConfigError
from pilotfish.http.hash_policy import connection_hash, request_hash
from pilotfish.http.headers import RequestHeaders
from pilotfish.model.cluster import Cluster, ConsistentHashing, HealthStatus, LbPolicy
from pilotfish.model.route import HashPolicy
from pilotfish.regex import Substitution, compile_regex
from pilotfish.stats.store import Gauge
from pilotfish.upstream.hash_lb import WeightedHosts, mt19937
from pilotfish.upstream.hashes import murmur_hash2_64
from pilotfish.upstream.hashes import xxhash64 as hash64
from pilotfish.upstream.host import Host
from pilotfish.upstream.lb import HostSet, LoadBalancer, make_lb
from pilotfish.upstream.maglev import Maglev
from pilotfish.upstream.ring_hash import Ring
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


def lb(policy: LbPolicy, hosts: list[Host], **config: int) -> LoadBalancer:
    hashing = ConsistentHashing(**config)  # type: ignore[arg-type]
    return make_lb(policy, HostSet(hosts), rng=random.Random(1), hashing=hashing)


def weighted(hosts: list[Host]) -> WeightedHosts:
    return WeightedHosts(HostSet(hosts).levels[0], False)


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
    assert Ring(weighted([]), 1024, 2048).lookup(5, 0) is None
    assert Maglev(weighted([]), 65537).lookup(5, 0) is None


def test_ring_size_bounds() -> None:
    hosts = [host(1), host(2), host(3)]
    assert 1024 <= len(Ring(weighted(hosts), 1024, 8 << 20).hashes) <= 1026
    assert len(Ring(weighted(hosts), 4096, 100).hashes) <= 101
    # Weighted: the lightest host gets its share of a ring of at least the minimum size.
    light = host(1, 1)
    ring = Ring(weighted([light, host(2, 9)]), 1000, 8 << 20)
    assert len(ring.hashes) == 1000
    assert sum(1 for h in ring.hosts if h is light) == 100
    # ...unless that exceeds the maximum size.
    assert len(Ring(weighted([light, host(2, 9999)]), 1024, 4096).hashes) <= 4097


def test_maglev_table_is_full_and_weighted() -> None:
    hosts = [host(1, 1), host(2, 3)]
    table = Maglev(weighted(hosts), 65537).table
    assert len(table) == 65537 and all(h is not None for h in table)
    share = sum(1 for h in table if h is hosts[1]) / 65537
    assert abs(share - 0.75) < 0.01


# -- the request hash ------------------------------------------------------------------------


def _hash(
    policies: tuple[HashPolicy, ...], items: list[tuple[bytes, bytes]], remote: str = "10.1.2.3:5"
) -> int | None:
    headers = RequestHeaders(b"GET", b"/p?a=1&user=bob&z", b"example.com", items)
    return request_hash(policies, headers, remote, "10.1.2.3:510.0.0.1:80")[0]


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
    # A terminal policy with no hash so far does not stop the others...
    missing = (HashPolicy("header", "x-none", terminal=True), both[1])
    assert _hash(missing, []) == b
    # ...but once there is a hash, a terminal policy stops, even yielding nothing (Envoy).
    after = (both[0], HashPolicy("header", "x-none", terminal=True), both[1])
    assert _hash(after, []) == a


def test_header_values_sorted_and_chained() -> None:
    # Envoy's HashUtil::xxHash64 over the span {"foo", "bar"} (its unit test's vector): each
    # value hashed with the previous hash as the seed.
    assert hash64(b"bar", hash64(b"foo")) == 17745830980996999794
    # The header policy sorts the values first, so their order does not matter.
    policy = (HashPolicy("header", "x-k"),)
    for items in ([(b"x-k", b"foo"), (b"x-k", b"bar")], [(b"x-k", b"bar"), (b"x-k", b"foo")]):
        assert _hash(policy, items) == hash64(b"foo", hash64(b"bar"))
    rewrite = (
        HashPolicy(
            "header", "x-k", regex_rewrite=(compile_regex(r"^u-(\d+)-.*$"), Substitution(r"\1"))
        ),
    )
    assert _hash(rewrite, [(b"x-k", b"u-42-abc")]) == hash64(b"42")
    assert _hash((HashPolicy("header", ":authority"),), []) == hash64(b"example.com")


def test_cookie_parsing_as_envoy() -> None:
    cookie = (HashPolicy("cookie", "sess"),)
    assert _hash(cookie, [(b"cookie", b"a=b;sess=v1 ;c")]) == hash64(b"v1 ")
    assert _hash(cookie, [(b"cookie", b"x=1"), (b"cookie", b"  sess=v2")]) == hash64(b"v2")
    assert _hash(cookie, [(b"cookie", b"sess =v3")]) is None
    assert _hash(cookie, [(b"cookie", b"sess=")]) is None


def test_cookie_with_ttl_is_generated() -> None:
    headers = RequestHeaders(b"GET", b"/", b"example.com", [])
    hp = (
        HashPolicy(
            "cookie",
            "sess",
            cookie_ttl=60,
            cookie_path="/",
            cookie_attributes=(("SameSite", "Lax"), ("Secure", "")),
        ),
    )
    h, set_cookies = request_hash(hp, headers, "10.1.2.3:5", "10.1.2.3:510.0.0.1:80")
    value = b"%016x" % hash64(b"10.1.2.3:510.0.0.1:80")
    assert set_cookies == [
        b'sess="' + value + b'"; Max-Age=60; Path=/; SameSite=Lax; Secure; HttpOnly'
    ]
    assert h == hash64(value)
    # The client sending it back gets the same hash, and no new cookie.
    assert request_hash(
        hp, RequestHeaders(b"GET", b"/", b"h", [(b"cookie", b"sess=" + value)]), "10.9.9.9:1"
    ) == (h, None)
    # A ttl of 0: a session cookie (no Max-Age).
    session = (HashPolicy("cookie", "s", cookie_ttl=0),)
    _, set_cookies = request_hash(session, headers, "10.1.2.3:5", "x")
    assert set_cookies == [b's="%016x"; HttpOnly' % hash64(b"x")]


def test_tcp_proxy_hash() -> None:
    ip = (HashPolicy("connection_properties", "source_ip"),)
    assert connection_hash(ip, "10.1.2.3:5") == hash64(b"10.1.2.3")
    assert connection_hash(ip, "[::1]:5") == hash64(b"::1")
    assert connection_hash((HashPolicy("filter_state", "k"),), "10.1.2.3:5") is None


def test_unix_socket_client_has_no_ip_hash() -> None:
    ip = (HashPolicy("connection_properties", "source_ip"),)
    assert _hash(ip, [], remote="/tmp/sock") is None


# -- hash functions ---------------------------------------------------------------------------


def test_hash_function_vectors() -> None:
    # Envoy's test/common/common/hash_test.cc.
    assert [hash64(s) for s in (b"foo", b"bar", b"foo\nbar", b"lyft", b"")] == [
        3728699739546630719,
        5234164152756840025,
        8917841378505826757,
        4400747396090729504,
        17241709254077376921,
    ]
    assert [murmur_hash2_64(s) for s in (b"foo", b"bar", b"foo\nbar", b"lyft", b"")] == [
        9631199822919835226,
        11474628671133349555,
        16306510975912980159,
        12847078931730529320,
        6142509188972423790,
    ]
    # Longer than a block: the 8-byte loop and the tail.
    assert murmur_hash2_64(b"0123456789abcdefXYZ") != murmur_hash2_64(b"0123456789abcdefXYz")


def test_mt19937_matches_the_cpp_engine() -> None:
    # The C++ standard's check: the 10000th output of a default-seeded std::mt19937.
    rng = mt19937(5489)
    for _ in range(9999):
        rng.getrandbits(32)
    assert rng.getrandbits(32) == 4123659995


# -- hash keys and bounded loads --------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_hash_key_metadata_and_hostname(policy: LbPolicy) -> None:
    def spread_of(hosts: list[Host], **config: int) -> list[str]:
        b = lb(policy, hosts, **config)
        return [b.choose(hash_key=k).address_str for k in KEYS[:500]]  # type: ignore[union-attr]

    plain = [host(i) for i in range(1, 4)]
    named = [
        Host(h.address, hostname=f"svc-{i}", metadata={}) for i, h in enumerate(plain, start=1)
    ]
    moved = [Host(("10.9.9.%d" % i, 1), hostname=f"svc-{i}") for i in range(1, 4)]
    # Hashed by hostname: hosts at other addresses with the same names get the same keys.
    by_name = spread_of(named, use_hostname_for_hashing=True)
    by_name_moved = spread_of(moved, use_hostname_for_hashing=True)

    def index(a: str) -> str:
        return a.split(":", maxsplit=1)[0].rsplit(".", maxsplit=1)[-1]

    assert [index(a) for a in by_name] == [index(a) for a in by_name_moved]
    assert by_name != spread_of(named)
    # envoy.lb hash_key wins over the address.
    keyed = [
        Host(h.address, metadata={"envoy.lb": {"hash_key": f"svc-{i}"}})
        for i, h in enumerate(moved, start=1)
    ]
    assert [index(a) for a in spread_of(keyed)] == [index(a) for a in by_name_moved]


@pytest.mark.parametrize("policy", POLICIES)
def test_bounded_load_moves_keys_off_a_busy_host(policy: LbPolicy) -> None:
    hosts = [host(i) for i in range(1, 5)]
    active = Gauge("upstream_rq_active")
    balancer = make_lb(
        policy,
        HostSet(hosts),
        rng=random.Random(1),
        hashing=ConsistentHashing(hash_balance_factor=150),
        rq_active=active,
    )
    first = [balancer.choose(hash_key=k) for k in KEYS[:400]]
    plain = lb(policy, hosts)
    assert first == [plain.choose(hash_key=k) for k in KEYS[:400]]
    busy = hosts[0]
    busy.rq_active = active.value = 10  # all of the cluster's requests on one host
    again = [balancer.choose(hash_key=k) for k in KEYS[:400]]
    assert busy not in again
    # The others keep their keys; the busy host's keys spread, the same way each time.
    assert all(a is b for a, b in zip(first, again, strict=True) if a is not busy)
    assert again == [balancer.choose(hash_key=k) for k in KEYS[:400]]
    assert len({h for a, h in zip(first, again, strict=True) if a is busy}) > 1


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
    assert c.consistent_hashing == ConsistentHashing()
    c = _cluster(
        tmp_path,
        "RING_HASH",
        "    ring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 128, "
        "hash_function: MURMUR_HASH_2}\n"
        "    common_lb_config: {consistent_hashing_lb_config: "
        "{hash_balance_factor: 125}}",
    )
    assert c.consistent_hashing == ConsistentHashing(
        minimum_ring_size=64,
        maximum_ring_size=128,
        murmur_hash_2=True,
        hash_balance_factor=125,
    )
    c = _cluster(tmp_path, "MAGLEV", "    maglev_lb_config: {table_size: 251}")
    assert c.lb_policy is LbPolicy.MAGLEV and c.consistent_hashing.table_size == 251
    assert _cluster(tmp_path, "MAGLEV").consistent_hashing.table_size == 65537


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
        (
            "MAGLEV",
            "    common_lb_config: {consistent_hashing_lb_config: {hash_balance_factor: 99}}",
            "greater than or equal to 100",
        ),
        (
            "RING_HASH",
            "    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}",
            "Cannot use hostname for consistent hashing loadbalancing for cluster of type: "
            "'envoy.cluster.static'",
        ),
    ],
)
def test_translate_refuses_bad_configs(
    tmp_path: Path, policy: str, config: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _cluster(tmp_path, policy, config)
    assert message in str(info.value)


_TCP = """
static_resources:
  listeners:
  - name: t
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: c
          hash_policy: %s
"""


def test_translate_tcp_proxy_hash_policy(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(_TCP % "[{source_ip: {}}]")
    listener = load_bootstrap(BootstrapSource(config_path=str(path))).model.listeners[0]
    config = listener.filter_chains[0].filters[0].config
    assert config.hash_policy == (HashPolicy("connection_properties", "source_ip"),)
    path.write_text(_TCP % "[{source_ip: {}}, {filter_state: {key: k}}]")
    with pytest.raises(ConfigError) as info:
        load_bootstrap(BootstrapSource(config_path=str(path)))
    assert "hash_policy" in str(info.value) and "no more than 1 item" in str(info.value)
