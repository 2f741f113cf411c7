"""Pure parts of Istio's telemetry: workload metadata forms, the CEL subset, the stats filter's
labels and overrides, the labelled-series rendering, the dashboard's graph."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf import struct_pb2

from pilotfish.errors import ConfigError
from pilotfish.mesh.dashboard.queries import build_graph
from pilotfish.stats import expr
from pilotfish.stats.istio import IstioStats, parse_config
from pilotfish.stats.render import render_prometheus
from pilotfish.stats.store import Store
from pilotfish.stats.tagged import TaggedStats
from pilotfish.stats.tags import TagExtractor
from pilotfish.stats.workload import (
    WorkloadMetadata,
    from_baggage,
    from_endpoint_metadata,
    from_header,
    from_node_metadata,
)

NODE: dict[str, Any] = {
    "NAME": "ratings-v1-84975bc778-pxz2w",
    "NAMESPACE": "default",
    "CLUSTER_ID": "server-cluster",
    "WORKLOAD_NAME": "ratings-v1",
    "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v1",
    "LABELS": {
        "app": "ratings",
        "version": "v1",
        "service.istio.io/canonical-name": "ratings",
        "service.istio.io/canonical-revision": "version-1",
        "role": "server",
    },
}


def test_node_metadata_to_header_and_back() -> None:
    local = from_node_metadata(NODE)
    assert local == WorkloadMetadata(
        instance_name="ratings-v1-84975bc778-pxz2w",
        cluster_name="server-cluster",
        namespace_name="default",
        workload_name="ratings-v1",
        canonical_name="ratings",
        canonical_revision="version-1",
        app_name="ratings",
        app_version="v1",
        workload_type="deployment",
    )
    raw = local.header_value()
    s = struct_pb2.Struct()
    s.ParseFromString(base64.b64decode(raw))
    assert s.fields["WORKLOAD_NAME"].string_value == "ratings-v1"
    assert s.fields["OWNER"].string_value == NODE["OWNER"]
    assert s.fields["LABELS"].struct_value.fields["app"].string_value == "ratings"
    assert "role" not in s.fields["LABELS"].struct_value.fields  # not an additional label
    assert from_header(raw) == local
    # additional_labels keep the named labels.
    extra = from_node_metadata(NODE, frozenset({"role"}))
    assert extra.label("role") == "server"
    assert from_header(extra.header_value(), frozenset({"role"})) == extra
    assert from_header(b"!!not base64 of a struct") is None


def test_app_and_version_fall_back_to_canonical_names() -> None:
    labels = {k: v for k, v in NODE["LABELS"].items() if k not in ("app", "version")}
    w = from_node_metadata({**NODE, "LABELS": labels})
    assert (w.app_name, w.app_version) == ("ratings", "version-1")


def test_baggage_and_endpoint_forms() -> None:
    local = from_node_metadata(NODE)
    assert local.baggage() == (
        b"k8s.deployment.name=ratings-v1,k8s.namespace.name=default,"
        b"k8s.cluster.name=server-cluster,service.name=ratings,service.version=version-1,"
        b"app.name=ratings,app.version=v1,k8s.instance.name=ratings-v1-84975bc778-pxz2w"
    )
    back = from_baggage(local.baggage())
    assert back.workload_name == "ratings-v1" and back.workload_type == "deployment"
    assert back.canonical_revision == "version-1" and back.cluster_name == "server-cluster"
    ep = from_endpoint_metadata("ratings-v1;default;ratings;version-1;server-cluster")
    assert ep == WorkloadMetadata(
        workload_name="ratings-v1",
        namespace_name="default",
        canonical_name="ratings",
        canonical_revision="version-1",
        cluster_name="server-cluster",
    )
    assert from_endpoint_metadata("too;short") is None


def _resolve(root: str) -> object:
    return {
        "xds": {"node": {"metadata": NODE}, "cluster_metadata": {"filter_metadata": {}}},
        "filter_state": {"upstream_peer": {"labels": {"role": "server"}, "service": "ratings"}},
    }.get(root)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'_' + xds.node.metadata['WORKLOAD_NAME']", "_ratings-v1"),
        ("xds.node.metadata.LABELS.version", "v1"),
        ("xds.node.metadata['LABELS'].app", "ratings"),
        ("filter_state.upstream_peer.labels['role']", "server"),
        ("'_' + filter_state.upstream_peer.service", "_ratings"),
        ('"1"', "1"),
        ("cannot_evaluate", None),
        ("xds.cluster_metadata.filter_metadata.istio.services[0].name", None),
    ],
)
def test_cel_subset(text: str, value: str | None) -> None:
    assert expr.to_text(expr.parse(text)(_resolve)) == value


@pytest.mark.parametrize("text", ["cannot _ parse | 0", "a.", "'open", "a[1", ""])
def test_cel_subset_refuses_what_does_not_parse(text: str) -> None:
    with pytest.raises(expr.ExprError):
        expr.parse(text)


def test_config_reporter_and_fields() -> None:
    assert parse_config({}, "OUTBOUND", "x").reporter == "source"
    assert parse_config({}, "INBOUND", "x").reporter == "destination"
    assert parse_config({"reporter": "SERVER_GATEWAY"}, "INBOUND", "x").reporter == "waypoint"
    c = parse_config(
        {"disable_host_header_fallback": "true", "tcp_reporting_duration": "1s"}, "", "x"
    )
    assert c.disable_host_header_fallback and c.tcp_reporting_duration == 1.0
    with pytest.raises(ConfigError, match="unknown field 'bogus'"):
        parse_config({"bogus": 1}, "", "cfg")
    # The Wasm plugin's old fields are accepted in its JSON form only.
    assert parse_config({"debug": "false"}, "", "x", wasm=True).reporter == "source"


def test_labels_order_and_prometheus_rendering() -> None:
    tagged = TaggedStats()
    client = IstioStats(parse_config({}, "OUTBOUND", "x"), tagged, {**NODE, "ISTIO_VERSION": "1.5"})
    peer = from_node_metadata(NODE)
    tags = client.peer_tags(peer, "server.default.svc.cluster.local", "server", "", "")
    for _ in range(3):
        client.record_http(tags, "http", 200, "", "-", "unknown", 4.0, 100, 200)
    client.record_http(tags, "http", 503, "", "UF,URX", "unknown", 1.0, 100, 0)
    text = render_prometheus(
        Store(),
        TagExtractor(Store().config),
        custom_namespaces=frozenset({"istiocustom"}),
        tagged=tagged.families.values(),
    )
    lines = text.splitlines()
    assert "# TYPE istio_requests_total counter" in lines
    assert "# TYPE istio_request_duration_milliseconds histogram" in lines
    assert 'istio_build{component="proxy",tag="1.5"} 1' in lines
    ok = next(ln for ln in lines if ln.startswith("istio_requests_total{") and "200" in ln)
    assert ok.startswith(
        'istio_requests_total{reporter="source",source_workload="ratings-v1",'
        'source_canonical_service="ratings",source_canonical_revision="version-1",'
    )
    assert ok.endswith(
        'request_protocol="http",response_code="200",grpc_response_status="",'
        'response_flags="-",connection_security_policy="unknown"} 3'
    )
    assert any('response_flags="UF,URX"' in ln and ln.endswith(" 1") for ln in lines)
    tagged.rotate()  # stats expiry: every series forgotten, and the recorder's caches
    assert not any(f.series for f in tagged.families.values())
    client.record_http(tags, "http", 200, "", "-", "unknown", 4.0, 100, 200)
    (series,) = tagged.families["istiocustom.istio_requests_total"].series.values()
    assert series.value == 1


def test_overrides_drop_remove_and_add_tags() -> None:
    tagged = TaggedStats()
    config = parse_config(
        {
            "metrics": [
                {"name": "request_bytes", "drop": True},
                {"tags_to_remove": ["response_flags"]},
                {"name": "requests_total", "dimensions": {"extra": "'x'", "source_app": "bad |"}},
            ]
        },
        "OUTBOUND",
        "x",
    )
    stats = IstioStats(config, tagged, NODE)
    tags = stats.peer_tags(None, "", "", "", "")
    stats.record_http(tags, "http", 200, "", "-", "unknown", 1.0, 1, 1, _resolve)
    (series,) = tagged.families["istiocustom.istio_requests_total"].series
    names = [k for k, _ in series]
    assert "response_flags" not in names and "source_app" not in names  # removed; unparsable
    assert dict(series)["extra"] == "x"
    assert not tagged.families["istiocustom.istio_request_bytes"].series
    assert any("failed to parse" in w for w in stats.warnings)


def _sample(value: float, **labels: str) -> dict[str, object]:
    return {"metric": labels, "value": [0, str(value)]}


def test_dashboard_graph_from_prometheus_answers() -> None:
    edge = {
        "source_workload": "productpage-v1",
        "source_canonical_service": "productpage",
        "source_version": "v1",
        "destination_workload": "reviews-v2",
        "destination_canonical_service": "reviews",
        "destination_version": "v2",
    }
    g = build_graph(
        [
            _sample(3.0, **edge, response_code="200", connection_security_policy="mutual_tls"),
            _sample(1.0, **edge, response_code="503", connection_security_policy="mutual_tls"),
        ],
        [_sample(12.5, **edge)],
    )
    ids = {n["data"]["id"] for n in g["nodes"]}
    assert ids == {"svc:productpage", "wl:productpage-v1", "svc:reviews", "wl:reviews-v2"}
    (e,) = g["edges"]
    d = e["data"]
    assert (d["source"], d["target"], d["rps"], d["error_rate"], d["p99"], d["mtls"]) == (
        "wl:productpage-v1",
        "wl:reviews-v2",
        4.0,
        0.25,
        12.5,
        True,
    )
    assert d["label"] == "mTLS · 4.00 rps · 25.0% err · p99 12.5 ms"
