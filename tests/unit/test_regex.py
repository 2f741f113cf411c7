"""pilotfish.regex: Envoy's RE2 engine. What RE2 rejects is refused with RE2's own text (the
expected texts are what Envoy 1.40 answered, to ``/stats?filter=<pattern>`` and to a route's
``safe_regex`` in ``--mode validate``); matching is RE2's (linear time, Latin-1 as Envoy's
``RE2::Quiet``, leftmost-first); program sizes and their limits are Envoy's; ``replace_all``
is ``RE2::GlobalReplace``."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Iterator

import pytest
from re2 import Options, _re2
from tests.support.istio_data import BOOTSTRAP_GOLDENS
from tests.support.regex_cases import ENVOY_ERRORS

from pilotfish import regex
from pilotfish.mesh.bootstrap import proxy_bootstrap
from pilotfish.regex import RegexError, Substitution, compile_admin_filter, compile_regex
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

BIG = "(?:[a-z]{1,20}[0-9]{1,20}){1,10}"  # an RE2 program of 793


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """The runtime limits are process-wide (the last bootstrap loaded sets them)."""
    regex.configure({})
    yield
    regex.configure({})


ENVOY_ACCEPTS = [
    "^cluster\\.backend\\.",
    "(?<n>a)",
    "(?P<n>a)",
    "(?i)a",
    "(?i:abc)x+?",
    "a{,5}",
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
def test_errors_are_envoys(pattern: str, error: str) -> None:
    with pytest.raises(RegexError) as info:
        compile_regex(pattern)
    assert str(info.value) == error


@pytest.mark.parametrize("pattern", ENVOY_ACCEPTS)
def test_accepts(pattern: str) -> None:
    compile_regex(pattern)
    compile_admin_filter(pattern)


# The admin's /stats and /clusters filter is a plain RE2: UTF-8 and no program size limit
# (Envoy 1.40: 200 for these, while /config_dump?name_regex= refuses them).
ADMIN_ONLY = {
    "\\x{3b1}": "invalid escape sequence: \\x{3b1",
    "a{1000}": "regex 'a{1000}' RE2 program size of 1004 > max program size of 100 set for the "
    "error level threshold. Increase configured max program size if necessary.",
}


@pytest.mark.parametrize(("pattern", "engine_error"), list(ADMIN_ONLY.items()))
def test_admin_filter_is_plain_re2(pattern: str, engine_error: str) -> None:
    compile_admin_filter(pattern)
    with pytest.raises(RegexError) as info:
        compile_regex(pattern)
    assert str(info.value) == engine_error


def test_admin_filter_is_utf8() -> None:
    assert compile_admin_filter("^.$").search_str("\u00e9")
    assert not compile_regex("^.$").search_str("\u00e9")
    with pytest.raises(RegexError, match=r"invalid escape sequence: \\x\{110000$"):
        compile_admin_filter("\\x{110000}")


def test_linear_time() -> None:
    """The issue's table: Python's re needs minutes for this; RE2 answers at once."""
    r = compile_regex("^(a+)+$")
    text = b"a" * 5000 + b"!"
    start = time.perf_counter()
    assert not r.fullmatch(text)
    assert not r.search(text)
    assert r.fullmatch(b"a" * 5000)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("pattern", "text", "full", "search"),
    [
        # RE2 semantics where Python's re differs (or does not compile the pattern)
        ("a$", b"a\n", False, False),  # $ is \z without (?m); Python's $ matches before \n
        ("a\\z", b"a", True, True),
        ("a(?i)b", b"aB", True, True),  # (?i) in the middle: Python refuses it
        ("(?i)k", "\u212a".encode(), False, False),  # Latin-1: the Kelvin sign is 3 bytes
        ("^.$", "\u00e9".encode(), False, False),  # é is two Latin-1 characters
        ("^..$", "\u00e9".encode(), True, True),
        ("\\w", "\u00e9".encode(), False, False),  # \w is ASCII
        ("\\p{Greek}", "\u03b1".encode(), False, False),  # no Greek in Latin-1
        ("\\C", b"x", True, True),
        ("[[:digit:]]+", b"123", True, True),  # POSIX classes
        ("[[:^alpha:]]", b"1", True, True),
        ("a|ab", b"ab", True, True),  # leftmost-first, but a full match tries both
        ("(?U)a+", b"aaa", True, True),
        ("\\Qa.b\\E", b"axb", False, False),
        ("x*", b"", True, True),
    ],
)
def test_matching(pattern: str, text: bytes, full: bool, search: bool) -> None:
    r = compile_regex(pattern)
    assert r.fullmatch(text) is full
    assert r.search(text) is search


def test_spans_are_leftmost_first() -> None:
    assert compile_regex("(a|ab)(c|bcd)?").spans(b"abcd") == [(0, 4), (0, 1), (1, 4)]
    assert compile_regex("(x)?y").spans(b"zy") == [(1, 2), (-1, -1)]
    assert compile_regex("q").spans(b"zy") is None
    assert compile_regex("^a").spans(b"aa", 1) is None  # ^ is the text's start, not pos


@pytest.mark.parametrize(
    ("pattern", "rewrite", "text", "out"),
    [
        ("a*", "X", b"baaac", b"XbXcX"),  # no empty match right after a match (re.sub: XbXXcX)
        ("(o)", "[\\1\\0\\\\]", b"foo", b"f[oo\\][oo\\]"),
        ("(o)", "\\2", b"foo", b"foo"),  # a group the pattern lacks: nothing changes
        ("(o)", "a\\qb\\1", b"foo", b"faa"),  # invalid escape: the rewrite stops there
        ("^/api/(v\\d)/(.*)$", "/\\2/\\1", b"/api/v1/x/y", b"/x/y/v1"),
        ("x", "y", b"abc", b"abc"),
        ("", "-", b"ab", b"-a-b-"),
    ],
)
def test_replace_all_is_global_replace(pattern: str, rewrite: str, text: bytes, out: bytes) -> None:
    assert compile_regex(pattern).replace_all(text, Substitution(rewrite)) == out


def test_program_size_limits(caplog: pytest.LogCaptureFixture) -> None:
    # Sizes as Envoy 1.40 reports them (its warn-level log).
    sizes = {"abc": 7, "abc.*": 9, "[a-z]{1,20}[0-9]{1,20}": 82, "\\p{Greek}+": 1}
    for pattern, size in sizes.items():
        assert compile_regex(pattern).program_size == size
    big = BIG
    with pytest.raises(RegexError) as info:
        compile_regex(big)
    assert str(info.value) == (
        f"regex '{big}' RE2 program size of 793 > max program size of 100 set for the error "
        "level threshold. Increase configured max program size if necessary."
    )
    compile_regex(big, size_check=False)  # the admin API's and the default tag regexes
    with pytest.raises(RegexError) as info:
        compile_regex("abc.*", max_program_size=5)
    assert str(info.value) == (
        "regex 'abc.*' RE2 program size of 9 > max program size of 5. Increase configured max "
        "program size if necessary."
    )
    compile_regex(big, max_program_size=1000)  # the deprecated field replaces the runtime
    regex.configure({"re2": {"max_program_size": {"error_level": "1000", "warn_level": 5}}})
    with caplog.at_level(logging.WARNING, logger="pilotfish.regex"):
        compile_regex(big)
    assert "RE2 program size of 793 > max program size of 5 set for the warn level" in (
        caplog.text
    )
    regex.configure({"re2.max_program_size.error_level": 5.7})
    with pytest.raises(RegexError, match="> max program size of 5 set for the error"):
        compile_regex("abc.*")
    regex.configure({"re2.max_program_size.error_level": "x"})  # not a number: default
    with pytest.raises(RegexError, match="max program size of 100 "):
        compile_regex(big)


@pytest.mark.parametrize("source", ["pilotfishctl", "istio"])
def test_mesh_bootstraps_raise_the_limit_as_istio(source: str) -> None:
    """Istio's bootstrap sets re2.max_program_size.error_level to 32768 (VirtualService
    regexes); the one pilotfishctl gives its proxies does the same."""
    if source == "istio":
        text = (BOOTSTRAP_GOLDENS / "default_golden.json").read_text()
    else:
        text = json.dumps(proxy_bootstrap("127.0.0.1:15010", "sidecar~x", cluster="c"))
    with pytest.raises(RegexError):
        compile_regex(BIG)
    load_bootstrap(BootstrapSource(config_yaml=text))
    assert compile_regex(BIG).program_size == 793


def test_python_re_would_differ() -> None:
    """The cases above are real differences: Python's re answers otherwise."""
    assert re.fullmatch(b"a$", b"a\n") is None and re.search(b"a$", b"a\n") is not None
    with pytest.raises(re.error):
        re.compile("a(?i)b")


