"""Header lookup shared by the requests and responses the test helpers record."""

from __future__ import annotations

__all__ = ["HeaderLookup"]


class HeaderLookup:
    """``header``/``header_values`` over a ``headers`` list of (name, value) pairs kept in
    their original case and order."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]
