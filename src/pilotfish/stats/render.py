"""The admin API's stats outputs, byte for byte as Envoy 1.40 writes them. Pure functions over a
Store, run on scrape only.

``/stats`` (text and ``format=json``; source/server/admin/stats_render.cc, stats_request.cc):
text readouts first, then counters and gauges interleaved, each phase sorted by name (plain byte
order), then histograms. ``filter`` (an RE2 regex) is searched in the full stat name;
``usedonly`` drops stats never used.

``/stats/prometheus`` (prometheus_stats.cc, grouped_stats_request.cc): counters, gauges, (text
readouts as gauges when ``text_readouts`` is given), then histograms. Within each type the stats
are grouped by tag-extracted name, groups sorted by that name, and one ``# TYPE`` line starts
each group; inside a group stats are sorted by full name token by token (Envoy's symbol-table
order). Metric names are ``envoy_`` + the sanitized tag-extracted name, except for stats whose
first token is a registered custom namespace (``istio.`` -> ``istio_requests_total``). Label names
are the sanitized tag names (Envoy's own are ``envoy.*``, hence ``envoy_cluster_name``; custom
``stats_tags`` keep their names).

The store keeps no per-flush interval data, so the text/JSON quantiles show the cumulative
values in both the "interval" and "cumulative" positions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import TypeVar

from pilotfish.regex import Regex, compile_admin_filter
from pilotfish.stats.store import Counter, Gauge, Histogram, Store, TextReadout
from pilotfish.stats.tags import Tag, TagExtractor

__all__ = [
    "STATS_TYPES",
    "compile_filter",
    "metric_name",
    "render_json",
    "render_prometheus",
    "render_text",
]

# The ``type`` param, in the order Envoy's help lists them.
STATS_TYPES: tuple[str, ...] = ("All", "Counters", "Histograms", "Gauges", "TextReadouts")
# A filter: an RE2 pattern (text or compiled) or, for invert_filter, a predicate on names.
Filter = str | Regex | Callable[[str], bool] | None

_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
_QUANTILE_LABELS = ("0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100")
_SUPPORTED_QUANTILES_JSON = "[" + ",".join(_QUANTILE_LABELS) + "]"
_UINT64 = (1 << 64) - 1
_PROM_INVALID = re.compile(r"[^a-zA-Z0-9_]")

_Numeric = Counter | Gauge
_S = TypeVar("_S", Counter, Gauge, Histogram, TextReadout)


# --- filters -------------------------------------------------------------------------------


def compile_filter(pattern: str) -> Regex:
    """The admin ``filter`` param. Envoy 1.40 compiles it with RE2 (there is no std::regex
    option any more: a lookahead is rejected with 400 "Invalid re2 regex") and uses
    ``RE2::PartialMatch``, i.e. a search. Raises ``RegexError`` (a ValueError) with RE2's error
    text if invalid. A plain RE2 (UTF-8, no program size limit), not the regex engine."""
    return compile_admin_filter(pattern)


def _matcher(filter_regex: Filter) -> Callable[[str], bool] | None:
    if filter_regex is None:
        return None
    if isinstance(filter_regex, str):
        filter_regex = compile_filter(filter_regex)
    if isinstance(filter_regex, Regex):
        return filter_regex.search_str
    return filter_regex


def _select(
    stats: Iterable[_S], used_only: bool, matches: Callable[[str], bool] | None
) -> list[_S]:
    return [s for s in stats if (not used_only or s.used) and (matches is None or matches(s.name))]


def _check_type(type_filter: str) -> None:
    if type_filter not in STATS_TYPES:
        raise ValueError(f"invalid &type= param: {type_filter}")


# --- number formatting ---------------------------------------------------------------------


def _uint(value: int | float) -> str:
    """Counters and gauges are uint64 in Envoy (a gauge decremented below zero wraps)."""
    v = int(value)
    return str(v if v >= 0 else v & _UINT64)


def _double(value: float | None) -> str:
    """fmt's ``{}`` for a double (shortest round-trip, no trailing ``.0``): 0, 1.05, 1e+16."""
    if value is None or math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _json_double(value: float | None) -> str:
    return "null" if value is None or math.isnan(value) else _double(value)


def _quantiles(h: Histogram) -> list[float | None]:
    return [h.quantile(q) for q in _QUANTILES]


# --- /stats (text) -------------------------------------------------------------------------


def _phases(
    store: Store, type_filter: str, used_only: bool, matches: Callable[[str], bool] | None
) -> tuple[list[TextReadout], list[_Numeric], list[Histogram]]:
    """The three phases of Envoy's StatsRequest, each sorted by name."""
    _check_type(type_filter)
    every = type_filter == "All"
    texts: list[TextReadout] = []
    numeric: list[_Numeric] = []
    hists: list[Histogram] = []
    if every or type_filter == "TextReadouts":
        texts = _select(store.text_readouts(), used_only, matches)
    if every or type_filter == "Counters":
        numeric.extend(_select(store.counters(), used_only, matches))
    if every or type_filter == "Gauges":
        numeric.extend(_select(store.gauges(), used_only, matches))
    if every or type_filter == "Histograms":
        hists = _select(store.histograms(), used_only, matches)
    by_name = attrgetter("name")
    return sorted(texts, key=by_name), sorted(numeric, key=by_name), sorted(hists, key=by_name)


