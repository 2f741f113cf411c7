"""Errors shared by every layer."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration value is invalid. ``path`` names the offending field, Envoy style
    (``static_resources.listeners[0].address``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason

    def under(self, prefix: str) -> ConfigError:
        """The same error seen from an enclosing message."""
        if not prefix:
            return self
        path = (
            f"{prefix}.{self.path}"
            if self.path and not self.path.startswith("[")
            else (f"{prefix}{self.path}")
        )
        return ConfigError(path, self.reason)
