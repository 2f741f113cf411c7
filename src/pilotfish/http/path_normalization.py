"""Request path normalization as Envoy's connection manager does it (``normalize_path``,
``merge_slashes``, ``path_with_escaped_slashes_action``), before routing and every filter.

Envoy canonicalizes the path with Chromium's URL library (``url::CanonicalizePath``): RFC 3986
dot-segment removal, ``%2e`` counted as a dot, backslashes read as slashes, percent-escapes of
unreserved characters decoded, characters that may not stand in a path escaped, ``%00``
refused. No Python library reproduces those exact rules (``urllib.parse`` and ``posixpath`` keep
escaped dots and backslashes, which is how route and RBAC path matches get bypassed), so they
are written here, from the library's documented behaviour and checked against Envoy 1.40 in
``tests/integration/test_http1_hardening.py``. Only the path is touched, never the query.

Pure functions on bytes; the connection manager calls :func:`normalize` only when
:func:`needs_normalization` says the path has something to change.
"""

from __future__ import annotations

__all__ = [
    "CONTINUE",
    "REDIRECT",
    "REJECT",
    "PathSettings",
    "canonicalize",
    "merge_slashes",
    "needs_normalization",
    "normalize",
    "unescape_slashes",
]

# What normalize() tells the connection manager to do with the request.
CONTINUE = 0  # go on with the (possibly rewritten) path
REJECT = 1  # 400, path_normalization_failed
REDIRECT = 2  # 307 to the rewritten path (UNESCAPE_AND_REDIRECT found an escaped slash)

_HEX = b"0123456789abcdefABCDEF"
# Characters Chromium's path canonicalizer copies unchanged; '.', '%' and '\\' are handled on
# their own, the others (controls, space, '"', '#', '<', '>', '?', '^', '`', '{', '|', '}',
# DEL and every byte >= 0x80) are percent-escaped.
_PASS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~/!$&'()*+,;=:@[]"
)
# Escaped characters that are decoded (RFC 3986 unreserved); others stay escaped, as written.
_UNESCAPE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~")
# For the quick check: a path made only of these bytes, without "/." nor "//", is canonical.
_PLAIN = bytes(sorted(_PASS | {ord(".")}))


class PathSettings:
    """The three HCM fields, read once per filter chain."""

    __slots__ = ("escaped_slashes", "merge", "normalize")

    def __init__(self, normalize: bool, merge: bool, escaped_slashes: str) -> None:
        self.normalize = normalize
        self.merge = merge
        # KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_REDIRECT or UNESCAPE_AND_FORWARD.
        self.escaped_slashes = escaped_slashes

    @property
    def active(self) -> bool:
        return self.normalize or self.merge or self.escaped_slashes != "KEEP_UNCHANGED"


def needs_normalization(path: bytes, settings: PathSettings) -> bool:
    """False when ``normalize`` would leave ``path`` as it is (the common case), cheaply."""
    query = path.find(b"?")
    if query >= 0:
        path = path[:query]
    if settings.normalize:
        return bool(path.translate(None, _PLAIN)) or b"/." in path or b"//" in path
    if settings.merge and b"//" in path:
        return True
    return settings.escaped_slashes != "KEEP_UNCHANGED" and b"%" in path


def normalize(path: bytes, settings: PathSettings) -> tuple[int, bytes]:
    """Envoy's ``ConnectionManagerUtility::maybeNormalizePath``: the action and the new path
    (query kept as it was)."""
    query_at = path.find(b"?")
    query = b"" if query_at < 0 else path[query_at:]
    part = path if query_at < 0 else path[:query_at]
    action = CONTINUE
    mode = settings.escaped_slashes
    if mode != "KEEP_UNCHANGED":
        unescaped = unescape_slashes(part)
        if len(unescaped) != len(part):
            if mode == "REJECT_REQUEST":
                return REJECT, path
            if mode == "UNESCAPE_AND_REDIRECT":
                action = REDIRECT
            part = unescaped
    if settings.normalize:
        canonical = canonicalize(part)
        if canonical is None:
            return REJECT, path
        part = canonical
    if settings.merge:
        part = merge_slashes(part)
    return action, part + query


