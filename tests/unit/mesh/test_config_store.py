"""The local mesh's config store on Istio's own BookInfo files: parsing, istioctl-like
validation, all-or-nothing apply/delete, listeners and the state directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.support.istio_data import BOOKINFO

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.parse import parse_file, parse_yaml
from pilotfish.mesh.config.store import Change, ConfigStore

NETWORKING = BOOKINFO / "networking"
KUBE = BOOKINFO / "platform/kube"


def key(kind: str, name: str, namespace: str = "default") -> m.ObjectKey:
    return m.ObjectKey(kind, namespace, name)


def reviews_vs(store: ConfigStore) -> m.VirtualService:
    vs = store.get_object(key("VirtualService", "reviews"))
    assert isinstance(vs, m.VirtualService)
    return vs


def routes(vs: m.VirtualService) -> list[list[tuple[str | None, int | None]]]:
    """Per HTTP route, its (subset, weight) destinations."""
    return [[(d.destination.subset, d.weight) for d in r.route] for r in vs.http]


@pytest.fixture
def bookinfo_store(tmp_path: Path) -> ConfigStore:
    store = ConfigStore(tmp_path / "state")
    store.apply([KUBE / "bookinfo.yaml", KUBE / "bookinfo-versions.yaml"])
    return store


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [*sorted(NETWORKING.glob("*.yaml")), KUBE / "bookinfo.yaml", KUBE / "bookinfo-versions.yaml"],
    ids=lambda p: p.name,
)
def test_every_bookinfo_file_parses(path: Path) -> None:
    objs = parse_file(path)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert [o.key.kind for o in objs] == [d["kind"] for d in docs]
    assert [o.key.name for o in objs] == [d["metadata"]["name"] for d in docs]


@pytest.mark.parametrize("path", sorted(NETWORKING.glob("*.yaml")), ids=lambda p: p.name)
def test_every_networking_file_applies_on_bookinfo(bookinfo_store: ConfigStore, path: Path) -> None:
    # With BookInfo's services and destination-rule-all in place, Istio accepts every sample:
    # so must we (each file on its own: several define the same VirtualService names).
    bookinfo_store.apply(NETWORKING / "destination-rule-all.yaml")
    changes = bookinfo_store.apply(path)
    assert {c.key for c in changes} == {o.key for o in parse_file(path)}


@pytest.mark.parametrize("name", ["virtual-service-all-v1.yaml", "virtual-service-reviews-v3.yaml"])
def test_subsets_need_a_destination_rule(bookinfo_store: ConfigStore, name: str) -> None:
    # Istio accepts these without DestinationRules (and then answers 503 NR); we refuse them.
    with pytest.raises(ConfigValidationError, match="no DestinationRule for host"):
        bookinfo_store.apply(NETWORKING / name)


def test_bookinfo_kube_objects() -> None:
    objs = {o.key: o.obj for o in parse_file(KUBE / "bookinfo.yaml")}
    svc = objs[key("Service", "reviews")]
    assert isinstance(svc, m.Service)
    assert svc.selector == {"app": "reviews"}
    assert svc.ports == (m.ServicePort(port=9080, name="http"),)
    dep = objs[key("Deployment", "reviews-v2")]
    assert isinstance(dep, m.Deployment)
    assert dep.pod_labels == {"app": "reviews", "version": "v2"}
    assert dep.service_account_name == "bookinfo-reviews"
    assert dep.containers[0].ports == (9080,)
    assert isinstance(objs[key("ServiceAccount", "bookinfo-reviews")], m.ServiceAccount)


def test_durations_and_percentages() -> None:
    (vs,) = [o.obj for o in parse_file(NETWORKING / "virtual-service-ratings-test-delay.yaml")]
    assert isinstance(vs, m.VirtualService)
    fault = vs.http[0].fault
    assert fault is not None and fault.delay is not None
    assert fault.delay == m.FaultDelay(fixed_delay=7.0, percentage=100.0)
    assert vs.http[0].match[0].headers == {"end-user": m.StringMatch("exact", "jason")}
    (vs,) = [
        o.obj
        for o in parse_yaml(
            """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: r, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - timeout: 0.5s
    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,connect-failure"}
    fault:
      abort: {httpStatus: 503, percentage: {value: 12.5}}
    mirror: {host: ratings, port: {number: 9080}}
    mirrorPercentage: {value: 50}
    route:
    - destination: {host: ratings}
