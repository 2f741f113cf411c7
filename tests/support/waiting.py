"""Polling until something is true, for tests whose proxy or backend acts asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for", "wait_until"]


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``cond`` until it is true; AssertionError naming ``what`` after ``timeout``."""
    if not wait_until(cond, timeout, interval=0.02):
        raise AssertionError(f"timed out waiting for {what}")
