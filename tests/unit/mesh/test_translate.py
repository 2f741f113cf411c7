"""Istio config → xDS in Istio's shape, on Istio's own BookInfo files: cluster, endpoint,
listener and route names, virtual host domains, and the routes each networking sample makes.
(That real Envoy accepts all of it is tests/integration/test_mesh_translate_envoy.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from tests.support.bookinfo_mesh import (
    SCENARIOS,
    bookinfo_config,
    bookinfo_workloads,
    gateway,
    workload,
)

from pilotfish.mesh.config import model as m
from pilotfish.mesh.translate import (
    HTTP_PROXY_ROUTE,
    MeshConfig,
    ProxyConfig,
    Workload,
    gateway_config,
    sidecar_config,
    sidecar_resources,
)

WORKLOADS = bookinfo_workloads()
PRODUCTPAGE = workload(WORKLOADS, "productpage-v1")
REVIEWS = "reviews.default.svc.cluster.local"


def sidecar(scenario: str, deployment: str = "productpage-v1") -> ProxyConfig:
    return sidecar_config(bookinfo_config(scenario), WORKLOADS, workload(WORKLOADS, deployment))


def vhost(cfg: ProxyConfig, name: str) -> dict[str, Any]:
    route = cfg.route(HTTP_PROXY_ROUTE)
    return next(v for v in route["virtual_hosts"] if v["name"] == name)


def reviews_routes(scenario: str) -> list[dict[str, Any]]:
    return vhost(sidecar(scenario), f"{REVIEWS}:9080")["routes"]


def targets(route: dict[str, Any]) -> list[tuple[str, int]] | str:
    """A route's destination: a cluster name, or (cluster subset, weight) pairs."""
    action = route["route"]
    if "cluster" in action:
        return str(action["cluster"])
    return [(c["name"].split("|")[2], c["weight"]) for c in action["weighted_clusters"]["clusters"]]


def subset_cluster(subset: str, host: str = REVIEWS) -> str:
    return f"outbound|9080|{subset}|{host}"


# --- names and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_translates_to_protos(scenario: str) -> None:
    config = bookinfo_config(scenario)
    for w in WORKLOADS:
        res = sidecar_resources(config, WORKLOADS, w)
        assert res.listeners and res.routes and res.clusters
    gw = gateway_config(config, WORKLOADS, gateway())
    gw.to_protos()


def test_sidecar_clusters_per_service_and_subset() -> None:
    cfg = sidecar("destination-rule-all")
    names = [c["name"] for c in cfg.clusters]
    for svc in ("details", "productpage", "ratings", "reviews"):
        assert f"outbound|9080||{svc}.default.svc.cluster.local" in names
    for subset in ("v1", "v2", "v3"):
        assert subset_cluster(subset) in names
    assert "inbound|9080||" in names
    cluster = cfg.cluster(subset_cluster("v2"))
    assert cluster["type"] == "EDS"
    assert cluster["eds_cluster_config"]["service_name"] == subset_cluster("v2")


def test_eds_filters_subset_labels_and_targets_inbound_ports() -> None:
    cfg = sidecar("destination-rule-all")
    reviews = {w.labels["version"]: w for w in WORKLOADS if w.labels["app"] == "reviews"}

    def ports(cluster: str) -> list[int]:
        cla = cfg.endpoint(cluster)
        return sorted(
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for loc in cla.get("endpoints", [])
            for e in loc["lb_endpoints"]
        )

    assert ports(f"outbound|9080||{REVIEWS}") == sorted(w.inbound_port for w in reviews.values())
    assert ports(subset_cluster("v2")) == [reviews["v2"].inbound_port]
    assert ports("outbound|9080|v2-mysql|ratings.default.svc.cluster.local") == []


