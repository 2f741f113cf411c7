"""The dashboard's data: Istio's standard metrics read from Prometheus with PromQL in the way
Kiali reads them (edges from ``istio_requests_total`` as reported by the destination sidecar,
requests per second and error rate over a rate window, p99 from
``istio_request_duration_milliseconds_bucket``, mTLS from ``connection_security_policy``), and
the graph built from the answers (pure functions, unit-tested without Prometheus).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

WINDOW = "1m"
EDGE_LABELS = (
    "source_workload",
    "source_canonical_service",
    "source_version",
    "destination_workload",
    "destination_canonical_service",
    "destination_version",
)
_BY = ", ".join(EDGE_LABELS)

# Kiali's graph queries, reduced to workload nodes (its "versioned app" graph).
RATE = (
    f"sum by ({_BY}, response_code, connection_security_policy) "
    f'(rate(istio_requests_total{{reporter="destination"}}[{WINDOW}]))'
)
P99 = (
    f"histogram_quantile(0.99, sum by ({_BY}, le) "
    f'(rate(istio_request_duration_milliseconds_bucket{{reporter="destination"}}[{WINDOW}])))'
)
TCP_RATE = (
    f"sum by ({_BY}, connection_security_policy) "
    f'(rate(istio_tcp_sent_bytes_total{{reporter="destination"}}[{WINDOW}]))'
)


def service_queries(service: str) -> dict[str, str]:
    """Per-service charts (Kiali's inbound metrics of a service): requests/s, error rate (5xx
    share), p99 latency, as the destination reports them."""
    sel = f'reporter="destination",destination_canonical_service="{service}"'
    return {
        "rps": f"sum(rate(istio_requests_total{{{sel}}}[{WINDOW}]))",
        "errors": (
            f'sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}[{WINDOW}])) '
            f"/ sum(rate(istio_requests_total{{{sel}}}[{WINDOW}]))"
        ),
        "p99": (
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{WINDOW}])))"
        ),
    }


def _node_id(workload: str) -> str:
    return f"wl:{workload}"


def build_graph(
    rate: list[dict[str, Any]],
    p99: list[dict[str, Any]],
    tcp: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Cytoscape elements: an app (canonical service) node holding its workloads (one per
    version), and an edge per (source workload, destination workload) with requests/s, error
    rate (5xx share), p99 and mTLS (all of its traffic ``mutual_tls``)."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], dict[str, Any]] = {}

    def add_node(workload: str, service: str, version: str) -> str:
        if workload in ("", "unknown"):
            workload, service, version = "unknown", "unknown", ""
        node = _node_id(workload)
        if node not in nodes:
            parent = f"svc:{service}"
            nodes.setdefault(parent, {"data": {"id": parent, "label": service, "kind": "service"}})
            nodes[node] = {
                "data": {
                    "id": node,
                    "parent": parent,
                    "label": (
                        f"{service} {version}"
                        if version not in ("", "unknown", "latest")
                        else workload
                    ),
                    "workload": workload,
                    "service": service,
                    "version": version,
                    "kind": "workload",
                }
            }
        return node

    def edge(metric: dict[str, str], protocol: str) -> dict[str, Any]:
        src = add_node(
            metric.get("source_workload", ""),
            metric.get("source_canonical_service", ""),
            metric.get("source_version", ""),
        )
        dst = add_node(
            metric.get("destination_workload", ""),
            metric.get("destination_canonical_service", ""),
            metric.get("destination_version", ""),
        )
        key = (src, dst)
        e = edges.get(key)
        if e is None:
            e = edges[key] = {
                "data": {
                    "id": f"{src}->{dst}",
                    "source": src,
                    "target": dst,
                    "protocol": protocol,
                    "rps": 0.0,
                    "errors": 0.0,
                    "p99": None,
                    "mtls": True,
                    "bytes": 0.0,
                }
            }
        return e["data"]

    for sample in rate:
        m = sample["metric"]
        value = float(sample["value"][1])
        d = edge(m, "http")
        d["rps"] += value
        if m.get("response_code", "").startswith("5") or m.get("response_code") == "0":
            d["errors"] += value
        if m.get("connection_security_policy") != "mutual_tls" and value > 0:
            d["mtls"] = False
    for sample in tcp:
        m = sample["metric"]
        d = edge(m, "tcp")
        d["bytes"] += float(sample["value"][1])
        if m.get("connection_security_policy") != "mutual_tls":
            d["mtls"] = False
    for sample in p99:
        m = sample["metric"]
        key = (
            _node_id(m.get("source_workload") or "unknown"),
            _node_id(m.get("destination_workload") or "unknown"),
        )
        if key in edges:
            v = float(sample["value"][1])
            edges[key]["data"]["p99"] = None if math.isnan(v) else round(v, 2)  # NaN: no requests
    for e in edges.values():
        d = e["data"]
        rps = d["rps"]
        d["error_rate"] = round(d["errors"] / rps, 4) if rps > 0 else 0.0
        d["rps"] = round(rps, 3)
        p99v = d["p99"]
        parts = [f"{d['rps']:.2f} rps"] if d["protocol"] == "http" else [f"{d['bytes']:.0f} B/s"]
        if d["protocol"] == "http":
            parts.append(f"{d['error_rate'] * 100:.1f}% err")
            if p99v is not None:
                parts.append(f"p99 {p99v:g} ms")
        d["label"] = ("mTLS · " if d["mtls"] else "") + " · ".join(parts)
    return {"nodes": list(nodes.values()), "edges": list(edges.values())}


class Prometheus:
    """Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/query_range``)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as resp:
            doc = json.load(resp)
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus: {doc.get('error', doc)}")
        return doc["data"]["result"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", {"query": promql})
        return result

    def query_range(self, promql: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step},
        )
        return result

    def graph(self) -> dict[str, Any]:
        return build_graph(self.query(RATE), self.query(P99), self.query(TCP_RATE))
