"""Envoy's regex engine: every ``safe_regex`` (route paths, header/query/string matchers,
``regex_rewrite``, SAN and CORS origin matchers, the default stats tag regexes, the admin API's
``filter``/``name_regex``) is Google RE2, which matches in time linear in the input. Python's
``re`` backtracks (``^(a+)+$`` against 30 ``a``s and a ``!`` takes minutes on the event loop), so
it is used for none of them.

The engine is ``google-re2`` (Google's own pybind11 bindings), pinned at the RE2 release Envoy
1.40 builds with (2024-07-02), so error texts and program sizes are Envoy's to the character.
``pyre2`` (Cython) was measured too: about as fast per match here, but it rewrites patterns
before RE2 sees them (``[a`` gives "unexpected end of regular expression", not RE2's
"missing ]: [a"), bundles an older RE2 that refuses ``(?<name>``, can fall back to ``re``, and
does not expose the program size Envoy's limits are about. Matching goes through the binding's
``RE2.Match`` directly (the ``re``-like wrapper around it costs another microsecond): ~0.8 us a
call against ~0.27 us for ``re`` on a short path; a full match first compares the input with
RE2's PossibleMatchRange bounds (~0.05 us), which refuses most routes of a table without the
call (``bench/request_path.py --regex-routes 50``: 25 us per request with RE2 or ``re``; 57 us
against 30 us with ``--regex-unbounded``, where every route is a call).

Envoy 1.40's engine compiles in Latin-1 (checked: the program sizes Envoy reports are Latin-1's,
``\\x{3b1}`` is "invalid escape sequence" and ``^.$`` does not match the two bytes of ``é``).
The pattern's UTF-8 bytes and the wire bytes are matched byte for byte, here as in Envoy. The
admin's ``/stats`` and ``/clusters`` ``filter`` is a plain RE2 in Envoy: UTF-8, no size limit
(:func:`compile_admin_filter`).

Program size (``regex.cc``): without ``google_re2.max_program_size`` a program larger than the
runtime key ``re2.max_program_size.error_level`` (default 100) is refused, and one larger than
``re2.max_program_size.warn_level`` (default: no limit) is logged; the deprecated
``max_program_size`` replaces both. The runtime keys are process-wide, as Envoy's runtime
singleton: :func:`configure` sets them from the bootstrap's static layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from re2 import Options as _Options  # google-re2
from re2 import _re2

__all__ = [
    "ANCHOR_BOTH",
    "Regex",
    "RegexError",
    "Substitution",
    "compile_admin_filter",
    "compile_regex",
    "configure",
]

log = logging.getLogger("pilotfish.regex")

_ERROR_KEY = "re2.max_program_size.error_level"
_WARN_KEY = "re2.max_program_size.warn_level"
_DEFAULT_ERROR_LEVEL = 100

_OPTIONS = _Options()
_OPTIONS.log_errors = False
_OPTIONS.encoding = _Options.Encoding.LATIN1
# The admin's /stats and /clusters ``filter`` use a plain re2::RE2: UTF-8, no size limit.
_UTF8_OPTIONS = _Options()
_UTF8_OPTIONS.log_errors = False
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_RANGE_LEN = 24  # bytes of the PossibleMatchRange bounds

# Process-wide runtime values (Envoy reads its runtime singleton when it compiles a regex).
_levels: dict[str, int | None] = {"error": _DEFAULT_ERROR_LEVEL, "warn": None}


class RegexError(ValueError):
    """A pattern RE2 refuses, or a program over the size limit; the text is Envoy's."""


def configure(runtime: Mapping[str, Any]) -> None:
    """Take ``re2.max_program_size.error_level`` / ``warn_level`` from the bootstrap's merged
    static runtime layers (Envoy accepts numbers and numeric strings, as Istio writes them)."""
    _levels["error"] = _runtime_int(_lookup(runtime, _ERROR_KEY), _DEFAULT_ERROR_LEVEL)
    _levels["warn"] = _runtime_int(_lookup(runtime, _WARN_KEY), None)


def _lookup(runtime: Mapping[str, Any], key: str) -> Any:
    """A runtime key, written flat (``re2.max_program_size.error_level``) or nested
    (``{re2: {max_program_size: {error_level: ...}}}``): Envoy flattens static layers."""
    if key in runtime:
        return runtime[key]
    node: Any = runtime
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _runtime_int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


