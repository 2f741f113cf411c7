"""Envoy's v3 API as Python protobuf classes (xds-protos), loaded on demand.

Importing every ``*_pb2`` module of xds-protos costs ~0.5 s and ~20 MB, so pilotfish imports
a proto package only when a config names one of its types (``@type`` in JSON, ``type_url`` in an
``Any``). ``json_format`` can only resolve types whose module is imported, hence
``load_types_in`` runs over a JSON document before it is parsed.

Istio's own extension types (``stats.PluginConfig``, ``istio.workload.BootstrapExtension``, ...)
are not part of xds-protos. A JSON ``Any`` whose type is unknown is rewritten into an
``xds.type.v3.TypedStruct`` holding the same fields, so the document still parses and the
value is kept whole for ``/config_dump``; whether the type is acceptable is then decided by the
extension registry (see docs/compatibility.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
TYPED_STRUCT_TYPES = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")
_TYPED_STRUCT_URL = TYPE_PREFIX + "xds.type.v3.TypedStruct"

_loaded_packages: set[str] = set()
_pool = descriptor_pool.Default()


def type_name(type_url: str) -> str:
    """``type.googleapis.com/envoy.x.v3.Foo`` -> ``envoy.x.v3.Foo``."""
    return type_url.rsplit("/", 1)[-1]


def _import_package(package: str) -> None:
    if package in _loaded_packages:
        return
    _loaded_packages.add(package)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        for entry in sorted(os.listdir(location)):
            if entry.endswith("_pb2.py"):
                importlib.import_module(f"{package}.{entry[:-3]}")


def find_message_class(name: str) -> type[Message] | None:
    """The generated class for a fully qualified message name, importing its package if needed.
    ``None`` if xds-protos (and protobuf's well-known types) do not define it."""
    try:
        descriptor = _pool.FindMessageTypeByName(name)
    except KeyError:
        package = name.rsplit(".", 1)[0]
        # A nested message (pkg.Outer.Inner): try the enclosing packages too.
        while package and package not in _loaded_packages:
            _import_package(package)
            try:
                descriptor = _pool.FindMessageTypeByName(name)
                break
            except KeyError:
                package = package.rsplit(".", 1)[0] if "." in package else ""
        else:
            return None
    return message_factory.GetMessageClass(descriptor)


def load_types_in(doc: Any) -> Any:
    """Import the proto modules for every ``@type`` in a JSON document; rewrite the ones no
    module defines into TypedStruct (see module docstring). Returns the (possibly new) doc."""
    if isinstance(doc, dict):
        out = {k: load_types_in(v) for k, v in doc.items()}
        at_type = out.get("@type")
        if isinstance(at_type, str):
            name = type_name(at_type)
            if name in TYPED_STRUCT_TYPES:
                find_message_class(name)
                inner = out.get("type_url") or out.get("typeUrl")
                if isinstance(inner, str):
                    find_message_class(type_name(inner))
            elif find_message_class(name) is None:
                find_message_class(TYPED_STRUCT_TYPES[0])  # so json_format can parse it
                value = {k: v for k, v in out.items() if k != "@type"}
                return {"@type": _TYPED_STRUCT_URL, "type_url": at_type, "value": value}
        return out
    if isinstance(doc, list):
        return [load_types_in(v) for v in doc]
    return doc


def load_types_of(msg: Message) -> None:
    """Import the proto modules for every ``Any`` nested in ``msg`` (at any depth), so that
    ``json_format`` can render it: a resource that came over xDS as bytes names types (a
    ``RawBuffer`` transport socket, say) that nothing has imported yet."""
    if isinstance(msg, AnyProto):
        if not msg.type_url:
            return
        cls = find_message_class(type_name(msg.type_url))
        if cls is not None:
            inner = cls()
            if msg.Unpack(inner):
                load_types_of(inner)
        return
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                for v in value.values():
                    load_types_of(v)
        elif fd.is_repeated:
            for v in value:
                load_types_of(v)
        else:
            load_types_of(value)


def opaque_anys_to_typed_structs(msg: Message) -> bool:
    """Replace (in place, at any depth) every ``Any`` whose type no module defines by a
    TypedStruct naming that type with no fields; True if something changed. Istio's own types
    (``istio.alpn``'s FilterConfig, ``stats.PluginConfig``, ...) come from istiod as bytes,
    which ``json_format`` cannot render and pilotfish cannot decode without their schema."""
    if isinstance(msg, AnyProto):
        if not msg.type_url:
            return False
        cls = find_message_class(type_name(msg.type_url))
        if cls is None:
            holder = find_message_class(TYPED_STRUCT_TYPES[0])
            assert holder is not None
            msg.Pack(holder(type_url=msg.type_url))
            return True
        inner = cls()
        if msg.Unpack(inner) and opaque_anys_to_typed_structs(inner):
            type_url = msg.type_url
            msg.Pack(inner)
            msg.type_url = type_url
            return True
        return False
    changed = False
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                for v in value.values():
                    changed = opaque_anys_to_typed_structs(v) or changed
        elif fd.is_repeated:
            for v in value:
                changed = opaque_anys_to_typed_structs(v) or changed
        else:
            changed = opaque_anys_to_typed_structs(value) or changed
    return changed


def opaque_type_url(any_msg: AnyProto) -> str | None:
    """If ``any_msg`` is a TypedStruct (as written by ``load_types_in`` or by the user), the type
    it stands for; else None."""
    if type_name(any_msg.type_url) in TYPED_STRUCT_TYPES:
        ts = unpack_any(any_msg)
        return str(ts.type_url)  # type: ignore[attr-defined]
    return None


def unpack_any(any_msg: AnyProto) -> Message:
    """Unpack an Any into its message class; raises KeyError if the type is unknown."""
    cls = find_message_class(type_name(any_msg.type_url))
    if cls is None:
        raise KeyError(any_msg.type_url)
    msg = cls()
    if not any_msg.Unpack(msg):
        raise ValueError(f"cannot unpack {any_msg.type_url}")
    return msg


def typed_struct_to_message(
    type_url: str, value: Any, *, ignore_unknown_fields: bool = False
) -> Message | None:
    """Build the message a TypedStruct describes; None if its type is unknown."""
    cls = find_message_class(type_name(type_url))
    if cls is None:
        return None
    doc = load_types_in(json_format.MessageToDict(value, preserving_proto_field_name=True))
    return json_format.ParseDict(doc, cls(), ignore_unknown_fields=ignore_unknown_fields)


def to_dict(msg: Message) -> dict[str, Any]:
    """A message as Envoy's admin API renders it (proto field names, defaults omitted)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)