"""
        )
    ]
    assert isinstance(vs, m.VirtualService)
    route = vs.http[0]
    assert route.timeout == 0.5
    assert route.retries == m.HTTPRetry(
        attempts=3, per_try_timeout=0.1, retry_on="5xx,connect-failure"
    )
    assert route.fault == m.HTTPFaultInjection(abort=m.FaultAbort(http_status=503, percentage=12.5))
    assert route.mirror == m.Destination("ratings", port=9080)
    assert route.mirror_percentage == 50.0
    assert vs.meta.namespace == "shop"


def test_destination_rule_policies() -> None:
    (_se, _vs, dr) = [o.obj for o in parse_file(NETWORKING / "egress-rule-google-apis.yaml")]
    assert isinstance(dr, m.DestinationRule)
    assert dr.traffic_policy is not None
    assert dr.traffic_policy.load_balancer == m.LoadBalancerSettings(simple="ROUND_ROBIN")
    (pls,) = dr.traffic_policy.port_level_settings
    assert pls.port == 443
    assert pls.tls == m.ClientTLSSettings(mode="SIMPLE")
    (dr,) = [
        o.obj
        for o in parse_yaml(
            """
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
"""
        )
    ]
    assert isinstance(dr, m.DestinationRule)
    tp = dr.traffic_policy
    assert tp is not None and tp.load_balancer is not None and tp.connection_pool is not None
    assert tp.load_balancer.consistent_hash == m.ConsistentHashLB(
        http_cookie=m.HTTPCookie("user", ttl=0.0)
    )
    assert tp.connection_pool.tcp == m.TCPSettings(max_connections=100, connect_timeout=0.03)
    assert tp.outlier_detection == m.OutlierDetection(
        consecutive_5xx_errors=7, interval=300.0, base_ejection_time=900.0
    )
    assert dr.subsets[0].labels == {"version": "v1"}


def test_unknown_field_names_file_document_object_and_path(tmp_path: Path) -> None:
    text = (NETWORKING / "virtual-service-all-v1.yaml").read_text()
    bad = tmp_path / "virtual-service-all-v1.yaml"
    bad.write_text(text.replace("subset: v1", "subsett: v1", 2))  # productpage and reviews
    with pytest.raises(ConfigValidationError) as err:
        parse_file(bad)
    assert err.value.messages == [
        f"{bad} (document 1): VirtualService default/productpage: "
        "spec.http[0].route[0].destination.subsett: unknown field",
        f"{bad} (document 2): VirtualService default/reviews: "
        "spec.http[0].route[0].destination.subsett: unknown field",
    ]


def test_list_kind_and_empty_documents_and_unsupported_kinds() -> None:
    objs = parse_yaml(
        """
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
- {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 81}]}}
"""
    )
    assert [o.key.name for o in objs] == ["a", "b"]
    with pytest.raises(ConfigValidationError, match=r"unsupported kind 'ConfigMap'"):
        parse_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(
        ConfigValidationError, match=r"VirtualService needs one of networking.istio.io/v1"
    ):
        parse_yaml(
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\n"
        )


# --- the BookInfo routing sequence -----------------------------------------------------------


def test_bookinfo_routing_sequence(bookinfo_store: ConfigStore) -> None:
    store = bookinfo_store
    seen: list[list[Change]] = []
    store.add_listener(lambda changes: seen.append(list(changes)))

    changes = store.apply(
        [NETWORKING / "destination-rule-all.yaml", NETWORKING / "virtual-service-all-v1.yaml"]
    )
    assert [(c.action, c.key.kind, c.key.name) for c in changes] == [
        ("created", "DestinationRule", "productpage"),
        ("created", "DestinationRule", "reviews"),
        ("created", "DestinationRule", "ratings"),
        ("created", "DestinationRule", "details"),
        ("created", "VirtualService", "productpage"),
        ("created", "VirtualService", "reviews"),
        ("created", "VirtualService", "ratings"),
        ("created", "VirtualService", "details"),
    ]
    assert routes(reviews_vs(store)) == [[("v1", None)]]
    dr = store.get_object(key("DestinationRule", "reviews"))
    assert isinstance(dr, m.DestinationRule)
    assert [(s.name, s.labels) for s in dr.subsets] == [
        ("v1", {"version": "v1"}),
        ("v2", {"version": "v2"}),
        ("v3", {"version": "v3"}),
    ]

    (change,) = store.apply(NETWORKING / "virtual-service-reviews-50-v3.yaml")
    assert change.action == "configured"
    assert routes(reviews_vs(store)) == [[("v1", 50), ("v3", 50)]]

    store.apply(NETWORKING / "virtual-service-reviews-test-v2.yaml")
    vs = reviews_vs(store)
    assert routes(vs) == [[("v2", None)], [("v1", None)]]
    assert vs.http[0].match[0].headers == {"end-user": m.StringMatch("exact", "jason")}
    assert vs.http[1].match == ()

    assert len(seen) == 3 and [c.action for c in seen[1]] == ["configured"]
    assert len(store.get("vs")) == 4 and len(store.get(m.DestinationRule)) == 4

    # Applying the same file again changes nothing and tells no listener.
    (change,) = store.apply(NETWORKING / "virtual-service-reviews-test-v2.yaml")
    assert change.action == "unchanged" and len(seen) == 3


def test_undefined_subset_is_rejected_and_nothing_changes(
    bookinfo_store: ConfigStore, tmp_path: Path
) -> None:
    store = bookinfo_store
    store.apply(
        [NETWORKING / "destination-rule-all.yaml", NETWORKING / "virtual-service-all-v1.yaml"]
    )
    before, revision = store.list_all(), store.revision
    bad = tmp_path / "reviews-v9.yaml"
    bad.write_text(
        (NETWORKING / "virtual-service-reviews-50-v3.yaml")
        .read_text()
        .replace("subset: v3", "subset: v9")
    )
    ratings_ok = NETWORKING / "virtual-service-ratings-test-abort.yaml"
    with pytest.raises(ConfigValidationError) as err:
        store.apply([ratings_ok, bad])
    assert err.value.messages == [
        f"{bad} (document 1): VirtualService default/reviews: spec.http[0].route[1].destination.subset: "
        "subset 'v9' is not defined: DestinationRule default/reviews for host "
        "reviews.default.svc.cluster.local defines v1, v2, v3"
    ]
    assert store.list_all() == before and store.revision == revision
    assert routes(reviews_vs(store)) == [[("v1", None)]]
    assert ConfigStore(tmp_path / "state").list_all() == before  # nor on disk


def test_several_problems_are_reported_together(bookinfo_store: ConfigStore) -> None:
    with pytest.raises(ConfigValidationError) as err:
        bookinfo_store.apply_yaml(
            """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [no-such-gateway]
  http:
  - match: [{uri: {regex: "(?=x)"}}]
    timeout: 1.5ms
    fault: {abort: {httpStatus: 700, percentage: {value: 120}}}
    route:
    - {destination: {host: reviews}, weight: 60}
    - {destination: {host: reviews}, weight: 30}
