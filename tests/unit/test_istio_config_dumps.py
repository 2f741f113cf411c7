"""Every resource in Istio's config dumps (tests/data/istio, istioctl testdata) through
``translate_resource``, as the ADS client will hand them over.

Each rejection must be in REJECTED (tests/support/istio_dumps.py, shared with the ADS replay
in tests/integration/test_istio_replay_ads.py) — reviewed, and listed in docs/compatibility.md
("Resources from istiod") — and every entry there must still happen, so the list cannot go
stale in either direction. A few resources are also checked for what they translate into.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest
from tests.support.istio_dumps import (
    AUTHZ,
    COMPARE,
    COUNTS,
    DUMPS,
    ENDPOINTS,
    PROXYCONFIG,
    REFDATA,
    REJECTED,
    find,
    resources,
    to_any,
)

from pilotfish.errors import ConfigError
from pilotfish.extensions.filters.http.cors import CorsPolicy
from pilotfish.extensions.filters.http.fault import FaultSettings
from pilotfish.model.cluster import Cluster, ClusterLoadAssignment, DiscoveryType
from pilotfish.model.common import FractionalPercent, SocketAddress
from pilotfish.model.http import HttpConnectionManagerConfig
from pilotfish.model.listener import Listener
from pilotfish.model.route import RouteAction, RouteConfiguration
from pilotfish.tls.config import TlsContextConfig
from pilotfish.xds import resource_types as rt
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.resource import translate_resource


def translate(resource: dict[str, Any], ctx: TranslateContext | None = None) -> Any:
    msg = to_any(resource)
    return translate_resource(msg.type_url, msg, ctx or TranslateContext())


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: str(p.relative_to(REFDATA)))
def test_every_resource_translates_or_is_a_known_limitation(dump: pathlib.Path) -> None:
    rel = str(dump.relative_to(REFDATA))
    counts: dict[str, int] = {}
    rejected = set()
    unexpected = []
    for kind, resource in resources(json.loads(dump.read_text())):
        counts[kind] = counts.get(kind, 0) + 1
        name = resource.get("name") or resource.get("cluster_name") or ""
        try:
            model = translate(resource)
        except ConfigError as e:
            assert e.path.startswith(f"{kind} '{name}'"), e.path
            hits = {r for r in REJECTED if r[:3] == (rel, kind, name) and r[3] in str(e)}
            if not hits:
                unexpected.append(str(e))
            rejected |= hits
            continue
        expected_type = {
            "listener": Listener,
            "route config": RouteConfiguration,
            "cluster": Cluster,
            "cluster load assignment": ClusterLoadAssignment,
        }[kind]
        assert isinstance(model, expected_type)
    assert not unexpected, "\n".join(unexpected)
    assert rejected == {r for r in REJECTED if r[0] == rel}, "a listed rejection did not happen"
    assert counts == COUNTS.get(rel, counts)


def test_sidecar_outbound_http_listener() -> None:
    ctx = TranslateContext()
    lis = translate(find(AUTHZ, "listener", "0.0.0.0_9080"), ctx)
    assert isinstance(lis, Listener)
    assert lis.bind_to_port is False  # reached through virtualOutbound's use_original_dst
    assert lis.traffic_direction == "OUTBOUND"
    assert [f.name for f in lis.listener_filters] == [
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    (chain,) = lis.filter_chains
    assert chain.match.transport_protocol == "raw_buffer"
    assert chain.match.application_protocols == ("http/1.1", "h2c")
    hcm = chain.filters[0].config
    assert isinstance(hcm, HttpConnectionManagerConfig)
    assert hcm.rds is not None and hcm.rds.route_config_name == "9080"
    assert hcm.route_config is None
    assert hcm.stream_idle_timeout == 0.0 and hcm.normalize_path
    # Metadata exchange (null-VM Wasm) and istio.stats run (Istio's standard metrics);
    # grpc_stats is telemetry, skipped with a warning; the empty fault and CORS filters are kept
    # (they act on routes with a per-route config; the connection manager runs them only there).
    assert [f.name for f in hcm.http_filters] == [
        "istio.metadata_exchange",
        "istio.alpn",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "istio.stats",
        "envoy.filters.http.router",
    ]
    assert "envoy.filters.http.grpc_stats" in ctx.skipped
    assert "istio.metadata_exchange" not in ctx.skipped and "istio.stats" not in ctx.skipped
    assert not any("http.fault" in w or "http.cors" in w for w in ctx.warnings)
    assert lis.default_filter_chain is not None
    tcp = lis.default_filter_chain.filters[-1].config
    assert tcp.cluster == "PassthroughCluster"


def test_virtual_outbound() -> None:
    lis = translate(find(AUTHZ, "listener", "virtualOutbound"))
    assert lis.use_original_dst and lis.address.port == 15001
    assert [fc.name for fc in lis.filter_chains] == [
        "virtualOutbound-blackhole",
        "virtualOutbound-catchall-tcp",
    ]
    assert [fc.filters[-1].config.cluster for fc in lis.filter_chains] == [
        "BlackHoleCluster",
        "PassthroughCluster",
    ]


def _without(resource: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A copy without the filters (network or HTTP) of the given names."""
    out = copy.deepcopy(resource)

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for key in ("filters", "http_filters"):
                if isinstance(x.get(key), list):
                    x[key] = [f for f in x[key] if f.get("name") not in names]
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(out)
    return out


