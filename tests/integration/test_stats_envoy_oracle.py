"""Real Envoy as the oracle for pilotfish's stats rendering.

For two bootstraps (Envoy's default tags; Istio's ``stats_config`` from default_golden.json with
``alt_stat_name: "foo;"`` clusters), Envoy runs with a static listener and cluster, serves a few
requests, and then:

* every stat it has is looked up alone (``/stats/prometheus?filter=^name$``), which gives Envoy's
  own answer for that name's metric family and labels;
* a Store is filled with those names and the values of one ``/stats/prometheus`` snapshot, and
  ``render_prometheus`` must reproduce that snapshot family by family (order, TYPE lines,
  labels, histogram lines); ``render_text`` / ``render_json`` must reproduce ``/stats``.

Run as a script, it captures the small samples the unit tests use::

    PYTHONPATH=src .venv/bin/python tests/integration/test_stats_envoy_oracle.py \\
        --capture tests/unit/data/envoy_stats
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT, _ROOT / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.support.echo_backend import EchoBackend  # noqa: E402
from tests.support.istio_data import BOOTSTRAP_GOLDENS  # noqa: E402

from pilotfish.model.bootstrap import StatsConfig, StatsTag  # noqa: E402
from pilotfish.stats.render import render_json, render_prometheus, render_text  # noqa: E402
from pilotfish.stats.store import Store  # noqa: E402
from pilotfish.stats.tags import TagExtractor  # noqa: E402

ENVOY = _ROOT / ".venv-envoy" / "bin" / "envoy"
GOLDEN = BOOTSTRAP_GOLDENS / "default_golden.json"

MODES = ("default", "istio")
# A name that exercises escaping: quote, backslash, '<', '|', non-ASCII, space.
WEIRD_CLUSTER = 'we"ird\\<x>|y\u00e9 z'
# Stats kept in the unit-test samples: stable values (no admin traffic, no timers), every type,
# tags of every kind the two configs produce. RE2 syntax, as Envoy's `filter` param.
SAMPLE_FILTER = (
    r"^(server\.(state|live|concurrency|main_thread\.watchdog_miss|worker_0\.watchdog_miss)"
    r"|(listener_manager\.lds|cluster_manager\.cds)\.(update_(success|rejected|attempt|failure)"
    r"|version|version_text)"
    r"|listener_manager\.(workers_started|total_listeners_active)"
    r"|cluster_manager\.active_clusters"
    r"|control_plane\.identifier"
    r"|cluster\.([^.]+|outbound\|9080\|\|reviews\.default\.svc\.cluster\.local;)\."
    r"(upstream_rq_(2xx|200|503|completed|total|time)|upstream_cx_(total|length_ms)"
    r"|membership_total|external\.upstream_rq_2xx)"
    r"|http\.(ingress_http|inbound_0\.0\.0\.0_9080;)\.downstream_rq_(2xx|5xx|total|time)"
    r"|listener\.(127\.0\.0\.1_0|tcp_listener)\.(downstream_cx_total"
    r"|http\..+\.downstream_rq_2xx)"
    r"|vhost\..+\.upstream_rq_(200|2xx)"
    r"|tcp\..+\.downstream_cx_total"
    r"|thread_local_cluster_manager\..+)$"
)
# What Istio's pilot-agent asks to decide readiness.
READY_QUERIES = {
    "ready_server": r"^(server\.state|listener_manager\.workers_started)",
    "ready_xds": (
        r"^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$"
    ),
}
_TYPES = {"Counters": "counter", "Gauges": "gauge", "TextReadouts": "text_readout"}


# --- processes -------------------------------------------------------------------------------


class Blackhole:
    """Accepts connections and never answers: the xDS server Envoy waits on, so that the
    xds-grpc cluster's stats stay still (a closed port would make Envoy retry forever)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self._sock.accept()
                self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in [*self._conns, self._sock]:
            c.close()


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int, alt: str | None = None, h2: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
    }
    if alt:
        c["alt_stat_name"] = alt
    if h2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def _http_listener(stat_prefix: str) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "virtual_clusters": [
                        {
                            "name": "vc1",
                            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                        }
                    ],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "stat_prefix": "r1",
                            "route": {"cluster": "backend"},
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": "http",
        "address": _addr(0),
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }


