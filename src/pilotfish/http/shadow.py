"""Request mirroring (a route's ``request_mirror_policies``), fire and forget.

For each policy whose ``runtime_fraction`` samples the request, a copy of the request as the
router sends it (after header mutations and rewrites) goes to a host of the mirror cluster,
with ``-shadow`` appended to the host (before any port), as Envoy does. Its response is read
and discarded; a failure, a timeout (the route's) or a missing cluster is only counted: the
main request never waits for a shadow and never fails because of one.

The body is mirrored when the request completes and the body fitted in the connection's buffer
limit (it is kept in memory until then); a larger body abandons the shadow
(``cluster.<main>.retry_or_shadow_abandoned``), where Envoy streams it. Trailers are not
mirrored. ``host_rewrite_literal`` and ``disable_shadow_host_suffix_append`` apply; header
mutations of the mirror policy are refused at translation.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from pilotfish.codec.http1 import encode_request_head
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from pilotfish.model.route import MirrorPolicy

if TYPE_CHECKING:
    from pilotfish.upstream.conn_pool import UpstreamConnection


def shadow_host(authority: bytes) -> bytes:
    """Envoy's shadowAppendedHost: ``host-shadow``, keeping a port (and IPv6 brackets)."""
    colon = authority.rfind(b":")
    if colon > 0 and authority.rfind(b"]") < colon and authority[colon + 1 :].isdigit():
        return authority[:colon] + b"-shadow" + authority[colon:]
    return authority + b"-shadow"


class Shadows:
    """The shadows of one request, waiting for its body (if any)."""

    def __init__(
        self,
        router: Any,
        targets: list[tuple[MirrorPolicy, Any]],
        headers: RequestHeaders,
        limit: int,
    ) -> None:
        self.router = router
        self.targets = targets
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.abandoned = False

    def data(self, data: bytes, end_stream: bool) -> None:
        if self.abandoned:
            return
        if data:
            self.size += len(data)
            if self.size > self.limit:
                self.abandoned = True
                self.body = []
                self.router.cluster.stats.scope.counter("retry_or_shadow_abandoned").value += 1
                return
            self.body.append(data)
        if end_stream:
            self.send()

    def send(self) -> None:
        body = b"".join(self.body)
        self.body = []
        src = self.headers
        has_body = bool(body) or self.router.stream.has_body
        items = list(src.items)
        if has_body:
            items = [
                (n, v) for n, v in items if n != b"content-length" and n != b"transfer-encoding"
            ]
            items.append((b"content-length", b"%d" % len(body)))
        timeout = self.router.timeout
        for policy, cluster in self.targets:
            host = cluster.choose_host()
            if host is None:
                continue
            authority = policy.host_rewrite_literal or src.authority
            if policy.append_shadow_suffix:
                authority = shadow_host(authority)
            headers = RequestHeaders(src.method, src.path, authority, items, src.scheme)
            head, _ = encode_request_head(headers, not has_body)
            pool = host.pool
            if pool is None:
                from pilotfish.upstream.conn_pool import Http1ConnPool

                pool = host.pool = Http1ConnPool(cluster, host)
            ShadowRequest(cluster, host, pool, head + body, timeout).start()


def start_shadows(router: Any, end_stream: bool) -> Shadows | None:
    """Called by the router once the request headers are final. Returns the pending shadows
    when the body is still to come (the router feeds it to ``data``), else None."""
    stream = router.stream
    cm = router.settings.cluster_manager
    targets = []
    for policy in router.action.request_mirror_policies:
        if policy.fraction < 1.0 and random.random() >= policy.fraction:
            continue
        cluster = cm.clusters.get(policy.cluster)
        if cluster is not None:
            targets.append((policy, cluster))
    if not targets:
        return None
    src = stream.request_headers
    headers = RequestHeaders(src.method, src.path, src.authority, list(src.items), src.scheme)
    shadows = Shadows(router, targets, headers, stream.conn.info.buffer_limit)
    if end_stream:
        shadows.send()
        return None
    return shadows


class ShadowRequest:
    """One mirrored request: a pool client that sends ``data`` and discards the response."""

    is_head = False

    def __init__(self, cluster: Any, host: Any, pool: Any, data: bytes, timeout: float) -> None:
        self.cluster = cluster
        self.host = host
        self.pool = pool
        self.data = data
        self.timeout = timeout
        self.conn: UpstreamConnection | None = None
        self.timer: Any = None
        self.done = False

    def start(self) -> None:
        if self.timeout > 0:
            self.timer = self.cluster.loop.call_later(self.timeout, self._on_timeout)
        self.pool.new_stream(self)

    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.write(self.data)
        self.data = b""

    def on_pool_failure(self, kind: str, reason: str) -> None:
        self._finish(failed=True)

    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        self.status = headers.status

    status = 0

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_complete(self, trailers: HeaderMap | None) -> None:
        if self.done:
            return
        conn = self.conn
        self.cluster.stats.response_code(self.status, False)
        self._finish(failed=self.status >= 500)
        if conn is not None:
            conn.done(reusable=True)

    def on_informational(self, headers: ResponseHeaders) -> None:
        pass

    def on_upstream_reset(self, reason: str) -> None:
        self._finish(failed=True)

    def on_upstream_protocol_error(self, error: Exception) -> None:
        self._finish(failed=True)

    def on_upstream_writable(self, writable: bool) -> None:
        pass

    def begin_upstream_read(self) -> None:
        pass

    def after_upstream_read(self) -> None:
        pass

    def _on_timeout(self) -> None:
        self.timer = None
        if self.done:
            return
        conn = self.conn
        self._finish(failed=True)
        if conn is None:
            self.pool.cancel(self)
        else:
            conn.abort()

    def _finish(self, *, failed: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        host = self.host
        if failed:
            host.rq_error += 1
        else:
            host.rq_success += 1
        if self.conn is not None:  # bound to a connection: counted active by the pool
            self.cluster.stats.upstream_rq_active.value -= 1
            self.cluster.resources[0].requests.dec()
            host.rq_active -= 1
