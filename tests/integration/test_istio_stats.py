"""Istio's standard metrics and HTTP metadata exchange, against Istio's own test data.

Upstream Envoy has no Istio stats filter, so the oracle is istio-proxy's ``testdata/metric``
(the series its end-to-end tests expect for a flow). The flow is istio-proxy's basic one: a
client sidecar (OUTBOUND listener: peer metadata ``mx_native_outbound`` + ``stats_outbound``)
calls a server sidecar (INBOUND listener: ``mx_native_inbound`` + ``stats_inbound``) in front of
a backend; both are pilotfish processes with Istio's node metadata, the filter configs are
istio-proxy's templates rendered. After a known number of requests, each side's
``/stats/prometheus`` must hold exactly the series and values of the metric files.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.echo_backend import EchoBackend
from tests.support.istio_testdata import (
    DATA,
    expected_metric,
    find_series,
    load,
    node_metadata,
    parse_prometheus,
)
from tests.support.proxies import (
    ROUTER_FILTER,
    ProxyProcess,
    get,
    http_listener,
    socket_address,
    static_cluster,
)
from tests.support.waiting import wait_for

REQUESTS = 10
SERVICE_METADATA = {
    "filter_metadata": {
        "istio": {
            "services": [
                {
                    "host": "server.default.svc.cluster.local",
                    "name": "server",
                    "namespace": "default",
                }
            ]
        }
    }
}
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


# The stats filter as Istio's null-VM Wasm plugin (what older istiod versions send).
NULL_VM = {
    "WasmRuntime": "envoy.wasm.runtime.null",
    "StatsFilterCode": 'inline_string: "envoy.wasm.stats"',
}


def _filters(*templates: tuple[str, dict[str, Any]], wasm: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = {"N": 0, "WasmRuntime": "", **(NULL_VM if wasm else {})}
    for name, vars in templates:
        out.extend(yaml.safe_load(load(f"filters/{name}", {**base, **vars})))
    return out


def _stats_config(name: str) -> str:
    return (DATA / "stats" / name).read_text()


def _bootstrap(
    node_id: str, metadata: dict[str, Any], listener: dict[str, Any], cluster: dict[str, Any]
) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": "test-cluster", "metadata": metadata},
        "admin": {"address": socket_address(0)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def _sidecar(
    tmp_path: Path,
    side: str,
    stats_config: str,
    upstream_port: int,
    cluster_metadata: dict[str, Any] | None,
    *,
    wasm: bool = False,
) -> ProxyProcess:
    """istio-proxy's ``client`` (OUTBOUND: mx_native_outbound + stats_outbound) or ``server``
    (INBOUND: mx_native_inbound + stats_inbound) sidecar, with that side's node metadata."""
    outbound = side == "client"
    cluster = "server-outbound-cluster" if outbound else "server-inbound-cluster"
    mx, stats, var = (
        ("mx_native_outbound", "stats_outbound", "StatsFilterClientConfig")
        if outbound
        else ("mx_native_inbound", "stats_inbound", "StatsFilterServerConfig")
    )
    listener = http_listener(
        side,
        [{"name": f"{side}_route", "match": {"prefix": "/"}, "route": {"cluster": cluster}}],
        http_filters=[
            *_filters(
                (f"{mx}.yaml.tmpl", {}),
                (f"{stats}.yaml.tmpl", {var: _stats_config(stats_config)}),
                wasm=wasm,
            ),
            ROUTER_FILTER,
        ],
        hcm={"stat_prefix": side},
    )
    listener["traffic_direction"] = "OUTBOUND" if outbound else "INBOUND"
    extra: dict[str, Any] = {"metadata": cluster_metadata} if cluster_metadata else {}
    boot = _bootstrap(
        side, node_metadata(side), listener, static_cluster(cluster, upstream_port, **extra)
    )
    return ProxyProcess("pilotfish", boot, tmp_path / side).start()


def _http_pair(
    tmp_path: Path,
    backend_port: int,
    *,
    client_stats: str = "client_config.yaml",
    server_stats: str = "server_config.yaml",
    outbound_metadata: bool = True,
    wasm: bool = False,
) -> tuple[ProxyProcess, ProxyProcess]:
    server = _sidecar(tmp_path, "server", server_stats, backend_port, SERVICE_METADATA, wasm=wasm)
    try:
        client = _sidecar(
            tmp_path,
            "client",
            client_stats,
            server.port("server"),
            SERVICE_METADATA if outbound_metadata else None,
            wasm=wasm,
        )
    except BaseException:
        server.stop()
        raise
    return client, server


