"""/config_dump: Envoy's admin.v3 ConfigDump, built from the protos the server was given.

Resources are kept as the protos they arrived as (bootstrap or xDS), so the dump shows exactly
what was configured. Opaque Istio types (kept as TypedStruct by the loader) are shown in their
original ``@type`` form.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.any_pb2 import Any as AnyProto

from pilotfish import ENVOY_API_VERSION
from pilotfish.regex import Regex
from pilotfish.xds import protos
from pilotfish.xds import resource_types as rt

if TYPE_CHECKING:
    from pilotfish.server import Server

_TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"


class DumpError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """Envoy's TimestampUtil::systemClockToTimestamp: millisecond precision."""
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(int(seconds * 1000))
    return ts


def _pack(msg: Any) -> AnyProto:
    a = AnyProto()
    a.Pack(msg)
    return a


# pilotfish's extension categories under Envoy's names (as Node.extensions lists them).
_CATEGORY_NAMES = {
    "listener_filter": "envoy.filters.listener",
    "network_filter": "envoy.filters.network",
    "http_filter": "envoy.filters.http",
    "access_logger": "envoy.access_loggers",
    "bootstrap_extension": "envoy.bootstrap",
    "tracer": "envoy.tracers",
    "stat_sink": "envoy.stats_sinks",
    "resource_monitor": "envoy.resource_monitors",
    "request_id": "envoy.request_id",
    "compressor_library": "envoy.compression.compressor",
    "protocol_options": "envoy.upstream_options",
    "access_log_filter": "envoy.access_loggers.extension_filters",
}


def _extensions() -> list[tuple[str, str, list[str]]]:
    """(name, category, type URLs) of every extension pilotfish accepts, sorted."""
    from pilotfish.extensions.builtin import builtin_factories
    from pilotfish.extensions.registry import Refused

    found: dict[tuple[str, str], list[str]] = {}
    for factory in builtin_factories():
        if isinstance(factory, Refused):  # known only to say why it is refused
            continue
        category = factory.category.value
        if category == "transport_socket":
            kinds = {t.rsplit(".", 1)[-1] for t in factory.type_names}
            sides = [
                side
                for side in ("upstream", "downstream")
                if any(k.startswith(side.capitalize()) for k in kinds)
            ] or ["upstream", "downstream"]  # raw_buffer: both sides
            names = [f"envoy.transport_sockets.{side}" for side in sides]
        else:
            names = [_CATEGORY_NAMES.get(category, category)]
        for name in names:
            urls = found.setdefault((factory.name, name), [])
            urls.extend(t for t in factory.type_names if t not in urls)
    return sorted((n, c, sorted(urls)) for (n, c), urls in found.items())


def node_proto(server: Server) -> Any:
    """The node as Envoy reports it: the bootstrap's, plus user agent, build version and the
    extensions pilotfish accepts."""
    from envoy.config.core.v3 import base_pb2

    node = base_pb2.Node()
    node.CopyFrom(server.bootstrap.proto.node)
    node.user_agent_name = "envoy"
    for name, category, type_urls in _extensions():
        ext = node.extensions.add()
        ext.name = name
        ext.category = category
        ext.type_urls.extend(type_urls)
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


