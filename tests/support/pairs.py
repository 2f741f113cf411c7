"""Helpers for tests that run one bootstrap on pilotfish and on real Envoy and assert Envoy's
answer on both. A test is parametrized with :func:`kinds` (a ``kind`` argument),
:func:`each_proxy` (a module's ``proxy`` fixture, see :func:`deploy`) or :func:`on_both` (the
parameters themselves), so the Envoy run proves that the expected answer is Envoy's, and a
known pilotfish difference is a strict ``xfail`` on the pilotfish run only. The Envoy run is
marked ``envoy`` and skipped when Envoy is not installed.

Listeners are placed on distinct loopback addresses, all on port 0 (:func:`place_listeners`),
and :class:`Deployment` knows where each one ended up.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet
from tests.support.echo_backend import ReceivedRequest
from tests.support.proxies import ENVOY_BIN, ProxyProcess, RawResponse, socket_address
from tests.support.waiting import wait_until

__all__ = [
    "CLOSE_WAIT",
    "OPEN_WAIT",
    "Deployment",
    "deploy",
    "each_proxy",
    "kinds",
    "masked_head",
    "on_both",
    "place_listeners",
    "shape",
]

CLOSE_WAIT = 3.0  # how long a connection the proxy must close is watched
OPEN_WAIT = 0.3  # how long a connection that must stay open is watched

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def on_both(pilotfish_xfail: str | None = None) -> list[ParameterSet]:
    """Parameters "pilotfish" (a strict xfail when ``pilotfish_xfail`` says what differs) and
    "envoy" (marked ``envoy``, skipped without the real Envoy)."""
    marks = []
    if pilotfish_xfail is not None:
        marks.append(pytest.mark.xfail(reason=f"pilotfish: {pilotfish_xfail}", strict=True))
    envoy_marks = [
        pytest.mark.envoy,
        pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
    ]
    return [
        pytest.param("pilotfish", marks=marks, id="pilotfish"),
        pytest.param("envoy", marks=envoy_marks, id="envoy"),
    ]


def kinds(pilotfish_xfail: str | None = None) -> pytest.MarkDecorator:
    """Parametrize the test's ``kind`` argument with :func:`on_both`."""
    return pytest.mark.parametrize("kind", on_both(pilotfish_xfail))


def each_proxy(pilotfish_xfail: str | None = None) -> pytest.MarkDecorator:
    """Parametrize a module's ``proxy`` fixture (indirectly) with :func:`on_both`."""
    return pytest.mark.parametrize("proxy", on_both(pilotfish_xfail), indirect=True)


def place_listeners(listeners: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Put listener i on 127.0.0.<i+1>, port 0; returns name -> address."""
    hosts = {}
    for i, listener in enumerate(listeners):
        host = f"127.0.0.{i + 1}"
        listener["address"] = socket_address(0, host)
        hosts[listener["name"]] = host
    return hosts


@dataclass
class Deployment:
    """A running proxy and where its listeners are."""

    kind: str
    proxy: ProxyProcess
    hosts: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proxy.pid

    def addr(self, listener: str) -> tuple[str, int]:
        return self.hosts[listener], self.proxy.port(listener)

    def stat(self, name: str) -> int:
        return self.proxy.stats().get(name, 0)

    def wait_stat(self, name: str, value: int, timeout: float = 5.0) -> int:
        """Poll stat ``name`` until it equals ``value`` (or the time is up); its last value."""
        wait_until(lambda: self.stat(name) == value, timeout)
        return self.stat(name)


def deploy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    config: dict[str, Any],
    hosts: dict[str, str],
) -> Iterator[Deployment]:
    """The body of a module-scoped ``proxy`` fixture parametrized indirectly with
    :func:`on_both`: ``yield from deploy(...)`` runs ``request.param`` on ``config`` (files in
    a fresh ``<name>-<kind>`` directory), exactly as written, for the module, then stops it."""
    kind: str = request.param
    proxy = ProxyProcess(kind, config, tmp_path_factory.mktemp(f"{name}-{kind}"), free_ports=False)
    with proxy:
        yield Deployment(kind, proxy, hosts)


def shape(resp: RawResponse) -> list[str]:
    """The status line and ``name: value`` header lines of ``resp``, in order, with the values
    that change per request replaced after checking their format: ``date`` → ``<date>``,
    ``x-envoy-upstream-service-time`` → ``<ms>``, and the ``content-length`` of a JSON body
    (the echo backend's, whose size depends on its connection number) → ``<n>``."""
    lines = [resp.status_line]
    for name, value in resp.headers:
        lname = name.lower()
        if lname == "date":
            assert email.utils.parsedate_to_datetime(value) is not None, value
            value = "<date>"
        elif lname == "x-envoy-upstream-service-time":
            assert value.isdigit(), value
            value = "<ms>"
        elif lname == "content-length" and resp.body.startswith(b"{"):
            assert int(value) == len(resp.body), (value, len(resp.body))
            value = "<n>"
        lines.append(f"{name}: {value}")
    return lines


def masked_head(req: ReceivedRequest) -> bytes:
    """The request line and headers a backend received, exactly, with the random
    ``x-request-id`` value (checked to be a UUID v4) replaced by ``<uuid>``."""
    head, sep, _ = req.raw.partition(b"\r\n\r\n")
    assert sep, req.raw
    lines = []
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-request-id: "):
            value = line.split(b": ", 1)[1].decode()
            assert _UUID.fullmatch(value), value
            line = b"x-request-id: <uuid>"
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n"
