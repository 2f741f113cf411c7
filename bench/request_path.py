"""Python cost of one proxied HTTP/1.1 request, without sockets.

Drives the real connection manager, router, pool and codecs with in-memory transports: a
request in on the downstream side, the upstream response fed back on the upstream side. The
time per iteration is the per-request Python budget the proxy spends (kernel and event loop
excluded), the number to watch when changing the request path.

    .venv/bin/python bench/request_path.py [--requests N] [--profile] [--istio-filters]
        [--istio-stats]

``--istio-filters`` puts istiod's empty ``envoy.filters.http.fault`` and ``envoy.filters.http.cors``
in front of the router (as in every sidecar): they act only on routes with a per-route config,
which this route has not, so the cost should stay that of the plain chain.

``--istio-stats`` adds what istiod puts on an outbound sidecar listener for telemetry: the peer
metadata filter (Istio headers out, discovery back) and Istio's stats filter, with a sidecar's
node metadata (each request then counts in ``istio_requests_total`` and three histograms).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from pilotfish.context import ServerContext
from pilotfish.net.connection import ConnectionInfo
from pilotfish.stats.store import Store
from pilotfish.upstream.cluster_manager import ClusterManager
from pilotfish.upstream.conn_pool import Http1ConnPool, UpstreamConnection
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

BOOTSTRAP = """
{node}static_resources:
  listeners:
  - name: main
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\
http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: backend}}]
          http_filters:{extra_filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    metadata:
      filter_metadata:
        istio: {services: [{host: backend.default.svc.cluster.local, name: backend,
                            namespace: default}]}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 2}}}
"""

REQUEST = (
    b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 22:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
    b"hello world\n"
)


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: Any = None) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.peer = peer

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


ISTIO_FILTERS = """
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"""


ISTIO_STATS = """
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value:
                upstream_discovery: [{istio_headers: {}}]
                upstream_propagation: [{istio_headers: {}}]
          - name: istio.stats
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/stats.PluginConfig
              value: {}"""
NODE = """node:
  id: sidecar~10.0.0.1~productpage-v1-1.default~default.svc.cluster.local
  metadata:
    NAMESPACE: default
    WORKLOAD_NAME: productpage-v1
    CLUSTER_ID: Kubernetes
    LABELS: {app: productpage, version: v1}
"""


def build(
    istio_filters: bool = False, istio_stats: bool = False
) -> tuple[Any, FakeTransport, UpstreamConnection, FakeTransport]:
    loop = asyncio.new_event_loop()
    extra = (ISTIO_FILTERS if istio_filters else "") + (ISTIO_STATS if istio_stats else "")
    config = BOOTSTRAP.replace("{extra_filters}", extra)
    config = config.replace("{node}", NODE if istio_stats else "")
    loaded = load_bootstrap(BootstrapSource(config_yaml=config))
    model = loaded.model
    store = Store(model.stats)
    cm = ClusterManager(store, loop)
    for c in model.clusters:
        cm.add_or_update(c)
    ctx = ServerContext(
        loop=loop,
        stats=store,
        cluster_manager=cm,
        node_id=model.node.id,
        node_metadata=model.node.metadata,
    )
    hcm_ext = model.listeners[0].filter_chains[0].filters[0]
    hcm = hcm_ext.factory.build(hcm_ext.config, ctx, listener_prefix="listener.x.")
    info = ConnectionInfo(1, ("127.0.0.1", 8080), ("127.0.0.1", 40000), 0.0, 1 << 20)
    down = hcm.new_connection(info)
    down_t = FakeTransport()
    down.connection_made(down_t)
    # A pooled upstream connection, already connected and idle.
    cluster = cm.get("backend")
    assert cluster is not None
    host = next(iter(cluster.hosts_by_key.values()))
    pool = host.pool = Http1ConnPool(cluster, host)
    up = UpstreamConnection(pool)
    up_t = FakeTransport()
    up.connection_made(up_t)
    cluster.stats.upstream_cx_active.value += 1
    cluster.resources[0].connections.inc()
    host.cx_active += 1
    pool.idle.append(up)
    return down, down_t, up, up_t


def one_request(down: Any, down_t: FakeTransport, up: Any, up_t: FakeTransport) -> None:
    down.data_received(REQUEST)
    up.data_received(RESPONSE)
    down_t.written.clear()
    up_t.written.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--istio-filters", action="store_true")
    parser.add_argument("--istio-stats", action="store_true")
    args = parser.parse_args()
    down, down_t, up, up_t = build(args.istio_filters, args.istio_stats)
    one_request(down, down_t, up, up_t)
    down.data_received(REQUEST)
    up.data_received(RESPONSE)
    print(b"".join(up_t.written).decode())
    print(b"".join(down_t.written).decode())
    down_t.written.clear()
    up_t.written.clear()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
    best = float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.requests):
            one_request(down, down_t, up, up_t)
        best = min(best, time.perf_counter() - start)
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    # The best round: other processes on the machine only ever add time.
    print(f"{best / args.requests * 1e6:.1f} us of Python per proxied request")


if __name__ == "__main__":
    main()
