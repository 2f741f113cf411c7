"""envoy.filters.http.router: config validation. The router itself is the terminal step of the
HTTP connection manager (``pilotfish.http.router``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.xds.translate import common as c

# The x-envoy-* request headers the router can be told to check strictly.
_STRICT_CHECKABLE = {
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
}


@dataclass(frozen=True, slots=True)
class RouterConfig:
    suppress_envoy_headers: bool = False
    strict_check_headers: tuple[bytes, ...] = ()
    respect_expected_rq_timeout: bool = False
    dynamic_stats: bool = True


class RouterFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.router"
    type_names = ("envoy.extensions.filters.http.router.v3.Router",)

    def parse(self, msg: Any, ctx: Any, path: str) -> RouterConfig:
        if len(msg.upstream_http_filters):
            raise ConfigError(
                f"{path}.typed_config.upstream_http_filters",
                "upstream HTTP filters are not supported",
            )
        for i, h in enumerate(msg.strict_check_headers):
            if h not in _STRICT_CHECKABLE:
                raise ConfigError(
                    f"{path}.typed_config.strict_check_headers[{i}]",
                    f"value must be in list {sorted(_STRICT_CHECKABLE)}",
                )
        return RouterConfig(
            suppress_envoy_headers=msg.suppress_envoy_headers,
            strict_check_headers=tuple(h.encode() for h in msg.strict_check_headers),
            respect_expected_rq_timeout=msg.respect_expected_rq_timeout,
            dynamic_stats=c.bool_value(msg, "dynamic_stats", True),
        )
