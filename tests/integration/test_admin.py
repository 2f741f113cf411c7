"""The admin API on the bootstrap's ``admin.address``, held to real Envoy 1.40.

Behaviour tests run on Envoy and on pilotfish with the same bootstrap and command line: the
Envoy run shows that the expectation is what Envoy does, the pilotfish run holds pilotfish to
it. Differential tests (``*_matches_envoy``) compare pilotfish's answer with Envoy's. Where
pilotfish differs, its run is a strict xfail whose reason names the difference.

One Envoy and one pilotfish (module-scoped, started on first use) share an echo backend and
serve a fixed amount of traffic on the ``ingress`` listener (3 answers 200, 2 answers 503), so
that stat values are known; nothing else sends traffic there. The ``inbound`` listener
(``traffic_direction: INBOUND``, a direct response) is for tests that need a request without
changing those stats. Tests that change the server (health check, drain) start their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.admin_helpers import (
    hcm_listener,
    q,
    refuses_connections,
    stats_values,
)
from tests.support.echo_backend import EchoBackend
from tests.support.pairs import kinds
from tests.support.proxies import (
    ENVOY_BIN,
    AdminReply,
    ProxyProcess,
    RawResponse,
    http_exchange,
    static_cluster,
)
from tests.support.waiting import wait_until

OK_REQUESTS = 3
FAILED_REQUESTS = 2  # the backend answers 503
TOTAL_REQUESTS = OK_REQUESTS + FAILED_REQUESTS
INBOUND_HOST = "127.0.0.2"  # the inbound listener's own address
ADMIN_DUMP = "type.googleapis.com/envoy.admin.v3."
TEXT = "text/plain; charset=UTF-8"


# --- fixtures ------------------------------------------------------------------------------


def admin_bootstrap(backend_port: int) -> dict[str, Any]:
    return {
        "node": {"id": "test-node", "cluster": "test-cluster"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                hcm_listener(
                    "ingress",
                    "ingress_http",
                    [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                ),
                hcm_listener(
                    "inbound",
                    "inbound_http",
                    [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 200,
                                "body": {"inline_string": "inbound\n"},
                            },
                        }
                    ],
                    host=INBOUND_HOST,
                    direction="INBOUND",
                ),
            ],
            "clusters": [static_cluster("backend", backend_port)],
        },
    }


def get(port: int, path: str, host: str = "127.0.0.1", extra: str = "") -> int:
    """Status of one GET on a new connection (0 if no complete response came)."""
    final = response(port, path, host=host, extra=extra)
    return final.status if final is not None else 0


def response(port: int, path: str, host: str = "127.0.0.1", extra: str = "") -> RawResponse | None:
    """The response to one GET on a new connection (None if no complete response came)."""
    ex = http_exchange(
        port,
        f"GET {path} HTTP/1.1\r\nhost: svc\r\n{extra}\r\n".encode(),
        host=host,
        timeout=10,
        close_wait=0.2,
    )
    finals = [r for r in ex.finals if r.complete]
    return finals[0] if finals else None


class Fleet:
    """One long-lived process per kind, started on first use, with the module's traffic."""

    def __init__(self, backend: EchoBackend, base: Path) -> None:
        self.backend = backend
        self.base = base
        self.procs: dict[str, ProxyProcess] = {}
        self.failures: dict[str, BaseException] = {}
        self.statuses: dict[str, list[int]] = {}

    def get(self, kind: str) -> ProxyProcess:
        if kind == "envoy" and not ENVOY_BIN.exists():
            pytest.skip("needs the real Envoy")
        if kind in self.failures:
            raise RuntimeError(f"{kind} did not start") from self.failures[kind]
        if kind not in self.procs:
            proxy = ProxyProcess(
                kind, admin_bootstrap(self.backend.port), self.base / "served", free_ports=False
            )
            try:
                proxy.start()
            except BaseException as e:
                self.failures[kind] = e
                raise
            self.procs[kind] = proxy
            self._traffic(kind, proxy)
        return self.procs[kind]

    def _traffic(self, kind: str, proxy: ProxyProcess) -> None:
        port = proxy.port("ingress")
        statuses = [get(port, f"/ok/{i}") for i in range(OK_REQUESTS)]
        statuses += [
            get(port, f"/fail/{i}", extra="x-echo-status: 503\r\n") for i in range(FAILED_REQUESTS)
        ]
        self.statuses[kind] = statuses
        # Stats are updated as streams end; wait until this traffic is counted.
        expected = {
            "cluster.backend.upstream_rq_total": str(TOTAL_REQUESTS),
            "http.ingress_http.downstream_rq_total": str(TOTAL_REQUESTS),
        }
        regex = r"^(cluster\.backend\.upstream_rq_total|http\.ingress_http\.downstream_rq_total)$"
        wait_until(lambda: stats_values(proxy.admin_port, regex) == expected, timeout=5)

    def stop(self) -> None:
        for proxy in self.procs.values():
            proxy.stop()


@pytest.fixture(scope="module")
def backend() -> Iterator[EchoBackend]:
    with EchoBackend("origin") as b:
        yield b