def test_http_proxy_listener_and_inbound_listener() -> None:
    cfg = sidecar("no-rules", "reviews-v2")
    w = workload(WORKLOADS, "reviews-v2")
    proxy = cfg.listener(f"127.0.0.1_{w.outbound_port}")
    hcm = proxy["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == HTTP_PROXY_ROUTE
    assert hcm["http_protocol_options"] == {"allow_absolute_url": True}
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    inbound = cfg.listener(f"127.0.0.1_{w.inbound_port}")
    route_config = inbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    assert route_config["name"] == "inbound|9080||"
    assert route_config["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "inbound|9080||"
    app = cfg.cluster("inbound|9080||")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert app["endpoint"]["address"]["socket_address"]["port_value"] == w.app_port


def test_virtual_host_domains_are_istios() -> None:
    vh = vhost(sidecar("no-rules"), f"{REVIEWS}:9080")
    assert vh["domains"] == [
        REVIEWS,
        f"{REVIEWS}:9080",
        "reviews",
        "reviews:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
    ]


def test_no_rules_default_route_to_the_service() -> None:
    (route,) = reviews_routes("no-rules")
    assert route["name"] == "default"
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == f"outbound|9080||{REVIEWS}"
    assert route["route"]["timeout"] == "0s"
    retry = route["route"]["retry_policy"]
    assert retry["retry_on"] == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert retry["num_retries"] == 2
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    # Istio's default load balancer.
    assert sidecar("no-rules").cluster(f"outbound|9080||{REVIEWS}")["lb_policy"] == "LEAST_REQUEST"


# --- the networking samples ------------------------------------------------------------------


def test_all_v1() -> None:
    cfg = sidecar("virtual-service-all-v1")
    for svc in ("details", "productpage", "ratings", "reviews"):
        host = f"{svc}.default.svc.cluster.local"
        (route,) = vhost(cfg, f"{host}:9080")["routes"]
        assert targets(route) == subset_cluster("v1", host)


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("reviews-50-v3", [("v1", 50), ("v3", 50)]),
        ("reviews-80-20", [("v1", 80), ("v2", 20)]),
        ("reviews-90-10", [("v1", 90), ("v2", 10)]),
        ("reviews-v2-v3", [("v2", 50), ("v3", 50)]),
    ],
)
def test_weighted(scenario: str, expected: list[tuple[str, int]]) -> None:
    (route,) = reviews_routes(scenario)
    assert targets(route) == expected


def test_reviews_v3() -> None:
    (route,) = reviews_routes("reviews-v3")
    assert targets(route) == subset_cluster("v3")


def test_test_v2_jason_first_then_v1() -> None:
    jason, rest = reviews_routes("reviews-test-v2")
    assert jason["match"] == {
        "prefix": "/",
        "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}],
    }
    assert targets(jason) == subset_cluster("v2")
    assert rest["match"] == {"prefix": "/"}
    assert targets(rest) == subset_cluster("v1")


def test_jason_v2_else_v3() -> None:
    jason, rest = reviews_routes("reviews-jason-v2-v3")
    assert jason["match"]["headers"][0]["string_match"] == {"exact": "jason"}
    assert targets(jason) == subset_cluster("v2")
    assert targets(rest) == subset_cluster("v3")


def test_details_v2() -> None:
    host = "details.default.svc.cluster.local"
    (route,) = vhost(sidecar("details-v2"), f"{host}:9080")["routes"]
    assert targets(route) == subset_cluster("v2", host)


def test_ratings_abort_for_jason() -> None:
    host = "ratings.default.svc.cluster.local"
    jason, rest = vhost(sidecar("ratings-test-abort"), f"{host}:9080")["routes"]
    fault = jason["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"] == {
        "http_status": 500,
        "percentage": {"numerator": 1_000_000, "denominator": "MILLION"},
    }
    assert targets(jason) == subset_cluster("v1", host)
    assert "typed_per_filter_config" not in rest


def test_ratings_delay_for_jason() -> None:
    host = "ratings.default.svc.cluster.local"
    jason, _ = vhost(sidecar("ratings-test-delay"), f"{host}:9080")["routes"]
    fault = jason["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"]["fixed_delay"] == "7s"
    assert fault["delay"]["percentage"]["numerator"] == 1_000_000


