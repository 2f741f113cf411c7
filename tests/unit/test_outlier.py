"""Outlier detection's pure parts: the translation and validation of OutlierDetection, and the
detector driven by a manual clock (success rate, ejection time back-off, jitter, removal)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import OutlierDetection
from pilotfish.stats.store import Store
from pilotfish.upstream.host import FAILED_OUTLIER_CHECK, Host
from pilotfish.upstream.outlier import Detector
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap


class ManualLoop:
    """The two loop calls the detector makes, with a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        self.timers.append((self.now + delay, fn))

        class Handle:
            def cancel(self) -> None:
                pass

        return Handle()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [t for t in self.timers if t[0] <= end]
            if not due:
                break
            first = min(due, key=lambda t: t[0])
            self.timers.remove(first)
            self.now = first[0]
            first[1]()
        self.now = end


def _detector(
    config: OutlierDetection, n: int
) -> tuple[Detector, ManualLoop, list[Host], list[int]]:
    loop = ManualLoop()
    changes: list[int] = []
    hosts = [Host(("10.0.0.1", 80 + i)) for i in range(n)]
    det = Detector(
        config,
        "c",
        Store().scope("cluster.c."),
        loop,  # type: ignore[arg-type]
        lambda host: changes.append(1),
        rng=random.Random(1),
    )
    for h in hosts:
        det.add_host(h)
    det.start()
    return det, loop, hosts, changes


def test_success_rate_ejects_the_host_below_mean_minus_stdev_factor() -> None:
    config = OutlierDetection(
        interval=1.0, max_ejection_percent=100, success_rate_request_volume=10
    )
    det, loop, hosts, _ = _detector(config, 5)
    loop.advance(0.5)
    for i, h in enumerate(hosts):
        for j in range(100):
            # Host 4 fails half its requests; the others none.
            h.outlier.put_http_code(500 if i == 4 and j % 2 else 200)
    assert det.stats.ejections_active.value == 0
    loop.advance(0.5)  # the tick swaps the buckets and evaluates the one just filled
    # rates {100 x4, 50}: mean 90, stdev 20, threshold 90 - 1.9 * 20 = 52
    assert det.sr_numbers[0] == (90.0, pytest.approx(52.0))
    assert hosts[4].health_flags & FAILED_OUTLIER_CHECK
    assert det.stats.enforced[2].value == 1  # ejections_enforced_success_rate


def test_ejection_time_backs_off_and_is_capped() -> None:
    config = OutlierDetection(
        interval=1.0,
        base_ejection_time=2.0,
        max_ejection_time=5.0,
        max_ejection_percent=100,
        consecutive_5xx=1,
    )
    _, loop, hosts, _ = _detector(config, 2)
    host = hosts[0]

    def ejected_for() -> float:
        host.outlier.put_http_code(503)
        start = loop.now
        while host.health_flags & FAILED_OUTLIER_CHECK:
            loop.advance(0.25)
        return loop.now - start

    # base x 1, then x 2, then capped at max_ejection_time (on interval ticks).
    assert ejected_for() == pytest.approx(2.0, abs=1.0)
    assert ejected_for() == pytest.approx(4.0, abs=1.0)
    assert ejected_for() == pytest.approx(5.0, abs=1.0)
    assert host.outlier.num_ejections == 3


def test_jitter_is_added_within_its_maximum() -> None:
    config = OutlierDetection(
        interval=0.1,
        base_ejection_time=1.0,
        max_ejection_time_jitter=0.5,
        max_ejection_percent=100,
        consecutive_5xx=1,
    )
    _, loop, hosts, _ = _detector(config, 2)
    hosts[0].outlier.put_http_code(500)
    jitter = hosts[0].outlier.jitter
    assert 0 <= jitter <= 0.5
    loop.advance(1.0 + jitter - 0.11)
    assert hosts[0].health_flags & FAILED_OUTLIER_CHECK
    loop.advance(0.25)
    assert not hosts[0].health_flags & FAILED_OUTLIER_CHECK


def test_removed_ejected_host_leaves_the_active_count() -> None:
    det, _, hosts, changes = _detector(
        OutlierDetection(consecutive_5xx=2, max_ejection_percent=100), 3
    )
    hosts[1].outlier.put_http_code(502)
    hosts[1].outlier.put_http_code(500)
    assert det.stats.ejections_active.value == 1 and changes == [1]
    det.remove_host(hosts[1])
    assert det.stats.ejections_active.value == 0
    assert hosts[1].outlier is None


def test_a_success_resets_the_consecutive_counts() -> None:
    det, _, hosts, _ = _detector(OutlierDetection(consecutive_5xx=2, max_ejection_percent=100), 2)
    mon = hosts[0].outlier
    for code in (500, 200, 500, 200, 500):
        mon.put_http_code(code)
    assert det.stats.ejections_active.value == 0


def _load(tmp_path: Path, od: str) -> Any:
    path = tmp_path / "b.yaml"
    path.write_text(
        "static_resources: {clusters: [{name: c, type: STATIC, outlier_detection: " + od + "}]}"
    )
    return load_bootstrap(BootstrapSource(config_path=str(path)))


def test_translation_defaults_and_max_ejection_time(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "{base_ejection_time: 400s, consecutive_5xx: 7}")
    od = loaded.model.clusters[0].outlier_detection
    assert od.consecutive_5xx == 7
    assert od.max_ejection_time == 400.0  # the larger of 300 s and base_ejection_time
    assert od.enforcing_consecutive_gateway_failure == 0


@pytest.mark.parametrize(
    ("od", "field", "message"),
    [
        (
            "{base_ejection_time: 10s, max_ejection_time: 5s}",
            "max_ejection_time",
            "cannot be smaller than base_ejection_time",
        ),
        ("{max_ejection_percent: 101}", "max_ejection_percent", "less than or equal to 100"),
        ("{interval: 0s}", "interval", "greater than 0s"),
        ("{monitors: [{name: m, typed_config: {}}]}", "monitors[0]", "is not supported"),
    ],
)
def test_translation_refuses(tmp_path: Path, od: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, od)
    assert info.value.path.endswith(f"outlier_detection.{field}"), info.value.path
    assert message in str(info.value)