""",
            "bad.yaml",
        )
    text = str(err.value)
    for expected in (
        "spec.http[0].match[0].uri.regex: invalid regex '(?=x)'",
        "spec.http[0].route: weights of the destinations add up to 90, not 100",
        "spec.http[0].timeout: only durations to ms precision are supported",
        "spec.http[0].fault.abort.httpStatus: invalid HTTP status 700 (200..599)",
        "spec.http[0].fault.abort.percentage.value: percentage 120 must be between 0 and 100",
        "spec.gateways[0]: Gateway default/no-such-gateway does not exist",
    ):
        assert f"bad.yaml (document 1): VirtualService default/reviews: {expected}" in text
    assert len(err.value.messages) == 6
    assert bookinfo_store.get(m.VirtualService) == []


def test_conflicting_virtual_services(bookinfo_store: ConfigStore) -> None:
    store = bookinfo_store
    store.apply(
        [NETWORKING / "destination-rule-all.yaml", NETWORKING / "virtual-service-all-v1.yaml"]
    )
    other = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-canary}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
"""
    with pytest.raises(
        ConfigValidationError,
        match=(
            r"VirtualService default/reviews: spec.hosts: host reviews.default.svc.cluster.local on "
            r"gateway mesh is also routed by VirtualService default/reviews-canary"
        ),
    ):
        store.apply_yaml(other, "canary.yaml")
    assert store.get_object(key("VirtualService", "reviews-canary")) is None
    # The same host on another gateway is no conflict.
    store.apply(NETWORKING / "bookinfo-gateway.yaml")
    store.apply_yaml(other.replace("http:", "gateways: [bookinfo-gateway]\n  http:"), "canary.yaml")
    assert store.get_object(key("VirtualService", "reviews-canary")) is not None


