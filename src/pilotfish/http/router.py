"""The router (envoy.filters.http.router): the connection manager's terminal step.

``route_request`` acts on the matched route: direct responses and redirects are answered
locally; a route action picks a cluster and a host and sends the request upstream through the
host's connection pool. ``Router`` holds one request's routing state (timeouts, retries,
buffered body); ``UpstreamRequest`` is one attempt on one upstream connection.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from pilotfish.codec.http1 import (
    RESP_SERVICE_TIME,
    SEEN_ENVOY,
    CodecError,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
)
from pilotfish.http.hash_policy import request_hash
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from pilotfish.model.common import AppendAction, HeaderMutations
from pilotfish.model.route import (
    DirectResponseAction,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    WeightedCluster,
)
from pilotfish.stream_info import ResponseFlag
from pilotfish.upstream.conn_pool import Http1ConnPool, UpstreamConnection
from pilotfish.upstream.outlier import CONNECT_FAILED, CONNECT_SUCCESS, TIMEOUT

if TYPE_CHECKING:
    from pilotfish.context import ServerContext
    from pilotfish.http.conn_manager import ActiveStream
    from pilotfish.router.matcher import CompiledRoute
    from pilotfish.upstream.cluster import Cluster
    from pilotfish.upstream.host import Host

_RESET_BODY = b"upstream connect error or disconnect/reset before headers. "
# Request headers the router consumes (Envoy removes them before forwarding).
_ROUTER_CONTROL_HEADERS = frozenset(
    (
        b"x-envoy-upstream-rq-timeout-ms",
        b"x-envoy-upstream-rq-per-try-timeout-ms",
        b"x-envoy-retry-on",
        b"x-envoy-max-retries",
        b"x-envoy-retriable-status-codes",
        b"x-envoy-retriable-header-names",
        b"x-envoy-retry-grpc-on",
        b"x-envoy-hedge-on-per-try-timeout",
        b"x-envoy-upstream-rq-timeout-alt-response",
        b"x-envoy-expected-rq-timeout-ms",
    )
)


class RouterSettings:
    """The router filter's config plus what it needs from the server (one per HCM)."""

    def __init__(self, config: Any, ctx: ServerContext) -> None:
        self.suppress_envoy_headers = bool(config and config.suppress_envoy_headers)
        self.respect_expected_rq_timeout = bool(config and config.respect_expected_rq_timeout)
        self.cluster_manager = ctx.cluster_manager
        self.ctx = ctx


# -- header mutations -------------------------------------------------------------------------


def _apply(headers: HeaderMap, mutations: HeaderMutations, stream: Any) -> None:
    """One level's changes, in Envoy's order: removals, then overwrites (old values removed,
    the new one appended at the end), then appends."""
    for name in mutations.remove:
        headers.remove(name)
    adds = mutations.add
    for opt in adds:
        action = opt.action
        if action is not AppendAction.OVERWRITE_IF_EXISTS_OR_ADD and (
            action is not AppendAction.OVERWRITE_IF_EXISTS
        ):
            continue
        if action is AppendAction.OVERWRITE_IF_EXISTS and opt.name not in headers:
            continue
        render = opt.render
        value = render(stream) if render is not None else opt.value
        if not value and not opt.keep_empty_value:
            continue
        headers.remove(opt.name)
        headers.items.append((opt.name, value.encode("latin-1", "replace")))
    for opt in adds:
        action = opt.action
        if action is AppendAction.ADD_IF_ABSENT:
            if opt.name in headers:
                continue
        elif action is not AppendAction.APPEND_IF_EXISTS_OR_ADD:
            continue
        render = opt.render
        value = render(stream) if render is not None else opt.value
        if not value and not opt.keep_empty_value:
            continue
        headers.items.append((opt.name, value.encode("latin-1", "replace")))


def apply_request_mutations(
    stream: ActiveStream, cr: CompiledRoute, wc: WeightedCluster | None
) -> None:
    """Weighted-cluster, route, virtual host and route-config header changes, most specific
    first (so a less specific OVERWRITE wins) unless most_specific_header_mutations_wins."""
    extra = wc.headers if wc is not None else None
    headers = stream.request_headers
    _apply_levels(headers, extra, cr.request_mutations, cr.most_specific_wins, stream)


def apply_response_mutations(
    stream: ActiveStream, headers: ResponseHeaders, cr: CompiledRoute, wc: WeightedCluster | None
) -> None:
    extra = wc.response_headers if wc is not None else None
    _apply_levels(headers, extra, cr.response_mutations, cr.most_specific_wins, stream)


def _apply_levels(
    headers: HeaderMap,
    weighted: HeaderMutations | None,
    levels: tuple[HeaderMutations, ...],
    most_specific_wins: bool,
    stream: ActiveStream,
) -> None:
    if weighted and not most_specific_wins:
        _apply(headers, weighted, stream)
    for m in levels:
        _apply(headers, m, stream)
    if weighted and most_specific_wins:
        _apply(headers, weighted, stream)


# -- the decision -------------------------------------------------------------------------------


