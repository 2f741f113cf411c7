"""Consistent hashing against real Envoy: the same bootstrap on both proxies, echo backends
that name themselves, and for every hash policy kind, load balancer and host set, 200 keys
that must land on the same host on pilotfish as on Envoy.

Host sets: three equal hosts; five weighted hosts; the same five with one removed; three hosts
of which two are unhealthy (panic); three priority-0 hosts (one unhealthy) plus two priority-1
hosts; hosts in weighted localities; and hosts changed over EDS on running proxies. One
endpoint carries an ``envoy.lb`` ``hash_key``; every endpoint has a hostname
(``use_hostname_for_hashing``).
Load balancers: RING_HASH (xxHash, and MurmurHash2 with a small ring), MAGLEV (default and a
251-entry table), both by hostname (STRICT_DNS clusters); and the TCP proxy's ``source_ip``
hash. A generated cookie (``ttl``) is checked for its exact
``Set-Cookie`` and for sticking to the host its value maps to.
"""

from __future__ import annotations

import collections
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from tests.support.differential import echo_backends
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import (
    ENVOY_BIN,
    ProxyProcess,
    bootstrap,
    free_port,
    http_listener,
    lb_endpoint,
    static_cluster,
)
from tests.support.waiting import wait_until
from tests.support.xds import ads_bootstrap, eds_cluster, parse

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import resource_types as rt

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]

KEYS = 200
NAMES = ("h0", "h1", "h2", "h3", "h4")

# Endpoints per host set: (backend index, weight, priority, health).
HOST_SETS: dict[str, list[tuple[int, int, int, str]]] = {
    "three": [(0, 1, 0, ""), (1, 1, 0, ""), (2, 1, 0, "")],
    # Weights that are not multiples of the lightest: ring shares carry fractions over.
    "five_weighted": [(0, 2, 0, ""), (1, 3, 0, ""), (2, 5, 0, ""), (3, 2, 0, ""), (4, 7, 0, "")],
    "one_removed": [(0, 2, 0, ""), (1, 3, 0, ""), (3, 2, 0, ""), (4, 7, 0, "")],
    # Two of three unhealthy: below the 50% panic threshold, every host is hashed to.
    "panic": [(0, 1, 0, ""), (1, 1, 0, "UNHEALTHY"), (2, 1, 0, "UNHEALTHY")],
    "priorities": [
        (0, 1, 0, ""),
        (1, 1, 0, "UNHEALTHY"),
        (2, 1, 0, ""),
        (3, 2, 1, ""),
        (4, 1, 1, ""),
    ],
}

# Envoy allows hashing by hostname on STRICT_DNS clusters only.
_HOSTNAME = {
    "type": "STRICT_DNS",
    "common_lb_config": {"consistent_hashing_lb_config": {"use_hostname_for_hashing": True}},
}
CLUSTERS: dict[str, dict[str, Any]] = {
    "ring": {"lb_policy": "RING_HASH"},
    "maglev": {"lb_policy": "MAGLEV"},
    "ringmurmur": {
        "lb_policy": "RING_HASH",
        "ring_hash_lb_config": {"hash_function": "MURMUR_HASH_2", "minimum_ring_size": 100},
    },
    "ringhost": {"lb_policy": "RING_HASH", **_HOSTNAME},
    "maglevhost": {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 251}, **_HOSTNAME},
}
# Every policy kind runs on these; the other clusters run the header kind.
MAIN_CLUSTERS = ("ring", "maglev")

_REWRITE = {"pattern": {"regex": "^user-([0-9]+)-.*$"}, "substitution": "\\1"}
POLICIES: dict[str, list[dict[str, Any]]] = {
    "header": [{"header": {"header_name": "x-user"}}],
    "multi": [{"header": {"header_name": "x-user"}}],
    "rewrite": [{"header": {"header_name": "X-User", "regex_rewrite": _REWRITE}}],
    "cookie": [{"cookie": {"name": "sess"}}],
    "query": [{"query_parameter": {"name": "u"}}],
    "ip": [{"connection_properties": {"source_ip": True}}],
    "combined": [
        {"header": {"header_name": "x-a"}},
        {"query_parameter": {"name": "u"}, "terminal": True},
        {"header": {"header_name": "x-b"}},
    ],
    "gencookie": [
        {
            "cookie": {
                "name": "sess",
                "ttl": "60s",
                "path": "/app",
                "attributes": [{"name": "SameSite", "value": "Lax"}, {"name": "Secure"}],
            }
        }
    ],
}
# The header route also adds a value to the hashed header: Envoy 1.40 hashes the request
# after the route's header mutations.
_ADDED = [
    {
        "header": {"key": "x-user", "value": "added"},
        "append_action": "APPEND_IF_EXISTS_OR_ADD",
    }
]