@pytest.fixture(scope="module")
def fleet(backend: EchoBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(backend, tmp_path_factory.mktemp("admin"))
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def proxy(fleet: Fleet, kind: str) -> ProxyProcess:
    """The module's long-lived process of this kind."""
    return fleet.get(kind)


@pytest.fixture
def pair(fleet: Fleet) -> tuple[ProxyProcess, ProxyProcess]:
    """(envoy, pilotfish) for differential tests."""
    return fleet.get("envoy"), fleet.get("pilotfish")


@pytest.fixture
def fresh(backend: EchoBackend, tmp_path: Path, kind: str) -> Iterator[ProxyProcess]:
    """A process of its own, for tests that change the server."""
    with ProxyProcess(
        kind, admin_bootstrap(backend.port), tmp_path, drain_time_s=1, free_ports=False
    ) as p:
        yield p


def lines_of(reply: AdminReply) -> list[str]:
    return reply.text.splitlines()


def strip_timestamps(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: strip_timestamps(v) for k, v in doc.items() if k != "last_updated"}
    if isinstance(doc, list):
        return [strip_timestamps(v) for v in doc]
    return doc


def config_dump(proxy: ProxyProcess, query: str = "") -> list[dict[str, Any]]:
    reply = proxy.call("/config_dump" + query)
    assert reply.status == 200, reply.text[:300]
    assert reply.headers["content-type"] == "application/json"
    configs = reply.json()["configs"]
    assert isinstance(configs, list)
    return configs


# --- /ready and /server_info ---------------------------------------------------------------


@kinds()
def test_ready_is_live(proxy: ProxyProcess) -> None:
    reply = proxy.call("/ready")
    assert (reply.status, reply.body) == (200, b"LIVE\n")
    assert reply.headers["content-type"] == TEXT


@kinds()
def test_module_traffic_was_answered(fleet: Fleet, proxy: ProxyProcess, kind: str) -> None:
    """The traffic the stats tests count: 3 answered 200 by the backend, 2 answered 503."""
    assert fleet.statuses[kind] == [200] * OK_REQUESTS + [503] * FAILED_REQUESTS


@kinds()
def test_server_info(proxy: ProxyProcess) -> None:
    reply = proxy.call("/server_info")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    info = reply.json()
    assert info["state"] == "LIVE"
    assert info["hot_restart_version"] == "disabled"
    assert re.fullmatch(r"\d+s", info["uptime_current_epoch"])
    assert re.fullmatch(r"\d+s", info["uptime_all_epochs"])
    assert re.search(r"/1\.40\.\d+/Clean/RELEASE/", info["version"])
    options = info["command_line_options"]
    assert options["concurrency"] == 1
    assert options["drain_time"] == "1s"
    assert options["parent_shutdown_time"] == "900s"
    assert options["mode"] == "Serve"
    assert options["disable_hot_restart"] is True
    assert options["restart_epoch"] == 0
    assert options["log_level"] == "warning"
    assert options["drain_strategy"] == "Gradual"
    assert options["config_path"] == str(proxy.config_path)
    assert options["admin_address_path"] == str(proxy.admin_address_path)
    assert options["config_yaml"] == ""
    assert options["stats_tag"] == []
    assert info["node"]["id"] == "test-node"
    assert info["node"]["cluster"] == "test-cluster"
    assert info["node"]["user_agent_name"] == "envoy"


@pytest.mark.envoy
def test_server_info_keys_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (p.call("/server_info").json() for p in pair)
    assert sorted(pilotfish) == sorted(envoy)


@pytest.mark.envoy
def test_server_info_option_keys_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (p.call("/server_info").json()["command_line_options"] for p in pair)
    assert sorted(set(envoy) - set(pilotfish)) == []
    assert sorted(set(pilotfish) - set(envoy)) == []


@pytest.mark.envoy
def test_server_info_option_values_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (p.call("/server_info").json()["command_line_options"] for p in pair)
    own = {"config_path", "admin_address_path", "base_id"}  # differ per process
    shared = sorted((set(envoy) & set(pilotfish)) - own)
    assert {k: pilotfish[k] for k in shared} == {k: envoy[k] for k in shared}


@pytest.mark.envoy
def test_server_info_node_matches_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (p.call("/server_info").json()["node"] for p in pair)
    assert sorted(pilotfish) == sorted(envoy)
    assert (
        pilotfish["user_agent_build_version"]["version"]
        == envoy["user_agent_build_version"]["version"]
    )


# --- /config_dump --------------------------------------------------------------------------


@kinds()
def test_config_dump_shape(proxy: ProxyProcess) -> None:
    configs = config_dump(proxy)
    assert [c["@type"] for c in configs] == [
        ADMIN_DUMP + "BootstrapConfigDump",
        ADMIN_DUMP + "ClustersConfigDump",
        ADMIN_DUMP + "ListenersConfigDump",
        ADMIN_DUMP + "ScopedRoutesConfigDump",
        ADMIN_DUMP + "RoutesConfigDump",
        ADMIN_DUMP + "SecretsConfigDump",
    ]
    boot, clusters, listeners, _, routes, _ = configs
    assert boot["bootstrap"]["node"]["id"] == "test-node"
    assert "static_resources" in boot["bootstrap"] and "admin" in boot["bootstrap"]
    assert "last_updated" in boot
    assert [c["cluster"]["name"] for c in clusters["static_clusters"]] == ["backend"]
    assert clusters["static_clusters"][0]["cluster"]["@type"] == (
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    )
    assert [x["listener"]["name"] for x in listeners["static_listeners"]] == [
        "ingress",
        "inbound",
    ]
    # Envoy keeps inline route configs in a hash set: their order is not the config's
    assert sorted(r["route_config"]["name"] for r in routes["static_route_configs"]) == [
        "inbound_route",
        "ingress_route",
    ]


@pytest.mark.envoy
def test_config_dump_matches_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    """Same bootstrap, same dump (apart from timestamps and the node's build details)."""
    envoy, pilotfish = (strip_timestamps(config_dump(p)) for p in pair)
    for dump in (envoy, pilotfish):
        dump[0]["bootstrap"].pop("node")
        dump[4]["static_route_configs"].sort(key=lambda r: r["route_config"]["name"])
    assert pilotfish == envoy


@pytest.mark.parametrize(
    ("resource", "item_type", "key", "names"),
    [
        ("static_clusters", "ClustersConfigDump.StaticCluster", "cluster", ["backend"]),
        (
            "static_listeners",
            "ListenersConfigDump.StaticListener",
            "listener",
            ["ingress", "inbound"],
        ),
    ],
)
@kinds()
def test_config_dump_resource(
    proxy: ProxyProcess, resource: str, item_type: str, key: str, names: list[str]
) -> None:
    configs = config_dump(proxy, f"?resource={resource}")
    assert [c["@type"] for c in configs] == [ADMIN_DUMP + item_type] * len(names)
    assert [c[key]["name"] for c in configs] == names
    assert all("last_updated" in c for c in configs)


@kinds()
def test_config_dump_name_regex(proxy: ProxyProcess) -> None:
    configs = config_dump(proxy, f"?resource=static_listeners&name_regex={q('inb.*')}")
    assert [c["listener"]["name"] for c in configs] == ["inbound"]


@kinds()
def test_config_dump_name_regex_must_match_whole_name(proxy: ProxyProcess) -> None:
    """``inb`` is not the whole of ``inbound``: nothing matches, and Envoy's dump is ``{}``."""
    reply = proxy.call("/config_dump?resource=static_listeners&name_regex=inb")
    assert reply.status == 200
    assert reply.json() == {}


@kinds()
def test_config_dump_mask_without_resource(proxy: ProxyProcess) -> None:
    """Without ``resource`` the mask trims every dump; Envoy leaves out the ones it empties."""
    configs = config_dump(proxy, "?mask=bootstrap.node")
    assert len(configs) == 1
    assert configs[0]["@type"] == ADMIN_DUMP + "BootstrapConfigDump"
    assert list(configs[0]) == ["@type", "bootstrap"]
    assert list(configs[0]["bootstrap"]) == ["node"]
    assert configs[0]["bootstrap"]["node"]["id"] == "test-node"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "?resource=static_clusters&mask=cluster.name",
            [
                {
                    "@type": ADMIN_DUMP + "ClustersConfigDump.StaticCluster",
                    "cluster": {
                        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                        "name": "backend",
                    },
                }
            ],
        ),
        (
            f"?resource=static_listeners&mask={q('listener.name,listener.traffic_direction')}",
            [
                {
                    "@type": ADMIN_DUMP + "ListenersConfigDump.StaticListener",
                    "listener": {
                        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                        "name": "ingress",
                    },
                },
                {
                    "@type": ADMIN_DUMP + "ListenersConfigDump.StaticListener",
                    "listener": {
                        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                        "name": "inbound",
                        "traffic_direction": "INBOUND",
                    },
                },
            ],
        ),
    ],
    ids=["cluster.name", "listener.name+direction"],
)
@kinds()
def test_config_dump_resource_with_mask(
    proxy: ProxyProcess, query: str, expected: list[dict[str, Any]]
) -> None:
    """With ``resource``, the mask applies to each element, through the packed resource."""
    assert config_dump(proxy, query) == expected


