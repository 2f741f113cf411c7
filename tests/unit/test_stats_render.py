"""/stats, /stats?format=json and /stats/prometheus rendered exactly as Envoy 1.40 does.

``data/envoy_stats/`` holds what a real Envoy reported for a sample of its stats (the names,
types, values and used flags in ``{mode}.json``) and its admin outputs for the same sample
(``filter=`` the sample regex), captured by tests/integration/test_stats_envoy_oracle.py. A Store
filled with those stats must render the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pilotfish.model.bootstrap import StatsConfig, StatsTag
from pilotfish.regex import RegexError
from pilotfish.stats.render import (
    compile_filter,
    metric_name,
    render_json,
    render_prometheus,
    render_text,
)
from pilotfish.stats.store import Store
from pilotfish.stats.tags import TagExtractor

DATA = Path(__file__).parent / "data" / "envoy_stats"
MODES = ("default", "istio")


def _load(mode: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{mode}.json").read_text()))


def _expected(mode: str, what: str) -> str:
    return (DATA / f"{mode}_{what}").read_text()


def _extractor(data: dict[str, Any]) -> TagExtractor:
    raw = data["stats_config"]
    if not raw:
        return TagExtractor(StatsConfig())
    tags = tuple(StatsTag(t["tag_name"], regex=t["regex"]) for t in raw["stats_tags"])
    return TagExtractor(StatsConfig(tags=tags, use_all_default_tags=raw["use_all_default_tags"]))


def store_from(data: dict[str, Any]) -> Store:
    store = Store()
    for stat in data["stats"]:
        name, kind = stat["name"], stat["type"]
        if kind == "counter":
            counter = store.counter(name)
            counter.value = stat["value"]
            if stat["used"]:
                counter.inc(0)
        elif kind == "gauge":
            gauge = store.gauge(name)
            if stat["used"]:
                gauge.set(stat["value"])
            else:
                gauge.value = stat["value"]
        elif kind == "text_readout":
            readout = store.text_readout(name)
            if stat["used"]:
                readout.value = stat["value"]
        else:
            _fill_histogram(store, stat)
    return store


def _fill_histogram(store: Store, stat: dict[str, Any]) -> None:
    h = store.histogram(stat["name"])
    previous = 0
    for i, total in enumerate(stat["buckets"]):
        h.counts[i] = total - previous
        previous = total
    h.count = stat["count"]
    h.counts[-1] = h.count - previous
    h.sum = float(stat["sum"])


@pytest.mark.parametrize("mode", MODES)
def test_prometheus_is_envoys(mode: str) -> None:
    data = _load(mode)
    got = render_prometheus(store_from(data), _extractor(data), text_readouts=True)
    assert got == _expected(mode, "prometheus.txt")


@pytest.mark.parametrize("mode", MODES)
def test_prometheus_used_only_is_envoys(mode: str) -> None:
    data = _load(mode)
    got = render_prometheus(store_from(data), _extractor(data), used_only=True)
    assert got == _expected(mode, "prometheus_used.txt")


@pytest.mark.parametrize("mode", MODES)
def test_prometheus_filter_is_a_search_in_the_full_name(mode: str) -> None:
    data = _load(mode)
    expected = _expected(mode, "prometheus.txt")
    got = render_prometheus(
        store_from(data), _extractor(data), text_readouts=True, filter_regex=data["filter"]
    )
    assert got == expected
    store = store_from(data)
    store.counter("not.in.the.sample").inc()
    assert (
        render_prometheus(store, _extractor(data), text_readouts=True, filter_regex=data["filter"])
        == expected
    )


_HISTOGRAM_LINE = re.compile(
    r"^(?P<name>.+): (No recorded values|(P[0-9.]+\([^,() ]+,[^,() ]+\)( |$)){10})$"
)


def _assert_text_like_envoy(got: str, expected: str) -> None:
    """Identical except histogram quantiles (Envoy's come from its own sketch, and its interval
    values from its last flush): those lines must have Envoy's shape and name."""
    got_lines, want_lines = got.splitlines(), expected.splitlines()
    assert [ln.split(": ")[0] for ln in got_lines] == [ln.split(": ")[0] for ln in want_lines]
    assert got.endswith("\n") == expected.endswith("\n")
    for line, want in zip(got_lines, want_lines, strict=True):
        if want.startswith(line.split(": ")[0] + ": P"):
            assert _HISTOGRAM_LINE.match(line), line
            assert _HISTOGRAM_LINE.match(want), want
        else:
            assert line == want


