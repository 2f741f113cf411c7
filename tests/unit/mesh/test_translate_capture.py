"""Capture-mode translation (``translate/capture.py``) and service VIPs (``translate/vips.py``)
on Istio's BookInfo files: listener, route and cluster names and shapes as istiod gives a
pod behind istio-iptables (compare istioctl/pkg/authz/testdata/configdump.yaml)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from tests.support.bookinfo_mesh import SCENARIOS, bookinfo_config, bookinfo_workloads

from pilotfish.mesh.translate import MeshConfig, ProxyConfig, Workload
from pilotfish.mesh.translate.capture import capture_sidecar_config, capture_sidecar_resources
from pilotfish.mesh.translate.mtls import MTLS_APPLICATION_PROTOCOLS
from pilotfish.mesh.translate.vips import SERVICE_CIDR, hosts_entries, service_vips

REVIEWS = "reviews.default.svc.cluster.local"


def pod_workloads() -> list[Workload]:
    """BookInfo's workloads as pods: an address each, the app's port 9080 as the pod port."""
    out = []
    for i, w in enumerate(bookinfo_workloads()):
        out.append(
            dataclasses.replace(
                w,
                address=f"10.244.0.{i + 2}",
                app_port=9080,
                inbound_port=9080,
                outbound_port=0,
            )
        )
    return out


WORKLOADS = pod_workloads()


def sidecar(scenario: str = "no-rules", name: str = "productpage-v1") -> ProxyConfig:
    config = bookinfo_config(scenario)
    w = next(w for w in WORKLOADS if w.name.startswith(name))
    return capture_sidecar_config(config, WORKLOADS, w, service_vips(config))


ANY_MTLS = list(MTLS_APPLICATION_PROTOCOLS)


def chain(listener: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in listener["filter_chains"] if c.get("name") == name)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_translates_to_protos(scenario: str) -> None:
    config = bookinfo_config(scenario)
    for w in WORKLOADS:
        resources = capture_sidecar_resources(config, WORKLOADS, w, service_vips(config))
        assert resources.listeners and resources.clusters


def test_vips_are_in_the_range_stable_and_keep_a_given_cluster_ip() -> None:
    config = bookinfo_config("no-rules")
    vips = service_vips(config)
    assert set(vips) == {f"{s}.default.svc.cluster.local" for s in BOOKINFO_SERVICES}
    assert len(set(vips.values())) == len(vips)
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network(SERVICE_CIDR) for v in vips.values())
    assert service_vips(config) == vips
    # One service given a clusterIP keeps it; the others do not move.
    fixed = [
        dataclasses.replace(s, cluster_ip="10.96.7.7") if s.meta.name == "details" else s
        for s in config.services
    ]
    vips2 = service_vips(dataclasses.replace(config, services=tuple(fixed)))
    assert vips2["details.default.svc.cluster.local"] == "10.96.7.7"
    assert {h: v for h, v in vips2.items() if "details" not in h} == {
        h: v for h, v in vips.items() if "details" not in h
    }
    headless = [dataclasses.replace(s, cluster_ip="None") for s in config.services]
    assert service_vips(dataclasses.replace(config, services=tuple(headless))) == {}
    with pytest.raises(ValueError, match="service range"):
        service_vips(config, "10.96.0.0/30")


BOOKINFO_SERVICES = ("details", "productpage", "ratings", "reviews")


def test_hosts_entries_name_every_form() -> None:
    entries = hosts_entries({REVIEWS: "10.96.1.2"})
    assert entries == {
        REVIEWS: "10.96.1.2",
        "reviews.default.svc": "10.96.1.2",
        "reviews.default": "10.96.1.2",
        "reviews": "10.96.1.2",
    }


def test_virtual_outbound_passes_through_by_default() -> None:
    cfg = sidecar()
    vo = cfg.listener("virtualOutbound")
    assert vo["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}
    assert vo["use_original_dst"] is True
    tcp = vo["filter_chains"][0]["filters"][0]["typed_config"]
    assert tcp["cluster"] == "PassthroughCluster"
    for name in ("PassthroughCluster", "InboundPassthroughCluster"):
        assert cfg.cluster(name)["type"] == "ORIGINAL_DST"
        assert cfg.cluster(name)["lb_policy"] == "CLUSTER_PROVIDED"
    assert cfg.cluster("InboundPassthroughCluster")["upstream_bind_config"] == {
        "source_address": {"address": "127.0.0.6", "port_value": 0}
    }
    assert cfg.cluster("BlackHoleCluster")["type"] == "STATIC"


def test_outbound_http_port_listener_and_route_config() -> None:
    config = bookinfo_config("virtual-service-all-v1")
    vips = service_vips(config)
    w = next(w for w in WORKLOADS if w.name.startswith("productpage"))
    cfg = capture_sidecar_config(config, WORKLOADS, w, vips)
    listener = cfg.listener("0.0.0.0_9080")
    assert listener["bind_to_port"] is False
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9080}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "9080"
    assert hcm["stat_prefix"] == "outbound_0.0.0.0_9080"
    route = cfg.route("9080")
    names = [v["name"] for v in route["virtual_hosts"]]
    assert names == [f"{s}.default.svc.cluster.local:9080" for s in BOOKINFO_SERVICES] + [
        "allow_any"
    ]
    reviews = route["virtual_hosts"][names.index(f"{REVIEWS}:9080")]
    vip = vips[REVIEWS]
    for domain in ("reviews", "reviews:9080", REVIEWS, vip, f"{vip}:9080"):
        assert domain in reviews["domains"]
    assert reviews["routes"][0]["route"]["cluster"] == f"outbound|9080|v1|{REVIEWS}"
    allow_any = route["virtual_hosts"][-1]
    assert allow_any["domains"] == ["*"]
    assert allow_any["routes"][0]["route"]["cluster"] == "PassthroughCluster"
    # Nothing of loopback mode's HTTP proxy.
    assert not any(x["name"].startswith("127.0.0.1") for x in cfg.listeners)


def test_endpoints_are_pod_addresses_and_the_app_port() -> None:
    cfg = sidecar("destination-rule-all")
    eps = cfg.endpoint(f"outbound|9080|v2|{REVIEWS}")
    addrs = [
        lb["endpoint"]["address"]["socket_address"]
        for loc in eps["endpoints"]
        for lb in loc["lb_endpoints"]
    ]
    reviews_v2 = next(w for w in WORKLOADS if w.name.startswith("reviews-v2"))
    assert addrs == [{"address": reviews_v2.address, "port_value": 9080}]


def test_virtual_inbound_chains_per_port_and_passthrough() -> None:
    cfg = sidecar(name="reviews-v1")
    vi = cfg.listener("virtualInbound")
    assert vi["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15006}
    assert [f["name"] for f in vi["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    blackhole = chain(vi, "virtualInbound-blackhole")
    assert blackhole["filter_chain_match"] == {"destination_port": 15006}
    http = chain(vi, "0.0.0.0_9080")
    assert http["filter_chain_match"] == {"destination_port": 9080}
    hcm = http["filters"][0]["typed_config"]
    assert hcm["stat_prefix"] == "inbound_0.0.0.0_9080"
    vh = hcm["route_config"]["virtual_hosts"][0]
    assert vh["routes"][0]["route"]["cluster"] == "inbound|9080||"
    assert vh["routes"][0]["decorator"]["operation"] == f"{REVIEWS}:9080/*"
    inbound = cfg.cluster("inbound|9080||")
    assert inbound["type"] == "ORIGINAL_DST"
    assert inbound["upstream_bind_config"]["source_address"]["address"] == "127.0.0.6"
    default = vi["default_filter_chain"]["filters"][0]["typed_config"]
    assert default["cluster"] == "InboundPassthroughCluster"


def test_tcp_service_port_gets_a_vip_listener() -> None:
    from tests.unit.mesh.test_translate import _config_with  # the TCP test's helper

    config = _config_with(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "mongodb"},
            "spec": {"selector": {"app": "mongodb"}, "ports": [{"port": 27017, "name": "mongo"}]},
        }
    )
    vips = service_vips(config)
    w = Workload("client-0", address="10.244.0.9", app_port=9080, inbound_port=9080)
    cfg = capture_sidecar_config(config, [w], w, vips)
    vip = vips["mongodb.default.svc.cluster.local"]
    listener = cfg.listener(f"{vip}_27017")
    assert listener["bind_to_port"] is False
    tcp = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert tcp["cluster"] == "outbound|27017||mongodb.default.svc.cluster.local"
    assert not any(x["name"] == "0.0.0.0_27017" for x in cfg.listeners)


def test_workload_without_service_serves_its_app_port() -> None:
    w = Workload("lonely-0", address="10.244.0.9", app_port=8000, inbound_port=8000)
    cfg = capture_sidecar_config(MeshConfig(), [w], w, {})
    vi = cfg.listener("virtualInbound")
    port_chains = [c for c in vi["filter_chains"] if c.get("name") == "0.0.0.0_8000"]
    # PERMISSIVE (no PeerAuthentication): an mTLS and a plaintext chain, both for port 8000.
    assert [c["filter_chain_match"] for c in port_chains] == [
        {"destination_port": 8000, "transport_protocol": "tls", "application_protocols": ANY_MTLS},
        {"destination_port": 8000, "transport_protocol": "raw_buffer"},
    ]
    assert cfg.node_id.startswith("sidecar~10.244.0.9~lonely-0.default~")