@pytest.mark.envoy
@pytest.mark.parametrize(
    "query",
    [
        "?resource=static_clusters&mask=cluster.name,,last_updated",
        "?resource=static_clusters&mask=cluster.load_assignment.endpoints",
        f"?mask={q('bootstrap.node.id,bootstrap.admin.address')}",
        "?mask=static_clusters",
        f"?name_regex={q('back.*')}&mask=static_clusters",
        "?resource=dynamic_active_clusters",
        "?resource=static_clusters&mask=",
        # errors: status and text
        "?resource=version_info",
        "?resource=static_clusters&mask=cluster",
        f"?resource=static_clusters&mask={q('cluster.name,bogus')}",
        "?mask=nonexistent",
        f"?mask={q('bootstrap.node.id,static_clusters')}",
        f"?name_regex={q('(?=a)')}",
    ],
)
def test_config_dump_queries_match_envoy(
    pair: tuple[ProxyProcess, ProxyProcess], query: str
) -> None:
    envoy, pilotfish = (p.call("/config_dump" + query) for p in pair)
    assert pilotfish.status == envoy.status
    assert pilotfish.headers["content-type"] == envoy.headers["content-type"]
    if envoy.status == 200:
        assert strip_timestamps(pilotfish.json()) == strip_timestamps(envoy.json())
    else:
        # protobuf's DebugString starts with a marker chosen at random per process
        marker = re.compile(r"goo\.gle/debug\w+ +")
        assert marker.sub("", pilotfish.text) == marker.sub("", envoy.text)


@kinds()
def test_config_dump_unknown_resource(proxy: ProxyProcess) -> None:
    reply = proxy.call("/config_dump?resource=nope")
    assert reply.status == 404
    assert reply.body.rstrip(b"\n") == b"nope not found in config dump"


@kinds()
def test_config_dump_timestamps(proxy: ProxyProcess) -> None:
    stamps = re.findall(rb'"last_updated": "([^"]*)"', proxy.call("/config_dump").body)
    assert len(stamps) >= 5  # bootstrap, 1 cluster, 2 listeners, 2 route configs
    for stamp in stamps:
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp


# --- /clusters and /listeners --------------------------------------------------------------


@kinds()
def test_clusters_text(proxy: ProxyProcess, backend: EchoBackend) -> None:
    reply = proxy.call("/clusters")
    assert reply.status == 200
    assert reply.headers["content-type"] == TEXT
    lines = set(lines_of(reply))
    host = f"backend::127.0.0.1:{backend.port}"
    for line in (
        "backend::observability_name::backend",
        "backend::default_priority::max_connections::1024",
        "backend::high_priority::max_requests::1024",
        "backend::added_via_api::false",
        f"{host}::health_flags::healthy",
        f"{host}::rq_total::{TOTAL_REQUESTS}",
        f"{host}::rq_active::0",
        f"{host}::cx_connect_fail::0",
        f"{host}::weight::1",
        f"{host}::priority::0",
    ):
        assert line in lines, f"{line!r} not in /clusters"
    stats = {ln.split("::")[2] for ln in lines if ln.startswith(host + "::")}
    assert {"cx_active", "cx_total", "rq_success", "rq_error", "rq_timeout"} <= stats