def _quantile_summary(h: Histogram) -> str:
    if not h.used:
        return "No recorded values"
    parts = []
    for label, q in zip(_QUANTILE_LABELS, _quantiles(h), strict=True):
        v = _double(q)
        parts.append(f"P{label}({v},{v})")  # (interval, cumulative): see the module doc
    return " ".join(parts)


def _bucket_counts(h: Histogram, mode: str) -> list[int]:
    """Per bound: the count at or below it (``cumulative``) or in its bucket (``disjoint``)."""
    if mode == "cumulative":
        return h.cumulative()
    return list(h.counts[: len(h.bounds)])


def _bucket_summary(h: Histogram, mode: str) -> str:
    if not h.used:
        return "No recorded values"
    # (interval, cumulative): see the module doc; bounds as printf %g, as Envoy prints them
    return " ".join(
        f"B{bound:g}({n},{n})" for bound, n in zip(h.bounds, _bucket_counts(h, mode), strict=True)
    )


def render_text(
    store: Store,
    *,
    filter_regex: Filter = None,
    used_only: bool = False,
    type_filter: str = "All",
    histogram_buckets: str = "summary",
) -> str:
    """``/stats``: ``name: value`` lines; text readouts as ``name: "value"``; histograms as
    ``name: P0(i,c) P25(i,c) ... P100(i,c)`` or ``name: No recorded values``, or with
    ``histogram_buckets`` ``cumulative``/``disjoint`` as ``name: B0.5(i,c) B1(i,c) ...``."""
    texts, numeric, hists = _phases(store, type_filter, used_only, _matcher(filter_regex))
    lines = [f'{t.name}: "{t.value}"' for t in texts]
    lines.extend(f"{s.name}: {_uint(s.value)}" for s in numeric)
    if histogram_buckets in ("cumulative", "disjoint"):
        lines.extend(f"{h.name}: {_bucket_summary(h, histogram_buckets)}" for h in hists)
    else:
        lines.extend(f"{h.name}: {_quantile_summary(h)}" for h in hists)
    return "".join(line + "\n" for line in lines)


# --- /stats?format=json --------------------------------------------------------------------


def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _json_histogram(h: Histogram) -> str:
    if h.used:
        values = [_json_double(q) for q in _quantiles(h)]
    else:
        values = ["null"] * len(_QUANTILES)
    pairs = ",".join(f'{{"cumulative":{v},"interval":{v}}}' for v in values)
    return f'{{"name":{_json_str(h.name)},"values":[{pairs}]}}'


def _json_bound(value: float) -> str:
    """A bucket bound as Envoy's JSON writes it: the shorter of the fixed and exponent forms
    (``0.5``, ``60000``, ``3e+05``, ``1800000``)."""
    fixed = _double(value)
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    e10 = exponent + len(digits) - 1
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    scientific = f"{'-' if sign else ''}{mantissa}e{'+' if e10 >= 0 else '-'}{abs(e10):02d}"
    return scientific if len(scientific) < len(fixed) else fixed


def _json_buckets(h: Histogram, mode: str) -> str:
    buckets = ",".join(
        f'{{"upper_bound":{_json_bound(bound)},"interval":{n},"cumulative":{n}}}'
        for bound, n in zip(h.bounds, _bucket_counts(h, mode), strict=True)
    )
    return f'{{"name":{_json_str(h.name)},"buckets":[{buckets}]}}'


def render_json(
    store: Store,
    *,
    filter_regex: Filter = None,
    used_only: bool = False,
    type_filter: str = "All",
    histogram_buckets: str = "summary",
) -> str:
    """``/stats?format=json``: ``{"stats":[{"name":..,"value":..},...,{"histograms":{...}}]}``
    (compact, no trailing newline; the histograms entry only when there are histograms)."""
    texts, numeric, hists = _phases(store, type_filter, used_only, _matcher(filter_regex))
    entries = [f'{{"name":{_json_str(t.name)},"value":{_json_str(t.value)}}}' for t in texts]
    entries.extend(f'{{"name":{_json_str(s.name)},"value":{_uint(s.value)}}}' for s in numeric)
    if hists and histogram_buckets in ("cumulative", "disjoint"):
        listed = ",".join(_json_buckets(h, histogram_buckets) for h in hists)
        entries.append(f'{{"histograms":[{listed}]}}')
    elif hists:
        computed = ",".join(_json_histogram(h) for h in hists)
        entries.append(
            f'{{"histograms":{{"supported_quantiles":{_SUPPORTED_QUANTILES_JSON},'
            f'"computed_quantiles":[{computed}]}}}}'
        )
    return '{"stats":[' + ",".join(entries) + "]}"


# --- /stats/prometheus ---------------------------------------------------------------------


def _sanitize_name(name: str) -> str:
    return _PROM_INVALID.sub("_", name)


def _sanitize_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(tags: Sequence[Tag]) -> str:
    return ",".join(f'{_sanitize_name(k)}="{_sanitize_value(v)}"' for k, v in tags)