def node_dict(server: Server, *, with_defaults: bool = False) -> dict[str, Any]:
    """The node as JSON; ``with_defaults`` prints default-valued fields too (zeros, empty
    lists and maps), as Envoy's /server_info does, in field-number order."""
    node = node_proto(server)
    if not with_defaults:
        return dict(_restore_opaque(protos.to_dict(node)))
    doc = json_format.MessageToDict(
        node, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return dict(_restore_opaque(_by_field_number(node.DESCRIPTOR, doc)))


def _by_field_number(descriptor: Any, doc: Any) -> Any:
    """JSON keys in field-number order, as Envoy's JSON printer writes them (Python's follows
    declaration order)."""
    if not isinstance(doc, dict) or descriptor.GetOptions().map_entry:
        return doc
    fields = descriptor.fields_by_name
    out = {}
    for key in sorted(doc, key=lambda k: fields[k].number if k in fields else 0):
        value = doc[key]
        fd = fields.get(key)
        sub = fd.message_type if fd is not None else None
        if sub is not None and not sub.GetOptions().map_entry:
            if isinstance(value, list):
                value = [_by_field_number(sub, v) for v in value]
            else:
                value = _by_field_number(sub, value)
        out[key] = value
    return out


def _bootstrap_dump(server: Server) -> Any:
    dump = config_dump_pb2.BootstrapConfigDump()
    dump.bootstrap.CopyFrom(server.bootstrap.proto)
    dump.bootstrap.node.CopyFrom(node_proto(server))
    dump.last_updated.CopyFrom(_timestamp(server.start_time))
    return dump


def _clusters_dump(server: Server) -> Any:
    dump = config_dump_shared_pb2.ClustersConfigDump()
    for c in server.bootstrap.proto.static_resources.clusters:
        item = dump.static_clusters.add()
        item.cluster.Pack(c)
        item.last_updated.CopyFrom(_timestamp(server.start_time))
    xds = server.xds
    if xds is not None:
        dump.version_info = xds.version_info.get(rt.CLUSTER.type_url, "")
        for name, record in xds.clusters.items():
            warming = name in xds.warming_clusters
            item = (
                dump.dynamic_warming_clusters.add()
                if warming
                else dump.dynamic_active_clusters.add()
            )
            item.version_info = record.version_info
            item.cluster.Pack(record.proto)
            item.last_updated.CopyFrom(_timestamp(record.last_updated))
            _error_state(item, xds.failures.get((rt.CLUSTER.type_url, name)))
        for (type_url, name), failure in xds.failures.items():
            if type_url == rt.CLUSTER.type_url and name not in xds.clusters:
                item = dump.dynamic_active_clusters.add()
                _error_state(item, failure)
    return dump


def _error_state(item: Any, failure: Any) -> None:
    """Envoy's UpdateFailureState: the last rejected version of a resource and why."""
    if failure is None:
        return
    state = item.error_state
    state.failed_configuration.Pack(failure.proto)
    state.last_update_attempt.CopyFrom(_timestamp(failure.time))
    state.details = failure.details
    state.version_info = failure.version_info


def _listeners_dump(server: Server) -> Any:
    dump = config_dump_shared_pb2.ListenersConfigDump()
    for ls in server.bootstrap.proto.static_resources.listeners:
        item = dump.static_listeners.add()
        item.listener.Pack(ls)
        item.last_updated.CopyFrom(_timestamp(server.start_time))
    xds = server.xds
    if xds is not None:
        dump.version_info = xds.version_info.get(rt.LISTENER.type_url, "")
        names = list(dict.fromkeys([*xds.listeners, *xds.warming_listeners]))
        names += [n for (t, n) in xds.failures if t == rt.LISTENER.type_url and n not in names]
        for name in names:
            dyn = dump.dynamic_listeners.add()
            dyn.name = name
            for record, state in (
                (xds.listeners.get(name), dyn.active_state),
                (xds.warming_listeners.get(name), dyn.warming_state),
            ):
                if record is not None:
                    state.version_info = record.version_info
                    state.listener.Pack(record.proto)
                    state.last_updated.CopyFrom(_timestamp(record.last_updated))
            _error_state(dyn, xds.failures.get((rt.LISTENER.type_url, name)))
    return dump


def _routes_dump(server: Server) -> Any:
    """Inline route configs of HCMs are Envoy's ``static_route_configs``."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    dump = config_dump_shared_pb2.RoutesConfigDump()
    xds = server.xds
    # Static listeners' and active LDS listeners' alike (Envoy's static route config
    # providers: one per connection manager with an inline route_config).
    listeners = [
        (ls, server.start_time) for ls in server.bootstrap.proto.static_resources.listeners
    ]
    if xds is not None:
        listeners += [(r.proto, r.last_updated) for r in xds.listeners.values() if r.proto]
    for ls, updated in listeners:
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
                    item.last_updated.CopyFrom(_timestamp(updated))
    if xds is not None:
        for record in xds.routes.values():
            ritem = dump.dynamic_route_configs.add()
            ritem.version_info = record.version_info
            ritem.route_config.Pack(record.proto)
            ritem.last_updated.CopyFrom(_timestamp(record.last_updated))
    return dump


def _secrets_dump(server: Server) -> Any:
    """Static secrets, then SDS secrets: active (received) and warming (subscribed, not yet
    received), with sensitive fields (private keys) redacted as Envoy does."""
    dump = config_dump_pb2.SecretsConfigDump()
    for secret in server.bootstrap.proto.static_resources.secrets:
        item = dump.static_secrets.add()
        item.name = secret.name
        item.secret.Pack(redacted(secret))
        item.last_updated.CopyFrom(_timestamp(server.start_time))
    sds = server.sds
    if sds is None:
        return dump
    for name in sds.subscriptions:  # in subscription order, as Envoy lists them
        entry = sds.store.entries.get(name)
        if entry is None or entry.source != "sds" or entry.proto is None:
            warming = dump.dynamic_warming_secrets.add()
            warming.name = name
            continue
        active = dump.dynamic_active_secrets.add()
        active.name = name
        active.version_info = entry.version_info
        active.last_updated.CopyFrom(_timestamp(entry.last_updated))
        active.secret.Pack(redacted(entry.proto))
    return dump


_REDACTED = "[redacted]"


def redacted(msg: Any) -> Any:
    """A copy of ``msg`` whose fields marked ``(udpa.annotations.sensitive)`` have every
    string and bytes value replaced by ``[redacted]`` (Envoy's MessageUtil::redact)."""
    out = type(msg)()
    out.CopyFrom(msg)
    _redact(out, False)
    return out


def _redact(msg: Any, sensitive: bool) -> None:
    from udpa.annotations import sensitive_pb2

    for fd, value in msg.ListFields():
        inner = sensitive or fd.GetOptions().Extensions[sensitive_pb2.sensitive]
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                continue
            for item in value if fd.is_repeated else [value]:
                _redact(item, inner)
        elif inner and fd.type in (fd.TYPE_STRING, fd.TYPE_BYTES):
            blank = _REDACTED if fd.type == fd.TYPE_STRING else _REDACTED.encode()
            if fd.is_repeated:
                value[:] = [blank] * len(value)
            else:
                setattr(msg, fd.name, blank)


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
    xds = server.xds
    if xds is not None:
        for record in xds.endpoints.values():
            eitem = dump.dynamic_endpoint_configs.add()
            eitem.version_info = record.version_info
            eitem.endpoint_config.type_url = rt.ENDPOINT.type_url
            eitem.endpoint_config.value = record.raw
            eitem.last_updated.CopyFrom(_timestamp(record.last_updated))
    return dump


def _name_of(item: Any) -> str:
    fields = item.DESCRIPTOR.fields_by_name
    if "name" in fields and item.name:
        return str(item.name)
    for field in ("cluster", "listener", "route_config", "secret", "endpoint_config"):
        if field in fields:
            inner = getattr(item, field)
            if isinstance(inner, AnyProto):
                try:
                    msg = protos.unpack_any(inner)
                except (KeyError, ValueError):
                    continue
                name = getattr(msg, "name", "") or getattr(msg, "cluster_name", "")
                return str(name)
    if "active_state" in fields:
        return _name_of(item.active_state)
    return ""


def render(
    server: Server,
    *,
    resource: str = "",
    mask: str = "",
    include_eds: bool = False,
    name_regex: Regex | None = None,
) -> str:
    """The ``/config_dump`` body, as Envoy's ConfigDumpHandler builds it. ``name_regex`` must
    match a resource's whole name (RE2 full match); it does not apply to the bootstrap.
    With ``resource``, each element of that repeated field is a config of its own and
    ``mask`` applies to each, through its packed resource (``cluster.name``); without it,
    ``mask`` trims every dump and a dump it does not fit is left out. Raises DumpError."""
    dumps = [_bootstrap_dump(server), _clusters_dump(server)]
    if include_eds:
        dumps.append(_endpoints_dump(server))
    dumps += [
        _listeners_dump(server),
        config_dump_shared_pb2.ScopedRoutesConfigDump(),
        _routes_dump(server),
        _secrets_dump(server),
    ]
    if name_regex is not None:
        for dump in dumps[1:]:
            _filter_by_name(dump, name_regex)
    # FieldMaskUtil::FromString: comma-separated, empty paths skipped, nothing trimmed.
    paths = [p for p in mask.split(",") if p]
    configs: list[Any] = []
    if resource:
        configs = _resource_configs(dumps, resource, paths)
    else:
        for dump in dumps:
            if paths and not _trim_checked(dump, paths):
                continue
            configs.append(dump)
        if not configs and paths:
            raise DumpError(
                f"FieldMask {mask} could not be successfully applied to any configs.", 400
            )
    if not configs:
        return "{}\n"  # an empty repeated field is left out: Envoy prints an empty object
    return json.dumps({"configs": [_to_dict(c) for c in configs]}, indent=1) + "\n"


def _resource_configs(dumps: list[Any], resource: str, paths: list[str]) -> list[Any]:
    for dump in dumps:
        fd = dump.DESCRIPTOR.fields_by_name.get(resource)
        if fd is None:
            continue
        if not fd.is_repeated:
            raise DumpError(
                f"{resource} is not a repeated field. Use ?mask={resource} to get only this field",
                400,
            )
        items = list(getattr(dump, resource))
        if paths:
            for item in items:
                if not _trim_resource(item, paths):
                    raise DumpError(
                        f"FieldMask {_debug_string(paths)} could not be successfully used.", 400
                    )
        return items
    raise DumpError(f"{resource} not found in config dump", 404)


def _debug_string(paths: list[str]) -> str:
    """A FieldMask's DebugString as Envoy 1.40's protobuf prints it (with its marker)."""
    return "goo.gle/debugproto  \n" + "".join(f'paths: "{p}"\n' for p in paths)


def _filter_by_name(dump: Any, regex: Regex) -> None:
    for fd in dump.DESCRIPTOR.fields:
        if fd.is_repeated and fd.message_type is not None:
            items = getattr(dump, fd.name)
            keep = [x for x in items if regex.fullmatch(_name_of(x).encode())]
            if len(keep) == len(items):
                continue
            del items[:]
            for x in keep:
                items.add().CopyFrom(x)


# --- field masks, as protobuf's FieldMaskUtil (C++) applies them ------------------------------

_Tree = dict[str, "_Tree"]  # a path component -> its children; {} is a leaf (the whole field)


def _valid_path(descriptor: Any, path: str) -> bool:
    """FieldMaskUtil::GetFieldDescriptors: each component names a field, and only the last
    may be repeated or a scalar."""
    for part in path.split("."):
        if descriptor is None:
            return False
        fd = descriptor.fields_by_name.get(part)
        if fd is None:
            return False
        descriptor = fd.message_type if not fd.is_repeated else None
    return True


def _mask_tree(paths: list[str]) -> _Tree:
    """FieldMaskTree::AddPath for each path: a shorter path covers the longer ones."""
    root: _Tree = {}
    for path in paths:
        node = root
        new_branch = False
        covered = False
        for part in path.split("."):
            if not new_branch and node is not root and not node:
                covered = True  # under an existing leaf
                break
            if part not in node:
                node[part] = {}
                new_branch = True
            node = node[part]
        if not covered:
            node.clear()
    return root


def _trim(msg: Any, node: _Tree) -> None:
    """FieldMaskTree::TrimMessage: clear every field the tree does not name; recurse into the
    set message fields it names with children."""
    for fd in msg.DESCRIPTOR.fields:
        child = node.get(fd.name)
        if child is None:
            msg.ClearField(fd.name)
        elif child and fd.message_type is not None and not fd.is_repeated:
            if msg.HasField(fd.name):
                _trim(getattr(msg, fd.name), child)


def _trim_checked(msg: Any, paths: list[str]) -> bool:
    """Envoy's checkFieldMaskAndTrimMessage: trim only if every path fits the message."""
    if not all(_valid_path(msg.DESCRIPTOR, p) for p in paths):
        return False
    _trim(msg, _mask_tree(paths))
    return True


def _trim_resource(item: Any, paths: list[str]) -> bool:
    """Envoy's trimResourceMessage: a path through the resource's Any field (``cluster.name``)
    is split into an outer path (``cluster``) and an inner one (``name``) applied to the
    unpacked resource, which is then packed back."""
    descriptor = item.DESCRIPTOR
    outer: list[str] = []
    inner: list[str] = []
    any_field = ""
    for path in paths:
        first, _, rest = path.partition(".")
        fd = descriptor.fields_by_name.get(first)
        if (
            fd is not None
            and not fd.is_repeated
            and fd.message_type is not None
            and fd.message_type.full_name == "google.protobuf.Any"
        ):
            any_field = first
            outer.append(first)
            inner.append(rest)
        else:
            outer.append(path)
    if not all(_valid_path(descriptor, p) for p in outer):
        return False
    if any_field and item.HasField(any_field):
        packed = getattr(item, any_field)
        try:
            resource = protos.unpack_any(packed)
        except (KeyError, ValueError):
            return False
        if not _trim_checked(resource, inner):
            return False
        type_url = packed.type_url
        packed.Pack(resource)
        packed.type_url = type_url
    _trim(item, _mask_tree(outer))
    return True


def _to_dict(msg: Any) -> dict[str, Any]:
    protos.load_types_of(msg)  # resources from xDS may name types not imported yet
    copy = type(msg)()
    copy.CopyFrom(msg)
    if protos.opaque_anys_to_typed_structs(copy):  # Istio's types, as bytes from istiod
        msg = copy
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
