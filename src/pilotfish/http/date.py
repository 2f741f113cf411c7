"""The HTTP ``date`` header value, formatted once per second (Envoy's cached date provider)."""

from __future__ import annotations

import time
from email.utils import formatdate


class DateCache:
    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


DATE = DateCache()
