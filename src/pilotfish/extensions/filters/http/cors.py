"""envoy.filters.http.cors: accepted only in the form that does nothing.

The filter itself has no settings that act on requests: it applies the ``CorsPolicy`` of the
matched virtual host or route (``typed_per_filter_config``, or the deprecated ``cors`` fields).
istiod puts an empty CORS filter (``Cors {}``) in every HTTP filter chain and a policy only on
the routes of VirtualServices with a ``corsPolicy``. Without any policy the filter passes every
request and response unchanged, so it is left out of the chain; a route table that carries a
CORS policy is refused (pilotfish.xds.translate.route), since CORS is not implemented.
"""

from __future__ import annotations

from typing import Any

from pilotfish.extensions.registry import Category, ExtensionFactory, NotRun

NOT_IMPLEMENTED = "CORS policies are not implemented by pilotfish"


class CorsFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.cors"
    type_names = ("envoy.extensions.filters.http.cors.v3.Cors",)

    def parse(self, msg: Any, ctx: Any, path: str) -> NotRun:
        return NotRun(telemetry=False)