def test_fault_injection_details() -> None:
    host = "details.default.svc.cluster.local"
    # Istio keeps the second (unreachable) route: both catch everything.
    route, _ = vhost(sidecar("fault-injection-details-v1"), f"{host}:9080")["routes"]
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"]["http_status"] == 555
    assert targets(route) == subset_cluster("v1", host)


def test_destination_rule_reviews_policy() -> None:
    cfg = sidecar("destination-rule-reviews")
    assert cfg.cluster(f"outbound|9080||{REVIEWS}")["lb_policy"] == "RANDOM"
    assert {c["name"] for c in cfg.clusters} >= {subset_cluster(s) for s in ("v1", "v2", "v3")}


def test_gateway() -> None:
    gw = gateway(28080)
    cfg = gateway_config(bookinfo_config("bookinfo-gateway"), WORKLOADS, gw)
    listener = cfg.listener("127.0.0.1_28080")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "http.8080"
    (vh,) = cfg.route("http.8080")["virtual_hosts"]
    assert vh["name"] == "*:8080"
    assert vh["domains"] == ["*"]
    matches = [r["match"] for r in vh["routes"]]
    assert matches == [
        {"path": "/productpage"},
        {"prefix": "/static"},
        {"path": "/login"},
        {"path": "/logout"},
        {"prefix": "/api/v1/products"},
    ]
    assert {targets(r) for r in vh["routes"]} == {
        "outbound|9080||productpage.default.svc.cluster.local"
    }


def test_gateway_without_virtual_service_answers_404() -> None:
    cfg = gateway_config(bookinfo_config("no-rules"), WORKLOADS, gateway())
    assert cfg.routes == [] and cfg.listeners == []


def test_egress_service_entry_dns_and_port_rewrite() -> None:
    cfg = sidecar("egress-google-apis")
    https = cfg.cluster("outbound|443||www.googleapis.com")
    assert https["type"] == "STRICT_DNS"
    assert https["transport_socket"]["typed_config"]["sni"] == "www.googleapis.com"
    assert https["lb_policy"] == "ROUND_ROBIN"
    (route,) = vhost(cfg, "www.googleapis.com:80")["routes"]
    assert targets(route) == "outbound|443||www.googleapis.com"


# --- features the samples do not cover -------------------------------------------------------


def _config_with(*docs: dict[str, Any]) -> MeshConfig:
    from tests.support.bookinfo_mesh import KUBE_YAML

    from pilotfish.mesh.config.store import ConfigStore

    store = ConfigStore()
    store.apply([KUBE_YAML])
    store.apply(list(docs))
    return MeshConfig.from_store(store)


def _vs(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": http},
    }