def test_virtual_inbound_without_authz() -> None:
    """The same sidecar without AuthorizationPolicies translates, mTLS chains included (their
    DownstreamTlsContext takes the workload certificate and root CA from SDS)."""
    rbac = {"envoy.filters.http.rbac", "envoy.filters.network.rbac", "envoy.filters.http.ext_authz"}
    vi = _without(find(AUTHZ, "listener", "virtualInbound"), rbac)
    with_tls = translate(vi)
    tls_configs = [
        fc.transport_socket.config
        for fc in with_tls.filter_chains
        if fc.transport_socket is not None and fc.transport_socket.config is not None
    ]
    assert tls_configs and all(isinstance(c, TlsContextConfig) for c in tls_configs)
    first = tls_configs[0]
    assert first.downstream and first.certificate_secrets == ("default",)
    assert first.validation_secret == "ROOTCA"
    assert first.validation is not None and first.validation.san_matchers
    assert first.min_version == "TLSv1_2" and first.cipher_suites

    vi["filter_chains"] = [fc for fc in vi["filter_chains"] if "transport_socket" not in fc]
    lis = translate(vi)
    assert [fc.match.transport_protocol for fc in lis.filter_chains] == [
        "",
        "raw_buffer",
        "raw_buffer",
        "tls",
        "raw_buffer",
    ]
    # istio_authn and the TCP metadata exchange are left out; istio.stats stays in front of
    # tcp_proxy (TCP chains); HTTP chains keep their stats inside the connection manager.
    assert [[f.name for f in fc.filters][:-1] for fc in lis.filter_chains] == [
        ["istio.stats"],
        [],
        ["istio.stats"],
        ["istio.stats"],
        [],
    ]
    assert lis.listener_filters[0].name == "envoy.filters.listener.original_dst"


def test_waypoint_route_config() -> None:
    name = "inbound-vip|9080|http|reviews-v3.default.svc.cluster.local"
    rc = translate(find(COMPARE, "route config", name))
    assert isinstance(rc, RouteConfiguration)
    assert rc.validate_clusters is False
    (vh,) = rc.virtual_hosts
    assert vh.name == "inbound|http|9080" and vh.domains == ("*",)
    (route,) = vh.routes
    assert route.match.value == "/" and route.name == "default"
    assert isinstance(route.action, RouteAction)
    assert route.action.cluster == name
    assert route.action.timeout == 0.0  # "0s": no timeout


