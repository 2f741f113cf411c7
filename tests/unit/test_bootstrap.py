"""Bootstrap loading and translation: Istio's rendered bootstraps, merges, and errors that name
the offending field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.istio_data import BOOTSTRAP_GOLDENS

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import DiscoveryType, LbPolicy
from pilotfish.model.common import PipeAddress, SocketAddress
from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

GOLDEN_DIR = BOOTSTRAP_GOLDENS
GOLDENS = sorted(GOLDEN_DIR.glob("*_golden.json"))


def load_text(tmp_path: Path, text: str, name: str = "b.yaml", **kw: object) -> object:
    path = tmp_path / name
    path.write_text(text)
    return load_bootstrap(BootstrapSource(config_path=str(path), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("golden", GOLDENS, ids=[g.name for g in GOLDENS])
def test_every_istio_golden_bootstrap_translates(golden: Path) -> None:
    loaded = load_bootstrap(BootstrapSource(config_path=str(golden)))
    model = loaded.model
    doc = json.loads(golden.read_text())
    assert model.node.id == doc["node"]["id"]
    assert [c.name for c in model.clusters] == [
        c["name"] for c in doc["static_resources"]["clusters"]
    ]
    assert [x.name for x in model.listeners] == ["0.0.0.0_15090", "0.0.0.0_15021"]
    xds = next(c for c in model.clusters if c.name == "xds-grpc")
    assert xds.type is DiscoveryType.STATIC
    assert xds.http.upstream_protocol == "HTTP2"
    assert xds.http.max_requests_per_connection == 1
    assert isinstance(xds.load_assignment.endpoints[0].lb_endpoints[0].address, PipeAddress)  # type: ignore[union-attr]
    admin = doc["admin"]["address"]["socket_address"]
    assert model.admin is not None
    assert model.admin.address == SocketAddress(admin["address"], admin["port_value"])
    assert model.stats.use_all_default_tags is False
    assert model.dynamic_resources is not None


def test_golden_with_istio_bootstrap_extension_is_accepted_and_reported(tmp_path: Path) -> None:
    ambient = GOLDEN_DIR / "ambient_golden.json"
    loaded = load_bootstrap(BootstrapSource(config_path=str(ambient)))
    assert any("istio.workload.BootstrapExtension" in w for w in loaded.warnings)


MINIMAL = """
static_resources:
  clusters:
  - name: a
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: a
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]
"""


def test_yaml_json_and_config_yaml_merge(tmp_path: Path) -> None:
    override = "static_resources: {clusters: [{name: b, type: STRICT_DNS, lb_policy: RANDOM}]}"
    loaded = load_text(
        tmp_path, MINIMAL, config_yaml=override, service_node="node-1", service_cluster="svc"
    )
    model = loaded.model  # type: ignore[attr-defined]
    assert [c.name for c in model.clusters] == ["a", "b"]  # repeated fields append
    assert model.clusters[0].connect_timeout == 0.5
    assert model.clusters[1].lb_policy is LbPolicy.RANDOM
    assert (model.node.id, model.node.cluster) == ("node-1", "svc")


BAD: list[tuple[str, str, str]] = [
    (
        "unknown-field",
        "static_resources: {clusters: [{name: a, bogus: 1}]}",
        "static_resources.clusters[0]",
    ),
    (
        "bad-duration",
        "static_resources: {clusters: [{name: a, connect_timeout: abc}]}",
        "static_resources.clusters[0].connect_timeout",
    ),
    (
        "string-for-number",
        "static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: lots}]}",
        "static_resources.clusters[0].per_connection_buffer_limit_bytes",
    ),
    (
        "string-for-number-in-list",
        """
static_resources:
  clusters:
  - name: a
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 1.2.3.4, port_value: 1}}}
        - endpoint: {address: {socket_address: {address: 1.2.3.4, port_value: x}}}
""",
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].endpoint"
        ".address.socket_address.port_value",
    ),
    (
        "string-for-number-in-any",
        """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            virtual_hosts:
            - {name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: abc}}]}
""",
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config"
        ".virtual_hosts[0].routes[0].direct_response.status",
    ),
    (
        "bad-enum",
        "static_resources: {clusters: [{name: a, type: NOPE}]}",
        "static_resources.clusters[0].type",
    ),
    (
        "empty-cluster-name",
        "static_resources: {clusters: [{connect_timeout: 1s}]}",
        "static_resources.clusters[0].name",
    ),
    (
        "static-hostname",
        """
static_resources:
  clusters:
  - name: a
    load_assignment:
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: example.com, port_value: 1}}}}]}]
""",
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
    ),
    (
        "unknown-filter-type",
        """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: mystery
        typed_config: {"@type": type.googleapis.com/acme.Mystery, x: 1}
""",
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
    ),
    (
        "router-not-last",
        """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config: {}
          http_filters:
          - {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          - {name: g, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor, compressor_library: {name: gz, typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip}}}}
""",
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]",
    ),
    (
        "duplicate-cluster",
        """
static_resources:
  clusters: [{name: a}, {name: a}]
""",
        "static_resources.clusters[1].name",
    ),
    (
        "route-to-unknown-cluster",
        """
static_resources:
  clusters: [{name: known}]
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - {match: {prefix: /a}, route: {cluster: known}}
              - match: {prefix: /}
                route: {weighted_clusters: {clusters: [{name: known, weight: 1}, {name: nope, weight: 1}]}}
          http_filters:
          - {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
""",
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config"
        ".virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].name",
    ),
    (
        "ads-unknown-cluster",
        """
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services: [{envoy_grpc: {cluster_name: xds}}]
""",
        "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
    ),
]


@pytest.mark.parametrize(("text", "path"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_bootstrap_names_the_field(tmp_path: Path, text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert info.value.path == path, str(info.value)


def test_unknown_fields_allowed_on_request(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path, "static_resources: {clusters: [{name: a, bogus: 1}]}", allow_unknown_fields=True
    )
    assert [c.name for c in loaded.model.clusters] == ["a"]  # type: ignore[attr-defined]


def test_missing_config_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_bootstrap(BootstrapSource())
    assert "--config-path" in str(info.value)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_bootstrap(BootstrapSource(config_path=str(tmp_path / "nope.yaml")))
    assert "unable to read file" in str(info.value)