def test_matches_rewrite_redirect_mirror_headers_retries_cors() -> None:
    config = _config_with(
        _vs(
            [
                {
                    "match": [
                        {
                            "uri": {"regex": "/r/[0-9]+"},
                            "method": {"exact": "GET"},
                            "authority": {"prefix": "reviews"},
                            "queryParams": {"x": {"exact": "1"}},
                            "withoutHeaders": {"debug": {}},
                        }
                    ],
                    "rewrite": {"uri": "/reviews", "authority": "backend"},
                    "timeout": "2s",
                    "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,503"},
                    "mirror": {"host": "ratings"},
                    "mirrorPercentage": {"value": 25.0},
                    "headers": {
                        "request": {"set": {"x-a": "1"}, "remove": ["x-b"]},
                        "response": {"add": {"x-c": "2"}},
                    },
                    "corsPolicy": {
                        "allowOrigins": [{"exact": "https://a.example"}],
                        "allowMethods": ["GET", "POST"],
                        "maxAge": "24h",
                    },
                    "route": [{"destination": {"host": "reviews"}}],
                },
                {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new"}},
            ]
        )
    )
    cfg = sidecar_config(config, WORKLOADS, PRODUCTPAGE)
    first, redirect = vhost(cfg, f"{REVIEWS}:9080")["routes"]
    assert first["match"] == {
        "safe_regex": {"regex": "/r/[0-9]+"},
        "headers": [
            {"name": ":method", "string_match": {"exact": "GET"}},
            {"name": ":authority", "string_match": {"prefix": "reviews"}},
            {"name": "debug", "present_match": True, "invert_match": True},
        ],
        "query_parameters": [{"name": "x", "string_match": {"exact": "1"}}],
    }
    action = first["route"]
    assert action["prefix_rewrite"] == "/reviews"
    assert action["host_rewrite_literal"] == "backend"
    assert action["timeout"] == "2s"
    assert action["retry_policy"]["num_retries"] == 3
    assert action["retry_policy"]["retry_on"] == "5xx,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [503]
    assert action["retry_policy"]["per_try_timeout"] == "1s"
    assert action["request_mirror_policies"] == [
        {
            "cluster": "outbound|9080||ratings.default.svc.cluster.local",
            "runtime_fraction": {"default_value": {"numerator": 250_000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]
    assert first["request_headers_to_add"] == [
        {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]
    assert first["request_headers_to_remove"] == ["x-b"]
    assert first["response_headers_to_add"][0]["append_action"] == "APPEND_IF_EXISTS_OR_ADD"
    cors = first["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [{"exact": "https://a.example"}]
    assert cors["allow_methods"] == "GET,POST"
    assert cors["max_age"] == "86400"
    assert redirect["redirect"] == {"path_redirect": "/new", "response_code": "MOVED_PERMANENTLY"}


def test_traffic_policy_consistent_hash_pool_outlier() -> None:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
                "connectionPool": {
                    "tcp": {"maxConnections": 10, "connectTimeout": "3s"},
                    "http": {"http1MaxPendingRequests": 5, "maxRequestsPerConnection": 7},
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "5s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
            "subsets": [
                {
                    "name": "v1",
                    "labels": {"version": "v1"},
                    "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
                }
            ],
        },
    }
    cfg = sidecar_config(_config_with(dr), WORKLOADS, PRODUCTPAGE)
    top = cfg.cluster(f"outbound|9080||{REVIEWS}")
    assert top["lb_policy"] == "RING_HASH"
    assert top["connect_timeout"] == "3s"
    threshold = top["circuit_breakers"]["thresholds"][0]
    assert threshold["max_connections"] == 10
    assert threshold["max_pending_requests"] == 5
    options = top["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 7}
    assert top["outlier_detection"] == {
        "consecutive_5xx": 3,
        "enforcing_consecutive_5xx": 100,
        "interval": "5s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
        "enforcing_success_rate": 0,
    }
    # The subset overrides the load balancer only; the rest is inherited.
    v1 = cfg.cluster(subset_cluster("v1"))
    assert v1["lb_policy"] == "ROUND_ROBIN"
    assert v1["circuit_breakers"]["thresholds"][0]["max_connections"] == 10
    (route,) = vhost(cfg, f"{REVIEWS}:9080")["routes"]
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]


@pytest.mark.parametrize(
    ("consistent_hash", "lb", "hash_policy"),
    [
        (
            {"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 2048}},
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 2048}},
            [{"header": {"header_name": "x-user"}}],
        ),
        (
            {
                "httpCookie": {
                    "name": "sess",
                    "path": "/app",
                    "ttl": "60s",
                    "attributes": [{"name": "SameSite", "value": "Lax"}, {"name": "Secure"}],
                },
                "maglev": {"tableSize": 251},
            },
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 251}},
            [
                {
                    "cookie": {
                        "name": "sess",
                        "path": "/app",
                        "ttl": "60s",
                        "attributes": [
                            {"name": "SameSite", "value": "Lax"},
                            {"name": "Secure"},
                        ],
                    }
                }
            ],
        ),
        (
            {"useSourceIp": True, "minimumRingSize": 512},  # the deprecated field
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 512}},
            [{"connection_properties": {"source_ip": True}}],
        ),
        (
            {"httpQueryParameterName": "user", "maglev": {}},
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65537}},
            [{"query_parameter": {"name": "user"}}],
        ),
    ],
)
def test_consistent_hash_kinds(
    consistent_hash: dict[str, Any], lb: dict[str, Any], hash_policy: list[dict[str, Any]]
) -> None:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"consistentHash": consistent_hash}},
        },
    }
    cfg = sidecar_config(_config_with(dr), WORKLOADS, PRODUCTPAGE)
    cluster = cfg.cluster(f"outbound|9080||{REVIEWS}")
    assert {k: cluster[k] for k in lb} == lb
    (route,) = vhost(cfg, f"{REVIEWS}:9080")["routes"]
    assert route["route"]["hash_policy"] == hash_policy


