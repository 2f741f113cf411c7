"""envoy.filters.network.tcp_proxy and filter chain matching, pilotfish and real Envoy on the
same bootstrap.

Every test runs twice, against pilotfish and against Envoy 1.40 (the oracle): a test states what
Envoy does, and a pilotfish parameter that differs is marked ``xfail(strict=True)`` with the
difference as its reason. Each test starts its own proxy (one listener, port 0) in front of small
TCP servers on loopback:

* an echo server (echoes until EOF, then half-closes),
* a "banner" server (sends its name and half-closes at once, then records what it receives),
* name servers ``A``..``D`` (send ``name:<X>\\n`` on accept, then read until EOF), which tell the
  client which cluster, and so which filter chain, took the connection.

Filter chain matching is tested with what loopback allows: all of 127/8 is local, so a listener
on 127.0.0.2 and a client bound to 127.0.0.3 give distinct destination and source addresses; a
destination port can only fail to match (listeners bind port 0).
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.support.loopback import Blackhole, RefusedPort
from tests.support.pairs import kinds
from tests.support.proxies import (
    FLUSH_ACCESS_LOGS,
    LOCALHOST,
    ProxyProcess,
    socket_address,
    static_cluster,
)
from tests.support.proxies import bootstrap as static_bootstrap
from tests.support.threaded_server import ThreadedServer
from tests.support.waiting import wait_for

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS_INSPECTOR = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)
HTTP_INSPECTOR = (
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)

# --- TCP servers -------------------------------------------------------------------------------


class TcpServer(ThreadedServer):
    """A threaded TCP server on 127.0.0.1:0, started at once; ``serve`` handles one
    connection."""

    thread_prefix = "tcp"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.finished: list[bytes] = []  # what each connection received, once it ended
        self.start()

    def _handle(self, sock: socket.socket, conn_id: int) -> bool:
        sock.settimeout(30)
        received = bytearray()
        try:
            self.serve(sock, received)
        except OSError:
            pass
        finally:
            with self._lock:
                self.finished.append(bytes(received))
        return False

    def serve(self, conn: socket.socket, received: bytearray) -> None:
        raise NotImplementedError

    @staticmethod
    def read_to_eof(conn: socket.socket, received: bytearray, echo: bool = False) -> None:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            received += data
            if echo:
                conn.sendall(data)


class EchoServer(TcpServer):
    """Echoes every byte; on EOF, half-closes its side too."""

    def serve(self, conn: socket.socket, received: bytearray) -> None:
        self.read_to_eof(conn, received, echo=True)
        conn.shutdown(socket.SHUT_WR)


class BannerServer(TcpServer):
    """Sends ``name:<name>\\n`` on accept; ``half_close``: then shuts its side at once. Reads
    until EOF either way."""

    def __init__(self, name: str, *, half_close: bool = False) -> None:
        self.half_close = half_close
        super().__init__(name)

    def serve(self, conn: socket.socket, received: bytearray) -> None:
        conn.sendall(f"name:{self.name}\n".encode())
        if self.half_close:
            conn.shutdown(socket.SHUT_WR)
        self.read_to_eof(conn, received)


class Servers:
    def __init__(self) -> None:
        self.echo = EchoServer("echo")
        self.half = BannerServer("half", half_close=True)
        self.named = {n: BannerServer(n) for n in "ABCD"}
        self.refused = RefusedPort()
        self.blackhole = Blackhole()

    def clusters(self) -> list[dict[str, Any]]:
        out = [
            static_cluster("echo", self.echo.port, connect_timeout="2s"),
            static_cluster("half", self.half.port, connect_timeout="2s"),
            static_cluster("refused", self.refused.port, connect_timeout="2s"),
            static_cluster("blackhole", self.blackhole.port, connect_timeout="0.5s"),
            {"name": "empty", "type": "STATIC", "connect_timeout": "1s"},
        ]
        out += [
            static_cluster(name, server.port, connect_timeout="2s")
            for name, server in self.named.items()
        ]
        return out

    def close(self) -> None:
        for server in [self.echo, self.half, *self.named.values()]:
            server.stop()
        self.refused.close()
        self.blackhole.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()


# --- bootstraps and proxies --------------------------------------------------------------------


def tcp_chain(
    stat_prefix: str, match: dict[str, Any] | None = None, **proxy: Any
) -> dict[str, Any]:
    """A filter chain with only a tcp_proxy; ``proxy`` gives cluster or weighted_clusters."""
    if "cluster" not in proxy and "weighted_clusters" not in proxy:
        proxy["cluster"] = stat_prefix
    config = {"@type": TCP_PROXY, "stat_prefix": stat_prefix, **proxy}
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": config}]
    }
    if match is not None:
        chain["filter_chain_match"] = match
    return chain


def listener(
    name: str,
    chains: Sequence[dict[str, Any]],
    *,
    host: str = LOCALHOST,
    default: dict[str, Any] | None = None,
    tls_inspector: bool = False,
    http_inspector: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "address": socket_address(0, host),
        "filter_chains": list(chains),
    }
    if default is not None:
        out["default_filter_chain"] = default
    filters = []
    if tls_inspector:
        filters.append(
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": TLS_INSPECTOR},
            }
        )
    if http_inspector:
        filters.append(
            {
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {"@type": HTTP_INSPECTOR},
            }
        )
    if filters:
        out["listener_filters"] = filters
    return out


def bootstrap(servers: Servers, *listeners: dict[str, Any]) -> dict[str, Any]:
    return static_bootstrap(list(listeners), servers.clusters())


# --- clients -----------------------------------------------------------------------------------


def connect(port: int, *, host: str = LOCALHOST, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_until_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the peer closes; and how it closed: "FIN", "RST" (or the error, such
    as "TimeoutError", when it did not close)."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "RST"
        except OSError as e:  # a timeout, or the socket closed under us
            return bytes(data), type(e).__name__
        if not chunk:
            return bytes(data), "FIN"
        data += chunk


def which_upstream(
    port: int, *, host: str = LOCALHOST, source: str | None = None, first: bytes = b""
) -> str | None:
    """The name server that took the connection (so the chain and cluster), or None when the
    connection was closed without one."""
    with connect(port, host=host, source=source) as sock:
        if first:
            sock.sendall(first)
        data = bytearray()
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(100)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
    text = data.decode()
    assert text.startswith("name:"), text
    return text[5:].strip()


def client_hello(server_name: str, alpn: list[str] | None = None) -> bytes:
    """The first TLS flight of a client asking for ``server_name`` (no network involved)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --- relaying ----------------------------------------------------------------------------------


