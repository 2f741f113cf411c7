"""A bootstrap with dynamic_resources keeps the server INITIALIZING, as in Envoy, while its
management server gives no config (pilotfish has no xDS client yet; Envoy's cannot connect).

``initial_fetch_timeout: 0s`` (what Istio renders) waits for ever; a positive one lets the
server go LIVE when CDS, then LDS, have timed out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.pairs import kinds
from tests.support.proxies import ProxyProcess, bootstrap, free_port, http_listener, static_cluster


def _dynamic_bootstrap(initial_fetch_timeout: str) -> dict[str, Any]:
    xds = static_cluster("xds-grpc", free_port())
    xds["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    listener = http_listener(
        "static", [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
    )
    config = bootstrap([listener], [xds])
    config["node"] = {
        "id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local",
        "cluster": "app.default",
    }
    source = {
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": initial_fetch_timeout,
    }
    config["dynamic_resources"] = {
        "ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
        },
        "lds_config": source,
        "cds_config": source,
    }
    return config


def _state(proxy: ProxyProcess) -> tuple[int, str, str]:
    ready = proxy.call("/ready")
    return ready.status, ready.text.strip(), proxy.call("/server_info").json()["state"]


@kinds()
def test_waits_for_ever_with_zero_initial_fetch_timeout(kind: str, tmp_path: Path) -> None:
    with ProxyProcess(kind, _dynamic_bootstrap("0s"), tmp_path, wait_live=False) as proxy:
        proxy.wait_until(lambda: proxy.call("/ready").status == 503, "no /ready answer")
        time.sleep(1.5)
        # Still waiting for CDS: the cluster manager is not initialized.
        assert _state(proxy) == (503, "PRE_INITIALIZING", "PRE_INITIALIZING")
        if kind == "pilotfish":  # Envoy updates the gauge on its 5 s stats flush only
            assert proxy.stats()["server.state"] == 2
        assert proxy.stop() == 0


@kinds()
def test_goes_live_after_initial_fetch_timeouts(kind: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with ProxyProcess(kind, _dynamic_bootstrap("0.5s"), tmp_path, wait_live=False) as proxy:
        proxy.wait_until(lambda: proxy.call("/ready").status == 200, "never LIVE", timeout=15)
        # CDS then LDS time out one after the other: at least 2 x 0.5 s.
        assert time.monotonic() - start >= 1.0
        assert _state(proxy) == (200, "LIVE", "LIVE")


@kinds()
def test_lds_wait_is_initializing(kind: str, tmp_path: Path) -> None:
    config = _dynamic_bootstrap("0s")
    del config["dynamic_resources"]["cds_config"]
    with ProxyProcess(kind, config, tmp_path, wait_live=False) as proxy:
        proxy.wait_until(lambda: proxy.call("/ready").text.strip() == "INITIALIZING", "state")
        time.sleep(1.0)
        assert _state(proxy) == (503, "INITIALIZING", "INITIALIZING")
