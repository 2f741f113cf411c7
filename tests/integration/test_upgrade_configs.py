"""Per-route upgrade_configs override the connection manager's, as in Envoy's table: the HCM
must list the upgrade type; a route that names it enables or disables it for that route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.pairs import on_both
from tests.support.proxies import (
    ProxyProcess,
    bootstrap,
    http_listener,
    http_request,
    static_cluster,
)

WEBSOCKET = "websocket"
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "x-echo-status: 101\r\nx-echo-header: Upgrade=websocket\r\nx-echo-header: Connection=Upgrade"
    "\r\n\r\n"
)


def _config(backend_port: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/off"},
            "route": {
                "cluster": "be",
                "upgrade_configs": [{"upgrade_type": WEBSOCKET, "enabled": False}],
            },
        },
        {
            "match": {"prefix": "/on"},
            "route": {"cluster": "be", "upgrade_configs": [{"upgrade_type": "WebSocket"}]},
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "be"}},
    ]
    listeners = [
        http_listener("enabled", routes, hcm={"upgrade_configs": [{"upgrade_type": WEBSOCKET}]}),
        http_listener(
            "disabled",
            routes,
            hcm={"upgrade_configs": [{"upgrade_type": WEBSOCKET, "enabled": False}]},
        ),
        http_listener("absent", routes),
    ]
    return bootstrap(listeners, [static_cluster("be", backend_port)])


@pytest.fixture(scope="module", params=on_both())
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    with (
        EchoBackend("A") as backend,
        ProxyProcess(
            request.param, _config(backend.address[1]), tmp_path_factory.mktemp("upgrades")
        ) as running,
    ):
        yield running


@pytest.mark.parametrize(
    ("listener", "path", "status"),
    [
        ("enabled", "/off", 403),
        ("enabled", "/on", 101),
        ("enabled", "/x", 101),
        ("disabled", "/off", 403),
        ("disabled", "/on", 101),
        ("disabled", "/x", 403),
        ("absent", "/off", 403),
        ("absent", "/on", 101),
        ("absent", "/x", 403),
    ],
)
def test_route_upgrade_configs_override_the_hcm(
    proxy: ProxyProcess, listener: str, path: str, status: int
) -> None:
    raw = HANDSHAKE.format(path=path).encode()
    assert http_request(proxy.port(listener), raw, timeout=5)[0] == status
