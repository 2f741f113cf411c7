"""Active health checking's pure parts: translation (and what is refused by name) and the
interval Envoy picks for a state and transition."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from pilotfish.errors import ConfigError
from pilotfish.upstream.health_check import CHANGE_PENDING, CHANGED, UNCHANGED, HealthChecker
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

BASE = "timeout: 1s, interval: 2s, unhealthy_threshold: 2, healthy_threshold: 3"


def _load(tmp_path: Path, hcs: str) -> Any:
    path = tmp_path / "b.yaml"
    path.write_text(
        "static_resources: {clusters: [{name: c, type: STATIC, connect_timeout: 1s, "
        "health_checks: " + hcs + "}]}"
    )
    return load_bootstrap(BootstrapSource(config_path=str(path))).model.clusters[0]


def test_defaults_follow_envoy(tmp_path: Path) -> None:
    hc = _load(tmp_path, "[{" + BASE + ", unhealthy_interval: 5s, http_health_check: {path: /hz}}]")
    hc = hc.health_checks[0]
    assert (hc.kind, hc.path, hc.expected_statuses) == ("HTTP", "/hz", ((200, 201),))
    assert hc.unhealthy_edge_interval == 5.0  # defaults to unhealthy_interval
    assert hc.healthy_edge_interval == 2.0  # defaults to interval
    assert hc.no_traffic_interval == hc.no_traffic_healthy_interval == 60.0


def test_tcp_payloads_are_hex(tmp_path: Path) -> None:
    hc = _load(
        tmp_path,
        "[{"
        + BASE
        + ", tcp_health_check: {send: {text: '70696e67'}, receive: [{text: '706f6e67'}]}}]",
    ).health_checks[0]
    assert (hc.kind, hc.send, hc.receive) == ("TCP", b"ping", (b"pong",))


@pytest.mark.parametrize(
    ("hcs", "field", "message"),
    [
        ("[{" + BASE + ", grpc_health_check: {}}]", "grpc_health_check", "gRPC"),
        (
            "[{" + BASE + ", http_health_check: {path: /, codec_client_type: HTTP2}}]",
            "http_health_check.codec_client_type",
            "HTTP/2",
        ),
        (
            "[{timeout: 1s, interval: 1s, healthy_threshold: 1, tcp_health_check: {}}]",
            "unhealthy_threshold",
            "value is required",
        ),
        ("[{" + BASE + ", http_health_check: {path: ''}}]", "http_health_check.path", "at least 1"),
        (
            "[{"
            + BASE
            + ", http_health_check: {path: /, expected_statuses: [{start: 200, end: 100}]}}]",
            "http_health_check.expected_statuses[0]",
            "Invalid http status range",
        ),
    ],
)
def test_refused_by_name(tmp_path: Path, hcs: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, hcs)
    assert info.value.path.endswith(f"health_checks[0].{field}"), info.value.path
    assert message in str(info.value)


def test_only_one_health_check(tmp_path: Path) -> None:
    one = "{" + BASE + ", tcp_health_check: {}}"
    with pytest.raises(ConfigError, match="Multiple health checks not supported"):
        _load(tmp_path, f"[{one}, {one}]")


class _Cluster:
    name = "c"
    loop: Any = None


def test_interval_by_state_transition_and_traffic(tmp_path: Path) -> None:
    hc = _load(
        tmp_path,
        "[{" + BASE + ", unhealthy_interval: 5s, unhealthy_edge_interval: 7s,"
        " healthy_edge_interval: 3s, no_traffic_interval: 11s, no_traffic_healthy_interval: 13s,"
        " tcp_health_check: {}}]",
    ).health_checks[0]
    from pilotfish.stats.store import Store

    traffic = [False]
    checker = HealthChecker(
        hc, _Cluster(), Store().scope("c."), lambda host: None, lambda: traffic[0], random.Random(1)
    )
    assert checker._interval(True, UNCHANGED) == 13.0
    assert checker._interval(True, CHANGE_PENDING) == 11.0
    assert checker._interval(False, CHANGED) == 11.0
    traffic[0] = True
    assert checker._interval(True, UNCHANGED) == 2.0
    assert checker._interval(True, CHANGE_PENDING) == 3.0
    assert checker._interval(False, UNCHANGED) == 5.0
    assert checker._interval(False, CHANGE_PENDING) == 7.0