def test_consistent_hash_of_the_routed_subset() -> None:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-a"}}},
            "subsets": [
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {
                        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-b"}}
                    },
                }
            ],
        },
    }
    vs = _vs([{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}])
    cfg = sidecar_config(_config_with(dr, vs), WORKLOADS, PRODUCTPAGE)
    (route,) = vhost(cfg, f"{REVIEWS}:9080")["routes"]
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-b"}}]
    assert cfg.cluster(subset_cluster("v2"))["lb_policy"] == "RING_HASH"


def test_tcp_service_gets_tcp_proxy_listeners() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mongodb"},
        "spec": {"selector": {"app": "mongodb"}, "ports": [{"port": 27017, "name": "mongo"}]},
    }
    mongo = Workload(
        "mongodb-v1-0",
        labels={"app": "mongodb"},
        app_port=30000,
        inbound_port=30001,
        outbound_port=30002,
    )
    host = "mongodb.default.svc.cluster.local"
    client = Workload(
        "client-0",
        labels={"app": "client"},
        app_port=30010,
        inbound_port=30011,
        outbound_port=30012,
        tcp_outbound={f"{host}:27017": 30013},
    )
    config = _config_with(svc)
    cfg = sidecar_config(config, [*WORKLOADS, mongo, client], client)
    tcp = cfg.listener("127.0.0.1_30013")["filter_chains"][0]["filters"][0]
    assert tcp["name"] == "envoy.filters.network.tcp_proxy"
    assert tcp["typed_config"]["cluster"] == f"outbound|27017||{host}"
    # The http_proxy route config has no virtual host for a TCP port.
    assert all(v["name"] != f"{host}:27017" for v in cfg.route(HTTP_PROXY_ROUTE)["virtual_hosts"])
    inbound = sidecar_config(config, [*WORKLOADS, mongo, client], mongo).listener("127.0.0.1_30001")
    assert inbound["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == "inbound|27017||"
    cfg.to_protos()


def test_workload_node_id() -> None:
    assert PRODUCTPAGE.node_id() == (
        "sidecar~127.0.0.1~productpage-v1-0.default~default.svc.cluster.local"
    )
    assert isinstance(bookinfo_config().services[0], m.Service)


def test_sidecar_resource_limits_egress() -> None:
    sc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "productpage"},
        "spec": {
            "workloadSelector": {"labels": {"app": "productpage"}},
            "egress": [{"hosts": ["./reviews.default.svc.cluster.local", "*/details"]}],
        },
    }
    config = _config_with(sc)
    cfg = sidecar_config(config, WORKLOADS, PRODUCTPAGE)
    vhosts = [v["name"] for v in cfg.route(HTTP_PROXY_ROUTE)["virtual_hosts"]]
    assert vhosts == [
        "details.default.svc.cluster.local:9080",
        f"{REVIEWS}:9080",
        "block_all",
    ]
    assert {c["name"] for c in cfg.clusters} == {
        "outbound|9080||details.default.svc.cluster.local",
        f"outbound|9080||{REVIEWS}",
        "inbound|9080||",
        "BlackHoleCluster",
    }
    # Another workload is not selected: it sees every service.
    other = sidecar_config(config, WORKLOADS, workload(WORKLOADS, "reviews-v1"))
    assert len(other.route(HTTP_PROXY_ROUTE)["virtual_hosts"]) == 5


