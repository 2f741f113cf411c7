"""The drain decision (pilotfish.drain.DrainManager) with a manual clock."""

from __future__ import annotations

import random

from pilotfish.drain import DrainManager


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def _share(dm: DrainManager, handler: object, n: int = 2000) -> float:
    return sum(dm.drain_close(handler) for _ in range(n)) / n


def test_gradual_share_rises_with_whole_seconds_and_is_full_at_half_time() -> None:
    clock = Clock()
    dm = DrainManager(clock, "gradual", 10, random.Random(3))  # type: ignore[arg-type]
    h = object()
    assert not dm.drain_close(h)  # no drain sequence
    dm.start()
    clock.now += 0.9
    assert _share(dm, h) == 0.0
    clock.now += 0.2  # 1.1 s: 2 x 1 / 10
    assert 0.15 < _share(dm, h) < 0.25
    clock.now += 2.0  # 3.1 s: 2 x 3 / 10
    assert 0.52 < _share(dm, h) < 0.68
    clock.now += 2.0  # 5.1 s: from half the drain time on, every response
    assert _share(dm, h) == 1.0


def test_immediate_scope_modify_only_and_health_check_failure() -> None:
    clock = Clock()
    dm = DrainManager(clock, "immediate", 10)  # type: ignore[arg-type]
    inbound, outbound, spared = object(), object(), object()
    dm.exempt(spared)
    dm.health_check_failed = True
    assert dm.drain_close(inbound) and not dm.drain_close(spared)
    dm.health_check_failed = False
    dm.start([inbound])
    assert dm.drain_close(inbound) and not dm.drain_close(outbound)
    dm.start()  # a whole-server drain covers every listener but the MODIFY_ONLY ones
    assert dm.drain_close(outbound) and not dm.drain_close(spared)