def route_request(stream: ActiveStream, end_stream: bool) -> None:
    hcm = stream.hcm
    cr = stream.route
    hcm.stats.rq_total.value += 1
    if cr is None:
        hcm.stats.no_route.value += 1
        stream.send_local_reply(404, b"", "route_not_found", ResponseFlag.NO_ROUTE_FOUND)
        return
    action = cr.action
    if cr.cluster:
        # The common case: a route to one named cluster.
        cluster = hcm.router.cluster_manager.clusters.get(cr.cluster)
        if cluster is None:
            _no_cluster(stream, action)
            return
        stream.upstream_cluster = cr.cluster
        router = stream.router = Router(stream, hcm.router, cr, cluster, None)
        router.start(end_stream)
    elif isinstance(action, RouteAction):
        _forward(stream, cr, action, end_stream)
    elif isinstance(action, DirectResponseAction):
        hcm.stats.rq_direct_response.value += 1
        body = action.body or b""
        stream.send_local_reply(action.status, body, "direct_response", 0)
    elif isinstance(action, RedirectAction):
        hcm.stats.rq_redirect.value += 1
        location = redirect_location(stream.request_headers, action, cr.route)
        stream.send_local_reply(
            action.response_code, b"", "direct_response", 0, extra_headers=[(b"location", location)]
        )
    else:
        hcm.stats.no_route.value += 1
        stream.send_local_reply(404, b"", "route_not_found", ResponseFlag.NO_ROUTE_FOUND)


def _no_cluster(stream: ActiveStream, action: Any) -> None:
    stream.hcm.stats.no_cluster.value += 1
    stream.send_local_reply(
        action.cluster_not_found_response_code,
        b"",
        "cluster_not_found",
        ResponseFlag.NO_CLUSTER_FOUND,
    )


def redirect_location(headers: RequestHeaders, action: RedirectAction, route: Route) -> bytes:
    """Envoy's RouteEntryImplBase::newUri."""
    request_proto = headers.get(b"x-forwarded-proto") or b"http"
    scheme = action.scheme.encode() if action.scheme else request_proto
    new_port = b":%d" % action.port if action.port else b""
    if action.host:
        host = action.host
    else:
        host = headers.authority
        colon = host.rfind(b":")
        if colon >= 0 and host.rfind(b"]") < colon:
            request_port = host[colon:]
            remove = bool(new_port)
            if scheme != request_proto:
                remove = remove or (request_proto == b"https" and request_port == b":443")
                remove = remove or (request_proto == b"http" and request_port == b":80")
            if remove:
                host = host[:colon]
    path_only, query = _split_query(headers.path)
    if action.path is not None:
        if b"?" in action.path:
            path_only, query = action.path, b""
        else:
            path_only = action.path
    elif action.prefix_rewrite is not None:
        prefix = route.match.value.encode()
        if path_only[: len(prefix)].lower() == prefix.lower():
            path_only = action.prefix_rewrite + path_only[len(prefix) :]
    elif action.regex_rewrite is not None:
        pattern, sub = action.regex_rewrite
        path_only = pattern.replace_all(path_only, sub)
        if not path_only.startswith(b"/"):
            path_only = b"/" + path_only  # Envoy: the Location's path starts with a slash
    if action.strip_query:
        query = b""
    return scheme + b"://" + host + new_port + path_only + query


def _split_query(path: bytes) -> tuple[bytes, bytes]:
    q = path.find(b"?")
    return (path, b"") if q < 0 else (path[:q], path[q:])


def _pick_cluster(stream: ActiveStream, action: RouteAction) -> tuple[str, WeightedCluster | None]:
    if action.cluster:
        return action.cluster, None
    headers = stream.request_headers
    if action.cluster_header:
        value = headers.get(action.cluster_header)
        return (value.decode("latin-1") if value else ""), None
    wcs = action.weighted_clusters
    assert wcs is not None
    selector: int | None = None
    if wcs.header_name:
        raw = headers.get_all(wcs.header_name)
        if len(raw) == 1 and raw[0].isdigit():
            selector = int(raw[0])
    if selector is None:
        selector = random.getrandbits(64)
    point = selector % wcs.total_weight
    for wc in wcs.clusters:
        if point < wc.weight:
            break
        point -= wc.weight
    else:
        wc = wcs.clusters[-1]
    if wc.cluster_header:
        v = headers.get(wc.cluster_header)
        return (v.decode("latin-1") if v else ""), wc
    return wc.name, wc


def _forward(
    stream: ActiveStream, cr: CompiledRoute, action: RouteAction, end_stream: bool
) -> None:
    """A route whose cluster comes from a header or a weighted choice."""
    hcm = stream.hcm
    settings = hcm.router
    name, wc = _pick_cluster(stream, action)
    cluster = settings.cluster_manager.clusters.get(name) if name else None
    if cluster is None:
        _no_cluster(stream, action)
        return
    stream.upstream_cluster = name
    router = stream.router = Router(stream, settings, cr, cluster, wc)
    router.start(end_stream)


