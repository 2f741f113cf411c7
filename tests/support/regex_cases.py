"""Bad RE2 patterns and the error text Envoy 1.40 gives for each (from ``/stats?filter=`` and
from a route's ``safe_regex`` in ``--mode validate``): shared by the unit test of
``pilotfish.regex`` and the differential test that asks Envoy again."""

from __future__ import annotations

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
    "\\x{110000}": "invalid escape sequence: \\x{110",
    "[z-a]": "invalid character class range: z-a",
    "[[:foo:]]": "invalid character class range: [:foo:]",
    "x{2,1}": "invalid repetition size: {2,1}",
    "a{1001}": "invalid repetition size: {1001}",
    "(a{2}){1000}": "invalid repetition size: {1000}",
    # Envoy's RE2 reads patterns as Latin-1: no code point above 0xff (checked on Envoy 1.40).
    "\\x{3b1}": "invalid escape sequence: \\x{3b1",
}
