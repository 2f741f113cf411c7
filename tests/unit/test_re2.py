"""The admin API's regex parameters are RE2: what RE2 rejects is a 400 whose text is RE2's own
error (the expected texts are what Envoy 1.40 answered to ``/stats?filter=<pattern>``)."""

from __future__ import annotations

import pytest

from pilotfish.stats.re2 import RegexError, compile_re2, compile_re2_bytes, re2_error

ENVOY_ERRORS = {
    "[": "missing ]: [",
    "a[bc": "missing ]: [bc",
    "(abc": "missing ): (abc",
    "abc)": "unexpected ): abc)",
    "*a": "no argument for repetition operator: *",
    "a|*": "no argument for repetition operator: *",
    "a**": "bad repetition operator: **",
    "a++": "bad repetition operator: ++",
    "a{2}{3}": "bad repetition operator: {2}{3}",
    "(?=a)": "invalid perl operator: (?=",
    "(?!a)": "invalid perl operator: (?!",
    "(?<=a)": "invalid perl operator: (?<=",
    "(?<!a)": "invalid perl operator: (?<!",
    "(?>a)": "invalid perl operator: (?>",
    "(?P=n)": "invalid perl operator: (?P",
    "(?z)": "invalid perl operator: (?z",
    "(?i": "invalid perl operator: (?i",
    "\\": "trailing \\",
    "(a)\\1": "invalid escape sequence: \\1",
    "\\8": "invalid escape sequence: \\8",
    "\\Z": "invalid escape sequence: \\Z",
    "\\G": "invalid escape sequence: \\G",
    "\\x{110000}": "invalid escape sequence: \\x{110000",
    "[z-a]": "invalid character class range: z-a",
    "[[:foo:]]": "invalid character class range: [:foo:]",
    "x{2,1}": "invalid repetition size: {2,1}",
    "a{1001}": "invalid repetition size: {1001}",
    "(a{2}){1000}": "invalid repetition size: {1000}",
}

ENVOY_ACCEPTS = [
    "^cluster\\.backend\\.",
    "(?<n>a)",
    "(?P<n>a)",
    "(?i)a",
    "(?i:abc)x+?",
    "a{,5}",
    "a{1000}",
    "a{2}?",
    "[[:alpha:]]",
    "[]a]",
    "[^]a]",
    "[[]",
    "()",
    "(|)",
    "\\b\\A\\z",
    "\\x41\\x{42}\\101",
    "é",
]


@pytest.mark.parametrize(("pattern", "error"), list(ENVOY_ERRORS.items()))
def test_re2_errors_are_envoys(pattern: str, error: str) -> None:
    assert re2_error(pattern) == error
    with pytest.raises(RegexError) as info:
        compile_re2(pattern)
    assert str(info.value) == error


@pytest.mark.parametrize("pattern", ENVOY_ACCEPTS)
def test_re2_accepts(pattern: str) -> None:
    assert re2_error(pattern) is None
    compile_re2(pattern)
    compile_re2_bytes(pattern)


def test_compiled_patterns_match_as_re2() -> None:
    assert compile_re2("x[[:digit:]]").search("server.x1")
    assert compile_re2("\\d").search("\u0661") is None  # ASCII classes, as RE2's \d
    assert compile_re2_bytes("^inb.*$").fullmatch(b"inbound")
    # RE2-only syntax is translated for Python's re
    assert compile_re2("^\\x41\\x{42}\\101$").search("ABA")
    assert compile_re2("(?<word>[a-z]+)").search("x1").group("word") == "x"  # type: ignore[union-attr]
    assert compile_re2("\\Q.*\\E").search("a.*b")
    assert compile_re2("\\Q.*\\E").search("ab") is None
    assert compile_re2("[\\x{61}-c]+").fullmatch("abc")
