"""BookInfo as the translation sees it: Istio's own YAML (tests/data/istio) in a ConfigStore,
one workload per Deployment on made-up (or free) loopback ports, and the routing scenarios of
``samples/bookinfo/networking`` (each applied on top of bookinfo.yaml)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from tests.support.istio_data import BOOKINFO

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.store import ConfigStore
from pilotfish.mesh.translate import GatewayProxy, MeshConfig, Workload
from pilotfish.mesh.translate.workload import workloads_from_deployments

__all__ = [
    "BOOKINFO",
    "FEATURES_YAML",
    "NETWORKING",
    "SCENARIOS",
    "bookinfo_config",
    "bookinfo_store",
    "bookinfo_workloads",
    "gateway",
    "workload",
]

NETWORKING = BOOKINFO / "networking"
KUBE_YAML = BOOKINFO / "platform/kube/bookinfo.yaml"

# name → files applied on top of bookinfo.yaml. Every file of samples/bookinfo/networking that
# applies to sidecars or the gateway (the ratings-mysql/db ones name services bookinfo.yaml
# lacks; certmanager-gateway and destination-rule-all-mtls need certificates).
_DR = "destination-rule-all.yaml"
SCENARIOS: dict[str, tuple[str, ...]] = {
    "no-rules": (),
    "destination-rule-all": (_DR,),
    "destination-rule-reviews": ("destination-rule-reviews.yaml",),
    "virtual-service-all-v1": (_DR, "virtual-service-all-v1.yaml"),
    "reviews-50-v3": (_DR, "virtual-service-reviews-50-v3.yaml"),
    "reviews-80-20": (_DR, "virtual-service-reviews-80-20.yaml"),
    "reviews-90-10": (_DR, "virtual-service-reviews-90-10.yaml"),
    "reviews-test-v2": (_DR, "virtual-service-reviews-test-v2.yaml"),
    "reviews-jason-v2-v3": (_DR, "virtual-service-reviews-jason-v2-v3.yaml"),
    "reviews-v3": (_DR, "virtual-service-reviews-v3.yaml"),
    "reviews-v2-v3": (_DR, "virtual-service-reviews-v2-v3.yaml"),
    "details-v2": (_DR, "virtual-service-details-v2.yaml"),
    "ratings-test-abort": (
        _DR,
        "virtual-service-all-v1.yaml",
        "virtual-service-ratings-test-abort.yaml",
    ),
    "ratings-test-delay": (
        _DR,
        "virtual-service-all-v1.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ),
    "fault-injection-details-v1": (_DR, "fault-injection-details-v1.yaml"),
    "bookinfo-gateway": (_DR, "virtual-service-all-v1.yaml", "bookinfo-gateway.yaml"),
    "egress-google-apis": ("egress-rule-google-apis.yaml",),
    # Not in the samples: every other translated feature at once.
    "features": ("features.yaml",),
}

# Applied as the file ``features.yaml`` of SCENARIOS: the VirtualService and DestinationRule
# features BookInfo's samples do not use.
FEATURES_YAML = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 3s, tcpKeepalive: {time: 60s, interval: 10s}}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 100, maxRequestsPerConnection: 5,
             maxRetries: 3, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 5s,
                       baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 10}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: session, ttl: 0s}, maglev: {tableSize: 65537}}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: api
    match:
    - name: regex
      uri: {regex: "/reviews/[0-9]+"}
      method: {exact: GET}
      authority: {prefix: reviews}
      queryParams: {debug: {exact: "1"}}
      headers: {x-version: {prefix: v}, x-any: {}}
      withoutHeaders: {x-skip: {}}
      ignoreUriCase: true
    rewrite: {uri: /reviews, authority: reviews.internal}
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,gateway-error,503"}
    mirror: {host: ratings, subset: v1}
    mirrorPercentage: {value: 10.5}
    headers:
      request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
      response: {set: {x-d: "3"}, remove: [x-e]}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: 'https://.*\\.b\\.example'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-user]
      exposeHeaders: [x-version]
      maxAge: 24h
      allowCredentials: true
    fault:
      delay: {fixedDelay: 0.5s, percentage: {value: 0.1}}
      abort: {httpStatus: 503, percentage: {value: 0.1}}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 60
      headers: {request: {set: {x-subset: v1}}}
    - destination: {host: reviews, subset: v2}
      weight: 40
    - destination: {host: reviews, subset: v3}
      weight: 0
  - match: [{uri: {exact: /moved}, port: 9080}]
    redirect: {uri: /reviews/0, authority: reviews:9080, redirectCode: 302}
  - match: [{uri: {prefix: /regex}}]
    rewrite: {uriRegexRewrite: {match: "^/regex/(.*)$", rewrite: '/\\1'}}
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: teapot}}
  - retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
"""


def bookinfo_store(scenario: str = "no-rules") -> ConfigStore:
    store = ConfigStore()
    store.apply([KUBE_YAML])
    for name in SCENARIOS[scenario]:
        if name == "features.yaml":
            store.apply_yaml(FEATURES_YAML, "features.yaml")
        else:
            store.apply([NETWORKING / name])
    return store


def bookinfo_config(scenario: str = "no-rules", *, mtls: bool = False) -> MeshConfig:
    """The BookInfo mesh under ``scenario``; plaintext unless ``mtls`` (Istio's workload
    certificates: auto mTLS, PeerAuthentication, ISTIO_MUTUAL)."""
    return MeshConfig.from_store(bookinfo_store(scenario), mtls=mtls)


def bookinfo_workloads(
    allocate_port: Callable[[], int] | None = None,
    app_ports: dict[str, int] | None = None,
) -> list[Workload]:
    """One workload per BookInfo Deployment (``details-v1-0``, ..., ``reviews-v3-0``); ports
    from ``allocate_port`` (default: 20000, 20001, ...); ``app_ports`` overrides the app port
    by deployment name (e.g. to point at a running backend)."""
    if allocate_port is None:
        counter = itertools.count(20000)
        allocate_port = lambda: next(counter)  # noqa: E731
    store = ConfigStore()
    store.apply([KUBE_YAML])
    out = workloads_from_deployments(store.get(m.Deployment), allocate_port)
    if app_ports:
        out = [
            Workload(
                w.name,
                w.namespace,
                w.labels,
                w.service_account,
                w.address,
                app_ports.get(w.name.rsplit("-", 1)[0], w.app_port),
                w.inbound_port,
                w.outbound_port,
                w.admin_port,
            )
            for w in out
        ]
    return out


def workload(workloads: Sequence[Workload], deployment: str) -> Workload:
    return next(w for w in workloads if w.name.rsplit("-", 1)[0] == deployment)


def gateway(port: int = 28080) -> GatewayProxy:
    return GatewayProxy(ports={8080: port})