def metric_name(tag_extracted_name: str, custom_namespaces: frozenset[str]) -> str | None:
    """Envoy's PrometheusStatsRender::metricName: ``envoy_`` + sanitized name, or the name with
    its custom namespace stripped (None if that is empty or starts with a digit: not emitted)."""
    namespace, dot, rest = tag_extracted_name.partition(".")
    if dot and namespace in custom_namespaces:
        name = _sanitize_name(rest)
        return name if name and not name[0].isdigit() else None
    return "envoy_" + _sanitize_name(tag_extracted_name)


def _groups(
    stats: Iterable[_S], extractor: TagExtractor
) -> list[tuple[str, list[tuple[_S, tuple[Tag, ...]]]]]:
    """Stats grouped by tag-extracted name; groups by that name, members by their full name
    compared token by token (Envoy's SymbolTable::lessThan)."""
    groups: dict[str, list[tuple[_S, tuple[Tag, ...]]]] = {}
    for stat in stats:
        extracted, tags = extractor.extract(stat.name)
        groups.setdefault(extracted, []).append((stat, tags))
    for members in groups.values():
        members.sort(key=lambda member: member[0].name.split("."))
    return sorted(groups.items())


def _numeric_lines(name: str, stat: _Numeric, tags: tuple[Tag, ...]) -> list[str]:
    return [f"{name}{{{_labels(tags)}}} {_uint(stat.value)}"]


def _text_readout_lines(name: str, stat: TextReadout, tags: tuple[Tag, ...]) -> list[str]:
    return [f"{name}{{{_labels((*tags, ('text_value', stat.value)))}}} 0"]


def _histogram_lines(name: str, h: Histogram, tags: tuple[Tag, ...]) -> list[str]:
    labels = _labels(tags)
    bucket_labels = labels + "," if tags else ""
    lines = [
        f'{name}_bucket{{{bucket_labels}le="{bound:.32g}"}} {count}'
        for bound, count in zip(h.bounds, h.cumulative(), strict=True)
    ]
    lines.append(f'{name}_bucket{{{bucket_labels}le="+Inf"}} {h.count}')
    lines.append(f"{name}_sum{{{labels}}} {float(h.sum):.32g}")
    lines.append(f"{name}_count{{{labels}}} {h.count}")
    return lines


_PROM_QUANTILES = ("0", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99", "0.995", "0.999", "1")


def _summary_lines(name: str, h: Histogram, tags: tuple[Tag, ...]) -> list[str]:
    """``histogram_buckets=summary``: the quantiles (cumulative, see the module doc)."""
    labels = _labels(tags)
    prefix = labels + "," if tags else ""
    lines = [
        f'{name}{{{prefix}quantile="{label}"}} {"nan" if value is None else f"{value:.32g}"}'
        for label, value in zip(_PROM_QUANTILES, _quantiles(h), strict=True)
    ]
    lines.append(f"{name}_sum{{{labels}}} {float(h.sum):.32g}")
    lines.append(f"{name}_count{{{labels}}} {h.count}")
    return lines


def _family_lines(
    stats: Iterable[_S],
    prom_type: str,
    lines_of: Callable[[str, _S, tuple[Tag, ...]], list[str]],
    extractor: TagExtractor,
    custom_namespaces: frozenset[str],
) -> list[str]:
    out: list[str] = []
    for extracted, members in _groups(stats, extractor):
        name = metric_name(extracted, custom_namespaces)
        if name is None:
            continue
        out.append(f"# TYPE {name} {prom_type}")
        for stat, tags in members:
            out.extend(lines_of(name, stat, tags))
    return out


def render_prometheus(
    store: Store,
    extractor: TagExtractor,
    *,
    used_only: bool = False,
    filter_regex: Filter = None,
    text_readouts: bool = False,
    custom_namespaces: frozenset[str] = frozenset(),
    summary: bool = False,
) -> str:
    """``/stats/prometheus`` (text exposition format 0.0.4). ``text_readouts`` is the
    ``?text_readouts`` param: text readouts become gauges with a ``text_value`` label and value
    0. ``custom_namespaces`` are the namespaces extensions registered (Istio's ``istio``)."""
    matches = _matcher(filter_regex)

    def chosen(stats: Iterable[_S]) -> list[_S]:
        return _select(stats, used_only, matches)

    lines = _family_lines(
        chosen(store.counters()), "counter", _numeric_lines, extractor, custom_namespaces
    )
    lines += _family_lines(
        chosen(store.gauges()), "gauge", _numeric_lines, extractor, custom_namespaces
    )
    if text_readouts:
        lines += _family_lines(
            chosen(store.text_readouts()),
            "gauge",
            _text_readout_lines,
            extractor,
            custom_namespaces,
        )
    if summary:
        lines += _family_lines(
            chosen(store.histograms()), "summary", _summary_lines, extractor, custom_namespaces
        )
    else:
        lines += _family_lines(
            chosen(store.histograms()), "histogram", _histogram_lines, extractor, custom_namespaces
        )
    return "".join(line + "\n" for line in lines)
