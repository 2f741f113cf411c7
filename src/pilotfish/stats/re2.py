"""RE2 for the admin API's regex parameters (``/stats?filter=``, ``/clusters?filter=``,
``/config_dump?name_regex=``): Envoy compiles them with RE2 and answers 400 with RE2's own
error text (``Invalid re2 regex: invalid perl operator: (?=``). Python's ``re`` accepts more
than RE2 (lookaround, back-references, atomic groups, possessive quantifiers) and words its
errors differently, so a pattern is first checked against RE2's syntax here, then compiled with
``re`` (after mapping POSIX classes, see ``pilotfish.model.common.compile_regex``).

``re2_error`` follows re2/parse.cc closely enough for the errors people meet: bad perl
operators and flags, bad escapes (``\\1``, ``\\Z``, ``\\G``), stacked repetition operators,
repetition sizes over 1000 (nested ones multiplied, as RE2's RepetitionWalker does), missing
``]`` and ``)``, unexpected ``)``, repetition without argument, bad character class ranges.
"""

from __future__ import annotations

import re
import warnings

from pilotfish.model.common import RegexError, compile_regex

__all__ = ["RegexError", "compile_re2", "compile_re2_bytes", "re2_error"]

_MAX_REPEAT = 1000
_POSIX_NAMES = frozenset(
    (
        "alnum",
        "alpha",
        "ascii",
        "blank",
        "cntrl",
        "digit",
        "graph",
        "lower",
        "print",
        "punct",
        "space",
        "upper",
        "word",
        "xdigit",
    )
)
_REPEAT_RE = re.compile(r"\{(\d+)(,(\d*))?\}")
_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_FLAG_CHARS = frozenset("imsU")


class _Re2Syntax(Exception):
    def __init__(self, code: str, arg: str) -> None:
        super().__init__(f"{code}: {arg}" if arg else code)


def _escape(p: str, i: int, in_class: bool) -> int:
    """Check the escape at ``p[i] == '\\'``; return the index after it."""
    if i + 1 >= len(p):
        raise _Re2Syntax("trailing \\", "")
    c = p[i + 1]
    j = i + 2
    if c in "1234567":
        # a single non-zero digit is a back-reference (unsupported); more digits are octal
        if j >= len(p) or p[j] not in "01234567":
            raise _Re2Syntax("invalid escape sequence", p[i:j])
        while j < len(p) and j < i + 4 and p[j] in "01234567":
            j += 1
        return j
    if c == "0":
        while j < len(p) and j < i + 4 and p[j] in "01234567":
            j += 1
        return j
    if c == "x":
        if j < len(p) and p[j] == "{":
            end = p.find("}", j)
            digits = p[j + 1 : end] if end >= 0 else p[j + 1 :]
            if (
                end < 0
                or not digits
                or not all(ch in "0123456789abcdefABCDEF" for ch in digits)
                or int(digits, 16) > 0x10FFFF
            ):
                stop = end if end >= 0 else len(p)
                raise _Re2Syntax("invalid escape sequence", p[i:stop])
            return end + 1
        digits = p[j : j + 2]
        if len(digits) < 2 or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
            raise _Re2Syntax("invalid escape sequence", p[i : j + len(digits)])
        return j + 2
    if c in "pP":
        if j < len(p) and p[j] == "{":
            end = p.find("}", j)
            if end < 0:
                raise _Re2Syntax("invalid character class range", p[i:])
            return end + 1
        if j >= len(p):
            raise _Re2Syntax("invalid character class range", p[i:])
        return j + 1
    if c in "dDsSwW":
        return j
    if c in "afnrtv":
        return j
    if not in_class and c in "bBAzC":
        return j
    if c == "Q" and not in_class:
        end = p.find("\\E", j)
        return len(p) if end < 0 else end + 2
    if c.isascii() and not c.isalnum():
        return j  # an escaped punctuation character is itself
    raise _Re2Syntax("invalid escape sequence", p[i:j])


def _class_char(p: str, i: int) -> tuple[int, str | None]:
    """One class member at ``p[i]``: (index after it, the char if it can start a range)."""
    if p[i] == "\\":
        end = _escape(p, i, True)
        text = p[i:end]
        if text[1] in "dDsSwWpP":
            return end, None
        return end, text
    return i + 1, p[i]


