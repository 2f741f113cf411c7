"""Stats whose series carry labels given by the code that records them (Envoy's stats created
"from stat names with tags", which Istio's stats filter uses): a family per metric name, a
series per label set. Counting is an attribute increment on a series object the caller keeps;
``/stats/prometheus`` renders the families beside the store's stats.

Series live in a ``TaggedStats`` owned by the server (not in the ``Store``: their names are not
tag-extracted, their labels are given). ``rotate`` forgets every series (Istio's stats
``rotation_interval``: label sets derived from requests must not grow without bound).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from pilotfish.stats.store import Counter, Gauge, Histogram

Tag = tuple[str, str]
# A series is a store Counter, Gauge or Histogram (hot code increments ``value`` or calls
# ``record`` knowing which).
Series = Any


class Family:
    __slots__ = ("bounds", "kind", "name", "series")

    def __init__(self, name: str, kind: str, bounds: tuple[float, ...] = ()) -> None:
        self.name = name  # the stat name (``istiocustom.istio_requests_total``)
        self.kind = kind  # counter | gauge | histogram
        self.bounds = bounds
        self.series: dict[tuple[Tag, ...], Series] = {}

    def get(self, tags: tuple[Tag, ...]) -> Series:
        s = self.series.get(tags)
        if s is None:
            if self.kind == "counter":
                s = Counter(self.name)
            elif self.kind == "gauge":
                s = Gauge(self.name)
            else:
                s = Histogram(self.name, self.bounds)
            self.series[tags] = s
        return s

    def members(self) -> list[tuple[Series, tuple[Tag, ...]]]:
        return [(s, tags) for tags, s in self.series.items()]


class TaggedStats:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        # Called after ``rotate`` so that holders of series objects drop their references
        # (weakly held: a replaced listener's filter config must not be kept alive).
        self._on_rotate: list[weakref.WeakMethod[Callable[[], None]]] = []
        self.rotation_timer: Any = None  # the rotation_interval timer, one per server

    def on_rotate(self, method: Callable[[], None]) -> None:
        self._on_rotate.append(weakref.WeakMethod(method))

    def family(self, name: str, kind: str, bounds: tuple[float, ...] = ()) -> Family:
        f = self.families.get(name)
        if f is None:
            f = self.families[name] = Family(name, kind, bounds)
        return f

    def rotate(self) -> None:
        for f in self.families.values():
            f.series.clear()
        alive = []
        for ref in self._on_rotate:
            hook = ref()
            if hook is not None:
                hook()
                alive.append(ref)
        self._on_rotate = alive