@pytest.fixture
def backend() -> Iterator[EchoBackend]:
    with EchoBackend() as b:
        yield b


def _scrape(proxy: ProxyProcess) -> list[tuple[str, dict[str, str], float]]:
    reply = proxy.call("/stats/prometheus")
    assert reply.status == 200
    types, samples = parse_prometheus(reply.text)
    for name in {n for n, _, _ in samples if n.startswith("istio_")}:
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        assert family in types, name
    return samples


def _assert_metric(
    samples: list[tuple[str, dict[str, str], float]], relative: str, **vars: Any
) -> None:
    name, _kind, value, labels = expected_metric(relative, vars)
    found = find_series(samples, name, labels)
    assert found, (
        f"{relative}: no {name} series with labels {labels}; have "
        f"{[lab for n, lab, _ in samples if n == name]}"
    )
    assert [v for _, v in found] == [value]


@pytest.mark.parametrize("form", ["native", "null-vm-wasm"])
def test_http_basic_flow_client_and_server_series(
    tmp_path: Path, backend: EchoBackend, form: str
) -> None:
    """The basic flow, with the stats filter as ``stats.PluginConfig`` and as Istio's null-VM
    Wasm plugin (its JSON configuration): the same series."""
    client, server = _http_pair(tmp_path, backend.port, wasm=form == "null-vm-wasm")
    with client, server:
        for _ in range(REQUESTS):
            status, headers, _ = get(client.port("client"), "/echo", host="server.default:9080")
            assert status == 200
            # The exchange headers are consumed by the client sidecar, never seen by the app.
            assert "x-envoy-peer-metadata" not in {k.lower() for k in headers}
        # The backend saw no exchange headers either (the server sidecar removed them).
        assert all(
            "x-envoy-peer-metadata" not in {k.lower() for k, _ in r.headers}
            for r in backend.requests
        )
        client_samples = _scrape(client)
        server_samples = _scrape(server)
    _assert_metric(client_samples, "client_request_total.yaml.tmpl", RequestCount=REQUESTS)
    _assert_metric(server_samples, "server_request_total.yaml.tmpl", RequestCount=REQUESTS)
    _assert_metric(client_samples, "istio_build.yaml")
    # The three histograms have one series each with the same labels, counting every request.
    _, _, _, labels = expected_metric("client_request_total.yaml.tmpl", {"RequestCount": 1})
    for family in (
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ):
        assert [v for _, v in find_series(client_samples, f"{family}_count", labels)] == [REQUESTS]
        inf = {**labels, "le": "+Inf"}
        assert [v for _, v in find_series(client_samples, f"{family}_bucket", inf)] == [REQUESTS]


@pytest.mark.parametrize("disable", [False, True])
def test_http_host_header_fallback(tmp_path: Path, backend: EchoBackend, disable: bool) -> None:
    """A client cluster without ``istio.services`` metadata: the destination service is the
    request's host (istio-proxy's host_header_fallback), or ``unknown`` with
    ``disable_host_header_fallback`` (client_disable_host_header_fallback)."""
    config = "client_config_disable_header_fallback.yaml" if disable else "client_config.yaml"
    client, server = _http_pair(
        tmp_path, backend.port, client_stats=config, outbound_metadata=False
    )
    with client, server:
        port = client.port("client")
        for _ in range(REQUESTS):
            assert get(port, "/", host=f"127.0.0.1:{port}")[0] == 200
        samples = _scrape(client)
    expected = (
        "client_disable_host_header_fallback.yaml.tmpl"
        if disable
        else "host_header_fallback.yaml.tmpl"
    )
    _assert_metric(samples, expected, RequestCount=REQUESTS, ClientPort=port)