def test_rds_route_config_is_not_validated_against_clusters() -> None:
    """From RDS, validate_clusters defaults to false (Envoy): a route may name a cluster CDS has
    not sent, even when the context knows the static clusters."""
    rc = find(COMPARE, "route config", "inbound-vip|9080|http|reviews-v3.default.svc.cluster.local")
    rc = {k: v for k, v in rc.items() if k != "validate_clusters"}
    model = translate(rc, TranslateContext(static_clusters={"agent"}))
    assert model.validate_clusters is False
    with pytest.raises(ConfigError, match="unknown cluster"):
        translate({**rc, "validate_clusters": True}, TranslateContext(static_clusters={"agent"}))


FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS_POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"


def test_per_route_fault_and_cors_are_parsed() -> None:
    """A VirtualService's fault and corsPolicy, as istiod renders them per route / vhost."""
    rc = find(COMPARE, "route config", "inbound-vip|9080|http|reviews-v3.default.svc.cluster.local")
    fault = {
        "@type": FAULT_TYPE,
        "abort": {"http_status": 555, "percentage": {"numerator": 100}},
        "delay": {
            "fixed_delay": "7s",
            "percentage": {"numerator": 5000, "denominator": "TEN_THOUSAND"},
        },
    }
    cors = {
        "@type": CORS_POLICY_TYPE,
        "allow_origin_string_match": [{"exact": "https://a.test"}],
        "allow_methods": "GET",
    }
    good = copy.deepcopy(rc)
    good["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.fault": fault
    }
    good["virtual_hosts"][0]["typed_per_filter_config"] = {"envoy.filters.http.cors": cors}
    out = translate(good)
    assert isinstance(out, RouteConfiguration)
    settings = out.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"]
    assert isinstance(settings, FaultSettings)
    assert settings.abort is not None and settings.abort.http_status == 555
    assert settings.delay is not None and settings.delay.fixed_delay == 7.0
    assert settings.delay.percentage == FractionalPercent(5000, 10_000)
    policy = out.virtual_hosts[0].typed_per_filter_config["envoy.filters.http.cors"]
    assert isinstance(policy, CorsPolicy) and policy.allow_methods == b"GET"


@pytest.mark.parametrize(
    ("abort", "where", "reason"),
    [
        ({"http_status": 600}, "abort.http_status", "range [200, 600)"),
        ({"http_status": 199}, "abort.http_status", "range [200, 600)"),
        ({"percentage": {"numerator": 1}}, "abort", "error_type is required"),
    ],
)
def test_per_route_fault_is_validated(abort: dict[str, Any], where: str, reason: str) -> None:
    rc = find(COMPARE, "route config", "inbound-vip|9080|http|reviews-v3.default.svc.cluster.local")
    bad = copy.deepcopy(rc)
    bad["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.fault": {"@type": FAULT_TYPE, "abort": abort}
    }
    with pytest.raises(ConfigError) as e:
        translate(bad)
    assert e.value.path.endswith(
        f"virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.fault].{where}"
    )
    assert reason in e.value.reason


def test_legacy_cors_field_and_response_rate_limit_are_refused() -> None:
    rc = find(COMPARE, "route config", "inbound-vip|9080|http|reviews-v3.default.svc.cluster.local")
    bad = copy.deepcopy(rc)
    bad["virtual_hosts"][0]["cors"] = {"allow_methods": "GET"}
    with pytest.raises(ConfigError, match="deprecated cors field"):
        translate(bad)
    bad = copy.deepcopy(rc)
    bad["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.fault": {
            "@type": FAULT_TYPE,
            "response_rate_limit": {"fixed_limit": {"limit_kbps": 1}},
        }
    }
    with pytest.raises(ConfigError, match="response rate limit"):
        translate(bad)