def test_conflicting_destination_rules(bookinfo_store: ConfigStore) -> None:
    bookinfo_store.apply(NETWORKING / "destination-rule-all.yaml")
    with pytest.raises(ConfigValidationError, match="one DestinationRule per host and namespace"):
        bookinfo_store.apply_yaml(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: reviews-2}\nspec: {host: reviews.default.svc.cluster.local}\n"
        )


def test_same_object_twice_in_one_apply_is_rejected(bookinfo_store: ConfigStore) -> None:
    with pytest.raises(
        ConfigValidationError, match="DestinationRule default/reviews: defined twice"
    ):
        bookinfo_store.apply(
            [NETWORKING / "destination-rule-all.yaml", NETWORKING / "destination-rule-reviews.yaml"]
        )


# --- delete, persistence ---------------------------------------------------------------------


def test_delete_and_reapply(bookinfo_store: ConfigStore) -> None:
    store = bookinfo_store
    dr_all, vs_all = (
        NETWORKING / "destination-rule-all.yaml",
        NETWORKING / "virtual-service-all-v1.yaml",
    )
    store.apply([dr_all, vs_all])
    # The rules are still in use: refused, nothing deleted.
    with pytest.raises(
        ConfigValidationError, match=r"subset 'v1' is not defined.*\(delete it first, or force\)"
    ):
        store.delete(dr_all)
    assert len(store.get(m.DestinationRule)) == 4
    changes = store.delete(vs_all)
    assert [(c.action, c.key.name) for c in changes] == [
        ("deleted", "productpage"),
        ("deleted", "reviews"),
        ("deleted", "ratings"),
        ("deleted", "details"),
    ]
    store.delete(dr_all)
    assert store.get(m.VirtualService) == [] and store.get(m.DestinationRule) == []
    with pytest.raises(ConfigValidationError, match="DestinationRule default/reviews: not found"):
        store.delete(dr_all)
    assert store.delete(dr_all, ignore_not_found=True) == []
    assert {c.action for c in store.apply([dr_all, vs_all])} == {"created"}
    store.delete_object("vs", "reviews")
    assert store.get_object(key("VirtualService", "reviews")) is None


def test_forced_delete_does_not_block_later_changes(bookinfo_store: ConfigStore) -> None:
    store = bookinfo_store
    store.apply(
        [NETWORKING / "destination-rule-all.yaml", NETWORKING / "virtual-service-all-v1.yaml"]
    )
    store.delete_object("DestinationRule", "details", force=True)
    # VirtualService details now points at a missing subset: known, not blocking other work.
    store.apply(NETWORKING / "virtual-service-reviews-50-v3.yaml")
    assert routes(reviews_vs(store)) == [[("v1", 50), ("v3", 50)]]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = ConfigStore(state)
    store.apply(
        [
            KUBE / "bookinfo.yaml",
            NETWORKING / "destination-rule-all.yaml",
            NETWORKING / "virtual-service-all-v1.yaml",
        ]
    )
    store.apply(NETWORKING / "virtual-service-reviews-test-v2.yaml")
    store.delete_object("VirtualService", "details")
    again = ConfigStore(state)
    assert again.list_all() == store.list_all()
    assert again.revision == store.revision == 3
    assert routes(reviews_vs(again)) == [[("v2", None)], [("v1", None)]]
    assert again.get_object(key("VirtualService", "details")) is None
    assert again.source_of(key("VirtualService", "reviews")) == str(
        NETWORKING / "virtual-service-reviews-test-v2.yaml"
    )
    assert len(again.get(m.Deployment)) == 6
    # And the reloaded store keeps validating against what it holds.
    with pytest.raises(ConfigValidationError, match="subset 'v9'"):
        again.apply_yaml(
            (NETWORKING / "virtual-service-reviews-v3.yaml").read_text().replace("v3", "v9")
        )


def test_memory_only_store_and_failing_listener(caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore()
    calls: list[int] = []

    def broken(changes: object) -> None:
        raise RuntimeError("boom")

    store.add_listener(broken)
    remove = store.add_listener(lambda changes: calls.append(len(changes)))
    store.apply(KUBE / "bookinfo-versions.yaml")
    assert calls == [6] and "listener" in caplog.text
    remove()
    store.delete_object("svc", "reviews-v1")
    assert calls == [6] and len(store) == 5