@pytest.mark.parametrize("mode", MODES)
def test_text_is_envoys(mode: str) -> None:
    data = _load(mode)
    _assert_text_like_envoy(render_text(store_from(data)), _expected(mode, "stats.txt"))


@pytest.mark.parametrize("mode", MODES)
def test_text_used_only_is_envoys(mode: str) -> None:
    data = _load(mode)
    expected = _expected(mode, "stats_used.txt")
    _assert_text_like_envoy(render_text(store_from(data), used_only=True), expected)


@pytest.mark.parametrize("mode", MODES)
def test_json_is_envoys(mode: str) -> None:
    data = _load(mode)
    got = render_json(store_from(data))
    expected = _expected(mode, "stats.json")
    # Byte for byte up to the histograms, whose quantile values are Envoy's sketch.
    cut = expected.index('{"histograms":')
    assert got[:cut] == expected[:cut]
    got_h = json.loads(got)["stats"][-1]["histograms"]
    want_h = json.loads(expected)["stats"][-1]["histograms"]
    assert got_h["supported_quantiles"] == want_h["supported_quantiles"]
    assert [
        (h["name"], [v["cumulative"] is None for v in h["values"]])
        for h in got_h["computed_quantiles"]
    ] == [
        (h["name"], [v["cumulative"] is None for v in h["values"]])
        for h in want_h["computed_quantiles"]
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("query", "filter_regex"),
    [
        ("ready_server", r"^(server\.state|listener_manager\.workers_started)"),
        (
            "ready_xds",
            r"^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$",
        ),
    ],
)
def test_pilot_agent_readiness_queries(mode: str, query: str, filter_regex: str) -> None:
    """What pilot-agent reads: ``/stats?usedonly&filter=...``. With Istio's ADS not answered
    the xDS counters are unused, so Envoy (and we) print nothing."""
    got = render_text(store_from(_load(mode)), used_only=True, filter_regex=filter_regex)
    assert got == _expected(mode, f"{query}.txt")


def test_captured_sample_covers_every_type() -> None:
    for mode in MODES:
        kinds = {s["type"] for s in _load(mode)["stats"]}
        assert kinds == {"counter", "gauge", "text_readout", "histogram"}


def test_used_flag_of_zero_values() -> None:
    store = Store()
    store.counter("server.wip_protos").inc(0)
    store.text_readout("cluster_manager.cds.version_text").value = ""
    assert render_text(store, used_only=True) == (
        'cluster_manager.cds.version_text: ""\nserver.wip_protos: 0\n'
    )


# --- formatting details ----------------------------------------------------------------------


def test_empty_store() -> None:
    store = Store()
    assert render_text(store) == ""
    assert render_json(store) == '{"stats":[]}'
    assert render_prometheus(store, TagExtractor()) == ""


def test_text_orders_text_readouts_then_counters_and_gauges_then_histograms() -> None:
    store = Store()
    store.gauge("b.gauge").set(2)
    store.counter("a.counter").inc(3)
    store.counter("c.counter").inc()
    store.text_readout("z.text").value = "v"
    store.histogram("a.hist")
    assert render_text(store) == (
        'z.text: "v"\na.counter: 3\nb.gauge: 2\nc.counter: 1\na.hist: No recorded values\n'
    )
    assert render_text(store, type_filter="Gauges") == "b.gauge: 2\n"
    assert render_text(store, type_filter="Counters") == "a.counter: 3\nc.counter: 1\n"
    assert render_text(store, type_filter="TextReadouts") == 'z.text: "v"\n'
    assert render_text(store, type_filter="Histograms") == "a.hist: No recorded values\n"
    with pytest.raises(ValueError, match="invalid &type= param"):
        render_text(store, type_filter="counters")


def test_text_histogram_quantiles() -> None:
    store = Store()
    h = store.histogram("h")
    for v in (3, 3, 3, 3):
        h.record(v)
    line = render_text(store)
    assert line.startswith("h: P0(1,1) P25(2,2) P50(3,3) P75(4,4) P90(4.6,4.6) ")
    assert line.endswith(" P100(5,5)\n")


