"""Fixtures of the modules that run one deployment per module and kind in front of an echo
backend named ``A`` (test_bad_input.py, test_http1_datapath.py). A module that defines a
fixture of the same name (test_admin.py's ``backend``) uses its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.echo_backend import EchoBackend


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoBackend]:
    """The module's echo backend ``A``."""
    with EchoBackend("A") as backend:
        yield backend


@pytest.fixture
def backend(echo: EchoBackend) -> EchoBackend:
    """The module's echo backend, its recorded requests cleared for this test."""
    echo.clear()
    return echo