def _bootstrap(ports: dict[str, int], host_set: str) -> dict[str, Any]:
    endpoints = []
    for index, weight, priority, health in HOST_SETS[host_set]:
        ep = lb_endpoint(ports[NAMES[index]], weight)
        ep["endpoint"]["hostname"] = f"backend-{index}.example"
        if health:
            ep["health_status"] = health
        if index == 2:
            ep["metadata"] = {"filter_metadata": {"envoy.lb": {"hash_key": "special-two"}}}
        endpoints.append((priority, ep))
    localities: list[dict[str, Any]] = []
    for priority in sorted({p for p, _ in endpoints}):
        localities.append(
            {"priority": priority, "lb_endpoints": [ep for p, ep in endpoints if p == priority]}
        )
    clusters = []
    for name, extra in CLUSTERS.items():
        cluster = static_cluster(name, endpoints=[], **extra)
        cluster["load_assignment"]["endpoints"] = localities
        clusters.append(cluster)
    routes = []
    for cluster_name in CLUSTERS:
        for kind, policy in POLICIES.items():
            route: dict[str, Any] = {
                "match": {"prefix": f"/{cluster_name}/{kind}/"},
                "route": {"cluster": cluster_name, "hash_policy": policy},
            }
            if kind == "header":
                route["request_headers_to_add"] = _ADDED
            routes.append(route)
    # A cookie policy with a ttl on a round-robin cluster: nothing asks for the hash, so Envoy
    # generates no cookie.
    clusters.append(static_cluster("rr", endpoints=localities[0]["lb_endpoints"]))
    routes.append(
        {
            "match": {"prefix": "/rr/gencookie/"},
            "route": {"cluster": "rr", "hash_policy": POLICIES["gencookie"]},
        }
    )
    listeners = [http_listener("main", routes)]
    for name in MAIN_CLUSTERS:  # the TCP proxy's hash_policy: the client's IP
        listeners.append(_tcp_listener(name))
    return bootstrap(listeners, clusters)


def _tcp_listener(cluster: str) -> dict[str, Any]:
    return {
        "name": f"tcp-{cluster}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "tcp_proxy.v3.TcpProxy",
                            "stat_prefix": f"tcp_{cluster}",
                            "cluster": cluster,
                            "hash_policy": [{"source_ip": {}}],
                        },
                    }
                ]
            }
        ],
    }


def _request(
    conn: http.client.HTTPConnection, path: str, headers: list[tuple[str, str]]
) -> tuple[str, list[str]]:
    """The backend that answered and the response's Set-Cookie values."""
    conn.putrequest("GET", path, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, (path, resp.status, body)
    return json.loads(body)["backend"], resp.msg.get_all("set-cookie") or []


def _key_request(kind: str, i: int) -> tuple[str, list[tuple[str, str]]]:
    """The path suffix and headers of key ``i`` of a policy kind."""
    if kind == "header":
        return "", [("x-user", f"user-{i}")]
    if kind == "multi":
        return "", [("x-user", f"b{i}"), ("x-user", f"a{i * 7}")]
    if kind == "rewrite":
        return "", [("x-user", f"user-{i % 50}-session{i}")]
    if kind == "cookie":
        return "", [("cookie", f'theme=dark; sess="s{i}"; z=1')]
    if kind == "query":
        return f"?x=1&u=v{i}&u=other", []
    assert kind == "combined"
    if i % 3 == 0:
        return f"?u={i}", [("x-a", f"a{i}"), ("x-b", "b")]
    if i % 3 == 1:  # no query parameter: x-a's hash stops at the terminal policy all the same
        return "", [("x-a", f"a{i}"), ("x-b", f"b{i}")]
    return "", [("x-b", f"b{i}")]


def _picks(proxy: ProxyProcess, host_set: str) -> dict[tuple[str, str, int], str]:
    """(cluster, kind, key) -> the backend that served it."""
    port = proxy.port("main")
    out: dict[tuple[str, str, int], str] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for cluster in CLUSTERS:
            kinds: tuple[str, ...] = ("header", "multi", "rewrite", "cookie", "query", "combined")
            if cluster not in MAIN_CLUSTERS or host_set in ("priorities", "panic"):
                kinds = ("header",)
            for kind in kinds:
                for i in range(KEYS):
                    suffix, headers = _key_request(kind, i)
                    out[cluster, kind, i] = _request(conn, f"/{cluster}/{kind}/{suffix}", headers)[
                        0
                    ]
    finally:
        conn.close()
    for cluster in MAIN_CLUSTERS:
        for i in range(KEYS):
            # Each key a client address of its own: 127.1.x.y.
            source = f"127.1.{i // 200}.{i % 200 + 1}"
            c = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=10, source_address=(source, 0)
            )
            try:
                out[cluster, "ip", i] = _request(c, f"/{cluster}/ip/", [])[0]
            finally:
                c.close()
            tcp = proxy.port(f"tcp-{cluster}")
            c = http.client.HTTPConnection("127.0.0.1", tcp, timeout=10, source_address=(source, 0))
            try:
                out[cluster, "tcp", i] = _request(c, "/", [])[0]
            finally:
                c.close()
    return out


