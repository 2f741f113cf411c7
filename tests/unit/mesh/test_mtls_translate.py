"""Istio mTLS in the local mesh's translation: PeerAuthentication precedence, auto mTLS
(clusters' transport_socket_matches, EDS tlsMode metadata), DestinationRule ISTIO_MUTUAL /
DISABLE, the inbound chains per mode. Shapes are compared with a real sidecar's config dump
(istioctl's authz testdata) where Istio has one; every resource must pass pilotfish's own
xDS translation."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from google.protobuf.message import Message
from tests.support.bookinfo_mesh import (
    KUBE_YAML,
    NETWORKING,
    SCENARIOS,
    bookinfo_config,
    bookinfo_store,
    bookinfo_workloads,
    gateway,
    workload,
)
from tests.support.istio_dumps import AUTHZ, find

from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.translate import (
    MeshConfig,
    ProxyConfig,
    ProxyResources,
    gateway_config,
    sidecar_config,
)
from pilotfish.mesh.translate.authn import namespace_mtls_mode, workload_mtls
from pilotfish.mesh.translate.inbound import inbound_filter_chains
from pilotfish.mesh.translate.mtls import downstream_istio_mutual, sds_secret
from pilotfish.xds import resource_types as rt
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.resource import translate_resource

WORKLOADS = bookinfo_workloads()
REVIEWS = "reviews.default.svc.cluster.local"
PRODUCTPAGE = workload(WORKLOADS, "productpage-v1")
REVIEWS_V1 = workload(WORKLOADS, "reviews-v1")


def pa(name: str, namespace: str = "default", **spec: Any) -> str:
    created = spec.pop("created", None)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    return yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": meta,
            "spec": spec,
        }
    )


ALL_MTLS = NETWORKING / "destination-rule-all-mtls.yaml"  # not a SCENARIO: needs certificates


def mesh(*docs: str, scenario: str = "no-rules", all_mtls: bool = False) -> MeshConfig:
    store = bookinfo_store(scenario)
    if all_mtls:
        store.apply([ALL_MTLS])
    for doc in docs:
        store.apply_yaml(doc)
    return MeshConfig.from_store(store)


def sidecar(config: MeshConfig, deployment: str = "productpage-v1") -> ProxyConfig:
    return sidecar_config(config, WORKLOADS, workload(WORKLOADS, deployment))


def inbound(cfg: ProxyConfig) -> dict[str, Any]:
    return next(x for x in cfg.listeners if x["traffic_direction"] == "INBOUND")


def tls_of(socket: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = socket["typed_config"]
    return typed


def lb_endpoints(cfg: ProxyConfig, cluster: str) -> dict[str, dict[str, Any]]:
    """EDS endpoints by workload name."""
    cla = cfg.endpoint(cluster)
    eps = [ep for loc in cla.get("endpoints", []) for ep in loc["lb_endpoints"]]
    return {ep["metadata"]["filter_metadata"]["istio"]["workload"].split(";")[0]: ep for ep in eps}


def tls_mode(ep: dict[str, Any]) -> str | None:
    meta = ep["metadata"]["filter_metadata"].get("envoy.transport_socket_match")
    return None if meta is None else meta["tlsMode"]


# --- PeerAuthentication precedence -----------------------------------------------------------


def test_default_is_permissive() -> None:
    config = mesh()
    assert workload_mtls(config, "default", {"app": "reviews"}).mode == "PERMISSIVE"
    assert namespace_mtls_mode(config, "default") == "PERMISSIVE"


def test_workload_over_namespace_over_mesh() -> None:
    config = mesh(
        pa("default", "istio-system", mtls={"mode": "STRICT"}),
        pa("ns", mtls={"mode": "DISABLE"}),
        pa("reviews", selector={"matchLabels": {"app": "reviews"}}, mtls={"mode": "PERMISSIVE"}),
    )
    assert workload_mtls(config, "default", {"app": "reviews"}).mode == "PERMISSIVE"
    assert workload_mtls(config, "default", {"app": "ratings"}).mode == "DISABLE"
    assert workload_mtls(config, "other", {"app": "reviews"}).mode == "STRICT"
    # Auto mTLS's best effort sees mesh and namespace policies only.
    assert namespace_mtls_mode(config, "default") == "DISABLE"


def test_unset_inherits_and_port_level_overrides() -> None:
    config = mesh(
        pa("default", "istio-system", mtls={"mode": "STRICT"}),
        pa("ns", mtls={}),  # UNSET: the mesh's STRICT
        pa(
            "reviews",
            selector={"matchLabels": {"app": "reviews"}},
            portLevelMtls={9080: {"mode": "DISABLE"}, "9443": {"mode": "UNSET"}},
        ),
    )
    policy = workload_mtls(config, "default", {"app": "reviews"})
    assert policy.mode == "STRICT"
    assert (policy.mode_at(9080), policy.mode_at(9443), policy.mode_at(1)) == (
        "DISABLE",
        "STRICT",
        "STRICT",
    )


def test_oldest_wins_in_a_scope_then_name() -> None:
    older = pa("zz", mtls={"mode": "STRICT"}, created="2024-01-01T00:00:00Z")
    newer = pa("aa", mtls={"mode": "DISABLE"}, created="2024-06-01T00:00:00Z")
    assert workload_mtls(mesh(older, newer), "default", {}).mode == "STRICT"
    # Same (or no) creation time: the first by name.
    assert (
        workload_mtls(
            mesh(pa("b", mtls={"mode": "STRICT"}), pa("a", mtls={"mode": "DISABLE"})), "default", {}
        ).mode
        == "DISABLE"
    )


def test_selector_in_root_namespace_is_not_a_workload_policy() -> None:
    config = mesh(
        pa(
            "x",
            "istio-system",
            selector={"matchLabels": {"app": "reviews"}},
            mtls={"mode": "DISABLE"},
        )
    )
    assert workload_mtls(config, "default", {"app": "reviews"}).mode == "PERMISSIVE"


# --- outbound: auto mTLS -----------------------------------------------------------------------


def test_auto_mtls_cluster_shape() -> None:
    cfg = sidecar(bookinfo_config("destination-rule-all", mtls=True))
    for subset, sni in [
        (None, f"outbound_.9080_._.{REVIEWS}"),
        ("v1", f"outbound_.9080_.v1_.{REVIEWS}"),
    ]:
        cluster = cfg.cluster(f"outbound|9080|{subset or ''}|{REVIEWS}")
        assert "transport_socket" not in cluster
        istio, plain = cluster["transport_socket_matches"]
        assert (istio["name"], istio["match"]) == ("tlsMode-istio", {"tlsMode": "istio"})
        assert plain == {
            "name": "tlsMode-disabled",
            "match": {},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                },
            },
        }
        ctx = tls_of(istio["transport_socket"])
        assert ctx["@type"].endswith("UpstreamTlsContext")
        assert ctx["sni"] == sni
        common = ctx["common_tls_context"]
        assert common["tls_params"] == {
            "tls_minimum_protocol_version": "TLSv1_2",
            "tls_maximum_protocol_version": "TLSv1_3",
        }
        assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]
        # The same SDS secret configs as the real sidecar's inbound contexts.
        dump = _dump_chain("0.0.0.0_80", "tls")["transport_socket"]["typed_config"]
        dump_common = dump["common_tls_context"]
        assert (
            common["tls_certificate_sds_secret_configs"]
            == dump_common["tls_certificate_sds_secret_configs"]
        )
        validation = common["combined_validation_context"]
        assert (
            validation["validation_context_sds_secret_config"]
            == dump_common["combined_validation_context"]["validation_context_sds_secret_config"]
        )
        # The destination's identities: one service account for every reviews version.
        assert validation["default_validation_context"] == {
            "match_subject_alt_names": [
                {"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}
            ]
        }


def test_endpoints_of_sidecars_carry_tls_mode() -> None:
    cfg = sidecar(bookinfo_config("no-rules", mtls=True))
    eps = lb_endpoints(cfg, f"outbound|9080||{REVIEWS}")
    assert set(eps) == {"reviews-v1-0", "reviews-v2-0", "reviews-v3-0"}
    for ep in eps.values():
        assert ep["metadata"]["filter_metadata"] == {
            "envoy.transport_socket_match": {"tlsMode": "istio"},
            "istio": {"workload": ep["metadata"]["filter_metadata"]["istio"]["workload"]},
        }


def test_workload_disable_strips_tls_mode_and_namespace_disable_drops_matches() -> None:
    v1_disabled = pa(
        "v1",
        selector={"matchLabels": {"app": "reviews", "version": "v1"}},
        mtls={"mode": "DISABLE"},
    )
    cfg = sidecar(mesh(v1_disabled))
    eps = lb_endpoints(cfg, f"outbound|9080||{REVIEWS}")
    assert {name: tls_mode(ep) for name, ep in eps.items()} == {
        "reviews-v1-0": None,
        "reviews-v2-0": "istio",
        "reviews-v3-0": "istio",
    }
    assert "transport_socket_matches" in cfg.cluster(f"outbound|9080||{REVIEWS}")

    # Port level: the workload port (the service's targetPort, 9080).
    v2_port = pa(
        "v2",
        selector={"matchLabels": {"version": "v2"}},
        portLevelMtls={9080: {"mode": "DISABLE"}},
    )
    eps = lb_endpoints(sidecar(mesh(v2_port)), f"outbound|9080||{REVIEWS}")
    assert tls_mode(eps["reviews-v2-0"]) is None and tls_mode(eps["reviews-v1-0"]) == "istio"

    cfg = sidecar(mesh(pa("ns", mtls={"mode": "DISABLE"})))
    cluster = cfg.cluster(f"outbound|9080||{REVIEWS}")
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    # Mesh-wide DISABLE: plaintext everywhere.
    cfg = sidecar(mesh(pa("default", "istio-system", mtls={"mode": "DISABLE"})))
    assert not any("transport_socket_matches" in c for c in cfg.clusters)


def test_destination_rule_istio_mutual_and_disable() -> None:
    cfg = sidecar(mesh(all_mtls=True))
    cluster = cfg.cluster(f"outbound|9080|v2|{REVIEWS}")
    assert "transport_socket_matches" not in cluster
    ctx = tls_of(cluster["transport_socket"])
    assert ctx["sni"] == f"outbound_.9080_.v2_.{REVIEWS}"
    assert ctx["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ] == {
        "match_subject_alt_names": [
            {"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}
        ]
    }
    # ISTIO_MUTUAL wins over the workload's PeerAuthentication DISABLE (endpoint metadata).
    config = mesh(
        pa("v1", selector={"matchLabels": {"version": "v1"}}, mtls={"mode": "DISABLE"}),
        all_mtls=True,
    )
    eps = lb_endpoints(sidecar(config), f"outbound|9080||{REVIEWS}")
    assert tls_mode(eps["reviews-v1-0"]) == "istio"

    # User SANs and SNI; DISABLE for one subset: plaintext there, tlsMode stripped.
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: my.sni, subjectAltNames: [spiffe://cluster.local/ns/x/sa/y]}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: v2
    labels: {version: v2}
"""
    cfg = sidecar(mesh(dr))
    v2 = tls_of(cfg.cluster(f"outbound|9080|v2|{REVIEWS}")["transport_socket"])
    assert v2["sni"] == "my.sni"
    assert v2["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ] == {"match_subject_alt_names": [{"exact": "spiffe://cluster.local/ns/x/sa/y"}]}
    v1 = cfg.cluster(f"outbound|9080|v1|{REVIEWS}")
    assert "transport_socket" not in v1 and "transport_socket_matches" not in v1
    eps = lb_endpoints(cfg, f"outbound|9080|v1|{REVIEWS}")
    assert tls_mode(eps["reviews-v1-0"]) is None


def test_http2_cluster_offers_h2() -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}
"""
    cluster = sidecar(mesh(dr)).cluster(f"outbound|9080||{REVIEWS}")
    ctx = tls_of(cluster["transport_socket_matches"][0]["transport_socket"])
    assert ctx["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio", "h2"]


def test_external_service_entry_and_workload_entry_without_sidecar_are_plaintext() -> None:
    docs = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm}
spec:
  hosts: [vm.internal]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-plain}
spec: {address: 10.0.0.1, labels: {app: vm}, serviceAccount: vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-sidecar}
spec: {address: 10.0.0.2, labels: {app: vm, security.istio.io/tlsMode: istio}, serviceAccount: vm}
"""
    cfg = sidecar(mesh(docs))
    assert "transport_socket_matches" not in cfg.cluster("outbound|80||ext.example.com")
    vm = cfg.cluster("outbound|80||vm.internal")
    ctx = tls_of(vm["transport_socket_matches"][0]["transport_socket"])
    assert ctx["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ] == {"match_subject_alt_names": [{"exact": "spiffe://cluster.local/ns/default/sa/vm"}]}
    eps = lb_endpoints(cfg, "outbound|80||vm.internal")
    assert (tls_mode(eps["vm-plain"]), tls_mode(eps["vm-sidecar"])) == (None, "istio")


def test_gateway_upstreams_get_auto_mtls_and_its_listener_stays_plain() -> None:
    cfg = gateway_config(bookinfo_config("bookinfo-gateway", mtls=True), WORKLOADS, gateway())
    cluster = cfg.cluster("outbound|9080||productpage.default.svc.cluster.local")
    assert [m["name"] for m in cluster["transport_socket_matches"]] == [
        "tlsMode-istio",
        "tlsMode-disabled",
    ]
    for lis in cfg.listeners:
        assert all("transport_socket" not in fc for fc in lis["filter_chains"])


def test_plaintext_mesh_has_no_tls() -> None:
    store = bookinfo_store()
    store.apply([ALL_MTLS])
    cfg = sidecar(MeshConfig.from_store(store, mtls=False))
    assert not any("transport_socket" in c or "transport_socket_matches" in c for c in cfg.clusters)
    (chain,) = inbound(cfg)["filter_chains"]
    assert "filter_chain_match" not in chain and "listener_filters" not in inbound(cfg)


# --- inbound -----------------------------------------------------------------------------------


def _dump_chain(name: str, transport: str, alpn: bool = True) -> dict[str, Any]:
    """A filter chain of the real sidecar's virtualInbound."""
    vi = find(AUTHZ, "listener", "virtualInbound")
    return next(
        fc
        for fc in vi["filter_chains"]
        if fc.get("name") == name
        and fc["filter_chain_match"].get("transport_protocol") == transport
        and bool(fc["filter_chain_match"].get("application_protocols")) == alpn
    )


def test_downstream_contexts_are_the_real_sidecars() -> None:
    http = _dump_chain("0.0.0.0_80", "tls")["transport_socket"]
    tcp = _dump_chain("virtualInbound", "tls")["transport_socket"]
    assert downstream_istio_mutual(http=True) == http
    assert downstream_istio_mutual(http=False) == tcp
    assert (
        sds_secret("default")["sds_config"]
        == http["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"][0][
            "sds_config"
        ]
    )


def test_permissive_http_port_chains_match_the_dump() -> None:
    cfg = sidecar(bookinfo_config("no-rules", mtls=True), "reviews-v1")
    lis = inbound(cfg)
    assert [f["name"] for f in lis["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    mtls, plain = lis["filter_chains"]
    want_mtls, want_plain = (
        _dump_chain("0.0.0.0_80", "tls"),
        _dump_chain("0.0.0.0_80", "raw_buffer", alpn=False),
    )
    # The dump's chains also match destination_port (virtualInbound); here the listener is the port.
    for got, want in ((mtls, want_mtls), (plain, want_plain)):
        want_match = {
            k: v for k, v in want["filter_chain_match"].items() if k != "destination_port"
        }
        assert got["filter_chain_match"] == want_match
        assert got.get("transport_socket") == want.get("transport_socket")
        assert got["name"] == "127.0.0.1_9080"
        hcm, want_hcm = got["filters"][-1]["typed_config"], want["filters"][-1]["typed_config"]
        for key in ("forward_client_cert_details", "set_current_client_cert_details"):
            assert hcm[key] == want_hcm[key]
    assert mtls["filters"] == plain["filters"]


@pytest.mark.parametrize(
    ("mode", "http", "want"),
    [
        ("PERMISSIVE", True, [("tls", True, True), ("raw_buffer", False, False)]),
        ("STRICT", True, [("tls", False, True)]),
        ("DISABLE", True, [("raw_buffer", False, False)]),
        (
            "PERMISSIVE",
            False,
            [("tls", True, True), ("raw_buffer", False, False), ("tls", False, False)],
        ),
        ("STRICT", False, [("tls", False, True)]),
        ("DISABLE", False, [("raw_buffer", False, False)]),
    ],
)
def test_chains_per_mode(mode: str, http: bool, want: list[tuple[str, bool, bool]]) -> None:
    """(transport protocol, matches Istio's ALPNs, terminates mTLS) per chain, as istiod's
    filter chain match options."""
    chains = inbound_filter_chains(mode, [{"name": "f"}], http=http, destination_port=9080)
    got = [
        (
            c["filter_chain_match"]["transport_protocol"],
            "application_protocols" in c["filter_chain_match"],
            "transport_socket" in c,
        )
        for c in chains.filter_chains
    ]
    assert got == want
    assert all(c["filter_chain_match"]["destination_port"] == 9080 for c in chains.filter_chains)
    alpn = [
        c["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"]
        for c in chains.filter_chains
        if "transport_socket" in c
    ]
    server_alpn = ["h2", "http/1.1"] if http else ["istio-peer-exchange", "h2", "http/1.1"]
    assert alpn == ([] if mode == "DISABLE" else [server_alpn])
    with pytest.raises(ValueError, match="UNSET"):
        inbound_filter_chains("UNSET", [], http=True)


def test_inbound_mode_follows_peer_authentication() -> None:
    strict = pa("reviews", selector={"matchLabels": {"app": "reviews"}}, mtls={"mode": "STRICT"})
    config = mesh(strict)
    (chain,) = inbound(sidecar(config, "reviews-v1"))["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls"}
    assert len(inbound(sidecar(config, "ratings-v1"))["filter_chains"]) == 2
    port_off = pa(
        "r",
        selector={"matchLabels": {"app": "reviews"}},
        mtls={"mode": "STRICT"},
        portLevelMtls={9080: {"mode": "DISABLE"}},
    )
    (chain,) = inbound(sidecar(mesh(port_off), "reviews-v1"))["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "raw_buffer"}


# --- every resource is valid for pilotfish ---------------------------------------------------

_EXTRA = {
    "peer-authentications": [
        pa("default", "istio-system", mtls={"mode": "STRICT"}),
        pa("ratings", selector={"matchLabels": {"app": "ratings"}}, mtls={"mode": "DISABLE"}),
        pa(
            "reviews",
            selector={"matchLabels": {"app": "reviews"}},
            portLevelMtls={9080: {"mode": "PERMISSIVE"}},
        ),
    ]
}


def _translate(rtype: rt.ResourceType, msg: Message) -> None:
    """pilotfish's translation of one resource, as it would be applied from xDS."""
    translate_resource(rtype.type_url, msg, TranslateContext())


def _resources(config: MeshConfig) -> list[ProxyResources]:
    out = [sidecar_config(config, WORKLOADS, w).to_protos() for w in WORKLOADS]
    out.append(gateway_config(config, WORKLOADS, gateway()).to_protos())
    return out


@pytest.mark.parametrize("scenario", [*SCENARIOS, "peer-authentications"])
def test_every_resource_passes_pilotfish_translation(scenario: str) -> None:
    if scenario in _EXTRA:
        config = mesh(*_EXTRA[scenario], scenario="destination-rule-all")
    else:
        config = bookinfo_config(scenario, mtls=True)
    for res in _resources(config):
        for type_url, msgs in res.by_type_url().items():
            rtype = rt.BY_URL[type_url]
            for msg in msgs:
                _translate(rtype, msg)


def test_destination_rule_all_mtls_translates() -> None:
    store = ConfigStore()
    store.apply([KUBE_YAML, ALL_MTLS])
    for res in _resources(MeshConfig.from_store(store)):
        for rtype in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER):
            for msg in res.by_type_url()[rtype.type_url]:
                _translate(rtype, msg)


# --- capture mode: virtualInbound's catch-all follows the mode --------------------------------


@pytest.mark.parametrize(
    ("mode", "transports", "default_chain"),
    [
        ("STRICT", ["tls"], False),
        ("PERMISSIVE", ["tls", "raw_buffer", "tls"], False),
        ("DISABLE", [], True),
    ],
)
def test_virtual_inbound_catchall_follows_the_mtls_mode(
    mode: str, transports: list[str], default_chain: bool
) -> None:
    """Ports no service declares pass through; under STRICT only mTLS does (a default chain
    would take the plain text the port chains refused)."""
    from pilotfish.mesh.translate.capture import capture_sidecar_config
    from pilotfish.mesh.translate.vips import service_vips

    config = mesh(pa("default", "istio-system", mtls={"mode": mode}))
    vi = next(
        x
        for x in capture_sidecar_config(
            config, WORKLOADS, REVIEWS_V1, service_vips(config)
        ).listeners
        if x["name"] == "virtualInbound"
    )
    catchall = [c for c in vi["filter_chains"] if c["name"] == "virtualInbound-catchall-tcp"]
    assert [c["filter_chain_match"]["transport_protocol"] for c in catchall] == transports
    assert all("destination_port" not in c["filter_chain_match"] for c in catchall)
    assert ("default_filter_chain" in vi) is default_chain
    port = [c for c in vi["filter_chains"] if c["name"].startswith("0.0.0.0_")]
    assert port
    if mode == "STRICT":
        assert {c["filter_chain_match"]["transport_protocol"] for c in port} == {"tls"}
