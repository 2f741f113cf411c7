"""Helpers for the admin API and lifecycle integration tests (tests/integration/test_admin.py,
tests/integration/test_lifecycle.py).

Those tests run :class:`tests.support.proxies.ProxyProcess` with ``free_ports=False``: the
bootstrap is kept exactly as given, so that listeners on port 0 stay on port 0 (Envoy then
names their stats ``listener.127.0.0.1_0.*``). ``hcm_listener`` builds their listeners;
``stats_values`` reads ``/stats`` text into a dict; ``q`` percent-encodes a query value;
``refuses_connections`` tells whether anything listens on a port. Everything binds or
connects to 127.0.0.1 (or another loopback address) only.
"""

from __future__ import annotations

import socket
import urllib.parse
from typing import Any

from tests.support.proxies import LOCALHOST, admin_request, http_listener

__all__ = [
    "hcm_listener",
    "q",
    "refuses_connections",
    "stats_values",
]


def hcm_listener(
    name: str,
    stat_prefix: str,
    routes: list[dict[str, Any]],
    *,
    host: str = LOCALHOST,
    direction: str | None = None,
    access_log: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A listener on ``host``:0 with an HTTP connection manager and one catch-all vhost, its
    route config and vhost named after the listener."""
    route_config = {
        "name": f"{name}_route",
        "virtual_hosts": [{"name": f"{name}_vh", "domains": ["*"], "routes": routes}],
    }
    hcm: dict[str, Any] = {"stat_prefix": stat_prefix}
    if access_log:
        hcm["access_log"] = access_log
    listener = http_listener(name, route_config=route_config, hcm=hcm, host=host)
    if direction:
        listener["traffic_direction"] = direction
    return listener


def q(value: str) -> str:
    """A query-parameter value, percent-encoded (regexes contain ``^``, ``\\``, ``|``...)."""
    return urllib.parse.quote(value, safe="")


def stats_values(port: int, regex: str, *, extra: str = "") -> dict[str, str]:
    """``/stats?filter=regex`` (text format) as name -> value text."""
    reply = admin_request(port, f"/stats?filter={q(regex)}{extra}")
    assert reply.status == 200, reply.text
    out: dict[str, str] = {}
    for line in reply.text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = value
    return out


def refuses_connections(port: int, host: str = LOCALHOST) -> bool:
    """True when a TCP connect to host:port is refused (nothing listens there)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