@kinds()
def test_relays_a_large_payload_both_ways_and_a_downstream_half_close(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    config = bootstrap(servers, listener("tcp", [tcp_chain("relay", cluster="echo")]))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        sock = connect(proxy.port("tcp"))
        received: list[tuple[bytes, str]] = []
        reader = threading.Thread(target=lambda: received.append(read_until_end(sock)))
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the echo server sees EOF only through the proxy
        reader.join(30)
        sock.close()
        assert received, "no EOF from the proxy"
        data, how = received[0]
        assert len(data) == len(payload) and data == payload
        assert how == "FIN"

        size = len(payload)
        expected = {
            "downstream_cx_total": 1,
            "downstream_cx_rx_bytes_total": size,
            "downstream_cx_tx_bytes_total": size,
        }
        wait_for(
            lambda: {k: proxy.stats("tcp.relay.").get(k) for k in expected} == expected,
            "tcp.relay.* byte counts",
        )
        cluster = proxy.stats("cluster.echo.")
        assert cluster["upstream_cx_total"] == 1
        assert cluster["upstream_cx_tx_bytes_total"] == size
        assert cluster["upstream_cx_rx_bytes_total"] == size


@kinds()
def test_upstream_half_close_leaves_the_other_direction_open(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("half", cluster="half")]))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        before = len(servers.half.finished)
        with connect(proxy.port("tcp")) as sock:
            data = bytearray()
            while chunk := sock.recv(100):  # until the upstream's FIN arrives
                data += chunk
            assert bytes(data) == b"name:half\n"
            sock.sendall(b"still talking after the upstream's FIN")
            sock.shutdown(socket.SHUT_WR)
            wait_for(lambda: len(servers.half.finished) > before, "the upstream to see EOF")
            assert servers.half.finished[-1] == b"still talking after the upstream's FIN"
            assert read_until_end(sock) == (b"", "FIN")