@kinds()
def test_clusters_json(proxy: ProxyProcess, backend: EchoBackend) -> None:
    reply = proxy.call("/clusters?format=json")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    (cluster,) = reply.json()["cluster_statuses"]
    assert cluster["name"] == "backend"
    assert cluster["observability_name"] == "backend"
    (host,) = cluster["host_statuses"]
    assert host["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": backend.port}
    }
    assert host["health_status"] == {"eds_health_status": "HEALTHY"}
    stats = {s["name"]: s for s in host["stats"]}
    assert stats["rq_total"]["value"] == str(TOTAL_REQUESTS)
    assert stats["cx_active"]["type"] == "GAUGE"
    assert "value" not in stats["cx_connect_fail"]  # zero values are left out
    assert cluster["circuit_breakers"]["thresholds"][1]["priority"] == "HIGH"


@kinds()
def test_clusters_filter(proxy: ProxyProcess) -> None:
    assert proxy.call(f"/clusters?filter={q('^back')}").text.startswith("backend::")
    assert proxy.call(f"/clusters?filter={q('^nomatch$')}").body == b""


@pytest.mark.envoy
def test_clusters_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (lines_of(p.call("/clusters")) for p in pair)
    assert pilotfish == envoy

    def normal(p: ProxyProcess) -> Any:
        doc = p.call("/clusters?format=json").json()
        for cluster in doc["cluster_statuses"]:
            for host in cluster["host_statuses"]:
                host["stats"].sort(key=lambda s: s["name"])
        return doc

    assert normal(pair[1]) == normal(pair[0])


@kinds()
def test_listeners_text_and_json(proxy: ProxyProcess) -> None:
    text = proxy.call("/listeners")
    assert text.status == 200 and text.headers["content-type"] == TEXT
    doc = proxy.call("/listeners?format=json")
    assert doc.status == 200 and doc.headers["content-type"] == "application/json"
    statuses = doc.json()["listener_statuses"]
    assert [s["name"] for s in statuses] == ["ingress", "inbound"]
    addrs = [s["local_address"]["socket_address"] for s in statuses]
    assert [a["address"] for a in addrs] == ["127.0.0.1", INBOUND_HOST]
    assert all(a["port_value"] > 0 for a in addrs)
    assert lines_of(text) == [
        f"{s['name']}::{a['address']}:{a['port_value']}"
        for s, a in zip(statuses, addrs, strict=True)
    ]
    # the reported port is the one that serves
    assert get(addrs[1]["port_value"], "/", host=INBOUND_HOST) == 200


# --- /stats --------------------------------------------------------------------------------

TRAFFIC_STATS = {
    "cluster.backend.upstream_rq_total": TOTAL_REQUESTS,
    "cluster.backend.upstream_rq_completed": TOTAL_REQUESTS,
    "cluster.backend.upstream_rq_2xx": OK_REQUESTS,
    "cluster.backend.upstream_rq_200": OK_REQUESTS,
    "cluster.backend.upstream_rq_5xx": FAILED_REQUESTS,
    "cluster.backend.upstream_rq_503": FAILED_REQUESTS,
    "cluster.backend.upstream_rq_active": 0,
    "cluster.backend.membership_healthy": 1,
    "http.ingress_http.downstream_rq_total": TOTAL_REQUESTS,
    "http.ingress_http.downstream_rq_2xx": OK_REQUESTS,
    "http.ingress_http.downstream_rq_5xx": FAILED_REQUESTS,
    "http.ingress_http.downstream_rq_4xx": 0,
    "http.ingress_http.downstream_cx_total": TOTAL_REQUESTS,
    "listener.127.0.0.1_0.downstream_cx_total": TOTAL_REQUESTS,
    "listener.127.0.0.1_0.http.ingress_http.downstream_rq_2xx": OK_REQUESTS,
    "listener.127.0.0.1_0.http.ingress_http.downstream_rq_5xx": FAILED_REQUESTS,
    f"listener.{INBOUND_HOST}_0.http.inbound_http.downstream_rq_5xx": 0,
    "server.state": 0,
    "server.live": 1,
    "server.concurrency": 1,
    "listener_manager.workers_started": 1,
    "listener_manager.total_listeners_active": 2,
    "cluster_manager.active_clusters": 1,
}


@kinds()
def test_stats_tools_rely_on(proxy: ProxyProcess) -> None:
    regex = "^(" + "|".join(re.escape(n) for n in TRAFFIC_STATS) + ")$"
    expected = {k: str(v) for k, v in TRAFFIC_STATS.items()}
    got: dict[str, str] = {}

    def counted() -> bool:
        got.clear()
        got.update(stats_values(proxy.admin_port, regex))
        return got == expected

    wait_until(counted, timeout=5)
    assert got == expected


@kinds()
def test_stats_usedonly(proxy: ProxyProcess) -> None:
    used = stats_values(proxy.admin_port, r"^cluster\.backend\.", extra="&usedonly")
    assert used["cluster.backend.upstream_rq_total"] == str(TOTAL_REQUESTS)
    assert used["cluster.backend.upstream_rq_503"] == str(FAILED_REQUESTS)
    every = stats_values(proxy.admin_port, r"^cluster\.backend\.")
    for unused in ("upstream_rq_timeout", "upstream_cx_connect_fail", "upstream_rq_retry"):
        name = f"cluster.backend.{unused}"
        assert every[name] == "0"
        assert name not in used


@pytest.mark.envoy
def test_stats_used_counters_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    regex = r"^(cluster\.backend|http\.ingress_http|listener\.127\.0\.0\.1_0)\."
    envoy, pilotfish = (
        stats_values(p.admin_port, regex, extra="&usedonly&type=Counters") for p in pair
    )
    assert pilotfish.keys() == envoy.keys()
    # The bytes sent downstream include x-envoy-upstream-service-time, whose value (in ms) has
    # a digit or two more on a busy machine: those counters may differ by a few bytes per
    # response; every other counter is exact.
    varying = [k for k in envoy if k.endswith("downstream_cx_tx_bytes_total")]
    for k in varying:
        assert abs(int(pilotfish.pop(k)) - int(envoy.pop(k))) <= 3 * TOTAL_REQUESTS, k
    assert pilotfish == envoy