def _generated_cookies(port: int, cluster: str, count: int) -> list[tuple[str, str]]:
    """Requests without the cookie, each on a new connection: (cookie value, backend); the
    Set-Cookie is Envoy's, the hex xxHash64 of the connection's remote and local address."""
    out = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.connect()
            assert conn.sock is not None
            local = "%s:%d" % conn.sock.getsockname()[:2]
            remote = "%s:%d" % conn.sock.getpeername()[:2]
            backend, cookies = _request(conn, f"/{cluster}/gencookie/", [])
        finally:
            conn.close()
        value = "%016x" % xxhash.xxh64_intdigest((local + remote).encode())
        assert cookies == [f'sess="{value}"; Max-Age=60; Path=/app; SameSite=Lax; Secure; HttpOnly']
        out.append((value, backend))
    return out


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoBackend]]:
    with echo_backends(*NAMES) as started:
        yield started


def _ports(backends: dict[str, EchoBackend]) -> dict[str, int]:
    return {name: b.port for name, b in backends.items()}


@pytest.mark.parametrize("host_set", list(HOST_SETS))
def test_same_host_as_envoy_for_every_key(
    host_set: str, backends: dict[str, EchoBackend], tmp_path: Path
) -> None:
    config = _bootstrap(_ports(backends), host_set)
    picks = {}
    for kind in ("envoy", "pilotfish"):
        with ProxyProcess(kind, config, tmp_path / host_set) as proxy:
            picks[kind] = _picks(proxy, host_set)
    envoy, pilotfish = picks["envoy"], picks["pilotfish"]
    assert envoy.keys() == pilotfish.keys()
    differ = sorted(k for k in envoy if envoy[k] != pilotfish[k])
    by_case = collections.Counter(f"{c}/{k}" for c, k, _ in differ)
    assert not differ, f"{len(differ)} of {len(envoy)} keys differ ({by_case}), e.g. " + ", ".join(
        f"{k}: envoy {envoy[k]} pilotfish {pilotfish[k]}" for k in differ[:8]
    )
    # Every backend of the set is used, and a key is sticky (not a random pick).
    used = {b for (c, _, _), b in envoy.items() if c == "ring"}
    members = HOST_SETS[host_set]
    healthy = {NAMES[i] for i, _, p, h in members if not h or host_set == "panic"}
    assert used == healthy


def test_generated_cookie_as_envoy(backends: dict[str, EchoBackend], tmp_path: Path) -> None:
    config = _bootstrap(_ports(backends), "five_weighted")
    generated: dict[str, list[tuple[str, str]]] = {}
    with (
        ProxyProcess("envoy", config, tmp_path / "e") as envoy,
        ProxyProcess("pilotfish", config, tmp_path / "p") as pilotfish,
    ):
        proxies = {"envoy": envoy, "pilotfish": pilotfish}
        for kind, proxy in proxies.items():
            for cluster in MAIN_CLUSTERS:
                generated[f"{kind}/{cluster}"] = _generated_cookies(proxy.port("main"), cluster, 15)
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port("main"), timeout=10)
            try:
                assert _request(conn, "/rr/gencookie/", [])[1] == [], kind
            finally:
                conn.close()
        # The client sends the generated cookie back: both proxies pick the host it was
        # generated on, by either proxy.
        for label, pairs in generated.items():
            cluster = label.split("/")[1]
            for kind, proxy in proxies.items():
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port("main"), timeout=10)
                try:
                    for value, backend in pairs:
                        got, cookies = _request(
                            conn, f"/{cluster}/gencookie/", [("cookie", f"sess={value}")]
                        )
                        assert (got, cookies) == (backend, []), (label, kind, value)
                finally:
                    conn.close()