def test_listener_fault_filter_with_a_fault() -> None:
    lis = copy.deepcopy(find(AUTHZ, "listener", "0.0.0.0_9080"))
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    i = [f["name"] for f in hcm["http_filters"]].index("envoy.filters.http.fault")
    hcm["http_filters"][i]["typed_config"]["delay"] = {
        "fixed_delay": "7s",
        "percentage": {"numerator": 10},
    }
    out = translate(lis)
    filters = out.filter_chains[0].filters[0].config.http_filters
    (ext,) = [f for f in filters if f.name == "envoy.filters.http.fault"]
    assert ext.config.delay.fixed_delay == 7.0
    hcm["http_filters"][i]["typed_config"]["delay"] = {"percentage": {"numerator": 10}}
    with pytest.raises(ConfigError) as e:
        translate(lis)
    assert e.value.path.endswith(f"http_filters[{i}].typed_config.delay")


def test_user_wasm_filter_is_refused() -> None:
    lis = copy.deepcopy(find(AUTHZ, "listener", "0.0.0.0_9080"))
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = hcm["http_filters"][0]["typed_config"]
    assert wasm["@type"].endswith("wasm.v3.Wasm")
    wasm["config"]["vm_config"] = {
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"remote": {"http_uri": {"uri": "oci://x", "cluster": "c", "timeout": "1s"}}},
    }
    with pytest.raises(ConfigError, match="Wasm filters are not supported"):
        translate(lis)


def _host_port(addr: object) -> tuple[str, int]:
    assert isinstance(addr, SocketAddress)
    return addr.address, addr.port


def test_eds_reviews() -> None:
    cla = translate(
        find(
            ENDPOINTS, "cluster load assignment", "outbound|9080||reviews.default.svc.cluster.local"
        )
    )
    assert isinstance(cla, ClusterLoadAssignment)
    (loc,) = cla.endpoints
    assert loc.load_balancing_weight == 3
    assert [_host_port(e.address) for e in loc.lb_endpoints] == [
        ("10.244.0.192", 9080),
        ("10.244.0.193", 9080),
        ("10.244.0.195", 9080),
    ]
    assert loc.lb_endpoints[0].metadata["istio"]["workload"].startswith("reviews-v3;default")
    assert loc.lb_endpoints[0].metadata["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    assert cla.overprovisioning_factor == 140
    empty = translate(find(ENDPOINTS, "cluster load assignment", "BlackHoleCluster"))
    assert empty.endpoints == ()


def test_static_cluster() -> None:
    cl = translate(find(PROXYCONFIG, "cluster", "prometheus_stats"))
    assert isinstance(cl, Cluster)
    assert cl.type is DiscoveryType.STATIC and cl.connect_timeout == 0.25
    assert cl.load_assignment is not None
    ep = cl.load_assignment.endpoints[0].lb_endpoints[0]
    assert _host_port(ep.address) == ("127.0.0.1", 15000)


def test_resource_of_the_wrong_type_is_refused() -> None:
    msg = to_any(find(PROXYCONFIG, "cluster", "agent"))
    with pytest.raises(ConfigError, match="in a response for"):
        translate_resource(rt.LISTENER.type_url, msg, TranslateContext())


def _access_log_of_waypoint() -> dict[str, Any]:
    lis = find(COMPARE, "listener", "main_internal")
    tcp_proxy = lis["filter_chains"][0]["filters"][0]["typed_config"]
    log: dict[str, Any] = tcp_proxy["access_log"][0]
    return log


@pytest.mark.parametrize("cluster_field", ["%UPSTREAM_CLUSTER%", "%UPSTREAM_CLUSTER_RAW%"])
def test_istio_access_log_format(cluster_field: str) -> None:
    """Istio's default access log (meshConfig.accessLogFile), taken from the waypoint dump
    (whose listener is refused for other reasons) into the sidecar's HTTP listener. Newer
    istiod versions write %UPSTREAM_CLUSTER_RAW%."""
    log = copy.deepcopy(_access_log_of_waypoint())
    fmt = log["typed_config"]["log_format"]["text_format_source"]
    fmt["inline_string"] = fmt["inline_string"].replace("%UPSTREAM_CLUSTER%", cluster_field)
    lis = copy.deepcopy(find(AUTHZ, "listener", "0.0.0.0_9080"))
    lis["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = [log]
    model = translate(lis)
    (ext,) = model.filter_chains[0].filters[0].config.access_log
    assert ext.name == "envoy.access_loggers.file"


# Clusters. The dumps hold no outbound service cluster, so these are written here in the
# shape istiod gives them (pilot/pkg/networking/core/cluster*.go), as of Istio 1.2x.
_EDS = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
_USE_DOWNSTREAM = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "3600s"},
        "use_downstream_protocol_config": {
            "http_protocol_options": {},
            "http2_protocol_options": {},
        },
    }
}
_MAX = 4294967295
_BREAKERS = {
    "thresholds": [
        {
            "max_connections": _MAX,
            "max_pending_requests": _MAX,
            "max_requests": _MAX,
            "max_retries": _MAX,
            "track_remaining": True,
        }
    ]
}
_ISTIO_MTLS = {
    "name": "tlsMode-istio",
    "match": {"tlsMode": "istio"},
    "transport_socket": {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "tls_certificate_sds_secret_configs": [
                    {"name": "default", "sds_config": {"api_config_source": {"api_type": "GRPC"}}}
                ],
            },
            "sni": "outbound_.9080_._.reviews.default.svc.cluster.local",
        },
    },
}
_PLAINTEXT = {
    "name": "tlsMode-disabled",
    "match": {},
    "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
        },
    },
}
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def _outbound_cluster(**extra: Any) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": REVIEWS,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": _EDS, "service_name": REVIEWS},
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": _BREAKERS,
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "outlier_detection": {"consecutive_5xx": 7, "interval": "10s"},
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "services": [
                        {
                            "host": "reviews.default.svc.cluster.local",
                            "name": "reviews",
                            "namespace": "default",
                        }
                    ],
                    "default_original_port": 9080,
                }
            }
        },
        "filters": [
            {
                "name": "istio.metadata_exchange",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
                    "protocol": "istio-peer-exchange",
                    "enable_discovery": True,
                },
            }
        ],
        "typed_extension_protocol_options": _USE_DOWNSTREAM,
        **extra,
    }