def _rewrite_path(stream: ActiveStream, route: Route, action: RouteAction, suppress: bool) -> None:
    """prefix_rewrite / regex_rewrite, keeping the original in x-envoy-original-path."""
    headers = stream.request_headers
    original = headers.path
    if action.prefix_rewrite is not None:
        prefix = route.match.value.encode()
        path_only, query = _split_query(original)
        if path_only[: len(prefix)].lower() != prefix.lower():
            return
        headers.path = action.prefix_rewrite + path_only[len(prefix) :] + query
    elif action.regex_rewrite is not None:
        pattern, sub = action.regex_rewrite
        path_only, query = _split_query(original)
        headers.path = pattern.replace_all(path_only, sub) + query
    else:
        return
    if not suppress:
        headers.set(b"x-envoy-original-path", original)


def _rewrite_host(
    stream: ActiveStream, action: RouteAction, wc: WeightedCluster | None, host: Host | None
) -> None:
    headers = stream.request_headers
    new: bytes | None = None
    if wc is not None and wc.host_rewrite_literal:
        # A weighted cluster's rewrite is a plain header change: no x-envoy-original-host.
        headers.authority = wc.host_rewrite_literal.encode()
        return
    if action.host_rewrite_literal:
        new = action.host_rewrite_literal
    elif action.host_rewrite_header:
        new = headers.get(action.host_rewrite_header) or None
    elif action.host_rewrite_path_regex is not None:
        pattern, sub = action.host_rewrite_path_regex
        path = headers.path.split(b"?", 1)[0]
        new = pattern.replace_all(path, sub)
    elif action.auto_host_rewrite and host is not None and host.hostname:
        new = host.hostname.encode()
    if new is None or new == headers.authority:
        return
    if action.append_x_forwarded_host:
        from pilotfish.http.conn_manager import _append_header

        _append_header(headers, b"x-forwarded-host", headers.authority)
    headers.set(b"x-envoy-original-host", headers.authority)
    headers.authority = new


def _retriable_status(
    policy: RetryPolicy | None, retry_on: frozenset[str], status: int, codes: frozenset[int]
) -> bool:
    if "5xx" in retry_on and status >= 500:
        return True
    if "gateway-error" in retry_on and status in (502, 503, 504):
        return True
    if "retriable-4xx" in retry_on and status == 409:
        return True
    return "retriable-status-codes" in retry_on and status in codes


_RESET_CONDITIONS = frozenset(("5xx", "gateway-error", "reset"))
_OVERLOADED = [(b"x-envoy-overloaded", b"true")]
# Router._retry outcomes.
_RETRYING = 0
_NO_RETRY = 1
_RETRY_LIMIT = 2
_RETRY_OVERFLOW = 3
_NO_RETRY_ON: frozenset[str] = frozenset()
_NO_CODES: frozenset[int] = frozenset()


