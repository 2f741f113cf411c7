"""envoy.filters.http.cors: apply the CORS policy of the matched route (Envoy's CORS filter).

The filter itself has no settings (``Cors {}``): the policies are ``CorsPolicy`` per-route
configs (``typed_per_filter_config``) of the route, its virtual host and its route table.
Each setting comes from the most specific policy that sets it (Envoy's CorsFilter accessors).
istiod puts an empty CORS filter in every HTTP filter chain and a policy on the routes of
VirtualServices with a ``corsPolicy``; the connection manager runs the filter only on routes
that have a policy.

A request with an ``origin`` header allowed by ``allow_origin_string_match`` (a matcher that
matches ``*`` allows every origin) is a CORS request: its response gets
``access-control-allow-origin`` (the origin), ``-allow-credentials`` and ``-expose-headers``. A
preflight (``OPTIONS`` with ``access-control-request-method``) from an allowed origin is
answered here (200, ``-allow-origin``, ``-allow-credentials``, ``-allow-methods``,
``-allow-headers``, ``-max-age``, ``-allow-private-network``); from an origin not allowed, it is
forwarded, or answered 200 without CORS headers when ``forward_not_matching_preflights`` is
false. Stats ``http.<prefix>.cors.origin_valid`` / ``origin_invalid``.

The deprecated ``cors`` fields of routes and virtual hosts are refused (istiod no longer sends
them); ``filter_enabled`` / ``shadow_enabled`` use their default values (runtime is ignored).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.http import filter as hf
from pilotfish.http.headers import RequestHeaders, ResponseHeaders
from pilotfish.model.common import FractionalPercent, StringMatcher

LEGACY_NOT_IMPLEMENTED = (
    "the deprecated cors field is not supported by pilotfish: use the CorsPolicy per-route "
    "config of envoy.filters.http.cors"
)


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """envoy.extensions.filters.http.cors.v3.CorsPolicy. None / "": not set at this level."""

    allow_origins: tuple[StringMatcher, ...] = ()
    allow_methods: bytes = b""
    allow_headers: bytes = b""
    expose_headers: bytes = b""
    max_age: bytes = b""
    allow_credentials: bool | None = None
    allow_private_network_access: bool | None = None
    forward_not_matching_preflights: bool | None = None
    filter_enabled: FractionalPercent | None = None  # None: 100 %
    shadow_enabled: FractionalPercent | None = None  # None: 0 %


class CorsConfig:
    """The filter-level config (Cors {} has no fields)."""


def parse_policy(msg: Any, path: str) -> CorsPolicy:
    from pilotfish.xds.translate import common as c

    def opt_bool(name: str) -> bool | None:
        return getattr(msg, name).value if msg.HasField(name) else None

    def opt_fraction(name: str) -> FractionalPercent | None:
        if not msg.HasField(name):
            return None
        return c.runtime_fraction(getattr(msg, name)).default

    return CorsPolicy(
        allow_origins=tuple(
            c.string_matcher(m, f"{path}.allow_origin_string_match[{i}]")
            for i, m in enumerate(msg.allow_origin_string_match)
        ),
        allow_methods=msg.allow_methods.encode(),
        allow_headers=msg.allow_headers.encode(),
        expose_headers=msg.expose_headers.encode(),
        max_age=msg.max_age.encode(),
        allow_credentials=opt_bool("allow_credentials"),
        allow_private_network_access=opt_bool("allow_private_network_access"),
        forward_not_matching_preflights=opt_bool("forward_not_matching_preflights"),
        filter_enabled=opt_fraction("filter_enabled"),
        shadow_enabled=opt_fraction("shadow_enabled"),
    )


class CorsStats:
    def __init__(self, scope: Any) -> None:
        self.origin_valid = scope.counter("cors.origin_valid")
        self.origin_invalid = scope.counter("cors.origin_invalid")


class CorsFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.cors"
    type_names = ("envoy.extensions.filters.http.cors.v3.Cors",)
    per_route_type_names = ("envoy.extensions.filters.http.cors.v3.CorsPolicy",)

    def parse(self, msg: Any, ctx: Any, path: str) -> CorsConfig:
        return CorsConfig()

    def parse_per_route(self, msg: Any, ctx: Any, path: str) -> CorsPolicy:
        return parse_policy(msg, path)

    def build_filter(
        self, config: CorsConfig, ctx: Any, name: str, scope: Any
    ) -> tuple[Callable[[], hf.HttpFilter], bool]:
        """Route-only: without a policy the filter changes nothing."""
        stats = CorsStats(scope)
        rng = random.Random()
        return (lambda: CorsFilter(name, stats, rng)), True


def _first(policies: tuple[CorsPolicy, ...], attr: str) -> Any:
    """The most specific policy's setting (None / empty: not set there)."""
    for p in policies:
        value = getattr(p, attr)
        if value is not None and value != b"":
            return value
    return None