def _range_value(text: str) -> int:
    if len(text) == 1:
        return ord(text)
    c = text[1]
    if c == "x":
        digits = text[3:-1] if text[2:3] == "{" else text[2:]
        return int(digits, 16)
    if c in "01234567":
        return int(text[1:], 8)
    return {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}.get(c, ord(c))


def _char_class(p: str, i: int) -> int:
    """Check the class starting at ``p[i] == '['``; return the index after its ``]``."""
    start = i
    i += 1
    if i < len(p) and p[i] == "^":
        i += 1
    first = True
    while i < len(p) and (p[i] != "]" or first):
        if p[i] == "[" and p.startswith("[:", i):
            end = p.find(":]", i + 2)
            if end >= 0:
                name = p[i + 2 : end].lstrip("^")
                if name not in _POSIX_NAMES:
                    raise _Re2Syntax("invalid character class range", p[i : end + 2])
                i = end + 2
                first = False
                continue
        first = False
        lo_end, lo = _class_char(p, i)
        if lo is not None and lo_end + 1 < len(p) and p[lo_end] == "-" and p[lo_end + 1] != "]":
            hi_end, hi = _class_char(p, lo_end + 1)
            if hi is None:
                raise _Re2Syntax("invalid character class range", p[i:hi_end])
            if _range_value(hi) < _range_value(lo):
                raise _Re2Syntax("invalid character class range", p[i:hi_end])
            i = hi_end
        else:
            i = lo_end
    if i >= len(p):
        raise _Re2Syntax("missing ]", p[start:])
    return i + 1


def _group_start(p: str, i: int, names: set[str]) -> int:
    """Check ``(`` at ``p[i]``; return the index after the group's opening syntax."""
    if not p.startswith("(?", i):
        return i + 1
    t = p[i:]
    if (len(t) > 3 and t[2] in "=!") or (len(t) > 4 and t[2] == "<" and t[3] in "=!"):
        raise _Re2Syntax("invalid perl operator", t[: 4 if t[2] == "<" else 3])
    if t.startswith(("(?P<", "(?<")):
        begin = 4 if t.startswith("(?P<") else 3
        end = t.find(">")
        if end < 0:
            raise _Re2Syntax("invalid named capture group", t)
        name = t[begin:end]
        if not _NAME_RE.fullmatch(name) or name in names:
            raise _Re2Syntax("invalid named capture group", t[: end + 1])
        names.add(name)
        return i + end + 1
    j = 2
    negated = False
    saw_flag = False
    while j < len(t):
        c = t[j]
        j += 1
        if c in _FLAG_CHARS:
            saw_flag = True
            continue
        if c == "-" and not negated:
            negated = True
            saw_flag = False
            continue
        if c in ":)" and not (negated and not saw_flag):
            if c == ":" or j > 3:
                return i + j if c == ":" else i + j - 1
        raise _Re2Syntax("invalid perl operator", t[:j])
    raise _Re2Syntax("invalid perl operator", t)


def re2_error(pattern: str) -> str | None:
    """RE2's error text for ``pattern`` (``missing ]: [``), or None if RE2 parses it."""
    try:
        _check(pattern)
    except _Re2Syntax as e:
        return str(e)
    return None


