"""Istio's config dumps (tests/data/istio, istioctl testdata) as resources, and the reviewed list
of those pilotfish refuses: one source of truth for the translation test
(tests/unit/test_istio_config_dumps.py) and the ADS replay
(tests/integration/test_istio_replay_ads.py).

Each entry of REJECTED is a deliberate limitation listed in docs/compatibility.md
("Resources from istiod").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from tests.support.istio_data import ISTIOCTL

from pilotfish.xds import protos

__all__ = [
    "AUTHZ",
    "COMPARE",
    "COUNTS",
    "DUMPS",
    "ENDPOINTS",
    "KIND_BY_KEY",
    "PROXYCONFIG",
    "REFDATA",
    "REJECTED",
    "find",
    "load",
    "resource_name",
    "resources",
    "to_any",
]

REFDATA = ISTIOCTL
DUMPS = sorted(
    p
    for p in REFDATA.glob("**/testdata/**/*")
    if p.is_file() and p.suffix in (".json", ".yaml") and '"configs"' in p.read_text()[:200]
)

AUTHZ = "pkg/authz/testdata/configdump.yaml"
PROXYCONFIG = "pkg/proxyconfig/testdata/config_dump.json"
COMPARE = "pkg/writer/compare/testdata/configdump.json"
ENDPOINTS = "pkg/writer/envoy/configdump/testdata/endpoint/configdump.json"

_HBONE = "Istio's HBONE tunnels"
_AUTHZ = "it decides which requests are allowed (Istio AuthorizationPolicy)"

# (dump, resource kind, resource name, substring of the reason). Reviewed: each is a deliberate
# limitation of docs/compatibility.md, "Resources from istiod".
REJECTED: set[tuple[str, str, str, str]] = {
    # A sidecar with AuthorizationPolicies: RBAC is refused (its mTLS chains translate, see
    # test_virtual_inbound_without_authz).
    (AUTHZ, "listener", "virtualInbound", _AUTHZ),
    # HBONE (ambient / waypoints): internal listeners and the filters that feed them.
    (AUTHZ, "listener", "main_internal", "internal_listener is not supported"),
    (AUTHZ, "listener", "connect_originate", "internal_listener is not supported"),
    (AUTHZ, "listener", "connect_terminate", "per-route config for filter 'connect_authority'"),
    (PROXYCONFIG, "cluster", "inbound-vip|8000|http|httpbin.default.svc.cluster.local", _HBONE),
    (PROXYCONFIG, "listener", "main_internal", "internal_listener is not supported"),
    # The waypoint's endpoints are internal addresses (envoy://connect_originate/...).
    (
        PROXYCONFIG,
        "cluster load assignment",
        "inbound-vip|8100|http|httpbin.default.svc.cluster.local",
        _HBONE,
    ),
    (COMPARE, "cluster", "inbound-vip|9080|http|ratings.default.svc.cluster.local", _HBONE),
    (COMPARE, "listener", "main_internal", "internal_listener is not supported"),
    (COMPARE, "listener", "connect_originate", "internal_listener is not supported"),
    (
        COMPARE,
        "listener",
        "connect_terminate",
        "Didn't find a registered implementation for 'connect_authority'",
    ),
}

# How many resources each dump holds, by kind (so that a parsing slip cannot skip any).
COUNTS = {
    AUTHZ: {"listener": 29},
    PROXYCONFIG: {"cluster": 3, "cluster load assignment": 2, "listener": 2, "route config": 1},
    COMPARE: {"cluster": 1, "listener": 3, "route config": 1},
    ENDPOINTS: {"cluster load assignment": 37},
}

KIND_BY_KEY = {
    "cluster": "cluster",
    "route_config": "route config",
    "endpoint_config": "cluster load assignment",
    "listener": "listener",
}


def resources(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, resource JSON) for every static and dynamic resource of an admin config dump."""
    for section in doc.get("configs", []):
        for items in section.values():
            if not isinstance(items, list):
                continue
            for item in items:
                for key, kind in KIND_BY_KEY.items():
                    if key in item:
                        yield kind, item[key]
                for state in ("active_state", "warming_state"):
                    if state in item:
                        yield "listener", item[state]["listener"]


def resource_name(resource: dict[str, Any]) -> str:
    return str(resource.get("name") or resource.get("cluster_name") or "")


def to_any(resource: dict[str, Any]) -> AnyProto:
    return json_format.ParseDict(protos.load_types_in(resource), AnyProto())


def load(rel: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REFDATA / rel).read_text())
    return doc


def find(rel: str, kind: str, name: str) -> dict[str, Any]:
    for k, r in resources(load(rel)):
        if k == kind and resource_name(r) == name:
            return r
    raise LookupError(f"{kind} {name} not in {rel}")