@pytest.mark.envoy
def test_server_and_listener_stats_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    """The server, runtime and listener stats: same names and types, the same ones used."""
    regex = r"^(server|runtime|listener_manager|listener\.127\.0\.0\.1_0)\."

    def names(p: ProxyProcess, extra: str = "") -> list[str]:
        return sorted(stats_values(p.admin_port, regex, extra=extra))

    envoy, pilotfish = pair
    assert names(pilotfish) == names(envoy)
    # (histograms are left out: Envoy merges them into the admin view every 5 s only)
    for kind in ("Counters", "Gauges"):
        used = f"&usedonly&type={kind}"
        assert names(pilotfish, used) == names(envoy, used)
    e_types, p_types = (prometheus(p, "?filter=" + q(regex))[0] for p in pair)
    assert p_types == e_types


@kinds()
def test_stats_json(proxy: ProxyProcess) -> None:
    reply = proxy.call("/stats?format=json&filter=" + q(r"^server\.(live|state)$"))
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "stats": [{"name": "server.live", "value": 1}, {"name": "server.state", "value": 0}]
    }


@kinds()
def test_stats_type_filter(proxy: ProxyProcess) -> None:
    regex = r"^(server\.(live|state)|cluster\.backend\.upstream_rq_total)$"
    counters = stats_values(proxy.admin_port, regex, extra="&type=Counters")
    assert counters == {"cluster.backend.upstream_rq_total": str(TOTAL_REQUESTS)}
    gauges = stats_values(proxy.admin_port, regex, extra="&type=Gauges")
    assert gauges == {"server.live": "1", "server.state": "0"}


@kinds()
def test_stats_unknown_type(proxy: ProxyProcess) -> None:
    reply = proxy.call("/stats?type=bogus")
    assert reply.status == 400
    assert reply.body.rstrip(b"\n") == b"invalid &type= param"


@kinds()
def test_stats_unknown_format(proxy: ProxyProcess) -> None:
    reply = proxy.call("/stats?format=bogus")
    assert reply.status == 400
    assert reply.text.startswith("usage: /stats?format=(html|active-html|json|prometheus|text)")


@kinds()
def test_stats_invalid_filter(proxy: ProxyProcess) -> None:
    reply = proxy.call(f"/stats?filter={q('[')}")
    assert reply.status == 400
    assert reply.text.startswith("Invalid re2 regex")


@kinds()
def test_stats_filter_is_re2(proxy: ProxyProcess) -> None:
    reply = proxy.call(f"/stats?filter={q('(?=a)')}")
    assert reply.status == 400
    assert reply.text.startswith("Invalid re2 regex")


@pytest.mark.envoy
@pytest.mark.parametrize(
    "query",
    [
        "/stats?type=counters",
        "/stats?type=bogus&format=bogus",
        f"/stats?type=bogus&filter={q('[')}",
        "/stats?histogram_buckets=bogus",
        "/stats/prometheus?type=bogus",
        "/stats/prometheus?format=bogus",
        "/stats/prometheus?histogram_buckets=disjoint",
        "/stats/prometheus?histogram_buckets=prometheusnative",
        f"/stats?filter={q('a{2}{3}')}",
        f"/stats?filter={q('(a)(?P=x)')}",
        f"/clusters?filter={q('(?<=a)')}",
        "/stats?type=&filter=" + q(r"^server\.live$"),
        "/stats?filter=.&invert_filter",
        "/stats?filter=" + q(r"^server\.live$") + "&filter=x",  # the first value counts
    ],
)
def test_stats_queries_match_envoy(pair: tuple[ProxyProcess, ProxyProcess], query: str) -> None:
    envoy, pilotfish = (p.call(query) for p in pair)
    assert (pilotfish.status, pilotfish.headers["content-type"], pilotfish.text) == (
        envoy.status,
        envoy.headers["content-type"],
        envoy.text,
    )


# --- /stats/prometheus ---------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?P<labels>(?:{_LABEL}(?:,{_LABEL})*)?)\}})? (?P<value>\S+)$"
)
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
Sample = tuple[str, frozenset[tuple[str, str]]]


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[Sample, float]]:
    """Check the text exposition format; returns (family -> type, sample -> value)."""
    types: dict[str, str] = {}
    samples: dict[Sample, float] = {}
    current: str | None = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            m = _TYPE.match(line)
            if m:
                assert m.group(1) not in types, f"second TYPE line for {m.group(1)}"
                types[m.group(1)] = m.group(2)
                current = m.group(1)
            else:
                assert line.startswith("# HELP "), line
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m.group("name")
        family = re.sub(r"_(bucket|sum|count)$", "", name) if current != name else name
        assert family == current, f"{name} outside its family block ({current})"
        labels = frozenset(
            (k, v)
            for k, v in re.findall(
                r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group("labels") or ""
            )
        )
        float(m.group("value"))  # a number, +Inf or NaN
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group("value"))
    return types, samples


def prometheus(proxy: ProxyProcess, query: str = "") -> tuple[dict[str, str], dict[Sample, float]]:
    reply = proxy.call("/stats/prometheus" + query)
    assert reply.status == 200
    return parse_prometheus(reply.text)


@kinds()
def test_prometheus_exposition_format(proxy: ProxyProcess) -> None:
    types, samples = prometheus(proxy)
    assert len(types) > 50
    assert {n for n, _ in samples} >= {"envoy_server_live", "envoy_cluster_upstream_rq_total"}