def _check(p: str) -> None:
    names: set[str] = set()
    # Per open group, the largest product of nested {n,m} counts seen inside it (RE2 refuses
    # a nesting whose product exceeds 1000, e.g. ``(a{2}){1000}``).
    inner: list[int] = [1]
    have_atom = False  # something a repetition operator can apply to
    atom_product = 1  # the nested repetition product of that atom
    last_repeat_start = -1  # where the repetition operator just before began, if any
    i = 0
    while i < len(p):
        c = p[i]
        repeat_start = -1
        if c in "*+?" or (c == "{" and _REPEAT_RE.match(p, i)):
            repeat_start = i
            count = 1
            m = _REPEAT_RE.match(p, i) if c == "{" else None
            i = m.end() if m else i + 1
            if i < len(p) and p[i] == "?":
                i += 1
            if last_repeat_start >= 0:
                raise _Re2Syntax("bad repetition operator", p[last_repeat_start:i])
            if not have_atom:
                raise _Re2Syntax("no argument for repetition operator", p[repeat_start:i])
            if m is not None:
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                if lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and hi < lo):
                    raise _Re2Syntax("invalid repetition size", m.group(0))
                count = max(lo, hi)
                if count * atom_product > _MAX_REPEAT:
                    raise _Re2Syntax("invalid repetition size", m.group(0))
            atom_product *= max(count, 1)
            inner[-1] = max(inner[-1], atom_product)
        elif c == "\\":
            i = _escape(p, i, False)
            have_atom, atom_product = True, 1
        elif c == "[":
            i = _char_class(p, i)
            have_atom, atom_product = True, 1
        elif c == "(":
            i = _group_start(p, i, names)
            if p[i - 1] == ")":  # flags only, as (?i): not a group
                have_atom = False
            else:
                inner.append(1)
                have_atom = False
        elif c == ")":
            if len(inner) == 1:
                raise _Re2Syntax("unexpected )", p)
            atom_product = inner.pop()
            inner[-1] = max(inner[-1], atom_product)
            have_atom = True
            i += 1
        elif c == "|":
            have_atom = False
            i += 1
        else:
            have_atom, atom_product = True, 1
            i += 1
        last_repeat_start = repeat_start
    if len(inner) > 1:
        raise _Re2Syntax("missing )", p)


def _python_error(pattern: str, error: str) -> str:
    """A Python ``re`` error for a pattern RE2's grammar accepted, in RE2's words if known."""
    if "unterminated character set" in error:
        m = re.search(r"at position (\d+)", error)
        return f"missing ]: {pattern[int(m.group(1)) :] if m else pattern}"
    if "missing )" in error:
        return f"missing ): {pattern}"
    if "unbalanced parenthesis" in error:
        return f"unexpected ): {pattern}"
    return error.split(": ", 1)[-1] if error.startswith("invalid regex") else error


def _python_escape(text: str) -> str:
    """An RE2 escape (already checked) in Python's syntax."""
    c = text[1]
    if c == "x" and text[2:3] == "{":
        return re.escape(chr(int(text[3:-1], 16)))
    if c in "01234567":
        return re.escape(chr(int(text[1:], 8)))
    if c == "Q":
        return re.escape(text[2:-2] if text.endswith("\\E") else text[2:])
    if c == "C":
        return "."
    return text


def _to_python(p: str) -> str:
    """RE2-only syntax rewritten for Python's ``re``: ``(?<name>``, ``\\x{...}``, octal
    escapes, ``\\Q...\\E``, ``\\C``. ``p`` has passed ``_check``."""
    out: list[str] = []
    i = 0
    in_class = False
    class_first = False  # just after ``[`` or ``[^``: a ``]`` there is a literal
    while i < len(p):
        c = p[i]
        if c == "\\":
            end = _escape(p, i, in_class)
            out.append(_python_escape(p[i:end]))
            i = end
            continue
        if in_class:
            if p.startswith("[:", i) and (end := p.find(":]", i + 2)) >= 0:
                out.append(p[i : end + 2])
                i = end + 2
                continue
            if c == "]" and not class_first:
                in_class = False
            class_first = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < len(p) and p[i] == "^":
                out.append("^")
                i += 1
            class_first = True
            continue
        elif p.startswith("(?<", i) and not p.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def compile_re2_bytes(pattern: str) -> re.Pattern[bytes]:
    """``pattern`` as RE2 reads it, compiled for bytes; raises RegexError with RE2's text."""
    error = re2_error(pattern)
    if error is not None:
        raise RegexError(error)
    try:
        with warnings.catch_warnings():
            # "Possible nested set" FutureWarnings: today's meaning ('[' literal) is RE2's.
            warnings.simplefilter("ignore", FutureWarning)
            return compile_regex(_to_python(pattern))
    except RegexError as e:
        raise RegexError(_python_error(pattern, str(e))) from None


def compile_re2(pattern: str) -> re.Pattern[str]:
    """``pattern`` as RE2 reads it, compiled for str (ASCII classes, as RE2's ``\\d``/``\\w``);
    raises RegexError with RE2's text."""
    translated = compile_re2_bytes(pattern).pattern.decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(translated, re.ASCII)
