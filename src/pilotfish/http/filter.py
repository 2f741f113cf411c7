"""The HTTP filter API (Envoy's StreamDecoderFilter / StreamEncoderFilter).

A filter factory (an extension's ``build``) returns a callable that creates one filter per
stream. Decoder methods run in config order on the request, encoder methods in reverse order on
the response. A method returns CONTINUE to pass the message on, or STOP to hold it: the
connection manager then buffers what follows until the filter calls
``stream.continue_decoding()`` (or ``continue_encoding()``). A data method may also return new
bytes: the message goes on with those instead (a filter that transforms bodies). A filter may
answer itself with ``stream.send_local_reply(...)``. The router is not one of these filters: it is
the connection manager's terminal step.

Per-route config: a factory that lists ``per_route_type_names`` parses those configs once, at
translation (``parse_per_route``), and the model keeps the result on the route, virtual host and
route table (``typed_per_filter_config``: filter name -> parsed config). Route tables are
compiled with the most specific level resolved, so a filter asks for it at no cost beyond a dict
lookup: ``stream.per_filter_config(name)`` (the most specific, or None) or
``stream.per_filter_configs(name)`` (every level, most specific first). Such a factory builds its
filters with ``build_filter(config, ctx, name, scope) -> (make, route_only)``: ``name`` is the
filter's name in the chain (the key of ``typed_per_filter_config``), ``scope`` the connection
manager's ``http.<stat_prefix>.`` stats scope, and ``route_only`` says the filter-level config does
nothing, so that the connection manager creates the filter only for requests whose route has a
per-route config for it (requests on other routes do not pay for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

CONTINUE = 0
STOP = 1


class HttpFilter:
    """Base class: every method passes through. Override what the filter needs."""

    # Set by the connection manager when the filter is created.
    stream: Any = None

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        return CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> int | bytes:
        return CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> int:
        return CONTINUE

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> int:
        return CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> int | bytes:
        return CONTINUE

    def encode_trailers(self, trailers: HeaderMap) -> int:
        return CONTINUE

    def on_destroy(self) -> None:
        """The stream is over (completed or reset)."""
