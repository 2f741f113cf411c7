"""Header maps: lists of (lower-case name, value) byte pairs, in wire order.

Header lists on the request path are short (a dozen entries), so a list scanned linearly beats
a dict of lists and keeps order and duplicates for free. Request pseudo-headers live in
attributes (``method``, ``path``, ``authority``, ``scheme``) and ``get(b":path")`` reads them,
as Envoy's ``:``-headers do.
"""

from __future__ import annotations

from collections.abc import Iterator


class HeaderMap:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[bytes, bytes]] | None = None) -> None:
        self.items: list[tuple[bytes, bytes]] = items if items is not None else []

    def get(self, name: bytes) -> bytes | None:
        for n, v in self.items:
            if n == name:
                return v
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.items if n == name]

    def get_joined(self, name: bytes) -> bytes | None:
        """All values of ``name`` joined with "," (as Envoy formats multi-valued headers)."""
        values = [v for n, v in self.items if n == name]
        if not values:
            return None
        return values[0] if len(values) == 1 else b",".join(values)

    def __contains__(self, name: bytes) -> bool:
        return any(n == name for n, _ in self.items)

    def add(self, name: bytes, value: bytes) -> None:
        self.items.append((name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every value of ``name`` by one (in the first one's place), or append."""
        items = self.items
        names = [n for n, _ in items]
        try:
            i = names.index(name)
        except ValueError:
            items.append((name, value))
            return
        items[i] = (name, value)
        if names.count(name) > 1:
            self.items = items[: i + 1] + [x for x in items[i + 1 :] if x[0] != name]

    def set_default(self, name: bytes, value: bytes) -> None:
        if not any(n == name for n, _ in self.items):
            self.items.append((name, value))

    def remove(self, name: bytes) -> bool:
        items = self.items
        if not any(n == name for n, _ in items):
            return False
        self.items = [(n, v) for n, v in items if n != name]
        return True

    def remove_prefix(self, prefix: bytes) -> None:
        if any(n.startswith(prefix) for n, _ in self.items):
            self.items = [(n, v) for n, v in self.items if not n.startswith(prefix)]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def byte_size(self) -> int:
        return sum(len(n) + len(v) for n, v in self.items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items!r})"


class RequestHeaders(HeaderMap):
    """Request headers: ``path`` is the full request target (path and query)."""

    __slots__ = ("authority", "method", "path", "scheme")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        authority: bytes,
        items: list[tuple[bytes, bytes]] | None = None,
        scheme: bytes = b"http",
    ) -> None:
        self.method = method
        self.path = path
        self.authority = authority
        self.scheme = scheme
        self.items = items if items is not None else []

    def get(self, name: bytes) -> bytes | None:
        if name[:1] == b":":
            if name == b":path":
                return self.path
            if name == b":method":
                return self.method
            if name == b":authority":
                return self.authority
            if name == b":scheme":
                return self.scheme
            return None
        if name == b"host":
            return self.authority
        for n, v in self.items:
            if n == name:
                return v
        return None

    def get_joined(self, name: bytes) -> bytes | None:
        if name[:1] == b":" or name == b"host":
            return self.get(name)
        return HeaderMap.get_joined(self, name)

    def get_all(self, name: bytes) -> list[bytes]:
        if name[:1] == b":" or name == b"host":
            v = self.get(name)
            return [] if v is None else [v]
        return HeaderMap.get_all(self, name)

    def byte_size(self) -> int:
        return (
            len(self.method)
            + len(self.path)
            + len(self.authority)
            + sum(len(n) + len(v) for n, v in self.items)
        )


class ResponseHeaders(HeaderMap):
    """``seen``: which of date/server/... the upstream sent (codec.http1.RESP_* flags), or -1 if
    unknown (a filter may have changed the headers): lets the common path skip scans."""

    __slots__ = ("seen", "status")

    def __init__(self, status: int, items: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.items = items if items is not None else []
        self.seen = -1

    def get(self, name: bytes) -> bytes | None:
        if name == b":status":
            return str(self.status).encode()
        for n, v in self.items:
            if n == name:
                return v
        return None
