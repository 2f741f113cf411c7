"""Tests must run the code as it is now: a compiled module older than its source would hide
the edit (see setup.py)."""

from __future__ import annotations

import pytest

from pilotfish._build import stale_compiled_modules


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_compiled_modules()
    if stale:
        pytest.exit(
            "compiled modules are older than their sources (run `make install`): "
            + ", ".join(stale),
            returncode=2,
        )
