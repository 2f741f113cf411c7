"""Backpressure as one small object: a set of named reasons, paused while any is set.

One per direction that can be paused (a socket's reading, a stream's body producer). The
owner calls ``pause(reason)`` / ``resume(reason)`` and acts only on the transitions they
return, so several independent causes (a pipelined request, a full upstream buffer, a closed
HTTP/2 window) never undo each other.
"""

from __future__ import annotations

# Reasons, one bit each (ints, so that the request path stays a few attribute operations).
PIPELINE = 1  # HTTP/1.1: a second request arrived while the first is in flight
UPSTREAM_BACKPRESSURE = 2  # the upstream's write buffer is above its high watermark
DOWNSTREAM_BACKPRESSURE = 4  # the downstream's write buffer is above its high watermark
BUFFER_LIMIT = 8  # a filter buffers the body and it reached the buffer limit
PEER_WINDOW = 16  # HTTP/2: the peer's flow-control window is closed; sends are queued

REASON_NAMES: dict[int, str] = {
    PIPELINE: "pipeline",
    UPSTREAM_BACKPRESSURE: "upstream_backpressure",
    DOWNSTREAM_BACKPRESSURE: "downstream_backpressure",
    BUFFER_LIMIT: "buffer_limit",
    PEER_WINDOW: "peer_window",
}


class FlowControl:
    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons = 0

    @property
    def paused(self) -> bool:
        return self.reasons != 0

    def pause(self, reason: int) -> bool:
        """Add ``reason``; True if this paused a running flow (act on it)."""
        was = self.reasons
        self.reasons = was | reason
        return was == 0

    def resume(self, reason: int) -> bool:
        """Drop ``reason``; True if that was the last one (resume the flow)."""
        was = self.reasons
        if not was & reason:
            return False
        self.reasons = was & ~reason
        return self.reasons == 0

    def names(self) -> list[str]:
        return [name for bit, name in REASON_NAMES.items() if self.reasons & bit]

    def __repr__(self) -> str:
        return f"FlowControl({'|'.join(self.names()) or 'running'})"
