"""RE2 on both proxies (issue 17): one route table of regex matchers and rewrites, served by
Envoy 1.40 and by pilotfish, answers the same; a pattern that makes a backtracking engine take
exponential time is answered at once while another client is served; and every bad pattern is
refused with Envoy's words.

* ``test_semantics``: RE2 semantics where Python's ``re`` differs (``\\z``, ``(?i)`` in the
  middle, Unicode classes on Latin-1 input, ``\\C``, POSIX classes, ``\\Q...\\E``,
  leftmost-first alternation, GlobalReplace's empty matches), each case a request whose answer
  (the route's name, or a redirect's Location) is asserted on both proxies.
* ``test_redos_is_linear``: the issue's table, ``^(a+)+$`` against 5,000 ``a``s and a ``!``.
* ``test_admin_regex_errors``: ``/stats?filter=``, ``/clusters?filter=``,
  ``/config_dump?name_regex=`` with bad patterns, the answers compared with Envoy's.
* ``test_bad_pattern_is_refused_as_envoy``: each bad pattern (syntax, program size, the
  deprecated ``max_program_size``, ``default_regex_engine``) in a bootstrap; Envoy's
  ``--mode validate`` message must be what pilotfish says after the field path.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.support.pairs import Deployment, deploy, each_proxy, place_listeners
from tests.support.proxies import ENVOY_BIN, admin_request, bootstrap, http_listener, http_request
from tests.support.regex_cases import ENVOY_ERRORS

from pilotfish.errors import ConfigError
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap


def _direct(name: str, match: dict[str, Any]) -> dict[str, Any]:
    return {"match": match, "direct_response": {"status": 200, "body": {"inline_string": name}}}


def _header(name: str, regex: str) -> dict[str, Any]:
    """Route ``/h/<name>`` when header ``x-t`` fully matches ``regex``."""
    return _direct(
        name,
        {
            "prefix": f"/h/{name}",
            "headers": [{"name": "x-t", "string_match": {"safe_regex": {"regex": regex}}}],
        },
    )


def _rewrite(prefix: str, regex: str, substitution: str) -> dict[str, Any]:
    """A redirect whose Location shows the path as ``regex_rewrite`` rewrote it."""
    return {
        "match": {"prefix": prefix},
        "redirect": {"regex_rewrite": {"pattern": {"regex": regex}, "substitution": substitution}},
    }


ROUTES = [
    _direct("redos", {"prefix": "/redos", "headers": [
        {"name": "x-user", "string_match": {"safe_regex": {"regex": "^(a+)+$"}}}]}),
    _direct("end-z", {"safe_regex": {"regex": "/end\\z"}}),
    _direct("inline-i", {"safe_regex": {"regex": "/inline(?i)ab"}}),
    _direct("posix", {"safe_regex": {"regex": "/posix[[:digit:]]+[[:^alpha:]]"}}),
    _direct("any-byte", {"safe_regex": {"regex": "/c\\C"}}),
    _direct("quoted", {"safe_regex": {"regex": "/q\\Q.*\\E"}}),
    _direct("bounded", {"safe_regex": {"regex": "/n[0-9]{2,3}"}}),
    _header("one-char", "^.$"),
    _header("letters", "^\\pL+$"),
    _header("greek", "\\p{Greek}+"),
    _header("word", "\\w+"),
    _direct("query", {"prefix": "/qp", "query_parameters": [
        {"name": "id", "string_match": {"safe_regex": {"regex": "[0-9]+"}}}]}),
    _rewrite("/alt/", "^/alt/(a|ab)(.*)$", "/\\1-\\2"),
    _rewrite("/empty/", "a*", "-"),
    _rewrite("/groups/", "/groups/(\\w+)/(\\w+)", "/\\2/\\1/\\0"),
    _rewrite("/nogroup/", "/nogroup/(x)", "/\\2"),
    _rewrite("/badesc/", "/badesc/(x)", "/y\\qz"),
    _direct("none", {"prefix": "/"}),
]

# id -> (path, x-t header bytes or None, expected body or Location)
CASES: dict[str, tuple[str, bytes | None, str]] = {
    "end-z": ("/end", None, "end-z"),
    "end-z-longer": ("/endx", None, "none"),
    "inline-i": ("/inlineAB", None, "inline-i"),
    "inline-i-prefix-sensitive": ("/INLINEab", None, "none"),
    "posix": ("/posix12-", None, "posix"),
    "posix-alpha": ("/posix12a", None, "none"),
    "any-byte": ("/cx", None, "any-byte"),
    "quoted": ("/q.*", None, "quoted"),
    "quoted-literal": ("/qx*", None, "none"),
    "bounded": ("/n123", None, "bounded"),
    "bounded-long": ("/n1234", None, "none"),
    "latin1-one-byte": ("/h/one-char", b"\xe9", "one-char"),
    "utf8-two-bytes": ("/h/one-char", "é".encode(), "none"),
    "latin1-letter": ("/h/letters", b"\xe9t\xe9", "letters"),
    "utf8-not-letters": ("/h/letters", "été".encode(), "none"),
    "greek-none-in-latin1": ("/h/greek", "αβγ".encode(), "none"),
    "word-ascii": ("/h/word", b"abc_1", "word"),
    "word-not-latin1": ("/h/word", b"\xe9", "none"),
    "query": ("/qp?id=42", None, "query"),
    "query-not-full": ("/qp?id=42x", None, "none"),
    "leftmost-first": ("/alt/abc", None, "/a-bc"),
    # RE2 skips the empty match right after "aaa" (Python's re.sub would not); the Location
    # gets a leading slash.
    "global-replace-empty": ("/empty/baaac", None, "/-/-e-m-p-t-y-/-b-c-"),
    "groups": ("/groups/one/two", None, "/two/one//groups/one/two"),
    "missing-group-unchanged": ("/nogroup/x", None, "/nogroup/x"),
    "bad-escape-stops": ("/badesc/x", None, "/y"),
}


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    listeners = [http_listener("main", ROUTES)]
    hosts = place_listeners(listeners)
    yield from deploy(request, tmp_path_factory, "regex", bootstrap(listeners, []), hosts)


def _ask(proxy: Deployment, path: str, header: bytes | None = None) -> tuple[int, str]:
    """(status, the body, or the Location of a redirect)."""
    _, port = proxy.addr("main")
    raw = f"GET {path} HTTP/1.1\r\nhost: example.com\r\n".encode()
    if header is not None:
        raw += b"x-t: " + header + b"\r\n"
    status, headers, body = http_request(port, raw + b"\r\n")
    if status == 301:
        location = headers.get("location", "")
        return status, urllib.parse.urlsplit(location).path
    return status, body.decode()


@each_proxy()
@pytest.mark.parametrize("case", list(CASES))
def test_semantics(proxy: Deployment, case: str) -> None:
    path, header, expected = CASES[case]
    status, answer = _ask(proxy, path, header)
    assert answer == expected, (status, answer)


@each_proxy()
def test_redos_is_linear(proxy: Deployment) -> None:
    """5,000 ``a``s and a ``!`` against ``^(a+)+$``: a backtracking engine needs longer than
    the universe; RE2 (both proxies) answers at once, and another client is served
    meanwhile. The 2 s bound only catches exponential time."""
    _, port = proxy.addr("main")
    evil = b"GET /redos HTTP/1.1\r\nhost: x\r\nx-user: " + b"a" * 5000 + b"!\r\n\r\n"
    results: dict[str, tuple[int, float]] = {}

    def send(name: str, raw: bytes) -> None:
        start = time.monotonic()
        status, _, _ = http_request(port, raw, timeout=10)
        results[name] = (status, time.monotonic() - start)

    attacker = threading.Thread(target=send, args=("evil", evil))
    attacker.start()
    send("other", b"GET /end HTTP/1.1\r\nhost: x\r\n\r\n")
    attacker.join(10)
    assert results["evil"][0] == 200  # no match: the catch-all route
    assert results["other"][0] == 200
    assert results["evil"][1] < 2.0, results
    assert results["other"][1] < 2.0, results
    good = b"GET /redos HTTP/1.1\r\nhost: x\r\nx-user: " + b"a" * 5000 + b"\r\n\r\n"
    assert http_request(port, good)[2] == b"redos"


ADMIN_QUERIES = [
    "/stats?filter=" + urllib.parse.quote("(?=a)"),
    "/stats?filter=" + urllib.parse.quote("\\x{110000}"),
    "/stats?filter=" + urllib.parse.quote("a{2}{3}"),
    "/clusters?filter=" + urllib.parse.quote("[z-a]"),
    "/config_dump?name_regex=" + urllib.parse.quote("\\x{3b1}"),
    "/config_dump?name_regex=" + urllib.parse.quote("(?:[a-z]{1,20}[0-9]{1,20}){1,10}"),
]
# What Envoy 1.40 answered (checked by the envoy run of the test).
ADMIN_ANSWERS = [
    "Invalid re2 regex: invalid perl operator: (?=",
    "Invalid re2 regex: invalid escape sequence: \\x{110000",
    "Invalid re2 regex: bad repetition operator: {2}{3}",
    "Invalid re2 regex",
    "INVALID_ARGUMENT: Error while parsing name_regex from \\x{3b1}: invalid escape sequence: "
    "\\x{3b1",
    "INVALID_ARGUMENT: Error while parsing name_regex from (?:[a-z]{1,20}[0-9]{1,20}){1,10}: "
    "regex '(?:[a-z]{1,20}[0-9]{1,20}){1,10}' RE2 program size of 793 > max program size of 100 "
    "set for the error level threshold. Increase configured max program size if necessary.",
]


@each_proxy()
def test_admin_regex_errors(proxy: Deployment) -> None:
    got = []
    for query in ADMIN_QUERIES:
        reply = admin_request(proxy.proxy.admin_port, query)
        assert reply.status == 400, (query, reply.status)
        got.append(reply.text.strip())
    assert got == ADMIN_ANSWERS
    # A pattern only the admin's UTF-8 RE2 takes: not an error there.
    assert admin_request(proxy.proxy.admin_port, "/stats?filter=%5Cx%7B3b1%7D").status == 200


# --- bad patterns: Envoy's --mode validate message, pilotfish's error ---------------------------

_BASE = bootstrap([http_listener("l", [_direct("r", {"prefix": "/"})])], [])
_BASE["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = 10000
_ROUTE = ("static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
          "route_config", "virtual_hosts", 0, "routes", 0)


def _with(match: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_BASE)
    node: Any = doc
    for key in _ROUTE:
        node = node[key]
    if match is not None:
        node["match"] = match
    doc.update(top)
    return doc


def _runtime(**values: Any) -> dict[str, Any]:
    return {"layers": [{"name": "static", "static_layer": values}]}


BIG = "(?:[a-z]{1,20}[0-9]{1,20}){1,10}"
BAD_CONFIGS: dict[str, dict[str, Any]] = {
    **{
        f"syntax {pattern}": _with({"safe_regex": {"regex": pattern}})
        for pattern in ENVOY_ERRORS
    },
    "header matcher": _with({"prefix": "/", "headers": [
        {"name": "x", "string_match": {"safe_regex": {"regex": "a**"}}}]}),
    "program size": _with({"safe_regex": {"regex": BIG}}),
    "runtime error level": _with(
        {"safe_regex": {"regex": "abc.*"}},
        layered_runtime=_runtime(**{"re2.max_program_size.error_level": 5}),
    ),
    "nested runtime key": _with(
        {"safe_regex": {"regex": "abc.*"}},
        layered_runtime=_runtime(re2={"max_program_size": {"error_level": "5"}}),
    ),
    "max_program_size": _with(
        {"safe_regex": {"regex": "abc.*", "google_re2": {"max_program_size": 3}}}
    ),
    "regex engine": _with(default_regex_engine={"name": "x", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
}
GOOD_CONFIGS: dict[str, dict[str, Any]] = {
    "runtime raises the limit": _with(
        {"safe_regex": {"regex": BIG}},
        layered_runtime=_runtime(**{"re2.max_program_size.error_level": "32768"}),
    ),
    "max_program_size raises the limit": _with(
        {"safe_regex": {"regex": BIG, "google_re2": {"max_program_size": 1000}}}
    ),
    "warn level only warns": _with(
        {"safe_regex": {"regex": "abc.*"}},
        layered_runtime=_runtime(**{"re2.max_program_size.warn_level": 5}),
    ),
    "google re2 engine": _with(default_regex_engine={
        "name": "envoy.regex_engines.google_re2",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.regex_engines.v3.GoogleRE2"},
    }),
}


def _envoy_validate(doc: dict[str, Any], path: Path) -> tuple[int, str]:
    path.write_text(json.dumps(doc))
    r = subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "-l", "critical"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    marker = f"error initializing configuration '{path}': "
    lines = [line for line in (r.stdout + r.stderr).splitlines() if marker in line]
    return r.returncode, lines[-1].split(marker, 1)[1] if lines else ""


def _pilotfish_validate(doc: dict[str, Any], path: Path) -> str | None:
    path.write_text(json.dumps(doc))
    try:
        load_bootstrap(BootstrapSource(config_path=str(path)))
    except ConfigError as e:
        return str(e)
    finally:
        from pilotfish import regex

        regex.configure({})  # the runtime limits are process-wide
    return None


@pytest.mark.envoy
@pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy")
def test_bad_pattern_is_refused_as_envoy(tmp_path: Path) -> None:
    """Envoy's message for each bad config (one Envoy per config, a few at a time) is the end
    of pilotfish's, which names the field first; the good ones pass on both."""
    configs = {**BAD_CONFIGS, **GOOD_CONFIGS}
    names = list(configs)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda i: _envoy_validate(configs[names[i]], tmp_path / f"envoy{i}.json"),
            range(len(names)),
        ))
    mismatches = []
    for i, name in enumerate(names):
        rc, envoy_message = answers[i]
        ours = _pilotfish_validate(configs[name], tmp_path / f"pilotfish{i}.json")
        if name in GOOD_CONFIGS:
            if rc != 0 or ours is not None:
                mismatches.append((name, rc, envoy_message, ours))
        elif rc == 0 or not envoy_message or ours is None or not ours.endswith(
            ": " + envoy_message
        ):
            mismatches.append((name, rc, envoy_message, ours))
    assert not mismatches
