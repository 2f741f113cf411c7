"""Envoy's path normalization, without sockets. Every expected value here was observed on
Envoy 1.40 (the same cases run on both proxies in tests/integration/test_http1_hardening.py)."""

from __future__ import annotations

import pytest

from pilotfish.http.path_normalization import (
    CONTINUE,
    REDIRECT,
    REJECT,
    PathSettings,
    needs_normalization,
    normalize,
)

NORMALIZE = PathSettings(True, False, "KEEP_UNCHANGED")
MERGE = PathSettings(True, True, "KEEP_UNCHANGED")
MERGE_ONLY = PathSettings(False, True, "KEEP_UNCHANGED")

CANONICAL = [
    (b"/a/../../etc", b"/etc"),
    (b"/..", b"/"),
    (b"/a/./b/../c", b"/a/c"),
    (b"/%2e%2e/%2e%2e/etc", b"/etc"),
    (b"/a/%2E%2e/b", b"/b"),
    (b"/a\\..\\b", b"/b"),
    (b"/a%41%7e%2D%5f%2f%5C%25%20b", b"/aA~-_%2f%5C%25%20b"),
    (b"/a/b?x=/../y&z=%2e", b"/a/b?x=/../y&z=%2e"),
    (b"/a//b///c", b"/a//b///c"),
    (b"/a/%2f/../b", b"/a/b"),
    (b"/a%zzb", b"/a%zzb"),
    (b"/a%2", b"/a%2"),
    (b"/a%7fb", b"/a%7fb"),
    (b"/a%80b", b"/a%80b"),
    (b"/a%0ab", b"/a%0ab"),
    (b'/a"b', b"/a%22b"),
    (b"/a{b}|^`", b"/a%7Bb%7D%7C%5E%60"),
    (b"/a/b/.", b"/a/b/"),
    (b"/a/b/..", b"/a/"),
    (b"/a/.b/..c/...", b"/a/.b/..c/..."),
    (b"/%2e", b"/"),
    (b"/a;b/../c", b"/c"),
    (b"//a", b"//a"),
    (b"/%41", b"/A"),
    (b"/a//../b", b"/a/b"),
    (b"/%%30%30", b"/%2500"),
    (b"/%%32%65", b"/%252e"),
    (b"/a%2eb/.%2E/c", b"/c"),
    (b"/a/<b>%3c%3C%7B%7b", b"/a/%3Cb%3E%3c%3C%7B%7b"),
    (b"/a\\.\\b\\", b"/a/b/"),
    (b"/index.html", b"/index.html"),
]


@pytest.mark.parametrize(("path", "expected"), CANONICAL)
def test_normalize_path(path: bytes, expected: bytes) -> None:
    assert normalize(path, NORMALIZE) == (CONTINUE, expected)
    # The quick check never skips a path that changes.
    if expected != path:
        assert needs_normalization(path, NORMALIZE)


@pytest.mark.parametrize("path", [b"/a%00b", b"/%00", b"/x/%00/../y"])
def test_escaped_nul_is_rejected(path: bytes) -> None:
    assert normalize(path, NORMALIZE)[0] == REJECT


@pytest.mark.parametrize(
    ("path", "settings", "expected"),
    [
        (b"/a//b///c/?q=//x", MERGE, b"/a/b/c/?q=//x"),
        (b"/a//b/../c", MERGE_ONLY, b"/a/b/../c"),
        (b"//a", MERGE, b"/a"),
        (b"//", MERGE, b"//"),
        (b"///", MERGE, b"//"),
    ],
)
def test_merge_slashes(path: bytes, settings: PathSettings, expected: bytes) -> None:
    assert normalize(path, settings) == (CONTINUE, expected)


@pytest.mark.parametrize(
    ("mode", "normalize_path", "path", "expected"),
    [
        ("REJECT_REQUEST", True, b"/a%2fb", (REJECT, b"/a%2fb")),
        ("REJECT_REQUEST", True, b"/a%5Cb", (REJECT, b"/a%5Cb")),
        ("REJECT_REQUEST", True, b"/a/b?x=%2f", (CONTINUE, b"/a/b?x=%2f")),
        ("UNESCAPE_AND_REDIRECT", True, b"/a%2fb?q=1", (REDIRECT, b"/a/b?q=1")),
        ("UNESCAPE_AND_REDIRECT", True, b"/a%2F..%2Fb", (REDIRECT, b"/b")),
        ("UNESCAPE_AND_REDIRECT", True, b"/a/b", (CONTINUE, b"/a/b")),
        ("UNESCAPE_AND_FORWARD", True, b"/a%2fb/%2F..%2f/c", (CONTINUE, b"/a/b//c")),
        ("UNESCAPE_AND_FORWARD", True, b"/a%5cb", (CONTINUE, b"/a/b")),
        ("UNESCAPE_AND_FORWARD", False, b"/a%2f..%2fb", (CONTINUE, b"/a/../b")),
        ("UNESCAPE_AND_FORWARD", False, b"/a%252fb", (CONTINUE, b"/a%252fb")),
    ],
)
def test_escaped_slashes(
    mode: str, normalize_path: bool, path: bytes, expected: tuple[int, bytes]
) -> None:
    settings = PathSettings(normalize_path, False, mode)
    assert normalize(path, settings) == expected
    if expected != (CONTINUE, path):
        assert needs_normalization(path, settings)


@pytest.mark.parametrize("path", [b"/", b"/api/v1/items", b"/static/app.min.js", b"/a?b=/../c"])
def test_quick_check_skips_canonical_paths(path: bytes) -> None:
    assert not needs_normalization(path, MERGE)
    assert normalize(path, MERGE) == (CONTINUE, path)
