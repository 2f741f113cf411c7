"""/config_dump: Envoy's admin.v3 ConfigDump, built from the protos the server was given.

Resources are kept as the protos they arrived as (bootstrap or xDS), so the dump shows exactly
what was configured. Opaque Istio types (kept as TypedStruct by the loader) are shown in their
original ``@type`` form.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.protobuf.any_pb2 import Any as AnyProto

from pilotfish import ENVOY_API_VERSION
from pilotfish.xds import protos

if TYPE_CHECKING:
    from pilotfish.server import Server

_TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"


class DumpError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _pack(msg: Any) -> AnyProto:
    a = AnyProto()
    a.Pack(msg)
    return a


def node_proto(server: Server) -> Any:
    """The node as Envoy reports it: the bootstrap's, plus user agent and build version."""
    from envoy.config.core.v3 import base_pb2

    node = base_pb2.Node()
    node.CopyFrom(server.bootstrap.proto.node)
    node.user_agent_name = "envoy"
    major, minor, patch = (int(x) for x in ENVOY_API_VERSION.split("."))
    bv = node.user_agent_build_version
    bv.version.major_number, bv.version.minor_number, bv.version.patch = major, minor, patch
    bv.metadata.update(
        {
            "build.type": "RELEASE",
            "revision.status": "Clean",
            "ssl.version": "Python ssl",
            "pilotfish": "true",
        }
    )
    return node


def node_dict(server: Server) -> dict[str, Any]:
    return _restore_opaque(protos.to_dict(node_proto(server)))


def _bootstrap_dump(server: Server) -> Any:
    dump = config_dump_pb2.BootstrapConfigDump()
    dump.bootstrap.CopyFrom(server.bootstrap.proto)
    dump.bootstrap.node.CopyFrom(node_proto(server))
    dump.last_updated.CopyFrom(_timestamp(server.start_time))
    return dump


def _clusters_dump(server: Server) -> Any:
    dump = config_dump_shared_pb2.ClustersConfigDump()
    static_names = {c.name for c in server.bootstrap.proto.static_resources.clusters}
    for c in server.bootstrap.proto.static_resources.clusters:
        item = dump.static_clusters.add()
        item.cluster.Pack(c)
        item.last_updated.CopyFrom(_timestamp(server.start_time))
    cm = server.cluster_manager
    if cm is not None:
        for cluster in cm.clusters.values():
            if cluster.name in static_names or getattr(cluster, "proto", None) is None:
                continue
            item = dump.dynamic_active_clusters.add()
            item.version_info = cluster.version_info
            item.cluster.Pack(cluster.proto)  # type: ignore[attr-defined]
            item.last_updated.CopyFrom(_timestamp(cluster.last_updated))
    return dump


def _listeners_dump(server: Server) -> Any:
    dump = config_dump_shared_pb2.ListenersConfigDump()
    static_names = set()
    for ls in server.bootstrap.proto.static_resources.listeners:
        item = dump.static_listeners.add()
        item.listener.Pack(ls)
        item.last_updated.CopyFrom(_timestamp(server.start_time))
        static_names.add(ls.name)
    lm = server.listener_manager
    if lm is not None:
        for listener in lm.listeners.values():
            proto = getattr(listener, "proto", None)
            if listener.name in static_names or proto is None:
                continue
            dyn = dump.dynamic_listeners.add()
            dyn.name = listener.name
            dyn.active_state.version_info = listener.version_info
            dyn.active_state.listener.Pack(proto)
            dyn.active_state.last_updated.CopyFrom(_timestamp(listener.last_updated))
    return dump


