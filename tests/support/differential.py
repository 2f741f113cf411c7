"""What the differential tests (tests/integration/test_differential_envoy.py and
test_differential_routes_envoy.py) share: builders for their route configurations, their echo
backends, and the normalisation of values that change per request, so that what Envoy and
pilotfish did can be compared as equal.

Normalised: ``date`` (an IMF-fixdate within ten minutes of now), ``x-request-id`` (a UUID
v4; any other value is kept), ``x-envoy-upstream-service-time`` (an integer), and the
``content-length`` of an echo JSON body (checked against the body, whose size depends on the
echo backend's connection number).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from tests.support.echo_backend import EchoBackend

__all__ = [
    "IMF_FIXDATE",
    "UUID4",
    "direct",
    "echo_backends",
    "echo_json",
    "fraction",
    "hv",
    "is_now",
    "mask_request_header",
    "mask_response_header",
    "route",
    "vhost",
]

# --- route configuration builders ------------------------------------------------------------


def direct(status: int, body: str | None = None) -> dict[str, Any]:
    """A DirectResponseAction."""
    d: dict[str, Any] = {"status": status}
    if body is not None:
        d["body"] = {"inline_string": body}
    return d


def hv(key: str, value: str, action: str | None = None, **extra: Any) -> dict[str, Any]:
    """A HeaderValueOption (``append_action`` left to its default when ``action`` is None)."""
    d: dict[str, Any] = {"header": {"key": key, "value": value}}
    if action is not None:
        d["append_action"] = action
    d.update(extra)
    return d


def route(name: str, match: dict[str, Any], **action: Any) -> dict[str, Any]:
    """A Route: its name, its match and its action (``route=``, ``direct_response=``...)."""
    return {"name": name, "match": match, **action}


def fraction(numerator: int, key: str) -> dict[str, Any]:
    """A RuntimeFractionalPercent of ``numerator``/100 under runtime key ``key``."""
    return {
        "default_value": {"numerator": numerator, "denominator": "HUNDRED"},
        "runtime_key": key,
    }


def vhost(
    name: str, domains: list[str], routes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A virtual host; by default one route answering ``vhost=<name>`` directly."""
    if routes is None:
        routes = [
            route(f"{name}_any", {"prefix": "/"}, direct_response=direct(200, f"vhost={name}"))
        ]
    return {"name": name, "domains": domains, "routes": routes}


# --- backends --------------------------------------------------------------------------------


@contextlib.contextmanager
def echo_backends(*names: str) -> Iterator[dict[str, EchoBackend]]:
    """An echo backend per name, started; all stopped at the end."""
    started: dict[str, EchoBackend] = {}
    try:
        for name in names:
            started[name] = EchoBackend(name).start()
        yield started
    finally:
        for backend in started.values():
            backend.stop()


# --- normalisation ---------------------------------------------------------------------------

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d\d:\d\d:\d\d GMT$"
)


def is_now(value: str) -> bool:
    """``value`` is an IMF-fixdate within ten minutes of now."""
    if not IMF_FIXDATE.match(value):
        return False
    return abs(email.utils.parsedate_to_datetime(value).timestamp() - time.time()) < 600


def echo_json(body: bytes) -> dict[str, Any] | None:
    """The echo backend's JSON description of a request (a proxied answer), else None."""
    if not body.startswith(b'{"backend"'):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "connection_id" in data else None


def mask_response_header(name: str, value: str, echo_body: bytes | None) -> str:
    """A response header value with what changes per request replaced once its format is
    checked; ``echo_body``: the body, when it is an echo JSON body."""
    lname = name.lower()
    if lname == "date" and is_now(value):
        return "<date: now>"
    if lname == "x-envoy-upstream-service-time" and value.isdigit():
        return "<ms>"
    if lname == "x-request-id" and UUID4.match(value):
        return "<uuid4>"
    if lname == "content-length" and echo_body is not None:
        ok = value.isdigit() and int(value) == len(echo_body)
        return "<length of the echo body>" if ok else f"{value} (body has {len(echo_body)} bytes)"
    return value


def mask_request_header(name: str, value: str, numbers: tuple[str, ...] = ()) -> str:
    """A header value the backend received, a UUID v4 ``x-request-id`` replaced; so is an
    integer value of a header named (lower-case) in ``numbers``."""
    lname = name.lower()
    if lname == "x-request-id" and UUID4.match(value):
        return "<uuid4>"
    if lname in numbers and value.isdigit():
        return "<number>"
    return value