class Router:
    """Routing state of one request: its cluster, timeouts, retries and current attempt.
    Defaults are class attributes: a plain request sets only what it uses."""

    upstream: UpstreamRequest | None = None
    body: list[bytes] | None = None  # request body not yet sent, or kept for retries
    body_bytes = 0
    trailers: HeaderMap | None = None
    request_ended = False
    per_try_timeout = 0.0
    global_deadline: float | None = None
    try_deadline: float | None = None
    retries_left = 0
    retry_policy: RetryPolicy | None = None
    retry_handle: Any = None
    attempted_hosts: set[Host] | None = None
    retained = False  # the body is kept whole for a possible retry
    retry_configured = False
    response_started = False
    cancelled = False
    downstream_complete_at = 0.0
    tunnel: Any = None
    shadows: Any = None  # mirrored copies waiting for the request body (pilotfish.http.shadow)
    hash_key: int | None = None  # the request's hash (route hash_policy), for RING_HASH/MAGLEV
    set_cookies: list[bytes] | None = None  # hash_policy cookies generated for the response
    hashed: bool = False  # hash_key computed (once per request)

    def __init__(
        self,
        stream: ActiveStream,
        settings: RouterSettings,
        cr: CompiledRoute,
        cluster: Cluster,
        wc: WeightedCluster | None,
    ) -> None:
        self.stream = stream
        self.settings = settings
        self.cr = cr
        # A Router only exists for routes whose action is a RouteAction.
        self.action: RouteAction = cr.action  # type: ignore[assignment]
        self.cluster = cluster
        self.wc = wc
        self.timeout = self.action.timeout
        self.retry_on: frozenset[str] = _NO_RETRY_ON
        self.retry_codes: frozenset[int] = _NO_CODES
        if cluster.stat_name != cluster.name:
            stream.upstream_cluster_observability_name = cluster.stat_name

    # -- start --------------------------------------------------------------------------------

    def start(self, end_stream: bool) -> None:
        stream = self.stream
        headers = stream.request_headers
        cr = self.cr
        policy = cr.retry_policy
        if policy is not None:
            self.retry_policy = policy
            self.retry_on = policy.retry_on
            self.retries_left = policy.num_retries
            self.retry_codes = policy.retriable_status_codes
            self.per_try_timeout = policy.per_try_timeout
        expected = cr.expected_timeout
        if stream.seen & SEEN_ENVOY or stream.internal:
            if stream.internal:
                self._read_control_headers(headers)
                expected = b""
            if any(n in _ROUTER_CONTROL_HEADERS for n, _ in headers.items):
                headers.items = [
                    (n, v) for n, v in headers.items if n not in _ROUTER_CONTROL_HEADERS
                ]
        if self.retries_left and self.retry_on:
            self.retry_configured = self.retained = True
        # Envoy's order: the timeout header, then the route's header mutations, then rewrites.
        suppress = self.settings.suppress_envoy_headers
        if not suppress:
            if not expected:
                t = self.per_try_timeout or self.timeout
                expected = b"%d" % round(t * 1000) if t else b""
            if expected:
                headers.items.append((b"x-envoy-expected-rq-timeout-ms", expected))
        if cr.request_mutations or self.wc is not None:
            apply_request_mutations(stream, cr, self.wc)
        if cr.path_rewrite:
            _rewrite_path(stream, cr.route, self.action, suppress)
        idle = self.action.idle_timeout
        if idle:
            conn = stream.conn
            conn.arm_deadline(conn.last_activity + idle)
        if end_stream:
            self.request_ended = True
            self._start_global_timer()
        self._attempt()
        if self.action.request_mirror_policies and not stream.done:
            from pilotfish.http.shadow import start_shadows

            self.shadows = start_shadows(self, end_stream)

    def _compute_hash(self) -> None:
        """The request's hash, computed as Envoy's consistent-hash balancers ask for it: when a
        host of such a cluster is chosen (so a cookie is generated only for them), from the
        request as it will be forwarded (after the route's header mutations and rewrites)."""
        self.hashed = True
        stream = self.stream
        info = stream.conn.info
        self.hash_key, self.set_cookies = request_hash(
            self.action.hash_policy,
            stream.request_headers,
            stream.downstream_remote_address,
            info.remote_address + info.local_address,
        )

    def _read_control_headers(self, headers: RequestHeaders) -> None:
        """x-envoy-* control headers, honoured on internal requests only (as in Envoy)."""
        raw = headers.get(b"x-envoy-upstream-rq-timeout-ms")
        if raw is not None and raw.isdigit():
            self.timeout = int(raw) / 1000
        raw = headers.get(b"x-envoy-upstream-rq-per-try-timeout-ms")
        if raw is not None and raw.isdigit():
            self.per_try_timeout = int(raw) / 1000
        raw = headers.get(b"x-envoy-retry-on")
        if raw is not None:
            extra = frozenset(x.strip() for x in raw.decode("latin-1").split(",") if x.strip())
            self.retry_on = self.retry_on | extra
            if not self.retries_left:
                self.retries_left = 1
        raw = headers.get(b"x-envoy-max-retries")
        if raw is not None and raw.isdigit():
            self.retries_left = int(raw)
        raw = headers.get(b"x-envoy-retriable-status-codes")
        if raw is not None:
            codes = {int(x) for x in raw.split(b",") if x.strip().isdigit()}
            self.retry_codes = self.retry_codes | frozenset(codes)

    def _start_global_timer(self) -> None:
        conn = self.stream.conn
        now = conn.now
        self.downstream_complete_at = now
        if self.timeout > 0:
            self.global_deadline = deadline = now + self.timeout
            conn.arm_deadline(deadline)

    def _attempt(self) -> None:
        """Pick a host and send the request on one of its pooled connections (the pool counts
        the request in upstream_rq_total once it is bound to a connection)."""
        stream = self.stream
        cluster = self.cluster
        # Envoy counts the attempt before choosing a host (1 for 'no healthy upstream').
        stream.upstream_request_attempt_count += 1
        policy = self.retry_policy
        if self.action.hash_policy and not self.hashed and cluster.lb.uses_hash():
            self._compute_hash()
        if cluster.original_dst:
            host = cluster.choose_host(self._original_destination())
        elif (
            self.attempted_hosts is not None
            and policy is not None
            and policy.retry_host_previous_hosts
        ):
            host = cluster.choose_host(
                None,
                self.attempted_hosts,
                policy.host_selection_retry_max_attempts,
                self.hash_key,
            )
        else:
            hash_key = self.hash_key
            if hash_key is None:
                host = cluster.choose_host()
            else:
                host = cluster.choose_host(None, frozenset(), 1, hash_key)
        if host is None:
            self._fail_local(
                503, b"no healthy upstream", "no_healthy_upstream", ResponseFlag.NO_HEALTHY_UPSTREAM
            )
            return
        if self.retry_configured:
            if self.attempted_hosts is None:
                self.attempted_hosts = set()
            self.attempted_hosts.add(host)
        stream.upstream_host = host.address_str
        if self.cr.host_rewrite and stream.upstream_request_attempt_count == 1:
            _rewrite_host(stream, self.action, self.wc, host)
        pool = host.pool
        if pool is None:
            pool = host.pool = Http1ConnPool(cluster, host)
        up = self.upstream = UpstreamRequest(self, host, pool)
        pool.new_stream(up)

    def _original_destination(self) -> tuple[str, int] | None:
        """Only a destination restored by a listener filter, or the header when the cluster
        says so: never the listener's own address (Envoy's localAddressRestored)."""
        stream = self.stream
        cluster = self.cluster
        od = cluster.config.original_dst
        header = stream.request_headers.get(od.http_header_name) if od.use_http_header else None
        return cluster.original_destination(header, stream.conn.info.original_dst)

    # -- request body -------------------------------------------------------------------------

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        if self.cancelled:
            return
        if data:
            self.body_bytes += len(data)
            if self.retained and self.body_bytes > self.stream.conn.info.buffer_limit:
                # Too big to replay: this request can't be retried any more.
                self.retained = False
                self.cluster.stats.scope.counter("retry_or_shadow_abandoned").value += 1
        if end_stream:
            self.request_ended = True
            self._start_global_timer()
        shadows = self.shadows
        if shadows is not None:
            shadows.data(data, end_stream)
        up = self.upstream
        if up is not None and up.conn is not None:
            up.send_data(data, end_stream)
            if self.retained and data:
                self._keep(data)
        elif data:
            self._keep(data)
            if self.body_bytes > self.stream.conn.info.buffer_limit:
                self.stream.conn.pause_reading(4)  # PAUSE_BUFFER until connected

    def _keep(self, data: bytes) -> None:
        if self.body is None:
            self.body = [data]
        else:
            self.body.append(data)

    def decode_trailers(self, trailers: HeaderMap) -> None:
        if self.cancelled:
            return
        self.trailers = trailers
        self.request_ended = True
        self._start_global_timer()
        shadows = self.shadows
        if shadows is not None:
            shadows.data(b"", True)
        up = self.upstream
        if up is not None and up.conn is not None:
            up.send_trailers(trailers)

    def on_upgrade_data(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.downstream_data(data)
        elif data:
            self._keep(data)

    # -- responses ----------------------------------------------------------------------------

    def on_upstream_headers(
        self, up: UpstreamRequest, headers: ResponseHeaders, end_stream: bool
    ) -> None:
        stream = self.stream
        status = headers.status
        cluster = self.cluster
        monitor = up.host.outlier
        if monitor is not None:
            monitor.put_http_code(status)
        if self.retry_on and _retriable_status(
            self.retry_policy, self.retry_on, status, self.retry_codes
        ):
            retry = self._retry(up, reset_connection=not end_stream)
            if retry == _RETRYING:
                cluster.stats.retried_response_code(status)
                return
            self._no_retry(retry)
        elif stream.upstream_request_attempt_count > 1:
            cluster.stats.upstream_rq_retry_success.value += 1
        self.response_started = True
        self.try_deadline = None
        now = stream.conn.now
        stream.first_upstream_rx = now
        if stream.upgrade is not None and status != 101:
            self._upgrade_refused(up, headers)
            return
        stream.response_code_details = "via_upstream"
        if not self.settings.suppress_envoy_headers and status != 101:
            start = self.downstream_complete_at or up.started_at
            value = b"%d" % int((now - start) * 1000)
            if headers.seen & RESP_SERVICE_TIME:
                headers.set(b"x-envoy-upstream-service-time", value)
            else:
                headers.items.append((b"x-envoy-upstream-service-time", value))
        cookies = self.set_cookies
        if cookies is not None:
            for cookie in cookies:
                headers.items.append((b"set-cookie", cookie))
        if self.cr.response_mutations or self.wc is not None:
            stream.response_code = status  # for %RESPONSE_CODE% in the added headers
            apply_response_mutations(stream, headers, self.cr, self.wc)
        if status == 101:
            self._start_tunnel(up)
        stream.encode_headers(headers, end_stream and status != 101)

    def _upgrade_refused(self, up: UpstreamRequest, headers: ResponseHeaders) -> None:
        """The upstream answered an upgrade request with something other than 101. Envoy
        passes its status and headers on without a body and closes both connections."""
        stream = self.stream
        stream.response_code_details = "websocket_handshake_unsuccessful"
        # As a local reply built from the upstream's headers: the route's response headers
        # come first (observed on Envoy 1.40), no service time, no response-code stats.
        reply = ResponseHeaders(headers.status, [])
        if self.cr.response_mutations or self.wc is not None:
            apply_response_mutations(stream, reply, self.cr, self.wc)
        reply.items += [
            (n, v) for n, v in headers.items if n != b"content-length" and n != b"content-type"
        ]
        stream.conn.closing = True
        up.abandon(reset_connection=False)
        stream.encode_headers(reply, True)

    def on_upstream_complete(self, up: UpstreamRequest, trailers: HeaderMap | None) -> None:
        stream = self.stream
        stream.last_upstream_rx = stream.conn.now
        if trailers is not None:
            stream.encode_trailers(trailers)
        else:
            stream.encode_data(b"", True)

    # -- failures -----------------------------------------------------------------------------

    def on_upstream_failure(self, up: UpstreamRequest, kind: str, reason: str) -> None:
        """The attempt ended without a (complete) response. ``kind``: connection_failure,
        timeout (connect), overflow, reset (connection termination), protocol_error."""
        stream = self.stream
        if kind != "overflow":
            monitor = up.host.outlier
            if monitor is not None:
                monitor.put_result(CONNECT_FAILED)
        if self.response_started:
            if kind == "protocol_error":
                stream.set_response_flag(ResponseFlag.UPSTREAM_PROTOCOL_ERROR)
                stream.response_code_details = (
                    "upstream_reset_after_response_started{protocol_error}"
                )
            else:
                stream.set_response_flag(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION)
                stream.response_code_details = (
                    "upstream_reset_after_response_started{connection_termination}"
                )
            stream.hcm.stats.rq_reset_after_downstream_response_started.value += 1
            stream.reset_stream()
            return
        retriable = (
            kind in ("connection_failure", "timeout")
            and ("connect-failure" in self.retry_on or bool(self.retry_on & _RESET_CONDITIONS))
        ) or (kind in ("reset", "protocol_error") and bool(self.retry_on & _RESET_CONDITIONS))
        if retriable:
            retry = self._retry(up, reset_connection=False)
            if retry == _RETRYING:
                return
            self._no_retry(retry)
        if kind == "connection_failure":
            stream.upstream_transport_failure_reason = reason
            detail_reason = reason.replace(" ", "_")
            self._fail_local(
                503,
                self._reset_body(b"remote connection failure"),
                f"upstream_reset_before_response_started{{remote_connection_failure|{detail_reason}}}",
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE,
            )
        elif kind == "timeout":
            self._fail_local(
                503,
                self._reset_body(b"connection timeout"),
                "upstream_reset_before_response_started{connection_timeout}",
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE,
            )
        elif kind == "overflow":
            # A circuit breaker dropped the request: Envoy says so in x-envoy-overloaded.
            overloaded = None if self.settings.suppress_envoy_headers else _OVERLOADED
            self._fail_local(
                503,
                self._reset_body(b"overflow"),
                "upstream_reset_before_response_started{overflow}",
                ResponseFlag.UPSTREAM_OVERFLOW,
                overloaded,
            )
        elif kind == "protocol_error":
            self._fail_local(
                502,
                self._reset_body(b"protocol error"),
                "upstream_reset_before_response_started{protocol_error}",
                ResponseFlag.UPSTREAM_PROTOCOL_ERROR,
            )
        else:
            self._fail_local(
                503,
                self._reset_body(b"connection termination"),
                "upstream_reset_before_response_started{connection_termination}",
                ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
            )

    def _no_retry(self, retry: int) -> None:
        """A retriable outcome that is not retried: why, in the response flags and stats
        (Envoy's RetryStatus NoRetryLimitExceeded / NoOverflow)."""
        if retry == _RETRY_LIMIT:
            self.cluster.stats.upstream_rq_retry_limit_exceeded.value += 1
            self.stream.set_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        elif retry == _RETRY_OVERFLOW:
            self.stream.set_response_flag(ResponseFlag.UPSTREAM_OVERFLOW)

    def _reset_body(self, reason: bytes) -> bytes:
        if self.stream.upstream_request_attempt_count > 1:
            return _RESET_BODY + b"retried and the latest reset reason: " + reason
        return _RESET_BODY + b"reset reason: " + reason

    def _fail_local(
        self,
        status: int,
        body: bytes,
        details: str,
        flag: int,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        *,
        charge: bool = True,
    ) -> None:
        """A local reply instead of the upstream's; Envoy charges its code to the cluster."""
        self.upstream = None
        stream = self.stream
        if charge and not stream.response_started:
            self.cluster.stats.response_code(status, stream.internal)
        stream.send_local_reply(status, body, details, flag, extra_headers)

    def _retry(self, up: UpstreamRequest, *, reset_connection: bool) -> int:
        """Start another attempt after a back-off, if allowed: _RETRYING if one is scheduled,
        else why not (_RETRY_LIMIT, _RETRY_OVERFLOW, _NO_RETRY)."""
        if not self.retry_configured or self.response_started:
            return _NO_RETRY
        if self.body_bytes and not self.retained:
            return _NO_RETRY
        if not self.retries_left:
            return _RETRY_LIMIT
        self.retries_left -= 1
        cluster = self.cluster
        retries = cluster.resources[0].retries
        if not retries.can_create():
            cluster.stats.upstream_rq_retry_overflow.value += 1
            return _RETRY_OVERFLOW
        cluster.stats.upstream_rq_retry.value += 1
        cluster.stats.upstream_rq_retry_backoff_exponential.value += 1
        up.abandon(reset_connection)
        self.upstream = None
        retries.inc()
        policy = self.retry_policy
        base = policy.base_interval if policy is not None else 0.025
        max_interval = policy.max_interval if policy is not None else 0.25
        attempt = self.stream.upstream_request_attempt_count
        delay = random.uniform(0, min(base * (2 ** (attempt - 1)), max_interval))
        self.retry_handle = self.stream.hcm.loop.call_later(delay, self._do_retry)
        return _RETRYING

    def _do_retry(self) -> None:
        self.retry_handle = None
        self.cluster.resources[0].retries.dec()
        if self.cancelled:
            return
        headers = self.stream.request_headers
        if not self.settings.suppress_envoy_headers and self.global_deadline is not None:
            remaining = max(0, round((self.global_deadline - self.stream.hcm.loop.time()) * 1000))
            expected = (
                min(remaining, round(self.per_try_timeout * 1000))
                if self.per_try_timeout
                else remaining
            )
            headers.set(b"x-envoy-expected-rq-timeout-ms", b"%d" % expected)
        conn = self.stream.conn
        conn.begin_batch()
        try:
            self._attempt()
        finally:
            conn.end_batch()

    # -- timeouts -----------------------------------------------------------------------------

    def deadline(self) -> float | None:
        if self.response_started:
            return None
        d = self.global_deadline
        t = self.try_deadline
        if t is not None and (d is None or t < d):
            return t
        return d

    def on_timeout(self) -> None:
        stream = self.stream
        now = stream.hcm.loop.time()
        cluster = self.cluster
        if (
            self.try_deadline is not None
            and now >= self.try_deadline
            and (self.global_deadline is None or now < self.global_deadline)
        ):
            # Per-try timeout: like a 504 from the upstream (retried on 5xx/gateway-error).
            cluster.stats.upstream_rq_per_try_timeout.value += 1
            self.try_deadline = None
            up = self.upstream
            if up is not None:
                _timeout_to_outlier(up.host)
            if up is not None and self.retry_on & _RESET_CONDITIONS:
                retry = self._retry(up, reset_connection=True)
                if retry == _RETRYING:
                    return
                self._no_retry(retry)
            # Not retried: the request ends here (Envoy counts no upstream_rq_timeout).
            self._time_out("upstream_per_try_timeout", False)
            return
        cluster.stats.upstream_rq_timeout.value += 1
        self._time_out("response_timeout", True)

    def _time_out(self, details: str, to_outlier: bool) -> None:
        # The 504 is charged to the cluster only if an attempt was waiting for its response.
        up = self.upstream
        if up is not None:
            up.host.rq_timeout += 1
            if to_outlier:  # not yet told by a per-try timeout of this attempt
                _timeout_to_outlier(up.host)
            up.abandon(True)
            self.upstream = None
        self._fail_local(
            504,
            b"upstream request timeout",
            details,
            ResponseFlag.UPSTREAM_REQUEST_TIMEOUT,
            charge=up is not None,
        )

    # -- flow control and cancellation --------------------------------------------------------

    def on_downstream_writable(self, writable: bool) -> None:
        up = self.upstream
        if up is not None and up.conn is not None:
            if writable:
                up.conn.resume_reading()
            else:
                up.conn.pause_reading()
        if self.tunnel is not None:
            self.tunnel.downstream_writable(writable)

    def cancel(self) -> None:
        """The downstream is gone or answered locally: drop the upstream attempt."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
            self.cluster.resources[0].retries.dec()
        if self.upstream is not None:
            self.upstream.abandon(True)
            self.upstream = None
        if self.tunnel is not None:
            self.tunnel.close()

    def _start_tunnel(self, up: UpstreamRequest) -> None:
        from pilotfish.http.tunnel import Tunnel

        conn = up.conn
        if conn is None:
            return
        self.tunnel = Tunnel(self.stream, conn)
        up.finish_for_tunnel()
        for chunk in self.body or ():
            self.tunnel.downstream_data(chunk)
        self.body = None


class UpstreamRequest:
    """One attempt: the request sent on one upstream connection and its response read back.
    It is the connection pool's client and the response codec's handler."""

    __slots__ = (
        "chunked",
        "cluster",
        "conn",
        "done",
        "host",
        "is_head",
        "pool",
        "router",
        "sent_end",
        "started_at",
        "status",
    )

    def __init__(self, router: Router, host: Host, pool: Http1ConnPool) -> None:
        self.router = router
        self.host = host
        self.pool = pool
        self.cluster = router.cluster
        self.conn: UpstreamConnection | None = None
        self.is_head = router.stream.is_head
        self.chunked = False
        self.sent_end = False
        self.done = False
        self.started_at = router.stream.conn.now
        self.status = 0

    # -- pool callbacks -----------------------------------------------------------------------

    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        monitor = self.host.outlier
        if monitor is not None and monitor.split:
            monitor.put_result(CONNECT_SUCCESS)
        router = self.router
        stream = router.stream
        stream.upstream_local_address = conn.local_address
        now = stream.hcm.loop.time()
        upgrade = stream.upgrade is not None
        no_body = not stream.has_body and not upgrade
        head, self.chunked = encode_request_head(stream.request_headers, no_body, upgrade=upgrade)
        body = router.body
        if no_body and not body:
            conn.write(head)
            self.sent_end = True
        else:
            parts = [head]
            if body:
                for chunk in body:
                    parts.append(encode_chunk(chunk) if self.chunked else chunk)
                if not router.retained:
                    router.body = None
                stream.conn.resume_reading(4)
            if router.request_ended or no_body:
                if self.chunked and not no_body:
                    trailers = router.trailers if conn.codec.enable_trailers else None
                    parts.append(encode_last_chunk(trailers))
                self.sent_end = True
            conn.write(b"".join(parts))
        stream.first_upstream_tx = now
        if self.sent_end:
            stream.last_upstream_tx = now
            if router.per_try_timeout:
                self._start_try_timer(now)

    def _start_try_timer(self, now: float) -> None:
        router = self.router
        if router.per_try_timeout:
            router.try_deadline = now + router.per_try_timeout
            router.stream.conn.arm_deadline(router.try_deadline)

    def on_pool_failure(self, kind: str, reason: str) -> None:
        if self.done:
            return
        self._finish_attempt(failed=True)
        conn = self.router.stream.conn
        conn.begin_batch()
        try:
            self.router.on_upstream_failure(self, kind, reason)
        finally:
            conn.end_batch()

    # -- request body -------------------------------------------------------------------------

    def send_data(self, data: bytes, end_stream: bool) -> None:
        conn = self.conn
        assert conn is not None
        if self.chunked:
            out = encode_chunk(data)
            if end_stream:
                out += encode_last_chunk(None)
            if out:
                conn.write(out)
        elif data:
            conn.write(data)
        if end_stream:
            self.sent_end = True
            now = self.router.stream.hcm.loop.time()
            self.router.stream.last_upstream_tx = now
            self._start_try_timer(now)

    def send_trailers(self, trailers: HeaderMap) -> None:
        conn = self.conn
        assert conn is not None
        if self.chunked:
            conn.write(encode_last_chunk(trailers if conn.codec.enable_trailers else None))
        self.sent_end = True
        self._start_try_timer(self.router.stream.hcm.loop.time())

    # -- codec callbacks (the response) -------------------------------------------------------

    def on_response_headers(self, headers: ResponseHeaders, end_stream: bool) -> None:
        if self.done:
            return
        self.status = headers.status
        self.router.on_upstream_headers(self, headers, end_stream)

    def on_informational(self, headers: ResponseHeaders) -> None:
        # Without proxy_100_continue the connection manager answered Expect itself; with it,
        # the upstream's first 100 Continue is relayed (bare, as Envoy does). Other 1xx are
        # dropped.
        stream = self.router.stream
        if (
            headers.status == 100
            and stream.hcm.config.proxy_100_continue
            and not stream.sent_100_continue
            and not self.done
        ):
            stream.sent_100_continue = True
            stream.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_response_body(self, data: bytes) -> None:
        if self.done:
            return
        stream = self.router.stream
        if stream.filters is None:
            stream._write_data(data, False)
        else:
            stream.encode_data(data, False)

    def on_response_complete(self, trailers: HeaderMap | None) -> None:
        if self.done:
            return
        conn = self.conn
        self._finish_attempt()
        host = self.host
        status = self.status
        if status >= 500:
            host.rq_error += 1
        else:
            host.rq_success += 1
        router = self.router
        stream = router.stream
        now = stream.conn.now
        stats = self.cluster.stats
        stats.response_code(status, stream.internal)
        stats.upstream_rq_time.record((now - self.started_at) * 1000)
        if conn is not None:
            conn.done(reusable=self.sent_end)
        stream.last_upstream_rx = now
        if trailers is None and stream.filters is None:
            stream._write_data(b"", True)
        else:
            router.on_upstream_complete(self, trailers)

    def on_upstream_reset(self, reason: str) -> None:
        if self.done:
            return
        self._finish_attempt(failed=True)
        stream = self.router.stream
        stream.conn.begin_batch()
        try:
            self.router.on_upstream_failure(self, "reset", reason)
        finally:
            stream.conn.end_batch()

    def on_upstream_protocol_error(self, error: CodecError) -> None:
        if self.done:
            return
        self._finish_attempt(failed=True)
        stream = self.router.stream
        stream.conn.begin_batch()
        try:
            self.router.on_upstream_failure(self, "protocol_error", error.details)
        finally:
            stream.conn.end_batch()

    def on_upstream_writable(self, writable: bool) -> None:
        conn = self.router.stream.conn
        if writable:
            conn.resume_reading(2)
        else:
            conn.pause_reading(2)

    def begin_upstream_read(self) -> None:
        conn = self.router.stream.conn
        conn.now = conn.hcm.loop.time()
        if conn.batch is None:
            conn.batch = []

    def after_upstream_read(self) -> None:
        self.router.stream.conn.end_batch()

    # -- endings ------------------------------------------------------------------------------

    def _finish_attempt(self, *, failed: bool = False) -> None:
        self.done = True
        if failed:
            self.host.rq_error += 1
        if self.conn is not None:  # bound to a connection: counted active by the pool
            cluster = self.cluster
            cluster.stats.upstream_rq_active.value -= 1
            cluster.resources[0].requests.dec()
            self.host.rq_active -= 1

    def abandon(self, reset_connection: bool) -> None:
        """Give up on this attempt (retry, timeout, downstream gone)."""
        if self.done:
            return
        self._finish_attempt()
        conn = self.conn
        if conn is None:
            self.pool.cancel(self)
        else:
            # HTTP/1 resets a request by closing its connection: Envoy counts that in
            # upstream_cx_destroy_local_with_active_rq, not upstream_rq_tx_reset.
            conn.abort()

    def finish_for_tunnel(self) -> None:
        """The connection now belongs to a tunnel (after 101 Switching Protocols)."""
        self._finish_attempt()
        self.cluster.stats.response_code(self.status, self.router.stream.internal)


def _timeout_to_outlier(host: Host) -> None:
    """An attempt timed out waiting for its response: Envoy's LocalOriginTimeout, as a 504."""
    monitor = host.outlier
    if monitor is not None:
        monitor.put_result(TIMEOUT, 504)
