"""pilotfish started as Istio's pilot-agent starts Envoy: a bootstrap rendered by Istio (its
``default_golden.json``), pilot-agent's command line, and the ADS stream over the Unix socket
``./etc/istio/proxy/XDS`` relative to the working directory, in delta mode (Istio's default).
The control plane is the in-package ADS server; then pilot-agent's readiness queries.

Changed in the golden file for this machine only: the static listeners (15090, 15021) and the
admin bind 127.0.0.1 on free ports, and the xds-grpc pipe path is the relative one pilot-agent
renders (the golden file has ``/tmp/XDS``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.echo_backend import EchoBackend
from tests.support.istio_data import BOOTSTRAP_GOLDENS
from tests.support.proxies import ProxyProcess, free_port, get
from tests.support.xds import cla, eds_cluster, http_listener, route_config

from pilotfish.mesh.xds_server import ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

GOLDEN = BOOTSTRAP_GOLDENS
XDS_PATH = "./etc/istio/proxy/XDS"
# What pilot-agent passes besides -c (istio/pkg/envoy/proxy.go), minus the flags the test
# runner already sets (--concurrency, --drain-time-s, -l, --disable-hot-restart).
AGENT_ARGS = [
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--allow-unknown-static-fields",
    "--component-log-level",
    "misc:error",
    "--log-format",
    "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t",
]



@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def istio_bootstrap() -> dict[str, Any]:
    boot: dict[str, Any] = json.loads((GOLDEN / "default_golden.json").read_text())
    boot["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for listener in boot["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for cluster in boot["static_resources"]["clusters"]:
        if cluster["name"] == "xds-grpc":
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"] = {"pipe": {"path": XDS_PATH}}
    return boot


def test_pilot_agent_style_start_over_the_xds_unix_socket(workdir: Path) -> None:
    boot = istio_bootstrap()
    assert boot["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    socket_path = workdir / "pilotfish" / XDS_PATH
    socket_path.parent.mkdir(parents=True)
    port = free_port()
    with (
        EchoBackend("productpage") as backend,
        ThreadedXdsServer(f"unix:{socket_path}") as server,
    ):
        server.set_resources(rt.CLUSTER.type_url, [eds_cluster("outbound|9080||productpage")])
        server.set_resources(
            rt.ENDPOINT.type_url, [cla("outbound|9080||productpage", [backend.port])]
        )
        server.set_resources(rt.LISTENER.type_url, [http_listener("127.0.0.1_9080", port, "9080")])
        server.set_resources(
            rt.ROUTE.type_url,
            [
                route_config(
                    "9080",
                    [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "outbound|9080||productpage"},
                        }
                    ],
                    domains=["productpage", "productpage:9080"],
                )
            ],
        )
        with ProxyProcess("pilotfish", boot, workdir, args=AGENT_ARGS) as proxy:
            status, _, body = get(port, "/productpage", host="productpage:9080")
            assert status == 200 and b'"backend": "productpage"' in body
            info = server.connected()[0]
            assert info.delta and info.node_id == boot["node"]["id"]
            # The node carries Istio's metadata as the bootstrap has it.
            assert info.node.metadata["ISTIO_VERSION"] == boot["node"]["metadata"]["ISTIO_VERSION"]
            # pilot-agent's readiness checks (istio/pilot/cmd/pilot-agent/status/ready).
            reply = proxy.call(
                "/stats?usedonly&filter=^(cluster_manager\\.cds|listener_manager\\.lds)\\."
                "(update_success|update_rejected)$"
            )
            lines = dict(line.split(": ") for line in reply.text.strip().splitlines())
            assert int(lines["cluster_manager.cds.update_success"]) >= 1
            assert int(lines["listener_manager.lds.update_success"]) >= 1
            reply = proxy.call(
                "/stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started)"
            )
            lines = dict(line.split(": ") for line in reply.text.strip().splitlines())
            assert lines == {"server.state": "0", "listener_manager.workers_started": "1"}
            # Istio's readiness listener routes /healthz/ready to the agent cluster; its
            # Prometheus listener serves the merged stats from admin.
            assert set(proxy.listener_ports()) >= {
                "0.0.0.0_15090",
                "0.0.0.0_15021",
                "127.0.0.1_9080",
            }