def test_outbound_service_cluster_without_mtls() -> None:
    ctx = TranslateContext()
    cl = translate(_outbound_cluster(transport_socket_matches=[_PLAINTEXT]), ctx)
    assert isinstance(cl, Cluster)
    assert cl.type is DiscoveryType.EDS and cl.eds_service_name == REVIEWS
    assert cl.lb_policy.value == "LEAST_REQUEST" and cl.locality_weighted_lb
    assert cl.connect_timeout == 10.0
    assert cl.circuit_breakers[0].max_requests == _MAX and cl.circuit_breakers[0].track_remaining
    assert cl.http.upstream_protocol == "DOWNSTREAM"
    assert [m[0] for m in cl.transport_socket_matches] == ["tlsMode-disabled"]
    assert cl.metadata["istio"]["default_original_port"] == 9080
    assert "istio.metadata_exchange" in ctx.skipped  # the upstream MX filter: telemetry


def test_outbound_service_cluster_with_auto_mtls() -> None:
    cl = translate(_outbound_cluster(transport_socket_matches=[_ISTIO_MTLS, _PLAINTEXT]))
    assert isinstance(cl, Cluster)
    (name, match, ts), (name2, match2, _) = cl.transport_socket_matches
    assert (name, match, name2, match2) == (
        "tlsMode-istio",
        {"tlsMode": "istio"},
        "tlsMode-disabled",
        {},
    )
    assert isinstance(ts.config, TlsContextConfig) and not ts.config.downstream
    assert [r.name for r in ts.config.sds_secrets] == ["default"]


