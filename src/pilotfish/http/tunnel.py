"""An upgraded HTTP/1.1 connection (101 Switching Protocols, e.g. WebSocket): from then on the
downstream and upstream connections are relayed byte for byte, with backpressure both ways."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pilotfish.http.conn_manager import ActiveStream
    from pilotfish.upstream.conn_pool import UpstreamConnection


class Tunnel:
    def __init__(self, stream: ActiveStream, upstream: UpstreamConnection) -> None:
        self.stream = stream
        self.upstream = upstream
        self.closed = False
        upstream.tunnel = self
        upstream.client = None
        stream.conn.tunnel = self
        stats = stream.hcm.stats
        stats.downstream_cx_upgrades_total.value += 1
        stats.downstream_cx_upgrades_active.value += 1

    def downstream_data(self, data: bytes) -> None:
        if not self.closed and data:
            self.stream.bytes_received += len(data)
            self.upstream.write(data)

    def upstream_data(self, data: bytes) -> None:
        if not self.closed and data:
            self.stream.bytes_sent += len(data)
            self.stream.conn.write(data)

    def downstream_writable(self, writable: bool) -> None:
        if writable:
            self.upstream.resume_reading()
        else:
            self.upstream.pause_reading()

    def upstream_writable(self, writable: bool) -> None:
        conn = self.stream.conn
        if writable:
            conn.resume_reading(2)
        else:
            conn.pause_reading(2)

    def downstream_closed(self) -> None:
        self.close()

    def upstream_closed(self) -> None:
        if self.closed:
            return
        self.close()
        self.stream.conn.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.hcm.stats.downstream_cx_upgrades_active.value -= 1
        self.upstream.tunnel = None
        self.upstream.close()
        stream = self.stream
        if not stream.done:
            stream.request_complete = True
            stream._finish()