def test_locality_weighted_as_envoy(backends: dict[str, EchoBackend], tmp_path: Path) -> None:
    """With locality_weighted_lb_config, host weights times their locality's share."""
    ports = _ports(backends)
    localities: list[dict[str, Any]] = [
        {"locality": {"zone": "c"}, "load_balancing_weight": 2, "lb_endpoints": [0, 1]},
        {"locality": {"zone": "a"}, "load_balancing_weight": 3, "lb_endpoints": [2]},
        {"locality": {"zone": "b"}, "load_balancing_weight": 1, "lb_endpoints": [3, 4]},
    ]
    for loc in localities:
        loc["lb_endpoints"] = [lb_endpoint(ports[NAMES[i]], i + 1) for i in loc["lb_endpoints"]]
    clusters = []
    for name in MAIN_CLUSTERS:
        cluster = static_cluster(
            name,
            endpoints=[],
            common_lb_config={"locality_weighted_lb_config": {}},
            **CLUSTERS[name],
        )
        cluster["load_assignment"]["endpoints"] = localities
        clusters.append(cluster)
    routes = [
        {
            "match": {"prefix": f"/{name}/"},
            "route": {"cluster": name, "hash_policy": POLICIES["header"]},
        }
        for name in MAIN_CLUSTERS
    ]
    config = bootstrap([http_listener("main", routes)], clusters)
    picks = {}
    for kind in ("envoy", "pilotfish"):
        with ProxyProcess(kind, config, tmp_path) as proxy:
            picks[kind] = _header_picks(proxy.port("main"))
    differ = [k for k in picks["envoy"] if picks["envoy"][k] != picks["pilotfish"][k]]
    assert not differ, f"{len(differ)} keys differ, e.g. {differ[:5]}"
    assert len(set(picks["envoy"].values())) == 5


# --- host changes over EDS ----------------------------------------------------------------


def _assignment(ports: dict[str, int], members: list[tuple[int, int]]) -> Any:
    endpoints = [lb_endpoint(ports[NAMES[i]], weight) for i, weight in members]
    return parse(
        rt.ENDPOINT, {"cluster_name": "hashed", "endpoints": [{"lb_endpoints": endpoints}]}
    )


def _header_picks(port: int) -> dict[tuple[str, int], str]:
    out = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for cluster in MAIN_CLUSTERS:
            for i in range(KEYS):
                out[cluster, i] = _request(conn, f"/{cluster}/", [("x-user", f"user-{i}")])[0]
    finally:
        conn.close()
    return out


def test_same_host_as_envoy_through_eds_updates(
    backends: dict[str, EchoBackend], tmp_path: Path
) -> None:
    """Hosts removed and added back by EDS on running proxies: after each update, every key on
    the same host as Envoy (the ring and table rebuilt from the updated host set, in Envoy's
    host order)."""
    ports = _ports(backends)
    steps = [
        [(0, 2), (1, 3), (2, 5), (3, 2), (4, 7)],
        [(0, 2), (1, 3), (3, 2), (4, 7)],  # one removed
        [(0, 2), (1, 3), (3, 2), (4, 7), (2, 5)],  # added back, last
        [(2, 5), (0, 2), (3, 2), (4, 7)],  # another removed, the order changed
    ]
    clusters = [
        eds_cluster("ring", "hashed", lb_policy="RING_HASH"),
        eds_cluster("maglev", "hashed", lb_policy="MAGLEV"),
    ]
    routes = [
        {
            "match": {"prefix": f"/{name}/"},
            "route": {"cluster": name, "hash_policy": POLICIES["header"]},
        }
        for name in MAIN_CLUSTERS
    ]
    servers = {kind: ThreadedXdsServer() for kind in ("envoy", "pilotfish")}
    listen = {kind: free_port() for kind in servers}
    proxies: dict[str, ProxyProcess] = {}
    try:
        for kind, server in servers.items():
            server.start()
            listener = http_listener("main", routes)
            listener["address"]["socket_address"]["port_value"] = listen[kind]
            server.set_resources(rt.CLUSTER.type_url, clusters)
            server.set_resources(rt.ENDPOINT.type_url, [_assignment(ports, steps[0])])
            server.set_resources(rt.LISTENER.type_url, [parse(rt.LISTENER, listener)])
            proxies[kind] = ProxyProcess(kind, ads_bootstrap(server.address), tmp_path).start()
        for n, members in enumerate(steps):
            if n:
                for server in servers.values():
                    server.set_resources(rt.ENDPOINT.type_url, [_assignment(ports, members)])
            for proxy in proxies.values():
                assert wait_until(
                    lambda p=proxy, m=len(members): all(  # type: ignore[misc]
                        p.stats().get(f"cluster.{c}.membership_total") == m for c in MAIN_CLUSTERS
                    ),
                    timeout=10,
                ), proxy.stats("cluster.ring.")
            picks = {kind: _header_picks(listen[kind]) for kind in proxies}
            differ = [k for k in picks["envoy"] if picks["envoy"][k] != picks["pilotfish"][k]]
            assert not differ, f"step {n}: {len(differ)} keys differ, e.g. {differ[:5]}"
            assert {picks["envoy"]["ring", i] for i in range(KEYS)} == {
                NAMES[i] for i, _ in members
            }
    finally:
        for proxy in proxies.values():
            proxy.stop()
        for server in servers.values():
            server.stop()