def test_upstream_filter_that_would_run_is_refused() -> None:
    tcp_proxy = {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "x",
            "cluster": "y",
        },
    }
    with pytest.raises(ConfigError, match="upstream network filters are not supported"):
        translate(_outbound_cluster(filters=[tcp_proxy]))


def test_passthrough_and_blackhole_clusters() -> None:
    passthrough = translate(
        {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "PassthroughCluster",
            "type": "ORIGINAL_DST",
            "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": _BREAKERS,
            "typed_extension_protocol_options": _USE_DOWNSTREAM,
            "filters": _outbound_cluster()["filters"],
        }
    )
    assert passthrough.type is DiscoveryType.ORIGINAL_DST
    inbound = translate(
        {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "InboundPassthroughClusterIpv4",
            "type": "ORIGINAL_DST",
            "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": _BREAKERS,
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
            "typed_extension_protocol_options": _USE_DOWNSTREAM,
        }
    )
    assert _host_port(inbound.upstream_bind_address) == ("127.0.0.6", 0)
    blackhole = translate(
        {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "BlackHoleCluster",
            "type": "STATIC",
            "connect_timeout": "10s",
        }
    )
    assert blackhole.type is DiscoveryType.STATIC and blackhole.load_assignment is None


def test_unexpected_value_is_a_config_error() -> None:
    from envoy.config.listener.v3 import listener_pb2

    msg = to_any(find(AUTHZ, "listener", "virtualOutbound"))
    lis = listener_pb2.Listener()
    msg.Unpack(lis)
    lis.traffic_direction = 7  # an enum value from a newer API (open enum in proto3)
    with pytest.raises(ConfigError) as e:
        translate_resource(rt.LISTENER.type_url, lis, TranslateContext())
    assert e.value.path == "listener 'virtualOutbound'"
    assert "cannot translate" in e.value.reason


def test_istio_alpn_packed_directly_as_istiod_sends_it_is_accepted() -> None:
    """Real istiod packs ``istio.alpn``'s FilterConfig directly into the Any (its bytes, not a
    TypedStruct as in istioctl's JSON dumps); pilotfish has no message class for it and must
    accept it as it accepts the TypedStruct form (found against real istiod: every sidecar
    NACKed its 0.0.0.0_9080 listener before)."""
    from google.protobuf.any_pb2 import Any as AnyProto

    from pilotfish.extensions.registry import Category
    from pilotfish.xds.translate.context import TranslateContext

    packed = AnyProto(
        type_url="type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
        value=b"\n\x02\x08\x01",  # alpn_override {upstream_protocol: HTTP11}
    )
    ctx = TranslateContext()
    ext = ctx.extension(Category.HTTP_FILTER, "istio.alpn", packed, "http_filters[2]")
    assert ext is not None and ext.name == "istio.alpn"
    assert not ctx.warnings


def test_config_dump_renders_istio_types_packed_as_bytes() -> None:
    """/config_dump of a listener whose HCM holds istio.alpn as bytes (as istiod sends it):
    rendered with its own @type (no fields: pilotfish has not got its schema), not a 500."""
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    from google.protobuf.any_pb2 import Any as AnyProto

    from pilotfish.admin.config_dump import _to_dict

    alpn = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="outbound_0.0.0.0_9080")
    hcm.http_filters.add(name="istio.alpn").typed_config.CopyFrom(
        AnyProto(type_url=alpn, value=b"\n\x02\x08\x01")
    )
    lis = listener_pb2.Listener(name="0.0.0.0_9080")
    lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
    lis.filter_chains[0].filters[0].typed_config.Pack(hcm)
    doc = _to_dict(lis)
    http_filter = doc["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    assert http_filter == {"name": "istio.alpn", "typed_config": {"@type": alpn}}
    # the stored resource is left as it was
    assert lis.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.http_filters[0].typed_config.type_url == alpn