def test_source_labels_select_routes_per_sidecar() -> None:
    vs = _vs(
        [
            {
                "match": [{"sourceLabels": {"app": "productpage"}}],
                "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
            },
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
        ]
    )
    config = _config_with(vs, *_bookinfo_rules())
    from_productpage = vhost(sidecar_config(config, WORKLOADS, PRODUCTPAGE), f"{REVIEWS}:9080")
    assert [targets(r) for r in from_productpage["routes"]] == [
        subset_cluster("v2"),
        subset_cluster("v1"),
    ]
    ratings = sidecar_config(config, WORKLOADS, workload(WORKLOADS, "ratings-v1"))
    assert [targets(r) for r in vhost(ratings, f"{REVIEWS}:9080")["routes"]] == [
        subset_cluster("v1")
    ]


def _bookinfo_rules() -> list[dict[str, Any]]:
    import yaml
    from tests.support.bookinfo_mesh import NETWORKING

    return [
        d for d in yaml.safe_load_all((NETWORKING / "destination-rule-all.yaml").read_text()) if d
    ]


def test_gateway_route_operation_names_the_destination() -> None:
    cfg = gateway_config(bookinfo_config("bookinfo-gateway"), WORKLOADS, gateway())
    (vh,) = cfg.route("http.8080")["virtual_hosts"]
    assert {r["decorator"]["operation"] for r in vh["routes"]} == {
        "productpage.default.svc.cluster.local:9080/*"
    }


def test_features_scenario() -> None:
    cfg = sidecar("features")
    api, moved, regex, direct, last = reviews_routes("features")
    assert api["name"] == "api.regex"
    assert api["match"]["case_sensitive"] is False
    # weight 0 destinations are dropped, per-destination headers go on the weighted cluster.
    clusters = api["route"]["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == [
        (subset_cluster("v1"), 60),
        (subset_cluster("v2"), 40),
    ]
    assert clusters[0]["request_headers_to_add"][0]["header"] == {"key": "x-subset", "value": "v1"}
    assert api["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert api["route"]["request_mirror_policies"][0]["cluster"] == subset_cluster(
        "v1", "ratings.default.svc.cluster.local"
    )
    assert moved["redirect"]["response_code"] == "FOUND"
    assert regex["route"]["regex_rewrite"] == {
        "pattern": {"regex": "^/regex/(.*)$"},
        "substitution": "/\\1",
    }
    assert direct["direct_response"] == {"status": 418, "body": {"inline_string": "teapot"}}
    assert "retry_policy" not in last["route"]  # attempts: 0 turns retries off
    reviews = cfg.cluster(f"outbound|9080||{REVIEWS}")
    assert reviews["lb_policy"] == "RING_HASH"
    assert reviews["ring_hash_lb_config"] == {"minimum_ring_size": 1024}
    assert reviews["upstream_connection_options"] == {
        "tcp_keepalive": {"keepalive_time": 60, "keepalive_interval": 10}
    }
    assert reviews["outlier_detection"]["consecutive_gateway_failure"] == 2
    assert reviews["common_lb_config"] == {"healthy_panic_threshold": {"value": 10.0}}
    assert cfg.cluster(subset_cluster("v2"))["lb_policy"] == "LEAST_REQUEST"
    ratings = cfg.cluster("outbound|9080||ratings.default.svc.cluster.local")
    assert ratings["lb_policy"] == "MAGLEV"
    assert ratings["maglev_lb_config"] == {"table_size": 65537}
    (route,) = vhost(cfg, "ratings.default.svc.cluster.local:9080")["routes"]
    assert route["route"]["hash_policy"] == [{"cookie": {"name": "session", "ttl": "0s"}}]


def test_mesh_resources_by_node_id() -> None:
    from pilotfish.mesh.translate import mesh_resources

    gw = gateway()
    out = mesh_resources(bookinfo_config("bookinfo-gateway"), WORKLOADS, [gw])
    assert set(out) == {w.node_id() for w in WORKLOADS} | {gw.node_id()}
    (route,) = out[gw.node_id()].routes
    assert MessageToDict(route)["name"] == "http.8080"
