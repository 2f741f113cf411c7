"""envoy.filters.http.fault: accepted only in the form that injects nothing.

istiod puts a fault filter with an empty config (``HTTPFault {}``) in every HTTP filter chain
it generates, and configures the faults of a VirtualService per route
(``typed_per_filter_config``). An empty filter config injects nothing: no delay or abort, and
header-controlled faults need ``delay.header_delay`` / ``abort.header_abort`` to be set. So the
empty form is a no-op, left out of the chain. Any fault configured here, or per route (see
pilotfish.xds.translate.route), is refused: fault injection is not implemented.
"""

from __future__ import annotations

from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory, NotRun

NOT_IMPLEMENTED = "fault injection is not implemented by pilotfish"


class FaultFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.fault"
    type_names = ("envoy.extensions.filters.http.fault.v3.HTTPFault",)

    def parse(self, msg: Any, ctx: Any, path: str) -> NotRun:
        for field in ("delay", "abort", "response_rate_limit"):
            if msg.HasField(field):
                raise ConfigError(f"{path}.typed_config.{field}", NOT_IMPLEMENTED)
        return NotRun(telemetry=False)