@pytest.mark.parametrize(
    "pattern",
    [
        "/api/v[0-9]+/svc[0-9]/[a-z0-9-]+(/[0-9]+)?",
        "(?i)/Ab[c-e]*",
        "/a|/ab|/b.",
        "/[a-c]{1,3}\\.x?",
        "\\x00?a*\\xff",
        "",
        "(?i)\\xe9a",
        "/v1.*",
    ],
)
def test_fullmatch_prefilter_never_refuses_a_match(pattern: str) -> None:
    """``fullmatch`` skips RE2 for a string outside PossibleMatchRange's bounds: random strings
    (seeded) that RE2 matches are all still matched."""
    opts = Options()
    opts.log_errors = False
    opts.encoding = Options.Encoding.LATIN1
    raw = _re2.RE2(pattern.encode(), opts)
    anchor = _re2.RE2.Anchor.ANCHOR_BOTH
    compiled = compile_regex(pattern)
    rng = random.Random(17)
    alphabet = b"/aAbBcdeE.x0159-v\x00\xe9\xc9\xff"
    for _ in range(3000):
        s = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 9)))
        if rng.random() < 0.3:
            s = b"/" + s
        want = raw.Match(anchor, s, 0, len(s))[0][0] >= 0
        assert compiled.fullmatch(s) is want, s
    for s in (b"/api/v1/svc2/x-1/3", b"/aBcde", b"/ab", b"/b?", b"/cc.", b"\xff", b"", b"\xc9A"):
        want = raw.Match(anchor, s, 0, len(s))[0][0] >= 0
        assert compiled.fullmatch(s) is want, s