def unescape_slashes(path: bytes) -> bytes:
    """``%2F`` → ``/`` and ``%5C`` → ``\\`` (either case), left to right (Envoy's
    ``PathUtil::unescapeSlashes``)."""
    if b"%" not in path:
        return path
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == 0x25 and i + 2 < n and path[i + 1] in b"25":
            pair = path[i + 1 : i + 3].lower()
            if pair == b"2f":
                out.append(0x2F)
                i += 3
                continue
            if pair == b"5c":
                out.append(0x5C)
                i += 3
                continue
        out.append(c)
        i += 1
    return bytes(out)


def merge_slashes(path: bytes) -> bytes:
    """Envoy's ``PathUtil::mergeSlashes``: runs of slashes become one; a leading and a trailing
    slash are kept (so ``//`` stays ``//``, as in Envoy)."""
    if b"//" not in path:
        return path
    prefix = b"/" if path[:1] == b"/" else b""
    suffix = b"/" if path[-1:] == b"/" else b""
    return prefix + b"/".join(s for s in path.split(b"/") if s) + suffix


def _dot_length(path: bytes, i: int, n: int) -> int:
    """3 for an escaped dot ``%2e``/``%2E`` at ``i``, 1 for ``.``, else 0."""
    c = path[i]
    if c == 0x2E:
        return 1
    if c == 0x25 and i + 3 <= n and path[i + 1] == 0x32 and path[i + 2] in b"eE":
        return 3
    return 0


def _is_slash(c: int) -> bool:
    return c == 0x2F or c == 0x5C


def canonicalize(path: bytes) -> bytes | None:
    """Chromium's ``CanonicalizePath`` on a path that starts with ``/``; None when the path is
    invalid (an escaped NUL)."""
    out = bytearray()
    valid = True
    invalid_percent = -1  # where a '%' that began no escape sequence was copied
    i = 0
    n = len(path)
    if not path.startswith(b"/") and not path.startswith(b"\\"):
        out.append(0x2F)
    while i < n:
        c = path[i]
        if c in _PASS:
            out.append(c)
            i += 1
            continue
        dot = _dot_length(path, i, n)
        if dot:
            if out and out[-1] == 0x2F:
                after = i + dot
                if after == n:  # "/." at the end
                    i = after
                    continue
                if _is_slash(path[after]):  # "/./"
                    i = after + 1
                    continue
                second = _dot_length(path, after, n)
                if second:
                    end = after + second
                    if end == n or _is_slash(path[end]):  # "/.." or "/../"
                        _back_up(out)
                        i = end + 1 if end < n else end
                        continue
            out.append(0x2E)
            i += dot
            continue
        if c == 0x5C:
            out.append(0x2F)
            i += 1
            continue
        if c == 0x25:
            if i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
                value = int(path[i + 1 : i + 3], 16)
                if value in _UNESCAPE:
                    out.append(value)
                    if invalid_percent >= 0 and invalid_percent >= len(out) - 3:
                        # "%%30%30" must not turn into "%00": escape the lone '%' before.
                        out[invalid_percent + 1 : invalid_percent + 1] = b"25"
                        invalid_percent = -1
                else:
                    out += path[i : i + 3]  # kept as written, case included
                    if value == 0:
                        valid = False
                i += 3
                continue
            invalid_percent = len(out)
            out.append(0x25)
            i += 1
            continue
        out += b"%%%02X" % c
        if c == 0:
            valid = False
        i += 1
    if not valid or not out:
        return None
    return bytes(out)


def _back_up(out: bytearray) -> None:
    """Drop the last segment of ``out`` (which ends with '/'), keeping the slash before it."""
    i = len(out) - 1
    if i == 0:
        return
    i -= 1
    while out[i] != 0x2F and i > 0:
        i -= 1
    del out[i + 1 :]