def _routes_dump(server: Server) -> Any:
    """Inline route configs of HCMs are Envoy's ``static_route_configs``."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    dump = config_dump_shared_pb2.RoutesConfigDump()
    for ls in server.bootstrap.proto.static_resources.listeners:
        chains = list(ls.filter_chains)
        if ls.HasField("default_filter_chain"):
            chains.append(ls.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if not f.typed_config.type_url.endswith("HttpConnectionManager"):
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm) and hcm.HasField("route_config"):
                    item = dump.static_route_configs.add()
                    item.route_config.Pack(hcm.route_config)
                    item.last_updated.CopyFrom(_timestamp(server.start_time))
    return dump


def _secrets_dump(server: Server) -> Any:
    dump = config_dump_pb2.SecretsConfigDump()
    for secret in server.bootstrap.proto.static_resources.secrets:
        item = dump.static_secrets.add()
        item.name = secret.name
        item.secret.Pack(secret)
        item.last_updated.CopyFrom(_timestamp(server.start_time))
    return dump


def _endpoints_dump(server: Server) -> Any:
    dump = config_dump_shared_pb2.EndpointsConfigDump()
    for c in server.bootstrap.proto.static_resources.clusters:
        if c.HasField("load_assignment"):
            item = dump.static_endpoint_configs.add()
            cla = type(c.load_assignment)()
            cla.CopyFrom(c.load_assignment)
            if not cla.cluster_name:
                cla.cluster_name = c.name
            item.endpoint_config.Pack(cla)
            item.last_updated.CopyFrom(_timestamp(server.start_time))
    return dump


def _name_of(item: Any) -> str:
    for field in ("name",):
        if hasattr(item, field) and getattr(item, field):
            return str(getattr(item, field))
    for field in ("cluster", "listener", "route_config", "secret", "endpoint_config"):
        if hasattr(item, field):
            inner = getattr(item, field)
            if isinstance(inner, AnyProto):
                try:
                    msg = protos.unpack_any(inner)
                except (KeyError, ValueError):
                    continue
                name = getattr(msg, "name", "") or getattr(msg, "cluster_name", "")
                return str(name)
    if hasattr(item, "active_state"):
        return _name_of(item.active_state)
    return ""


def render(
    server: Server,
    *,
    resource: str = "",
    mask: str = "",
    include_eds: bool = False,
    name_regex: re.Pattern[bytes] | None = None,
) -> str:
    dumps = [_bootstrap_dump(server), _clusters_dump(server)]
    if include_eds:
        dumps.append(_endpoints_dump(server))
    dumps += [
        _listeners_dump(server),
        config_dump_shared_pb2.ScopedRoutesConfigDump(),
        _routes_dump(server),
        _secrets_dump(server),
    ]
    field_mask = None
    if mask:
        field_mask = field_mask_pb2.FieldMask(
            paths=[p.strip() for p in mask.split(",") if p.strip()]
        )
    configs: list[dict[str, Any]] = []
    if resource:
        found = False
        for dump in dumps:
            desc = dump.DESCRIPTOR
            fd = desc.fields_by_name.get(resource)
            if fd is None or fd.label != fd.LABEL_REPEATED or fd.message_type is None:
                continue
            found = True
            for item in getattr(dump, resource):
                if name_regex is not None and not name_regex.search(_name_of(item).encode()):
                    continue
                configs.append(_to_dict(_masked(item, field_mask)))
        if not found:
            raise DumpError(f"{resource} not found in config dump", 404)
    else:
        for dump in dumps:
            if name_regex is not None:
                _filter_by_name(dump, name_regex)
            configs.append(_to_dict(_masked(dump, field_mask)))
    return json.dumps({"configs": configs}, indent=1) + "\n"


def _filter_by_name(dump: Any, regex: re.Pattern[bytes]) -> None:
    for fd in dump.DESCRIPTOR.fields:
        if fd.label == fd.LABEL_REPEATED and fd.message_type is not None:
            items = getattr(dump, fd.name)
            keep = [x for x in items if regex.search(_name_of(x).encode())]
            del items[:]
            for x in keep:
                items.add().CopyFrom(x)


def _masked(msg: Any, field_mask: Any) -> Any:
    if field_mask is None:
        return msg
    out = type(msg)()
    field_mask.MergeMessage(msg, out)
    return out


def _to_dict(msg: Any) -> dict[str, Any]:
    packed = _pack(msg)
    d = json_format.MessageToDict(packed, preserving_proto_field_name=True)
    return _restore_opaque(d)


def _restore_opaque(doc: Any) -> Any:
    """TypedStructs the loader made from unknown (Istio) types go back to their own form."""
    if isinstance(doc, dict):
        doc = {k: _restore_opaque(v) for k, v in doc.items()}
        if doc.get("@type") == _TYPED_STRUCT:
            inner = doc.get("type_url", "")
            if inner and protos.find_message_class(protos.type_name(inner)) is None:
                value = doc.get("value", {})
                return {"@type": inner, **(value if isinstance(value, dict) else {})}
        return doc
    if isinstance(doc, list):
        return [_restore_opaque(v) for v in doc]
    return doc