@kinds()
def test_prometheus_envoy_names_after_traffic(proxy: ProxyProcess) -> None:
    types, samples = prometheus(proxy)

    def sample(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    cluster = {"envoy_cluster_name": "backend"}
    hcm = {"envoy_http_conn_manager_prefix": "ingress_http"}
    assert sample("envoy_cluster_upstream_rq_total", **cluster) == TOTAL_REQUESTS
    assert (
        sample("envoy_cluster_upstream_rq_xx", envoy_response_code_class="2", **cluster)
        == OK_REQUESTS
    )
    assert (
        sample("envoy_cluster_upstream_rq_xx", envoy_response_code_class="5", **cluster)
        == FAILED_REQUESTS
    )
    assert (
        sample("envoy_cluster_upstream_rq", envoy_response_code="503", **cluster) == FAILED_REQUESTS
    )
    assert sample("envoy_http_downstream_rq_total", **hcm) == TOTAL_REQUESTS
    assert (
        sample("envoy_http_downstream_rq_xx", envoy_response_code_class="2", **hcm) == OK_REQUESTS
    )
    assert (
        sample("envoy_listener_downstream_cx_total", envoy_listener_address="127.0.0.1_0")
        == TOTAL_REQUESTS
    )
    assert sample("envoy_server_live") == 1
    assert sample("envoy_server_state") == 0
    assert sample("envoy_listener_manager_workers_started") == 1
    for family, kind in {
        "envoy_cluster_upstream_rq_total": "counter",
        "envoy_cluster_upstream_rq_xx": "counter",
        "envoy_http_downstream_rq_xx": "counter",
        "envoy_listener_downstream_cx_total": "counter",
        "envoy_server_live": "gauge",
        "envoy_server_state": "gauge",
        "envoy_cluster_upstream_rq_time": "histogram",
    }.items():
        assert types.get(family) == kind, family


@kinds()
def test_prometheus_filter(proxy: ProxyProcess) -> None:
    reply = proxy.call("/stats/prometheus?filter=" + q(r"^cluster\.backend\.upstream_rq_total$"))
    assert reply.text == (
        "# TYPE envoy_cluster_upstream_rq_total counter\n"
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="backend"}} {TOTAL_REQUESTS}\n'
    )


@kinds()
def test_prometheus_usedonly(proxy: ProxyProcess) -> None:
    _, used = prometheus(proxy, "?usedonly")
    names = {n for n, _ in used}
    assert "envoy_cluster_upstream_rq_total" in names
    assert "envoy_cluster_upstream_rq_timeout" not in names


@pytest.mark.envoy
def test_prometheus_types_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (prometheus(p)[0] for p in pair)
    common = set(envoy) & set(pilotfish)
    assert len(common) > 50
    assert {f: pilotfish[f] for f in common} == {f: envoy[f] for f in common}


