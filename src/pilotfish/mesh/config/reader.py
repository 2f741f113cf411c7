"""Strict reading of one YAML mapping: every key must be claimed by the parser, so a typo
(``subsett``) is reported with its path instead of being silently ignored, as Istio's CRD
schemas do. Type errors are collected too, so one run reports every problem of a document.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Node", "Problems", "parse_duration"]


class Problems:
    """(path, message) pairs found while reading or validating one document."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


# Go's time.ParseDuration syntax, which Istio's YAML accepts ("7s", "0.5s", "100ms", "1h30m").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float | None:
    """Seconds of a Go-style duration, or None when the text is not one."""
    text = text.strip()
    if text in ("0", "-0"):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total if text else None


class Node:
    """One mapping at ``path``; getters mark keys as known, ``finish`` reports the rest."""

    __slots__ = ("_data", "_problems", "_seen", "path")

    def __init__(self, data: Any, path: str, problems: Problems) -> None:
        self.path = path
        self._problems = problems
        self._seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.add(path, f"expected an object, got {_type_name(data)}")
            data = {}
        self._data: dict[Any, Any] = data

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self._problems.add(self.sub(key), message)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def ignore(self, *keys: str) -> None:
        """Accept these keys without reading them (fields with no meaning for the local mesh)."""
        self._seen.update(keys)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                self._problems.add(self.sub(str(key)), "unknown field")

    # --- scalars -----------------------------------------------------------------------------

    def string(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_type_name(value)}")
            return None
        return value

    def req_str(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            if key not in self._data:
                self.error(key, "required field is missing")
            return ""
        return value

    def integer(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_type_name(value)}")
            return None
        return value

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {_type_name(value)}")
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {_type_name(value)}")
            return None
        return value

    def duration(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        seconds = parse_duration(value) if isinstance(value, str) else None
        if seconds is None:
            self.error(key, f"invalid duration {value!r} (expected e.g. '2s', '0.5s', '100ms')")
        return seconds

    def percent(self, key: str) -> float | None:
        """Istio's ``Percent`` message: ``{value: 50.0}``."""
        if not self.has(key):
            self.raw(key)
            return None
        node = self.obj(key)
        value = node.number("value")
        node.finish()
        return 0.0 if value is None else value

    # --- containers --------------------------------------------------------------------------

    def obj(self, key: str) -> Node:
        return Node(self.raw(key), self.sub(key), self._problems)

    def opt_obj(self, key: str) -> Node | None:
        if not self.has(key):
            self.raw(key)
            return None
        return self.obj(key)

    def entries(self, key: str) -> list[tuple[str, Any]]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {_type_name(value)}")
            return []
        return [(f"{self.sub(key)}[{i}]", item) for i, item in enumerate(value)]

    def objs(self, key: str) -> list[Node]:
        return [Node(item, path, self._problems) for path, item in self.entries(key)]

    def str_list(self, key: str) -> tuple[str, ...]:
        out = []
        for path, item in self.entries(key):
            if isinstance(item, str):
                out.append(item)
            else:
                self._problems.add(path, f"expected a string, got {_type_name(item)}")
        return tuple(out)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(key, f"expected a map of strings, got {_type_name(value)}")
            return {}
        out = {}
        for k, v in value.items():
            # Kubernetes labels are strings; YAML turns `version: 1` into an int, which
            # kubectl rejects, so do we.
            if not isinstance(v, str):
                self._problems.add(
                    f"{self.sub(key)}.{k}", f"expected a string, got {_type_name(v)}"
                )
            else:
                out[str(k)] = v
        return out

    def obj_map(self, key: str) -> dict[str, Node]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(key, f"expected a map, got {_type_name(value)}")
            return {}
        return {str(k): Node(v, f"{self.sub(key)}.{k}", self._problems) for k, v in value.items()}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
