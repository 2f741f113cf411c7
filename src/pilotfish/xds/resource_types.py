"""The xDS resource types pilotfish speaks: type URL, short name, proto class.

Adding a resource type (SDS secrets, ECDS extension configs) is one entry here plus its
handler in the xDS manager; the ADS client and server are generic over type URLs."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"


@dataclass(frozen=True, slots=True)
class ResourceType:
    type_url: str
    short: str  # the name in stats and logs: cds, eds, lds, rds, sds
    message: type[Message]
    # LDS and CDS are wildcard subscriptions (everything the server has); RDS, EDS and SDS
    # ask for the names the listeners and clusters reference.
    wildcard: bool

    @property
    def name(self) -> str:
        return self.message.DESCRIPTOR.full_name


CLUSTER = ResourceType(
    TYPE_PREFIX + "envoy.config.cluster.v3.Cluster", "cds", cluster_pb2.Cluster, True
)
ENDPOINT = ResourceType(
    TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "eds",
    endpoint_pb2.ClusterLoadAssignment,
    False,
)
LISTENER = ResourceType(
    TYPE_PREFIX + "envoy.config.listener.v3.Listener", "lds", listener_pb2.Listener, True
)
ROUTE = ResourceType(
    TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration",
    "rds",
    route_pb2.RouteConfiguration,
    False,
)
SECRET = ResourceType(
    TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret",
    "sds",
    secret_pb2.Secret,
    False,
)

# Envoy's order for a (re)connected ADS stream: clusters and their endpoints first, then
# listeners and their routes, so that nothing references what has not arrived yet.
ALL = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
BY_URL = {t.type_url: t for t in ALL}


def resource_name(msg: Message) -> str:
    """The name a resource is known by (ClusterLoadAssignment calls it cluster_name)."""
    if isinstance(msg, endpoint_pb2.ClusterLoadAssignment):
        return msg.cluster_name
    return str(msg.name)  # type: ignore[attr-defined]