@pytest.mark.envoy
def test_prometheus_no_families_envoy_lacks(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (prometheus(p)[0] for p in pair)
    assert sorted(set(pilotfish) - set(envoy)) == []


@pytest.mark.envoy
@pytest.mark.parametrize(
    "path",
    [
        "/ready",
        "/server_info",
        "/clusters",
        "/clusters?format=json",
        "/listeners",
        "/listeners?format=json",
        "/stats",
        "/stats?format=json",
        "/help",
        "/stats/prometheus",
    ],
)
def test_content_type_matches_envoy(pair: tuple[ProxyProcess, ProxyProcess], path: str) -> None:
    envoy, pilotfish = (p.call(path) for p in pair)
    assert (pilotfish.status, pilotfish.headers["content-type"]) == (
        envoy.status,
        envoy.headers["content-type"],
    )
    for header in ("cache-control", "x-content-type-options"):
        assert pilotfish.headers.get(header) == envoy.headers.get(header)


# --- /logging ------------------------------------------------------------------------------


def logger_levels(reply: AdminReply) -> dict[str, str]:
    assert reply.status == 200, reply.text[:300]
    lines = [ln for ln in lines_of(reply) if ln.strip()]
    assert lines[0] == "active loggers:"
    levels: dict[str, str] = {}
    for line in lines[1:]:
        m = re.fullmatch(r"  ([a-z0-9_]+): (trace|debug|info|warning|error|critical|off)", line)
        assert m, line
        levels[m.group(1)] = m.group(2)
    return levels


@pytest.fixture
def logging_restored(proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    """The module's process; every logger back to ``warning`` (its ``-l``) afterwards."""
    try:
        yield proxy
    finally:
        proxy.call("/logging?level=warning", "POST")


@kinds()
def test_logging_lists_levels(proxy: ProxyProcess) -> None:
    levels = logger_levels(proxy.call("/logging", "POST"))
    assert {"admin", "main", "http", "upstream", "router", "connection", "config"} <= set(levels)
    assert set(levels.values()) == {"warning"}


@kinds()
def test_logging_set_all_levels(logging_restored: ProxyProcess) -> None:
    proxy = logging_restored
    assert set(logger_levels(proxy.call("/logging?level=debug", "POST")).values()) == {"debug"}
    assert set(logger_levels(proxy.call("/logging", "POST")).values()) == {"debug"}
    assert set(logger_levels(proxy.call("/logging?level=warning", "POST")).values()) == {"warning"}


@kinds()
def test_logging_paths(logging_restored: ProxyProcess) -> None:
    proxy = logging_restored
    levels = logger_levels(proxy.call(f"/logging?paths={q('admin:debug,main:info')}", "POST"))
    assert (levels["admin"], levels["main"]) == ("debug", "info")
    assert {v for k, v in levels.items() if k not in ("admin", "main")} == {"warning"}


@kinds()
def test_logging_one_component(logging_restored: ProxyProcess) -> None:
    proxy = logging_restored
    levels = logger_levels(proxy.call("/logging?upstream=trace", "POST"))
    assert levels["upstream"] == "trace"
    assert {v for k, v in levels.items() if k != "upstream"} == {"warning"}


@kinds()
def test_logging_unknown_level(proxy: ProxyProcess) -> None:
    reply = proxy.call("/logging?level=bogus", "POST")
    assert reply.status == 400
    assert reply.text.startswith("error: unknown logger level\n")
    assert "usage: /logging?paths=name1:level1,name2:level2,..." in reply.text


@pytest.mark.envoy
def test_logging_names_match_envoy(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (logger_levels(p.call("/logging", "POST")) for p in pair)
    assert sorted(pilotfish) == sorted(envoy)


@pytest.mark.envoy
@pytest.mark.parametrize(
    "query",
    [
        "",
        "?level=bogus",
        "?level=warn",  # a command-line alias only
        "?paths=bogus:debug",
        "?paths=http:",
        "?bogus=debug",
        "?http=bogus",
        "?http=debug&admin=info",
        "?level=&http=bogus",
    ],
)
def test_logging_replies_match_envoy(pair: tuple[ProxyProcess, ProxyProcess], query: str) -> None:
    """Errors change nothing and list the loggers after the usage, as Envoy's do."""
    envoy, pilotfish = (p.call("/logging" + query, "POST") for p in pair)
    assert (pilotfish.status, pilotfish.text) == (envoy.status, envoy.text)


@kinds()
def test_logging_change_takes_effect(logging_restored: ProxyProcess) -> None:
    proxy = logging_restored
    assert logger_levels(proxy.call("/logging?http=debug", "POST"))["http"] == "debug"
    assert get(proxy.port("inbound"), "/debug-me", host=INBOUND_HOST) == 200

    def logged() -> bool:
        return "[debug][http]" in proxy.log()

    assert wait_until(logged, timeout=3), proxy.log()[-2000:]


# --- /healthcheck/fail and /healthcheck/ok -------------------------------------------------


@kinds()
def test_healthcheck_fail_and_ok(fresh: ProxyProcess) -> None:
    reply = fresh.call("/healthcheck/fail", "POST")
    assert (reply.status, reply.body) == (200, b"OK\n")
    ready = fresh.call("/ready")
    assert (ready.status, ready.body) == (503, b"DRAINING\n")
    assert stats_values(fresh.admin_port, r"^server\.live$") == {"server.live": "0"}
    assert fresh.call("/server_info").json()["state"] == "DRAINING"

    reply = fresh.call("/healthcheck/ok", "POST")
    assert (reply.status, reply.body) == (200, b"OK\n")
    ready = fresh.call("/ready")
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    assert stats_values(fresh.admin_port, r"^server\.live$") == {"server.live": "1"}
    assert fresh.call("/server_info").json()["state"] == "LIVE"


@kinds()
def test_healthcheck_fail_keeps_serving(fresh: ProxyProcess) -> None:
    """Without a health_check filter, failing health checks does not stop traffic."""
    assert fresh.call("/healthcheck/fail", "POST").status == 200
    assert get(fresh.port("ingress"), "/during-fail") == 200
    assert get(fresh.port("inbound"), "/during-fail", host=INBOUND_HOST) == 200


@kinds()
def test_healthcheck_fail_closes_connections(fresh: ProxyProcess) -> None:
    """A failed health check makes Envoy drain connections: responses announce the close."""
    assert fresh.call("/healthcheck/fail", "POST").status == 200
    final = response(fresh.port("ingress"), "/during-fail")
    assert final is not None and final.status == 200
    assert "close" in final.connection_tokens()
    drained = r"^http\.ingress_http\.downstream_cx_drain_close$"
    assert stats_values(fresh.admin_port, drained) == {
        "http.ingress_http.downstream_cx_drain_close": "1"
    }


# --- /drain_listeners ----------------------------------------------------------------------


@kinds()
def test_drain_listeners(fresh: ProxyProcess) -> None:
    ingress, inbound = fresh.port("ingress"), fresh.port("inbound")
    assert get(ingress, "/before") == 200
    reply = fresh.call("/drain_listeners", "POST")
    assert (reply.status, reply.body) == (200, b"OK\n")
    assert wait_until(lambda: refuses_connections(ingress), timeout=5)
    assert wait_until(lambda: refuses_connections(inbound, INBOUND_HOST), timeout=5)


@kinds()
def test_drain_listeners_inboundonly(fresh: ProxyProcess) -> None:
    ingress, inbound = fresh.port("ingress"), fresh.port("inbound")
    assert fresh.call("/drain_listeners?inboundonly", "POST").status == 200
    assert wait_until(lambda: refuses_connections(inbound, INBOUND_HOST), timeout=5)
    assert get(ingress, "/outbound-still-served") == 200


@kinds()
def test_drain_listeners_keeps_server_live(fresh: ProxyProcess) -> None:
    assert fresh.call("/drain_listeners", "POST").status == 200
    assert wait_until(lambda: refuses_connections(fresh.port("ingress")), timeout=5)
    ready = fresh.call("/ready")
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    assert stats_values(fresh.admin_port, r"^server\.(live|state)$") == {
        "server.live": "1",
        "server.state": "0",
    }


@kinds()
def test_drained_listeners_still_listed(fresh: ProxyProcess) -> None:
    before = fresh.call("/listeners?format=json").json()
    assert fresh.call("/drain_listeners", "POST").status == 200
    assert wait_until(lambda: refuses_connections(fresh.port("ingress")), timeout=5)
    assert fresh.call("/listeners?format=json").json() == before


@kinds()
def test_drain_listeners_graceful(backend: EchoBackend, tmp_path: Path, kind: str) -> None:
    """``?graceful``: listeners keep accepting for the drain time, then stop."""
    drain_time = 2
    with ProxyProcess(
        kind, admin_bootstrap(backend.port), tmp_path, drain_time_s=drain_time, free_ports=False
    ) as p:
        ingress = p.port("ingress")
        assert p.call("/drain_listeners?graceful", "POST").status == 200
        assert get(ingress, "/in-drain-period") == 200  # well within the 2 s
        assert wait_until(lambda: refuses_connections(ingress), timeout=drain_time + 7)


@kinds()
def test_drain_listeners_keeps_open_connections(fresh: ProxyProcess) -> None:
    """Without ``graceful`` the listeners only stop accepting: a connection already open is
    served on, without ``connection: close``."""
    ingress = fresh.port("ingress")

    def drain() -> None:
        assert fresh.call("/drain_listeners", "POST").status == 200
        assert wait_until(lambda: refuses_connections(ingress), timeout=5)

    ex = http_exchange(
        ingress,
        b"GET /first HTTP/1.1\r\nhost: svc\r\n\r\n",
        timeout=10,
        on_responses=drain,
        probe=b"GET /second HTTP/1.1\r\nhost: svc\r\n\r\n",
    )
    assert [r.status for r in ex.finals] == [200]
    second = ex.probe_response
    assert second is not None and second.status == 200
    assert "close" not in second.connection_tokens()
    assert stats_values(fresh.admin_port, r"^listener_manager\.listener_stopped$") == {
        "listener_manager.listener_stopped": "2"
    }


@kinds()
def test_drain_listeners_graceful_inboundonly_spares_outbound(fresh: ProxyProcess) -> None:
    """``?graceful&inboundonly`` drains the inbound listener's connections only."""
    assert fresh.call("/drain_listeners?graceful&inboundonly", "POST").status == 200
    final = response(fresh.port("ingress"), "/outbound")
    assert final is not None and final.status == 200
    assert "close" not in final.connection_tokens()
    ready = fresh.call("/ready")
    assert (ready.status, ready.body) == (200, b"LIVE\n")


@kinds()
def test_drain_listeners_skip_exit_keeps_accepting(fresh: ProxyProcess) -> None:
    """``skip_exit``: connections are drained, the listeners never stop (drain time 1 s)."""
    assert fresh.call("/drain_listeners?graceful&skip_exit", "POST").status == 200
    time.sleep(1.5)
    assert get(fresh.port("ingress"), "/still-accepting") == 200
    assert not refuses_connections(fresh.port("inbound"), INBOUND_HOST)


# --- methods, help, unknown paths ----------------------------------------------------------

POST_ONLY = [
    "/drain_listeners",
    "/healthcheck/fail",
    "/healthcheck/ok",
    "/logging",
    "/quitquitquit",
    "/reopen_logs",
    "/reset_counters",
]


@pytest.mark.parametrize("path", POST_ONLY)
@kinds()
def test_get_on_mutating_endpoint_is_405(proxy: ProxyProcess, path: str) -> None:
    reply = proxy.call(path)
    assert reply.status == 405
    assert reply.body.rstrip(b"\n") == b"Method GET not allowed, POST required."
    ready = proxy.call("/ready")  # nothing happened: not quit, not failed, not drained
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    assert not refuses_connections(proxy.port("ingress"))


@kinds()
def test_post_on_read_endpoints(proxy: ProxyProcess) -> None:
    ready = proxy.call("/ready", "POST")
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    stats = proxy.call("/stats?filter=" + q(r"^server\.live$"), "POST")
    assert (stats.status, stats.body) == (200, b"server.live: 1\n")


_HELP_LINE = re.compile(r"^  (/\S*)( \(POST\))?: ")
EXPECTED_HELP = {
    "/": False,
    "/certs": False,
    "/clusters": False,
    "/config_dump": False,
    "/drain_listeners": True,
    "/healthcheck/fail": True,
    "/healthcheck/ok": True,
    "/help": False,
    "/hot_restart_version": False,
    "/listeners": False,
    "/logging": True,
    "/memory": False,
    "/quitquitquit": True,
    "/ready": False,
    "/reopen_logs": True,
    "/reset_counters": True,
    "/runtime": False,
    "/server_info": False,
    "/stats": False,
    "/stats/prometheus": False,
}


def help_entries(reply: AdminReply) -> dict[str, bool]:
    """path -> needs POST, from Envoy's help text."""
    out: dict[str, bool] = {}
    for line in lines_of(reply):
        m = _HELP_LINE.match(line)
        if m:
            out[m.group(1)] = bool(m.group(2))
    return out


@kinds()
def test_help(proxy: ProxyProcess) -> None:
    reply = proxy.call("/help")
    assert reply.status == 200
    assert reply.headers["content-type"] == TEXT
    assert reply.text.startswith("admin commands are:\n")
    entries = help_entries(reply)
    assert {p: entries.get(p) for p in EXPECTED_HELP} == EXPECTED_HELP


@pytest.mark.envoy
def test_help_lists_only_envoy_endpoints(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    envoy, pilotfish = (help_entries(p.call("/help")) for p in pair)
    assert {p: envoy.get(p) for p in pilotfish} == pilotfish


@pytest.mark.envoy
def test_help_lines_are_envoys(pair: tuple[ProxyProcess, ProxyProcess]) -> None:
    """Every line of pilotfish's help (endpoints and their parameters) is one of Envoy's."""
    envoy, pilotfish = (set(lines_of(p.call("/help"))) for p in pair)
    assert sorted(pilotfish - envoy) == []


@kinds()
def test_home_page_is_html(proxy: ProxyProcess) -> None:
    reply = proxy.call("/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=UTF-8"
    assert reply.text.lstrip().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("method", ["GET", "POST"])
@kinds()
def test_unknown_path(proxy: ProxyProcess, method: str) -> None:
    reply = proxy.call("/no/such/thing", method)
    assert reply.status == 404
    assert reply.headers["content-type"] == TEXT
    assert reply.text.startswith("invalid path. admin commands are:\n")
    assert "  /ready: " in reply.text


@pytest.mark.parametrize("path", ["/ready/", "/stats/"])
@kinds()
def test_trailing_slash_is_another_path(proxy: ProxyProcess, path: str) -> None:
    reply = proxy.call(path)
    assert reply.status == 404
    assert reply.text.startswith("invalid path.")


@kinds()
def test_paths_are_case_sensitive(proxy: ProxyProcess) -> None:
    reply = proxy.call("/READY")
    assert reply.status == 404
    assert reply.text.startswith("invalid path.")
