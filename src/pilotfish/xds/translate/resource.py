"""One xDS resource (as an ``Any`` from a DiscoveryResponse, or as its message) -> model.

The ADS client calls ``translate_resource`` for every resource of a response; a ConfigError
NACKs the response. The error's path starts with the resource's kind and name, so that the
NACK's ``error_detail`` says which resource is wrong::

    listener 'virtualInbound': filter_chains[3].filters[0].typed_config...: reason

Cluster references. Envoy validates the clusters a route table names only when the table's
``validate_clusters`` is true, which it is by default for a table given inline in a listener
(``route_config``) and is not for one from RDS. When validating, Envoy asks its cluster
manager (static and CDS clusters alike). Translation is pure and sees only
``ctx.static_clusters``: for xDS resources the caller sets it to the names of every cluster
it has at the time, or leaves it None, and then nothing is validated (a route to an unknown
cluster answers ``cluster_not_found_response_code`` at request time, as in Envoy).
"""

from __future__ import annotations

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError, Message

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import Cluster, ClusterLoadAssignment
from pilotfish.model.listener import Listener
from pilotfish.model.route import RouteConfiguration
from pilotfish.xds import resource_types as rt
from pilotfish.xds.translate.cluster import cluster, cluster_load_assignment
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.listener import listener
from pilotfish.xds.translate.route import route_configuration

Resource = Listener | RouteConfiguration | Cluster | ClusterLoadAssignment

# How an error names the resource (Envoy's words in its NACK messages).
KIND = {
    rt.LISTENER.type_url: "listener",
    rt.ROUTE.type_url: "route config",
    rt.CLUSTER.type_url: "cluster",
    rt.ENDPOINT.type_url: "cluster load assignment",
}


def unpack(type_url: str, resource: AnyProto | Message) -> Message:
    """The resource's message; ConfigError if it is not of ``type_url``."""
    rtype = rt.BY_URL.get(type_url)
    if rtype is None:
        raise ConfigError("", f"unknown resource type URL '{type_url}'")
    if isinstance(resource, AnyProto):
        if resource.type_url != type_url:
            raise ConfigError(
                "", f"resource of type '{resource.type_url}' in a response for '{type_url}'"
            )
        msg = rtype.message()
        try:
            if not resource.Unpack(msg):
                raise ConfigError("", f"cannot unpack a resource as '{type_url}'")
        except DecodeError as e:
            raise ConfigError("", f"cannot decode a '{type_url}' resource: {e}") from None
        return msg
    if not isinstance(resource, rtype.message):
        raise ConfigError(
            "",
            f"resource of type '{resource.DESCRIPTOR.full_name}' in a response for '{type_url}'",
        )
    return resource


def translate_resource(
    type_url: str, resource: AnyProto | Message, ctx: TranslateContext
) -> Resource:
    """Translate one LDS, RDS, CDS or EDS resource. Pure: warnings go to ``ctx.warnings``.
    Raises ConfigError whose path starts with ``<kind> '<name>'``."""
    msg = unpack(type_url, resource)
    kind = KIND.get(type_url)
    name = rt.resource_name(msg)
    if kind is None:
        raise ConfigError(
            f"'{name}'",
            f"resources of type '{type_url}' are not translated into the model "
            "(SDS secrets are decoded by xds.translate.secret.decode_secret)",
        )
    where = f"{kind} '{name}'"
    try:
        if type_url == rt.ENDPOINT.type_url and not name:
            raise ConfigError("cluster_name", "value length must be at least 1")
        if type_url == rt.LISTENER.type_url:
            return listener(msg, ctx)
        if type_url == rt.ROUTE.type_url:
            # From RDS: not inline, so validate_clusters defaults to false (see module doc).
            return route_configuration(msg, ctx, inline=False)
        if type_url == rt.CLUSTER.type_url:
            return cluster(msg, ctx)
        # EDS: endpoints must be IP addresses (Envoy resolves no names in EDS).
        return cluster_load_assignment(msg, "", resolve_names=False)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.path}" if e.path else where, e.reason) from None
    except (ValueError, IndexError, KeyError) as e:
        # A value the translation does not expect (an enum value newer than pilotfish, ...):
        # a NACK naming the resource, not a crash of the xDS client.
        raise ConfigError(where, f"cannot translate: {type(e).__name__}: {e}") from e