class Regex:
    """One compiled RE2 program. ``fullmatch``/``search`` take bytes and answer a bool;
    :meth:`spans` gives the capture groups of the leftmost match; :meth:`replace_all` is
    ``RE2::GlobalReplace``. Compiled once at config time, shared by every request."""

    __slots__ = ("bounds", "fullmatch", "groups", "match", "pattern", "program_size", "search")

    def __init__(
        self,
        pattern: str,
        *,
        max_program_size: int | None = None,
        size_check: bool = True,
        utf8: bool = False,
    ) -> None:
        prog = _re2.RE2(pattern.encode(), _UTF8_OPTIONS if utf8 else _OPTIONS)
        if not prog.ok():
            raise RegexError(prog.error().decode(errors="replace"))  # it quotes the pattern
        self.pattern = pattern
        self.program_size: int = prog.ProgramSize()
        self.groups: int = prog.NumberOfCapturingGroups()
        if max_program_size is not None:
            if self.program_size > max_program_size:
                raise RegexError(
                    f"regex '{pattern}' RE2 program size of {self.program_size} > max program "
                    f"size of {max_program_size}. Increase configured max program size if "
                    "necessary."
                )
        elif size_check:
            self._check_levels()
        match = prog.Match
        # RE2's Match(anchor, text, pos, endpos) -> spans; compiled callers (the route matcher)
        # call it with ANCHOR_BOTH themselves, inside ``bounds``, saving a Python frame.
        self.match: Callable[[Any, bytes, int, int], list[tuple[int, int]]] = match
        # Bound once: a per-request match is one call into RE2 and one tuple compare. A call
        # into RE2 costs ~1 us (re: ~0.25 us), mostly the binding; RE2's PossibleMatchRange
        # bounds every string a full match can accept (lo <= s <= hi, bytewise), so a path
        # outside the bounds is refused for ~0.05 us without the call: in a table of regex
        # routes with distinct literal prefixes, most routes cost only that.
        ok, lo, hi = prog.PossibleMatchRange(_RANGE_LEN)
        self.bounds: tuple[bytes, bytes] | None = (lo, hi) if ok else None
        if ok:
            self.fullmatch: Callable[[bytes], bool] = lambda s: (
                lo <= s <= hi and match(_ANCHOR_BOTH, s, 0, len(s))[0][0] >= 0
            )
        else:
            self.fullmatch = lambda s: match(_ANCHOR_BOTH, s, 0, len(s))[0][0] >= 0
        self.search: Callable[[bytes], bool] = lambda s: (
            match(_UNANCHORED, s, 0, len(s))[0][0] >= 0
        )

    def _check_levels(self) -> None:
        size = self.program_size
        error, warn = _levels["error"], _levels["warn"]
        if error is not None and size > error:
            raise RegexError(
                f"regex '{self.pattern}' RE2 program size of {size} > max program size of "
                f"{error} set for the error level threshold. Increase configured max program "
                "size if necessary."
            )
        if warn is not None and size > warn:
            log.warning(
                "regex '%s' RE2 program size of %d > max program size of %d set for the warn "
                "level threshold. Increase configured max program size if necessary.",
                self.pattern,
                size,
                warn,
            )

    def search_str(self, text: str) -> bool:
        """A search in a name (a stat, a cluster): its UTF-8 bytes, as Envoy matches them."""
        return self.search(text.encode())

    def spans(self, data: bytes, pos: int = 0) -> list[tuple[int, int]] | None:
        """The leftmost match at or after ``pos``: the spans of group 0..groups, ``(-1, -1)``
        for a group that did not take part; None without a match."""
        spans = self.match(_UNANCHORED, data, pos, len(data))
        return None if spans[0][0] < 0 else spans

    def replace_all(self, data: bytes, rewrite: Substitution) -> bytes:
        """``RE2::GlobalReplace``: every non-overlapping match replaced; an empty match right
        after the previous match is skipped (unlike Python's ``re.sub``). A rewrite naming a
        group the pattern lacks changes nothing, as in RE2."""
        if rewrite.max_group > self.groups:
            return data
        out: list[bytes] = []
        pos = 0
        end = len(data)
        last_end = -1
        count = 0
        while pos <= end:
            spans = self.spans(data, pos)
            if spans is None:
                break
            start, stop = spans[0]
            if pos < start:
                out.append(data[pos:start])
            if start == last_end and start == stop:
                # An empty match where the last one ended: step over one byte (Latin-1).
                if pos < end:
                    out.append(data[pos : pos + 1])
                pos += 1
                continue
            rewrite.expand(data, spans, out)
            pos = last_end = stop
            count += 1
        if count == 0:
            return data
        if pos < end:
            out.append(data[pos:])
        return b"".join(out)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


class Substitution:
    """An RE2 rewrite string (``regex_rewrite.substitution``): ``\\0``..``\\9`` are groups,
    ``\\\\`` a backslash; any other escape ends that replacement there (RE2's Rewrite fails
    and GlobalReplace keeps what it wrote)."""

    __slots__ = ("max_group", "parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        raw = text.encode()
        parts: list[bytes | int] = []
        literal = bytearray()
        max_group = 0
        i = 0
        while i < len(raw):
            c = raw[i]
            if c != 0x5C:  # not a backslash
                literal.append(c)
                i += 1
                continue
            nxt = raw[i + 1] if i + 1 < len(raw) else -1
            if 0x30 <= nxt <= 0x39:
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(nxt - 0x30)
            elif nxt == 0x5C:
                literal.append(0x5C)
            else:
                break  # invalid rewrite pattern: RE2 stops this replacement here
            i += 2
        if literal:
            parts.append(bytes(literal))
        self.parts: tuple[bytes | int, ...] = tuple(parts)
        # RE2's MaxSubmatch reads the whole rewrite, past an invalid escape too.
        j = 0
        while j < len(raw):
            if raw[j] == 0x5C:
                j += 1
                if j < len(raw) and 0x30 <= raw[j] <= 0x39:
                    max_group = max(max_group, raw[j] - 0x30)
            j += 1
        self.max_group = max_group

    def expand(self, data: bytes, spans: list[tuple[int, int]], out: list[bytes]) -> None:
        for part in self.parts:
            if isinstance(part, int):
                start, stop = spans[part]
                if start >= 0:
                    out.append(data[start:stop])
            else:
                out.append(part)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Substitution) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def compile_regex(
    pattern: str, *, max_program_size: int | None = None, size_check: bool = True
) -> Regex:
    """``pattern`` as Envoy's RE2 engine compiles it; raises :class:`RegexError` with Envoy's
    text (RE2's own error, or the program size message)."""
    return Regex(pattern, max_program_size=max_program_size, size_check=size_check)


def compile_admin_filter(pattern: str) -> Regex:
    """The admin's ``/stats`` and ``/clusters`` ``filter``: Envoy 1.40 builds a plain
    ``re2::RE2`` for it (UTF-8, no program size limit; checked: ``\\x{3b1}`` is accepted
    there and refused by ``/config_dump?name_regex=``, which goes through the engine)."""
    return Regex(pattern, size_check=False, utf8=True)