def test_http_customized_metrics(tmp_path: Path, backend: EchoBackend) -> None:
    """istio-proxy's customized client config (dropped metric, removed tags, CEL dimensions,
    a custom metric) gives its client_request_total_customized and client_custom_metric."""
    client, server = _http_pair(
        tmp_path, backend.port, client_stats="client_config_customized.yaml.tmpl"
    )
    with client, server:
        for _ in range(REQUESTS):
            assert get(client.port("client"), "/")[0] == 200
        samples = _scrape(client)
    _assert_metric(samples, "client_request_total_customized.yaml.tmpl", RequestCount=REQUESTS, N=0)
    _assert_metric(samples, "client_custom_metric.yaml.tmpl", RequestCount=REQUESTS)
    assert not [n for n, _, _ in samples if n.startswith("istio_request_duration_milliseconds")]


class _TcpEcho:
    """A TCP server that echoes what it gets until EOF."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def _tcp_listener(name: str, direction: str, stats: dict[str, Any], cluster: str) -> dict[str, Any]:
    return {
        "name": name,
        "traffic_direction": direction,
        "address": socket_address(0),
        "filter_chains": [
            {
                "filters": [
                    stats,
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": TCP_PROXY,
                            "stat_prefix": name,
                            "cluster": cluster,
                        },
                    },
                ]
            }
        ],
    }


@pytest.mark.parametrize("side", ["client", "server"])
def test_tcp_series(tmp_path: Path, side: str) -> None:
    """TCP through a client (OUTBOUND) or server (INBOUND) sidecar with istio.stats as a
    network filter: opened/closed connections and bytes both ways, exact values, istio-proxy's
    labels (tcp_client_sent_bytes, tcp_server_connection_open) less what only the TCP metadata
    exchange and mTLS give: the client knows its peer from the endpoint's ``istio.workload``
    metadata (no app/version), the server does not know its peer."""
    echo = _TcpEcho()
    stats_filter = {
        "name": "istio.stats",
        "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/stats.PluginConfig",
            "value": {"tcp_reporting_duration": "60s"},
        },
    }
    endpoint = {
        "endpoint": {"address": socket_address(echo.port)},
        "metadata": {
            "filter_metadata": {
                "istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"}
            }
        },
    }
    cluster = static_cluster("tcp_cluster", endpoints=[endpoint], metadata=SERVICE_METADATA)
    direction = "OUTBOUND" if side == "client" else "INBOUND"
    proxy = ProxyProcess(
        "pilotfish",
        _bootstrap(
            side,
            node_metadata(side),
            _tcp_listener("tcp", direction, stats_filter, "tcp_cluster"),
            cluster,
        ),
        tmp_path,
    )
    try:
        with proxy.start():
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", proxy.port("tcp"))) as s:
                    s.sendall(b"x" * 40)
                    got = b""
                    while len(got) < 40:
                        got += s.recv(100)
                    s.shutdown(socket.SHUT_WR)
                    assert s.recv(100) == b""

            def closed() -> bool:
                samples = _scrape(proxy)
                return any(
                    n == "istio_tcp_connections_closed_total" and v == 3 for n, _, v in samples
                )

            wait_for(closed, "3 TCP connections closed in the istio stats", timeout=10)
            samples = _scrape(proxy)
    finally:
        echo.close()
    if side == "client":
        _, _, _, labels = expected_metric(
            "tcp_client_sent_bytes.yaml.tmpl", {"AppVersionFallback": "false"}
        )
        labels.update(
            destination_app="unknown",
            destination_version="unknown",
            destination_principal="unknown",
            source_principal="unknown",
        )
    else:
        _, _, _, labels = expected_metric(
            "tcp_server_connection_open.yaml.tmpl",
            {"AppVersionFallback": "false", "EnableAdditionalLabels": "false"},
        )
        labels.update(
            {f"source_{k}": "unknown" for k in ("workload", "canonical_service", "app")},
            source_canonical_revision="latest",
            source_workload_namespace="unknown",
            source_principal="unknown",
            source_version="unknown",
            source_cluster="unknown",
            destination_principal="unknown",
            connection_security_policy="none",
        )
    for name, value in (
        ("istio_tcp_sent_bytes_total", 120),
        ("istio_tcp_received_bytes_total", 120),
        ("istio_tcp_connections_opened_total", 3),
        ("istio_tcp_connections_closed_total", 3),
    ):
        assert [v for _, v in find_series(samples, name, labels)] == [value], (
            name,
            [lab for n, lab, _ in samples if n == name],
        )
