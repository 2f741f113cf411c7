"""Stats with Envoy's names. Counting is a plain attribute increment (``counter.value += 1``,
~15-30 ns); text is rendered only when /stats or /stats/prometheus is read.

Hot code keeps references to its Counter/Gauge/Histogram objects and never looks names up.
The bootstrap's ``stats_matcher`` decides which stats are *listed*: a rejected stat is still a
working object (code does not need to care) but the store does not keep it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from pilotfish.model.bootstrap import StatsConfig, StatsMatcher

# Envoy's default histogram bucket bounds (milliseconds for time histograms).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)


class Counter:
    """Hot code does ``counter.value += 1``; ``inc`` also marks the counter used when adding 0
    (Envoy lists such counters under ``usedonly``)."""

    __slots__ = ("_used", "name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self._used = False

    def inc(self, n: int = 1) -> None:
        self.value += n
        self._used = True

    @property
    def used(self) -> bool:
        return self._used or self.value != 0


class Gauge:
    """``used`` is set by ``set``; hot code may also do ``gauge.value += 1`` (then a non-zero
    value marks it used)."""

    __slots__ = ("_used", "accumulate", "name", "value")

    def __init__(self, name: str, *, accumulate: bool = True) -> None:
        self.name = name
        self.value = 0
        self._used = False
        self.accumulate = accumulate  # Envoy's import mode, for hot restart; informational

    def set(self, value: int) -> None:
        self.value = value
        self._used = True

    def inc(self, n: int = 1) -> None:
        self.value += n
        self._used = True

    def dec(self, n: int = 1) -> None:
        self.value -= n

    @property
    def used(self) -> bool:
        return self._used or self.value != 0


class ComputedGauge(Gauge):
    """A gauge whose value is computed when read (e.g. circuit-breaker headroom), so the
    request path only updates the quantity it is computed from."""

    __slots__ = ("_fn",)

    def __init__(self, name: str, fn: Callable[[], int]) -> None:
        self._fn = fn
        super().__init__(name, accumulate=False)
        self._used = True

    @property
    def value(self) -> int:
        return self._fn()

    @value.setter
    def value(self, _: int) -> None:
        return


class Histogram:
    """Cumulative bucket counts, sum and count (what Prometheus needs); quantiles are estimated
    from the buckets by linear interpolation."""

    __slots__ = ("bounds", "count", "counts", "name", "sum", "unit")

    def __init__(
        self, name: str, bounds: tuple[float, ...] = DEFAULT_BUCKETS, unit: str = "ms"
    ) -> None:
        self.name = name
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above the highest bound
        self.sum = 0.0
        self.count = 0
        self.unit = unit

    def record(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    @property
    def used(self) -> bool:
        return self.count != 0

    def cumulative(self) -> list[int]:
        out = []
        total = 0
        for c in self.counts[:-1]:
            total += c
            out.append(total)
        return out

    def quantile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        lower = 0.0
        for i, c in enumerate(self.counts):
            upper = self.bounds[i] if i < len(self.bounds) else lower * 2 or 1.0
            if c and seen + c >= rank:
                return lower + (upper - lower) * ((rank - seen) / c)
            seen += c
            lower = upper
        return lower


class TextReadout:
    __slots__ = ("_used", "_value", "name")

    def __init__(self, name: str, value: str = "") -> None:
        self.name = name
        self._value = value
        self._used = False

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, value: str) -> None:
        self._value = value
        self._used = True

    @property
    def used(self) -> bool:
        return self._used


def _matcher_accepts(m: StatsMatcher, name: str) -> bool:
    if m.reject_all:
        return False
    raw = name.encode()
    if m.inclusion is not None:
        return any(p.matches(raw) for p in m.inclusion)
    if m.exclusion is not None:
        return not any(p.matches(raw) for p in m.exclusion)
    return True


class Store:
    def __init__(self, config: StatsConfig | None = None) -> None:
        self.config = config or StatsConfig()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        self._text: dict[str, TextReadout] = {}
        self._accept_cache: dict[str, bool] = {}
        self.buckets = self.config.histogram_buckets or DEFAULT_BUCKETS

    def accepts(self, name: str) -> bool:
        ok = self._accept_cache.get(name)
        if ok is None:
            ok = self._accept_cache[name] = _matcher_accepts(self.config.matcher, name)
        return ok

    def counter(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            c = Counter(name)
            if self.accepts(name):
                self._counters[name] = c
        return c

    def gauge(self, name: str, *, accumulate: bool = True) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            g = Gauge(name, accumulate=accumulate)
            if self.accepts(name):
                self._gauges[name] = g
        return g

    def computed_gauge(self, name: str, fn: Callable[[], int]) -> Gauge:
        g = ComputedGauge(name, fn)
        if self.accepts(name):
            self._gauges[name] = g
        return g

    def histogram(self, name: str, unit: str = "ms") -> Histogram:
        h = self._histograms.get(name)
        if h is None:
            h = Histogram(name, self.buckets, unit)
            if self.accepts(name):
                self._histograms[name] = h
        return h

    def text_readout(self, name: str) -> TextReadout:
        t = self._text.get(name)
        if t is None:
            t = TextReadout(name)
            if self.accepts(name):
                self._text[name] = t
        return t

    def scope(self, prefix: str) -> Scope:
        return Scope(self, prefix)

    def remove_prefix(self, prefix: str) -> None:
        """Forget every stat under ``prefix`` (a removed cluster or listener)."""
        for table in (self._counters, self._gauges, self._histograms, self._text):
            for name in [n for n in table if n.startswith(prefix)]:
                del table[name]

    def counters(self) -> Iterator[Counter]:
        return iter(list(self._counters.values()))

    def gauges(self) -> Iterator[Gauge]:
        return iter(list(self._gauges.values()))

    def histograms(self) -> Iterator[Histogram]:
        return iter(list(self._histograms.values()))

    def text_readouts(self) -> Iterator[TextReadout]:
        return iter(list(self._text.values()))


class Scope:
    """Stats under a common prefix (``cluster.NAME.``, ``http.PREFIX.``)."""

    __slots__ = ("prefix", "store")

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix if not prefix or prefix.endswith(".") else prefix + "."

    def counter(self, name: str) -> Counter:
        return self.store.counter(self.prefix + name)

    def gauge(self, name: str, *, accumulate: bool = True) -> Gauge:
        return self.store.gauge(self.prefix + name, accumulate=accumulate)

    def computed_gauge(self, name: str, fn: Callable[[], int]) -> Gauge:
        return self.store.computed_gauge(self.prefix + name, fn)

    def histogram(self, name: str, unit: str = "ms") -> Histogram:
        return self.store.histogram(self.prefix + name, unit)

    def text_readout(self, name: str) -> TextReadout:
        return self.store.text_readout(self.prefix + name)

    def scope(self, prefix: str) -> Scope:
        return Scope(self.store, self.prefix + prefix)