def _tcp_listener(stat_prefix: str, listener_stat_prefix: str | None = None) -> dict[str, Any]:
    tcp = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_prefix,
        "cluster": "backend",
    }
    listener: dict[str, Any] = {
        "name": "tcp",
        "address": _addr(0),
        "filter_chains": [{"filters": [{"name": "tcp", "typed_config": tcp}]}],
    }
    if listener_stat_prefix:
        listener["stat_prefix"] = listener_stat_prefix
    return listener


def istio_stats_config() -> dict[str, Any]:
    """Istio's stats tags (the stats_matcher is left out: it would hide the cluster stats)."""
    golden = json.loads(GOLDEN.read_text())["stats_config"]
    return {k: v for k, v in golden.items() if k != "stats_matcher"}


def bootstrap(mode: str, backend_port: int, xds_port: int, workdir: Path) -> dict[str, Any]:
    b: dict[str, Any] = {
        "node": {
            "id": "sidecar~127.0.0.1~test.default~default.svc.cluster.local",
            "cluster": "test",
        },
        "admin": {"address": _addr(0)},
        "stats_flush_interval": "1s",
    }
    if mode == "istio":
        golden = json.loads(GOLDEN.read_text())
        b["stats_config"] = istio_stats_config()
        clusters = [
            _cluster("backend", backend_port, alt="foo;"),
            _cluster(
                "reviews", backend_port, alt="outbound|9080||reviews.default.svc.cluster.local;"
            ),
            _cluster("xds-grpc", xds_port, alt="xds-grpc;", h2=True),
        ]
        listeners = [
            _http_listener("inbound_0.0.0.0_9080;"),
            _tcp_listener("outbound|9080||reviews.default.svc.cluster.local"),
        ]
        dynamic = json.loads(json.dumps(golden["dynamic_resources"]))
        for key in ("lds_config", "cds_config"):
            dynamic[key]["initial_fetch_timeout"] = "0.2s"  # no istiod here: do not wait
    else:
        clusters = [
            _cluster("backend", backend_port),
            _cluster(WEIRD_CLUSTER, backend_port),
            _cluster("xds-grpc", xds_port, h2=True),
        ]
        listeners = [_http_listener("ingress_http"), _tcp_listener("tcp_in", "tcp_listener")]
        cds, lds = workdir / "cds.json", workdir / "lds.json"
        dyn_cluster = dict(
            _cluster("dyn", backend_port),
            **{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
        )
        cds.write_text(json.dumps({"resources": [dyn_cluster]}))
        lds.write_text(json.dumps({"resources": []}))
        dynamic = {
            "cds_config": {"path_config_source": {"path": str(cds)}, "resource_api_version": "V3"},
            "lds_config": {"path_config_source": {"path": str(lds)}, "resource_api_version": "V3"},
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
        }
    b["static_resources"] = {"listeners": listeners, "clusters": clusters}
    b["dynamic_resources"] = dynamic
    return b


@dataclass
class Envoy:
    """A running Envoy (and its backend and blackhole xDS server), killed by PID on exit."""

    mode: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="envoy-stats-")))
    admin_port: int = 0
    listener_ports: dict[str, int] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _backend: EchoBackend | None = None
    _xds: Blackhole | None = None

    def __enter__(self) -> Envoy:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self._backend = EchoBackend("envoy-stats").start()
        self._xds = Blackhole()
        config = self.workdir / "envoy.json"
        config.write_text(
            json.dumps(bootstrap(self.mode, self._backend.address[1], self._xds.port, self.workdir))
        )
        address_file = self.workdir / "admin_address"
        with (self.workdir / "envoy.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(ENVOY),
                    "-c",
                    str(config),
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                    "--base-id",
                    str(random.randint(10_000, 1_000_000)),
                    "--admin-address-path",
                    str(address_file),
                    "-l",
                    "error",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.admin_port = self._wait_for_admin(address_file)
        self._wait_until(lambda: self.get("/ready").strip() == "LIVE", "Envoy never became LIVE")
        statuses = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
        self.listener_ports = {
            s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses
        }

    def _wait_for_admin(self, address_file: Path) -> int:
        def ready() -> bool:
            return address_file.exists() and bool(address_file.read_text().strip())

        self._wait_until(ready, "Envoy wrote no admin address")
        return int(address_file.read_text().strip().rsplit(":", 1)[1])

    def _wait_until(self, cond: Any, message: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = (self.workdir / "envoy.log").read_text(errors="replace")
                raise RuntimeError(f"Envoy exited: {log[-2000:]}")
            with contextlib.suppress(OSError):
                if cond():
                    return
            time.sleep(0.05)
        raise TimeoutError(message)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._backend is not None:
            self._backend.stop()
        if self._xds is not None:
            self._xds.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def get(self, path: str, **params: str) -> str:
        query = "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote) if params else ""
        url = f"http://127.0.0.1:{self.admin_port}{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return str(r.read().decode())

    def send_traffic(self) -> None:
        """Four requests through the HTTP listener (200, 200, 503, 404) and one through the TCP
        proxy, then wait for a stats flush so histograms are merged."""
        for status in ("200", "200", "503", "404"):
            _http_get(self.listener_ports["http"], {"x-echo-status": status})
        _http_get(self.listener_ports["tcp"], {})
        time.sleep(2.5)


def _http_get(port: int, headers: dict[str, str]) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        while s.recv(65536):
            pass


# --- what Envoy reports ----------------------------------------------------------------------


def regex_escape(text: str) -> str:
    """Escape for RE2: the syntax characters only."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


@dataclass
class StatInfo:
    name: str
    type: str  # counter | gauge | text_readout | histogram
    value: int | str = 0  # counters, gauges, text readouts
    used: bool = False
    identity: str = ""  # Envoy's "family{labels}" for this stat alone (histograms: no suffix)


def names_by_type(envoy: Envoy, **params: str) -> dict[str, dict[str, Any]]:
    """name -> {"type", "value"} for every stat (JSON /stats, one type at a time)."""
    out: dict[str, dict[str, Any]] = {}
    for type_param, kind in _TYPES.items():
        for s in json.loads(envoy.get("/stats", format="json", type=type_param, **params))["stats"]:
            out[s["name"]] = {"type": kind, "value": s["value"]}
    stats = json.loads(envoy.get("/stats", format="json", type="Histograms", **params))["stats"]
    for entry in stats:
        for h in entry.get("histograms", {}).get("computed_quantiles", []):
            out[h["name"]] = {"type": "histogram", "value": 0}
    return out


def identity_of(envoy: Envoy, name: str, kind: str) -> str:
    """Envoy's metric family and labels for one stat, from a Prometheus query for it alone."""
    text = envoy.get("/stats/prometheus", filter=f"^{regex_escape(name)}$", text_readouts="")
    line = [ln for ln in text.splitlines() if not ln.startswith("#")][-1]
    identity = line.rsplit(" ", 1)[0]
    if kind == "histogram":  # the last line is NAME_count{labels}
        family, labels = identity.split("{", 1)
        identity = family.removesuffix("_count") + "{" + labels
    return identity


def collect(envoy: Envoy, **params: str) -> dict[str, StatInfo]:
    """Every stat (or those matching ``filter=``), with its type, value, used flag and Envoy's
    identity for it."""
    found = names_by_type(envoy, **params)
    used = set(names_by_type(envoy, usedonly="", **params))
    return {
        name: StatInfo(
            name, d["type"], d["value"], name in used, identity_of(envoy, name, d["type"])
        )
        for name, d in found.items()
    }


# --- Prometheus text parsing ----------------------------------------------------------------


def prometheus_families(text: str) -> list[tuple[str, list[str]]]:
    """[(TYPE line, its sample lines)] in output order."""
    families: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.append((line, []))
        else:
            assert families, f"sample before any TYPE line: {line!r}"
            families[-1][1].append(line)
    return families


def prometheus_samples(text: str) -> dict[str, str]:
    """'series{labels}' -> value for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = value
    return out


def _with_suffix(identity: str, suffix: str, extra_label: str = "") -> str:
    family, labels = identity.split("{", 1)
    labels = labels[:-1]
    if extra_label:
        labels = f"{labels},{extra_label}" if labels else extra_label
    return f"{family}{suffix}{{{labels}}}"


# --- filling a Store ------------------------------------------------------------------------


def fill_store(store: Store, stats: list[StatInfo], samples: dict[str, str]) -> None:
    """Give ``store`` the stats Envoy has; values of counters and gauges and all histogram data
    come from one Prometheus snapshot (``samples``), text readout values from ``StatInfo``."""
    for info in stats:
        if info.type == "text_readout":
            store.text_readout(info.name).value = str(info.value)
        elif info.type == "histogram":
            fill_histogram(store, info, samples)
        else:
            value = int(samples[info.identity]) if info.identity in samples else int(info.value)
            stat = store.counter(info.name) if info.type == "counter" else store.gauge(info.name)
            stat.value = value


def fill_histogram(store: Store, info: StatInfo, samples: dict[str, str]) -> None:
    h = store.histogram(info.name)
    cumulative = [
        int(samples[_with_suffix(info.identity, "_bucket", f'le="{bound:.32g}"')])
        for bound in h.bounds
    ]
    h.count = int(samples[_with_suffix(info.identity, "_count")])
    h.sum = float(samples[_with_suffix(info.identity, "_sum")])
    previous = 0
    for i, total in enumerate(cumulative):
        h.counts[i] = total - previous
        previous = total
    h.counts[-1] = h.count - previous


def stats_config(mode: str) -> StatsConfig:
    if mode == "default":
        return StatsConfig()
    raw = istio_stats_config()
    tags = tuple(
        StatsTag(t["tag_name"], regex=t.get("regex", ""), fixed_value=t.get("fixed_value", ""))
        for t in raw["stats_tags"]
    )
    return StatsConfig(tags=tags, use_all_default_tags=raw.get("use_all_default_tags", True))


# --- the oracle tests -----------------------------------------------------------------------


pytestmark = [
    pytest.mark.envoy,
    pytest.mark.slow,
    pytest.mark.skipif(not ENVOY.exists(), reason="the Envoy binary (.venv-envoy) is missing"),
]


@dataclass
class Snapshot:
    mode: str
    stats: dict[str, StatInfo]
    prometheus: str
    text: str
    json: str


@pytest.fixture(scope="module", params=MODES)
def snapshot(request: pytest.FixtureRequest) -> Iterator[Snapshot]:
    with Envoy(request.param) as envoy:
        envoy.send_traffic()
        stats = collect(envoy)
        prometheus = envoy.get("/stats/prometheus", text_readouts="")
        yield Snapshot(
            request.param,
            stats,
            prometheus,
            envoy.get("/stats"),
            envoy.get("/stats", format="json"),
        )


def _store_for(snap: Snapshot, samples: dict[str, str]) -> Store:
    store = Store()
    fill_store(store, list(snap.stats.values()), samples)
    return store


def test_prometheus_matches_envoy_family_by_family(snapshot: Snapshot) -> None:
    store = _store_for(snapshot, prometheus_samples(snapshot.prometheus))
    mine = render_prometheus(store, TagExtractor(stats_config(snapshot.mode)), text_readouts=True)
    expected = prometheus_families(snapshot.prometheus)
    got = prometheus_families(mine)
    assert [t for t, _ in got] == [t for t, _ in expected]  # same families, same order
    for (type_line, lines), (_, envoy_lines) in zip(got, expected, strict=True):
        assert lines == envoy_lines, type_line
    assert mine == snapshot.prometheus


def _text_values(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines())


def test_text_matches_envoy(snapshot: Snapshot) -> None:
    """Same names in the same order; counters, gauges and text readouts with the values of the
    same snapshot; histograms only by shape (Envoy's quantiles come from its own sketch)."""
    values = _text_values(snapshot.text)
    samples = {
        info.identity: values[name]
        for name, info in snapshot.stats.items()
        if info.type in ("counter", "gauge")
    }
    store = _store_for(snapshot, {**prometheus_samples(snapshot.prometheus), **samples})
    mine = render_text(store)
    assert [ln.split(": ")[0] for ln in mine.splitlines()] == [
        ln.split(": ")[0] for ln in snapshot.text.splitlines()
    ]
    for line, envoy_line in zip(mine.splitlines(), snapshot.text.splitlines(), strict=True):
        name = line.split(": ")[0]
        if snapshot.stats[name].type != "histogram" or envoy_line.endswith("No recorded values"):
            assert line == envoy_line


def test_json_matches_envoy(snapshot: Snapshot) -> None:
    values = {s["name"]: s["value"] for s in json.loads(snapshot.json)["stats"] if "name" in s}
    samples = {
        info.identity: str(values[name])
        for name, info in snapshot.stats.items()
        if info.type in ("counter", "gauge")
    }
    store = _store_for(snapshot, {**prometheus_samples(snapshot.prometheus), **samples})
    mine = json.loads(render_json(store))["stats"]
    envoy = json.loads(snapshot.json)["stats"]
    assert mine[:-1] == envoy[:-1]
    mine_h, envoy_h = mine[-1]["histograms"], envoy[-1]["histograms"]
    assert mine_h["supported_quantiles"] == envoy_h["supported_quantiles"]
    assert [h["name"] for h in mine_h["computed_quantiles"]] == [
        h["name"] for h in envoy_h["computed_quantiles"]
    ]
    for m, e in zip(mine_h["computed_quantiles"], envoy_h["computed_quantiles"], strict=True):
        assert [v["cumulative"] is None for v in m["values"]] == [
            v["cumulative"] is None for v in e["values"]
        ]


# --- capture of the unit-test samples -------------------------------------------------------


def _sample_record(info: StatInfo, samples: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {"name": info.name, "type": info.type, "used": info.used}
    if info.type == "histogram":
        store = Store()
        fill_histogram(store, info, samples)
        h = store.histogram(info.name)
        record.update(
            buckets=h.cumulative(), count=h.count, sum=samples[_with_suffix(info.identity, "_sum")]
        )
    else:
        record["value"] = info.value
    return record


def _tag_examples(stats: dict[str, StatInfo], keep: set[str]) -> dict[str, str]:
    """Envoy's identity for the sampled names plus up to three names per (first token, label
    names): enough to cover every kind of tag without storing every stat."""
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for name, info in stats.items():
        labels = re.findall(r'([A-Za-z0-9_]+)="', info.identity.split("{", 1)[1])
        key = (name.split(".", 1)[0], ",".join(labels))
        seen[key] = seen.get(key, 0) + 1
        if name in keep or seen[key] <= 3:
            out[name] = info.identity
    return out


def _dump_lines(data: dict[str, Any]) -> str:
    """JSON with one stat (or one tag example) per line: small, and readable in a diff."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    head = ",\n".join(
        f" {dump(k)}: {dump(v)}" for k, v in data.items() if k not in ("stats", "tags")
    )
    stats = ",\n".join(f"  {dump(s)}" for s in data["stats"])
    tags = ",\n".join(f"  {dump(k)}: {dump(v)}" for k, v in data["tags"].items())
    return f'{{\n{head},\n "stats": [\n{stats}\n ],\n "tags": {{\n{tags}\n }}\n}}\n'


def capture(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        with Envoy(mode) as envoy:
            envoy.send_traffic()
            everything = collect(envoy)
            sample = collect(envoy, filter=SAMPLE_FILTER)
            outputs = {
                "stats.txt": envoy.get("/stats", filter=SAMPLE_FILTER),
                "stats_used.txt": envoy.get("/stats", filter=SAMPLE_FILTER, usedonly=""),
                "stats.json": envoy.get("/stats", filter=SAMPLE_FILTER, format="json"),
                "prometheus.txt": envoy.get(
                    "/stats/prometheus", filter=SAMPLE_FILTER, text_readouts=""
                ),
                "prometheus_used.txt": envoy.get(
                    "/stats/prometheus", filter=SAMPLE_FILTER, usedonly=""
                ),
            }
            for key, query in READY_QUERIES.items():
                outputs[f"{key}.txt"] = envoy.get("/stats", usedonly="", filter=query)
            again = envoy.get("/stats/prometheus", filter=SAMPLE_FILTER, text_readouts="")
            assert again == outputs["prometheus.txt"], "sampled stats moved during the capture"
        samples = prometheus_samples(outputs["prometheus.txt"])
        data = {
            "envoy": subprocess.run(
                [str(ENVOY), "--version"], capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .split("version: ")[-1],
            "mode": mode,
            "stats_config": istio_stats_config() if mode == "istio" else {},
            "filter": SAMPLE_FILTER,
            "stats": [_sample_record(info, samples) for info in sample.values()],
            "tags": _tag_examples(everything, set(sample)),
        }
        (out_dir / f"{mode}.json").write_text(_dump_lines(data))
        for suffix, body in outputs.items():
            (out_dir / f"{mode}_{suffix}").write_text(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capture", type=Path, required=True, help="output directory")
    capture(parser.parse_args().capture)


if __name__ == "__main__":
    main()
