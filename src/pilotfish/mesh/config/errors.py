"""The one error the config store raises: every problem found, so a user fixes all at once."""

from __future__ import annotations

__all__ = ["ConfigValidationError"]


class ConfigValidationError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))
