"""Fixtures shared by integration modules.

* ``echo`` and ``backend``: for the modules that run one deployment per module and kind in
  front of an echo backend named ``A`` (test_bad_input.py, test_http1_datapath.py).
* ``backends``, ``envoy`` and ``pilotfish``: for the differential modules
  (test_differential_envoy.py, test_differential_routes_envoy.py), each of which defines a
  module fixture ``differential_bootstrap`` from ``backends``; one Envoy and one pilotfish
  run it for the whole module.

A module that defines a fixture of the same name (test_admin.py's ``backend``) uses its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.differential import echo_backends
from tests.support.echo_backend import EchoBackend
from tests.support.proxies import ProxyProcess

DIFFERENTIAL_BACKENDS = ("A", "B", "C")


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


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoBackend]]:
    """The echo backends ``A``, ``B`` and ``C`` of a differential module."""
    with echo_backends(*DIFFERENTIAL_BACKENDS) as started:
        yield started


@pytest.fixture(scope="module")
def envoy(
    differential_bootstrap: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """Envoy running the module's ``differential_bootstrap``."""
    with ProxyProcess("envoy", differential_bootstrap, tmp_path_factory.mktemp("diff")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def pilotfish(
    differential_bootstrap: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """pilotfish running the module's ``differential_bootstrap``."""
    with ProxyProcess(
        "pilotfish", differential_bootstrap, tmp_path_factory.mktemp("diff")
    ) as proxy:
        yield proxy