@kinds()
def test_weighted_clusters_split_connections_by_weight(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    weighted = {"clusters": [{"name": "A", "weight": 1}, {"name": "B", "weight": 3}]}
    config = bootstrap(servers, listener("tcp", [tcp_chain("split", weighted_clusters=weighted)]))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        port = proxy.port("tcp")
        counts = collections.Counter(which_upstream(port) for _ in range(60))
        assert set(counts) == {"A", "B"}
        assert 5 <= counts["A"] <= 27, counts  # 15 expected
        assert proxy.stats("tcp.split.")["downstream_cx_total"] == 60


@kinds()
def test_two_tcp_listeners_on_port_zero_get_their_own_ports(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(
        servers,
        listener("first", [tcp_chain("first", cluster="A")]),
        listener("second", [tcp_chain("second", cluster="B")]),
    )
    with ProxyProcess(kind, config, tmp_path) as proxy:
        assert proxy.port("first") != proxy.port("second")
        assert which_upstream(proxy.port("first")) == "A"
        assert which_upstream(proxy.port("second")) == "B"


# --- timeouts and failures ---------------------------------------------------------------------


@kinds()
def test_idle_timeout_closes_an_idle_connection_only(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(
        servers, listener("tcp", [tcp_chain("idle", cluster="echo", idle_timeout="1s")])
    )
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        for _ in range(4):  # 1.6 s of traffic, never 1 s apart: the connection stays
            time.sleep(0.4)
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
        silent_since = time.monotonic()
        assert read_until_end(sock) == (b"", "FIN")
        assert 0.5 <= time.monotonic() - silent_since < 6
        wait_for(lambda: proxy.stats("tcp.idle.")["idle_timeout"] == 1, "tcp.idle.idle_timeout")


@kinds()
def test_refused_upstream_closes_the_downstream_connection(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("refused", cluster="refused")]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        data, _ = read_until_end(sock)
        assert data == b""
        wait_for(
            lambda: proxy.stats("cluster.refused.")["upstream_cx_connect_fail"] == 1,
            "cluster.refused.upstream_cx_connect_fail",
        )
        assert proxy.stats("tcp.refused.")["downstream_cx_total"] == 1


@kinds()
def test_max_connect_attempts_tries_the_upstream_again(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    chain = tcp_chain("attempts", cluster="refused", max_connect_attempts=3)
    config = bootstrap(servers, listener("tcp", [chain]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        assert read_until_end(sock)[0] == b""
        wait_for(
            lambda: proxy.stats("cluster.refused.")["upstream_cx_connect_fail"] == 3,
            "three connect failures",
        )
        assert proxy.stats("cluster.refused.")["upstream_cx_total"] == 3


@kinds()
def test_upstream_connect_timeout_closes_the_downstream_connection(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("slow", cluster="blackhole")]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        started = time.monotonic()
        assert read_until_end(sock)[0] == b""
        assert 0.4 <= time.monotonic() - started < 5  # connect_timeout: 0.5s
        cluster = proxy.stats("cluster.blackhole.")
        assert (cluster["upstream_cx_connect_timeout"], cluster["upstream_cx_connect_fail"]) == (
            1,
            1,
        )


@kinds()
def test_bytes_sent_before_the_upstream_connects_are_left_unread(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("early", cluster="blackhole")]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        sock.sendall(b"early bytes")
        # The connect attempt times out with the bytes still unread: the close is a reset.
        assert read_until_end(sock) == (b"", "RST")
        assert proxy.stats("tcp.early.")["downstream_cx_rx_bytes_total"] == 0


FAILURE_LOG_FORMAT = (
    "%UPSTREAM_CLUSTER% %RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON% "
    "%UPSTREAM_REQUEST_ATTEMPT_COUNT% %BYTES_RECEIVED%\n"
)


@kinds()
def test_failed_connects_in_the_access_log(kind: str, servers: Servers, tmp_path: Path) -> None:
    log = tmp_path / "tcp_access.log"
    logger = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log),
            "log_format": {"text_format_source": {"inline_string": FAILURE_LOG_FORMAT}},
        },
    }
    refused = tcp_chain("refused", cluster="refused", max_connect_attempts=2, access_log=[logger])
    slow = tcp_chain("slow", cluster="blackhole", access_log=[logger])
    config = bootstrap(servers, listener("refused", [refused]), listener("slow", [slow]))
    proxy = ProxyProcess(kind, config, tmp_path, args=FLUSH_ACCESS_LOGS)
    proxy.start()
    try:
        for name in ("refused", "slow"):
            with connect(proxy.port(name)) as sock:
                sock.sendall(b"x")  # never read (a refused connect may even come first)
                assert read_until_end(sock)[0] == b""
        wait_for(
            lambda: log.exists() and len(log.read_text().splitlines()) == 2,
            "two access log lines",
        )
    finally:
        proxy.stop()
    lines = sorted(log.read_text().splitlines())
    assert lines == [
        "blackhole UF,URX - 1 0",
        "refused UF,URX delayed_connect_error:_Connection_refused 2 0",
    ]


@kinds()
def test_unknown_cluster_closes_and_counts_no_route(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("noroute", cluster="no-such")]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        assert read_until_end(sock)[0] == b""
        wait_for(
            lambda: proxy.stats("tcp.noroute.")["downstream_cx_no_route"] == 1,
            "tcp.noroute.downstream_cx_no_route",
        )


@kinds()
def test_empty_cluster_closes_and_counts_none_healthy(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("nohost", cluster="empty")]))
    with ProxyProcess(kind, config, tmp_path) as proxy, connect(proxy.port("tcp")) as sock:
        assert read_until_end(sock)[0] == b""
        wait_for(
            lambda: proxy.stats("cluster.empty.")["upstream_cx_none_healthy"] == 1,
            "cluster.empty.upstream_cx_none_healthy",
        )


# Every stat Envoy 1.40 creates for a tcp_proxy (tcp.<stat_prefix>.*).
ENVOY_TCP_PROXY_STATS = {
    "downstream_cx_drain_close",
    "downstream_cx_no_route",
    "downstream_cx_overload_close",
    "downstream_cx_rx_bytes_buffered",
    "downstream_cx_rx_bytes_total",
    "downstream_cx_total",
    "downstream_cx_tx_bytes_buffered",
    "downstream_cx_tx_bytes_total",
    "downstream_flow_control_paused_reading_total",
    "downstream_flow_control_resumed_reading_total",
    "early_data_received_count_total",
    "idle_timeout",
    "max_downstream_connection_duration",
    "route_delayed_total",
    "upstream_flush_active",
    "upstream_flush_total",
}


@kinds()
def test_tcp_proxy_creates_envoys_stats(kind: str, servers: Servers, tmp_path: Path) -> None:
    config = bootstrap(servers, listener("tcp", [tcp_chain("names", cluster="echo")]))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        names = proxy.stats("tcp.names.")
        assert set(names) == ENVOY_TCP_PROXY_STATS
        assert set(names.values()) == {0}


# --- filter chain matching ---------------------------------------------------------------------


def _prefix(address: str, length: int) -> dict[str, Any]:
    return {"address_prefix": address, "prefix_len": length}


def _listener_stats(proxy: ProxyProcess, name: str, host: str = LOCALHOST) -> dict[str, int]:
    return proxy.stats(f"listener.{host}_{proxy.port(name)}.")


@kinds()
def test_a_destination_port_that_differs_falls_to_the_chain_without_one(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    chains = [tcp_chain("A", {"destination_port": 1}), tcp_chain("B")]
    with ProxyProcess(kind, bootstrap(servers, listener("fc", chains)), tmp_path) as proxy:
        assert which_upstream(proxy.port("fc")) == "B"


@kinds()
def test_default_filter_chain_takes_what_no_chain_matches(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(
        servers,
        listener("fc", [tcp_chain("A", {"destination_port": 1})], default=tcp_chain("D")),
    )
    with ProxyProcess(kind, config, tmp_path) as proxy:
        assert which_upstream(proxy.port("fc")) == "D"
        assert _listener_stats(proxy, "fc")["no_filter_chain_match"] == 0


@kinds()
def test_no_matching_chain_closes_and_counts_no_filter_chain_match(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("fc", [tcp_chain("A", {"destination_port": 1})]))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        accepted = servers.named["A"].connections_accepted
        assert which_upstream(proxy.port("fc")) is None
        wait_for(
            lambda: _listener_stats(proxy, "fc")["no_filter_chain_match"] == 1,
            "no_filter_chain_match",
        )
        assert _listener_stats(proxy, "fc")["downstream_cx_total"] == 0
        assert servers.named["A"].connections_accepted == accepted


@kinds()
def test_destination_ip_longest_prefix_wins(kind: str, servers: Servers, tmp_path: Path) -> None:
    chains = [
        tcp_chain("A", {"prefix_ranges": [_prefix("127.0.0.0", 8)]}),
        tcp_chain("B", {"prefix_ranges": [_prefix("127.0.0.2", 32)]}),
        tcp_chain("C", {"prefix_ranges": [_prefix("127.0.0.1", 32)]}),
        tcp_chain("D", {"prefix_ranges": [_prefix("10.0.0.0", 8)]}),
    ]
    config = bootstrap(servers, listener("fc", chains, host="127.0.0.2"))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        assert which_upstream(proxy.port("fc"), host="127.0.0.2") == "B"
        assert _listener_stats(proxy, "fc", "127.0.0.2")["downstream_cx_total"] == 1


@kinds()
def test_source_ip_longest_prefix_wins(kind: str, servers: Servers, tmp_path: Path) -> None:
    chains = [
        tcp_chain("A", {"source_prefix_ranges": [_prefix("127.0.0.3", 32)]}),
        tcp_chain("B", {"source_prefix_ranges": [_prefix("127.0.0.0", 8)]}),
        tcp_chain("C"),
    ]
    with ProxyProcess(kind, bootstrap(servers, listener("fc", chains)), tmp_path) as proxy:
        port = proxy.port("fc")
        assert which_upstream(port, source="127.0.0.3") == "A"
        assert which_upstream(port, source="127.0.0.1") == "B"
        assert which_upstream(port, source="127.0.0.4") == "B"


SOURCE_TYPE_CHAINS = [
    tcp_chain("A", {"source_type": "EXTERNAL"}),
    tcp_chain("B", {"source_type": "SAME_IP_OR_LOOPBACK"}),
]


@kinds()
def test_loopback_or_same_ip_source_matches_same_ip_or_loopback(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    config = bootstrap(servers, listener("fc", SOURCE_TYPE_CHAINS, host="127.0.0.2"))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        port = proxy.port("fc")
        assert which_upstream(port, host="127.0.0.2", source="127.0.0.1") == "B"  # loopback
        assert which_upstream(port, host="127.0.0.2", source="127.0.0.2") == "B"  # same IP


@kinds()
def test_other_127_sources_are_external(kind: str, servers: Servers, tmp_path: Path) -> None:
    config = bootstrap(servers, listener("fc", SOURCE_TYPE_CHAINS, host="127.0.0.2"))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        assert which_upstream(proxy.port("fc"), host="127.0.0.2", source="127.0.0.5") == "A"


@kinds()
def test_a_more_specific_destination_ip_is_kept_even_if_a_later_criterion_fails(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    # Envoy does not backtrack: 127.0.0.1/32 wins the destination-IP level, its source range
    # does not match, and the chain without destination ranges is not considered any more.
    chains = [
        tcp_chain(
            "A",
            {
                "prefix_ranges": [_prefix("127.0.0.1", 32)],
                "source_prefix_ranges": [_prefix("10.0.0.0", 8)],
            },
        ),
        tcp_chain("B"),
    ]
    with ProxyProcess(kind, bootstrap(servers, listener("fc", chains)), tmp_path) as proxy:
        assert which_upstream(proxy.port("fc")) is None
        wait_for(
            lambda: _listener_stats(proxy, "fc")["no_filter_chain_match"] == 1,
            "no_filter_chain_match",
        )


@kinds()
def test_server_names_via_tls_inspector(kind: str, servers: Servers, tmp_path: Path) -> None:
    chains = [
        tcp_chain("A", {"server_names": ["a.example.com"]}),
        tcp_chain("B", {"server_names": ["*.example.com"]}),
        tcp_chain("C", {"transport_protocol": "tls"}),
        tcp_chain("D"),
    ]
    config = bootstrap(servers, listener("fc", chains, tls_inspector=True))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        port = proxy.port("fc")
        assert which_upstream(port, first=client_hello("a.example.com")) == "A"
        assert which_upstream(port, first=client_hello("b.example.com")) == "B"
        assert which_upstream(port, first=client_hello("example.org")) == "C"
        assert which_upstream(port, first=b"plain text, not TLS\r\n") == "D"


@kinds()
def test_tls_inspector_alpn_and_http_inspector_protocols(
    kind: str, servers: Servers, tmp_path: Path
) -> None:
    # Istio's inbound listener shape: TLS by ALPN, plaintext HTTP/1.1 and h2c by the first
    # bytes, anything else to the catch-all chain.
    chains = [
        tcp_chain("A", {"transport_protocol": "tls", "application_protocols": ["istio"]}),
        tcp_chain("B", {"application_protocols": ["http/1.1", "http/1.0"]}),
        tcp_chain("C", {"application_protocols": ["h2c"]}),
        tcp_chain("D"),
    ]
    config = bootstrap(servers, listener("fc", chains, tls_inspector=True, http_inspector=True))
    with ProxyProcess(kind, config, tmp_path) as proxy:
        port = proxy.port("fc")
        assert which_upstream(port, first=client_hello("x.test", ["istio", "h2"])) == "A"
        assert which_upstream(port, first=b"GET / HTTP/1.1\r\nhost: a\r\n\r\n") == "B"
        assert which_upstream(port, first=b"PUT /x HTTP/1.0\r\n\r\n") == "B"
        assert which_upstream(port, first=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == "C"
        assert which_upstream(port, first=b"\x00\x01 binary protocol\n") == "D"
        # Bytes split across reads: the inspectors wait for enough of them.
        with connect(port) as sock:
            sock.sendall(b"GET /slow HT")
            time.sleep(0.2)
            sock.sendall(b"TP/1.1\r\n\r\n")
            assert sock.recv(100).startswith(b"name:B")
