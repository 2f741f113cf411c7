"""The part of CEL (Common Expression Language) that Istio's Telemetry API puts in metric
overrides: string and integer literals, ``+``, attribute paths with ``.field`` and ``[key]`` /
``[index]`` (``xds.node.metadata['LABELS'].app``, ``filter_state.upstream_peer.labels['role']``,
``request.headers['x-user']``, ``xds.cluster_metadata.filter_metadata.istio.services[0].name``).

Hand-written because no maintained CEL implementation for Python was a fit for a per-request
telemetry path (and only this subset appears in Istio's config). As in istio-proxy: an
expression that does not parse is reported at config time (``parse`` raises ``ExprError``); one
that fails at run time (a missing attribute, a type error) evaluates to ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<num>\d+)|"
    r"(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[.\[\]+()]))"
)


class ExprError(ValueError):
    pass


Expr = Callable[[Callable[[str], Any]], Any]  # resolve(root name) -> value


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"cannot parse expression {text!r} at offset {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(text: str) -> Expr:
    """Compile ``text`` to a function of a root resolver."""
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise ExprError(f"unexpected end of expression {text!r}")
        t = toks[pos]
        pos += 1
        return t

    def primary() -> Expr:
        kind, value = take()
        node: Expr
        if kind == "str":
            node = _const(_unquote(value))
        elif kind == "num":
            node = _const(int(value))
        elif kind == "id":
            node = _root(value)
        elif value == "(":
            node = additive()
            if take() != ("op", ")"):
                raise ExprError(f"missing ')' in {text!r}")
        else:
            raise ExprError(f"unexpected {value!r} in {text!r}")
        while (t := peek()) is not None and t[1] in (".", "["):
            take()
            if t[1] == ".":
                kind, field = take()
                if kind != "id":
                    raise ExprError(f"expected a field name after '.' in {text!r}")
                node = _select(node, _const(field))
            else:
                index = additive()
                if take() != ("op", "]"):
                    raise ExprError(f"missing ']' in {text!r}")
                node = _select(node, index)
        return node

    def additive() -> Expr:
        node = primary()
        while (t := peek()) is not None and t[1] == "+":
            take()
            node = _add(node, primary())
        return node

    if not toks:
        raise ExprError("empty expression")
    root = additive()
    if pos != len(toks):
        raise ExprError(f"unexpected {toks[pos][1]!r} in {text!r}")
    return root


def _const(value: Any) -> Expr:
    return lambda resolve: value


def _root(name: str) -> Expr:
    return lambda resolve: resolve(name)


def _select(base: Expr, key: Expr) -> Expr:
    def run(resolve: Callable[[str], Any]) -> Any:
        obj = base(resolve)
        k = key(resolve)
        if obj is None or k is None:
            return None
        if isinstance(obj, dict):
            return obj.get(k)
        if isinstance(obj, list | tuple) and isinstance(k, int):
            return obj[k] if 0 <= k < len(obj) else None
        getter = getattr(obj, "get", None)
        return getter(k) if getter is not None else None

    return run


def _add(a: Expr, b: Expr) -> Expr:
    def run(resolve: Callable[[str], Any]) -> Any:
        x, y = a(resolve), b(resolve)
        if isinstance(x, str) and isinstance(y, str):
            return x + y
        if isinstance(x, int) and isinstance(y, int):
            return x + y
        return None  # CEL has no implicit conversions: an error, i.e. "unknown"

    return run


def to_text(value: Any) -> str | None:
    """CEL's print of a result, None for an error (missing value, unsupported type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return None