def test_json_histograms_and_numbers() -> None:
    store = Store()
    store.gauge("g").set(-1)  # uint64 in Envoy: wraps
    store.text_readout("t").value = 'a"b\\c\n'
    store.histogram("unused")
    store.histogram("used").record(0.7)
    out = json.loads(render_json(store))["stats"]
    assert out[:2] == [{"name": "t", "value": 'a"b\\c\n'}, {"name": "g", "value": 2**64 - 1}]
    hist = out[2]["histograms"]
    assert hist["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    assert [h["name"] for h in hist["computed_quantiles"]] == ["unused", "used"]
    assert hist["computed_quantiles"][0]["values"][0] == {"cumulative": None, "interval": None}
    assert hist["computed_quantiles"][1]["values"][0] == {"cumulative": 0.5, "interval": 0.5}
    assert '"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100]' in render_json(store)


def test_prometheus_histogram_lines() -> None:
    store = Store(StatsConfig(histogram_buckets=(0.1, 1, 2.5, 3600000)))
    h = store.histogram("cluster.c1.upstream_rq_time")
    for v in (0.05, 2, 5000000):
        h.record(v)
    assert render_prometheus(store, TagExtractor()) == (
        "# TYPE envoy_cluster_upstream_rq_time histogram\n"
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",'
        'le="0.10000000000000000555111512312578"} 1\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="1"} 1\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="2.5"} 2\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="3600000"} 2\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c1",le="+Inf"} 3\n'
        'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c1"} '
        "5000002.0499999998137354850769043\n"
        'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="c1"} 3\n'
    )
    untagged = Store()
    untagged.histogram("server.initialization_time_ms").record(10)
    lines = render_prometheus(untagged, TagExtractor()).splitlines()
    assert lines[1] == 'envoy_server_initialization_time_ms_bucket{le="0.5"} 0'
    assert lines[-2:] == [
        "envoy_server_initialization_time_ms_sum{} 10",
        "envoy_server_initialization_time_ms_count{} 1",
    ]


def test_prometheus_groups_and_member_order() -> None:
    """Groups by tag-extracted name (plain string order), members by full name compared token
    by token: "a" sorts before "a-b" although '-' < '.'."""
    store = Store()
    for name in (
        "cluster.a-b.upstream_cx_total",
        "cluster.a.upstream_cx_total",
        "cluster_manager.active_clusters",
        "cluster.a.bind_errors",
    ):
        store.counter(name).inc()
    assert render_prometheus(store, TagExtractor()) == (
        "# TYPE envoy_cluster_bind_errors counter\n"
        'envoy_cluster_bind_errors{envoy_cluster_name="a"} 1\n'
        "# TYPE envoy_cluster_upstream_cx_total counter\n"
        'envoy_cluster_upstream_cx_total{envoy_cluster_name="a"} 1\n'
        'envoy_cluster_upstream_cx_total{envoy_cluster_name="a-b"} 1\n'
        "# TYPE envoy_cluster_manager_active_clusters counter\n"
        "envoy_cluster_manager_active_clusters{} 1\n"
    )


def test_prometheus_text_readouts_and_escaping() -> None:
    store = Store()
    store.text_readout("control_plane.identifier").value = 'istiod-1 "x"\\\n'
    assert render_prometheus(store, TagExtractor()) == ""
    assert render_prometheus(store, TagExtractor(), text_readouts=True) == (
        "# TYPE envoy_control_plane_identifier gauge\n"
        'envoy_control_plane_identifier{text_value="istiod-1 \\"x\\"\\\\\\n"} 0\n'
    )


def test_custom_namespaces() -> None:
    store = Store()
    store.counter("istio.istio_requests_total.reporter.destination").inc(7)
    store.counter("istio.9lives").inc()
    store.gauge("wasm.vm.active").set(1)
    extractor = TagExtractor()
    extractor.pin(
        "istio.istio_requests_total.reporter.destination",
        "istio.istio_requests_total",
        [("reporter", "destination")],
    )
    assert render_prometheus(store, extractor, custom_namespaces=frozenset({"istio"})) == (
        "# TYPE istio_requests_total counter\n"
        'istio_requests_total{reporter="destination"} 7\n'
        "# TYPE envoy_wasm_vm_active gauge\n"
        "envoy_wasm_vm_active{} 1\n"
    )
    assert metric_name("istio.9lives", frozenset({"istio"})) is None
    assert metric_name("istio", frozenset({"istio"})) == "envoy_istio"
    assert metric_name("http.x-y.rq", frozenset()) == "envoy_http_x_y_rq"


def test_filters_are_re2() -> None:
    store = Store()
    store.counter("server.x1").inc()
    store.counter("server.xy").inc()
    assert render_text(store, filter_regex=r"x[[:digit:]]") == "server.x1: 1\n"
    assert render_text(store, filter_regex=compile_filter(r"\.xy$")) == "server.xy: 1\n"
    assert render_text(store, filter_regex="[[]") == ""  # '[' in a class: no FutureWarning
    with pytest.raises(RegexError):
        compile_filter(r"server(?!\.x1)")  # Envoy: 400 "Invalid re2 regex"
    with pytest.raises(RegexError):
        render_prometheus(store, TagExtractor(), filter_regex="(")


def test_used_only_gauges() -> None:
    store = Store()
    store.gauge("server.state").set(0)
    store.gauge("server.never_set")
    store.counter("server.zero")
    assert render_text(store, used_only=True) == "server.state: 0\n"
    assert render_prometheus(store, TagExtractor(), used_only=True) == (
        "# TYPE envoy_server_state gauge\nenvoy_server_state{} 0\n"
    )


def _latency_store() -> Store:
    store = Store()
    h = store.histogram("cluster.a.upstream_rq_time")
    for value in (0.2, 0.3, 3, 700):
        h.record(value)
    store.histogram("cluster.a.upstream_cx_length_ms")  # never recorded
    return store


def test_histogram_buckets_text() -> None:
    """``histogram_buckets=cumulative|disjoint``: ``B<bound>(interval,cumulative)``, bounds as
    printf %g (``B1.8e+06`` but ``B600000``), as Envoy prints them."""
    store = _latency_store()
    text = render_text(store, histogram_buckets="cumulative")
    assert "cluster.a.upstream_cx_length_ms: No recorded values\n" in text
    line = text.splitlines()[-1]
    assert line.startswith("cluster.a.upstream_rq_time: B0.5(2,2) B1(2,2) B5(3,3) B10(3,3) ")
    assert " B500(3,3) B1000(4,4) " in line
    assert line.endswith(" B300000(4,4) B600000(4,4) B1.8e+06(4,4) B3.6e+06(4,4)")
    disjoint = render_text(store, histogram_buckets="disjoint").splitlines()[-1]
    assert disjoint.startswith("cluster.a.upstream_rq_time: B0.5(2,2) B1(0,0) B5(1,1) B10(0,0)")


def test_histogram_buckets_json() -> None:
    store = _latency_store()
    doc = json.loads(render_json(store, histogram_buckets="disjoint"))
    (entry,) = doc["stats"]
    unused, used = entry["histograms"]
    assert unused["name"] == "cluster.a.upstream_cx_length_ms"
    assert {b["cumulative"] for b in unused["buckets"]} == {0}
    assert [b["cumulative"] for b in used["buckets"][:4]] == [2, 0, 1, 0]
    # bounds: the shorter of the fixed and exponent forms, as Envoy's JSON
    raw = render_json(store, histogram_buckets="cumulative")
    assert '"upper_bound":0.5,' in raw and '"upper_bound":60000,' in raw
    assert '"upper_bound":3e+05,' in raw and '"upper_bound":1800000,' in raw


def test_prometheus_summary() -> None:
    store = _latency_store()
    text = render_prometheus(store, TagExtractor(), summary=True)
    assert "# TYPE envoy_cluster_upstream_cx_length_ms summary\n" in text
    assert 'envoy_cluster_upstream_cx_length_ms{envoy_cluster_name="a",quantile="0"} nan\n' in text
    assert 'envoy_cluster_upstream_rq_time{envoy_cluster_name="a",quantile="0.5"} ' in text
    assert 'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a"} 4\n' in text
    assert "_bucket" not in text