def _sampled(pct: FractionalPercent, rng: random.Random) -> bool:
    return pct.numerator > 0 and rng.getrandbits(64) % pct.denominator < pct.numerator


class CorsFilter(hf.HttpFilter):
    __slots__ = ("name", "origin", "policies", "rng", "stats")

    def __init__(self, name: str, stats: CorsStats, rng: random.Random) -> None:
        self.name = name
        self.stats = stats
        self.rng = rng
        self.policies: tuple[CorsPolicy, ...] = ()
        self.origin = b""  # set for a CORS request from an allowed origin

    def _enabled(self) -> bool:
        for p in self.policies:
            pct = p.filter_enabled
            return pct is None or _sampled(pct, self.rng)
        return False

    def _shadow_enabled(self) -> bool:
        for p in self.policies:
            pct = p.shadow_enabled
            return pct is not None and _sampled(pct, self.rng)
        return False

    def _origin_allowed(self, origin: bytes) -> bool:
        # The most specific policy with origins decides (its list is not merged with others).
        for p in self.policies:
            if p.allow_origins:
                return any(m.matches(b"*") or m.matches(origin) for m in p.allow_origins)
        return False

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        policies = self.policies = self.stream.per_filter_configs(self.name)
        if not policies:
            return hf.CONTINUE
        enabled = self._enabled()
        if not enabled and not self._shadow_enabled():
            return hf.CONTINUE
        origin = headers.get(b"origin")
        if not origin:
            return hf.CONTINUE
        preflight = headers.method == b"OPTIONS" and bool(
            headers.get(b"access-control-request-method")
        )
        if not self._origin_allowed(origin):
            self.stats.origin_invalid.value += 1
            if (
                enabled
                and preflight
                and _first(policies, "forward_not_matching_preflights") is False
            ):
                self._answer([])
                return hf.STOP
            return hf.CONTINUE
        self.stats.origin_valid.value += 1
        if not enabled:
            return hf.CONTINUE
        self.origin = origin
        if not preflight:
            return hf.CONTINUE
        out = [(b"access-control-allow-origin", origin)]
        if _first(policies, "allow_credentials"):
            out.append((b"access-control-allow-credentials", b"true"))
        for attr, name in (
            ("allow_methods", b"access-control-allow-methods"),
            ("allow_headers", b"access-control-allow-headers"),
            ("max_age", b"access-control-max-age"),
        ):
            value = _first(policies, attr)
            if value:
                out.append((name, value))
        if (
            _first(policies, "allow_private_network_access")
            and headers.get(b"access-control-request-private-network") == b"true"
        ):
            out.append((b"access-control-allow-private-network", b"true"))
        self._answer(out)
        return hf.STOP

    def _answer(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream.send_local_reply(200, b"", "cors_response", 0, extra_headers=headers)

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> int:
        origin = self.origin
        if not origin:
            return hf.CONTINUE  # (a preflight answered here gets these headers too, as in Envoy)
        headers.set(b"access-control-allow-origin", origin)
        if _first(self.policies, "allow_credentials"):
            headers.set(b"access-control-allow-credentials", b"true")
        expose = _first(self.policies, "expose_headers")
        if expose:
            headers.set(b"access-control-expose-headers", expose)
        return hf.CONTINUE
