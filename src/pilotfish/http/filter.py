"""The HTTP filter API (Envoy's StreamDecoderFilter / StreamEncoderFilter).

A filter factory (an extension's ``build``) returns a callable that creates one filter per
stream. Decoder methods run in config order on the request, encoder methods in reverse order on
the response. A method returns CONTINUE to pass the message on, or STOP to hold it: the
connection manager then buffers what follows until the filter calls
``stream.continue_decoding()`` (or ``continue_encoding()``). A data method may also return new
bytes: the message goes on with those instead (a filter that transforms bodies). A filter may
answer itself with ``stream.send_local_reply(...)``. The router is not one of these filters: it is
the connection manager's terminal step.
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
