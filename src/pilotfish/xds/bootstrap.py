"""Loading a bootstrap as ``envoy -c FILE --config-yaml YAML`` does.

The file is read by its extension (``.json``, ``.yaml``/``.yml``, ``.pb``, ``.pb_text``; anything
else as YAML, which covers JSON), ``--config-yaml`` is parsed the same way and merged over it
with protobuf merge semantics (repeated fields append, messages merge), then the command line's
``--service-*`` values override the node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format, message_factory, text_format

from pilotfish.errors import ConfigError
from pilotfish.model.bootstrap import Bootstrap
from pilotfish.xds import protos
from pilotfish.xds.translate.bootstrap import bootstrap as translate_bootstrap
from pilotfish.xds.translate.context import TranslateContext


@dataclass(frozen=True)
class BootstrapSource:
    config_path: str = ""
    config_yaml: str = ""
    allow_unknown_fields: bool = False
    service_cluster: str = ""
    service_node: str = ""
    service_zone: str = ""


@dataclass(frozen=True)
class LoadedBootstrap:
    proto: Any  # bootstrap_pb2.Bootstrap, as merged (for /config_dump)
    model: Bootstrap
    warnings: tuple[str, ...]


def _parse_error(e: json_format.ParseError, origin: str, doc: Any) -> ConfigError:
    """Turn json_format's nested message into 'field.path: reason'. Some of its errors (a
    string where a number belongs: 'invalid literal for int()') carry no path: then the
    document is searched for the field that does not parse."""
    text = str(e).split("\n")[0]
    m = re.search(r' at "?Bootstrap\.([^" ]*)"?', text)
    path = m.group(1).rstrip(".") if m else ""
    if not path:
        path = _failing_path(doc, bootstrap_pb2.Bootstrap.DESCRIPTOR)
    reason = re.sub(r"^(Failed to parse \w+ field: )+", "", text)
    reason = re.sub(r' at "?Bootstrap\.[^ ]*"?\.*$', "", reason).rstrip(".")
    # Python's int()/float() words for what Envoy calls an invalid number
    reason = re.sub(
        r"^(?:invalid literal for int\(\) with base 10|could not convert string to float): ",
        "invalid number: ",
        reason,
    )
    return ConfigError(path, f"{reason} (in {origin})")


# Types whose JSON form is not an object of their fields: an error in one is at the field.
_LEAF_TYPES = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "Duration",
        "Timestamp",
        "FieldMask",
        "Struct",
        "Value",
        "ListValue",
        "Empty",
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)


def _parses(doc: Any, descriptor: Any) -> bool:
    try:
        json_format.ParseDict(doc, message_factory.GetMessageClass(descriptor)())
    except (json_format.ParseError, TypeError, ValueError):
        return False
    return True


def _failing_path(doc: Any, descriptor: Any) -> str:
    """The path (proto field names, ``[i]`` for list elements) to the innermost field of
    ``doc`` whose value does not parse as ``descriptor``'s message; "" if none is found."""
    if not isinstance(doc, dict):
        return ""
    for key, value in doc.items():
        fd = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if fd is None or _parses({key: value}, descriptor):
            continue
        sub = fd.message_type
        if sub is None or sub.full_name in _LEAF_TYPES or sub.GetOptions().map_entry:
            return str(fd.name)
        if sub.full_name == "google.protobuf.Any":
            type_url = value.get("@type") if isinstance(value, dict) else None
            cls = protos.find_message_class(protos.type_name(type_url)) if type_url else None
            if cls is None:
                return str(fd.name)
            sub = cls.DESCRIPTOR
            value = {k: v for k, v in value.items() if k != "@type"}
        if fd.is_repeated:
            for i, item in enumerate(value if isinstance(value, list) else []):
                if not _parses(item, sub):
                    rest = _failing_path(item, sub)
                    return f"{fd.name}[{i}]" + (f".{rest}" if rest else "")
            return str(fd.name)
        rest = _failing_path(value, sub)
        return str(fd.name) + (f".{rest}" if rest else "")
    return ""


def _load_document(text: str, origin: str, fmt: str) -> Any:
    try:
        if fmt == "json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError("", f"unable to parse {fmt.upper()} in {origin}: {e}") from None


def _parse_text(text: str, origin: str, fmt: str, allow_unknown: bool) -> Any:
    msg = bootstrap_pb2.Bootstrap()
    if fmt == "pb_text":
        try:
            text_format.Parse(text, msg, allow_unknown_field=allow_unknown)
        except text_format.ParseError as e:
            raise ConfigError("", f"unable to parse text proto in {origin}: {e}") from None
        return msg
    doc = _load_document(text, origin, fmt)
    if doc is None:
        return msg
    if not isinstance(doc, dict):
        raise ConfigError("", f"{origin}: the bootstrap must be a mapping")
    doc = protos.load_types_in(doc)
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=allow_unknown)
    except json_format.ParseError as e:
        raise _parse_error(e, origin, doc) from None
    return msg


def _format_of(path: str) -> str:
    for ext, fmt in (
        (".json", "json"),
        (".yaml", "yaml"),
        (".yml", "yaml"),
        (".pb_text", "pb_text"),
        (".pb", "pb"),
    ):
        if path.endswith(ext):
            return fmt
    return "yaml"


def read_bootstrap_proto(source: BootstrapSource) -> Any:
    if not source.config_path and not source.config_yaml:
        raise ConfigError(
            "",
            "At least one of --config-path or --config-yaml or Options::configProto() should be "
            "non-empty",
        )
    msg = bootstrap_pb2.Bootstrap()
    if source.config_path:
        fmt = _format_of(source.config_path)
        try:
            with open(source.config_path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(
                "", f"unable to read file: {source.config_path}: {e.strerror}"
            ) from None
        if fmt == "pb":
            try:
                msg.ParseFromString(data)
            except Exception as e:
                raise ConfigError(
                    "", f"unable to parse binary proto {source.config_path}: {e}"
                ) from None
        else:
            msg = _parse_text(
                data.decode("utf-8", "replace"),
                source.config_path,
                fmt,
                source.allow_unknown_fields,
            )
    if source.config_yaml:
        override = _parse_text(
            source.config_yaml, "--config-yaml", "yaml", source.allow_unknown_fields
        )
        msg.MergeFrom(override)
    if source.service_cluster:
        msg.node.cluster = source.service_cluster
    if source.service_node:
        msg.node.id = source.service_node
    if source.service_zone:
        msg.node.locality.zone = source.service_zone
    return msg


def load_bootstrap(source: BootstrapSource) -> LoadedBootstrap:
    """Read, merge and translate a bootstrap. Raises ConfigError naming the field."""
    proto = read_bootstrap_proto(source)
    ctx = TranslateContext(ignore_unknown_fields=source.allow_unknown_fields)
    model = translate_bootstrap(proto, ctx)
    return LoadedBootstrap(proto=proto, model=model, warnings=tuple(ctx.warnings))
