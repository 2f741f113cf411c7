"""What every translation function gets: the extension registry, the unknown-field policy
and a list to collect warnings in (translation never logs: it is pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.json_format import ParseError
from google.protobuf.message import Message

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, NotRun, Registry, default_registry
from pilotfish.model.common import TypedExtension
from pilotfish.xds import protos


@dataclass
class TranslateContext:
    registry: Registry = field(default_factory=default_registry)
    ignore_unknown_fields: bool = False
    warnings: list[str] = field(default_factory=list)
    # Names of extensions skipped as telemetry-only, for the stat and /config_dump readers.
    skipped: list[str] = field(default_factory=list)
    # The bootstrap's clusters, against which static route tables are validated (None: no
    # validation, e.g. when translating a lone resource).
    static_clusters: set[str] | None = None
    # The traffic direction of the listener being translated (Istio's stats filter reports as
    # the source on OUTBOUND listeners, as the destination on INBOUND ones).
    traffic_direction: str = ""

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def extension(
        self,
        category: Category,
        name: str,
        typed_config: AnyProto | None,
        path: str,
        *,
        optional: bool = False,
    ) -> TypedExtension | None:
        """Resolve one ``{name, typed_config}`` extension. Returns None when it is skipped
        (telemetry-only, or unknown but ``is_optional``); raises ConfigError otherwise."""
        tname = ""
        msg: Message | None = None
        if typed_config is not None and typed_config.type_url:
            inner = protos.opaque_type_url(typed_config)
            tname = protos.type_name(inner or typed_config.type_url)
            try:
                msg = self.unpack(typed_config, f"{path}.typed_config")
            except ConfigError:
                known = self.registry.by_type(category, tname)
                opaque = known is not None and protos.find_message_class(tname) is None
                if opaque and known is not None and not known.telemetry_only and inner is not None:
                    # An opaque type (Istio's own, not in xds-protos) that a factory knows:
                    # the factory gets the TypedStruct's fields as a google.protobuf.Struct.
                    msg = protos.unpack_any(typed_config).value  # type: ignore[attr-defined]
                elif opaque and known is not None and not known.telemetry_only:
                    # The same type packed directly (its serialized bytes), as istiod sends
                    # it (``istio.alpn``): the factory gets the Any itself.
                    msg = typed_config
                elif known is not None and not known.telemetry_only:
                    raise
                else:
                    msg = None  # unknown or telemetry-only type: decided below
        factory = (
            self.registry.by_type(category, tname)
            if tname
            else self.registry.by_name(category, name)
        )
        if factory is None:
            if optional:
                self.warn(f"{path}: skipping optional extension '{name}' ({tname or 'no type'})")
                return None
            raise ConfigError(
                f"{path}.typed_config" if tname else path,
                f"Didn't find a registered implementation for '{name}' with type URL: '{tname}'",
            )
        if factory.telemetry_only:
            self.warn(f"{path}: '{name}' ({tname}) is accepted but not run by pilotfish")
            self.skipped.append(name)
            return None
        if msg is None:
            cls = protos.find_message_class(factory.type_names[0])
            if cls is None:
                raise ConfigError(path, f"no message type for '{name}'")
            msg = cls()
        config = factory.parse(msg, self, path)
        if isinstance(config, NotRun):
            if config.telemetry:
                why = f": {config.why}" if config.why else ""
                self.warn(f"{path}: '{name}' ({tname}) is accepted but not run by pilotfish{why}")
                self.skipped.append(name)
            return None
        return TypedExtension(name=name, type_url=tname, config=config, factory=factory)

    def unpack(self, typed_config: AnyProto, path: str) -> Message:
        """Unpack an Any that a field requires to be of a known type."""
        inner = protos.opaque_type_url(typed_config)
        try:
            if inner is not None:
                ts = protos.unpack_any(typed_config)
                msg = protos.typed_struct_to_message(
                    inner,
                    ts.value,  # type: ignore[attr-defined]
                    ignore_unknown_fields=self.ignore_unknown_fields,
                )
                if msg is None:
                    raise KeyError(inner)
                return msg
            return protos.unpack_any(typed_config)
        except KeyError as e:
            raise ConfigError(path, f"unknown type URL {e.args[0]}") from None
        except (ParseError, ValueError) as e:
            raise ConfigError(path, str(e)) from None


def parse_config(msg: Message, expected: type[Any], path: str) -> Any:
    """Check that a factory got the message type it registered for."""
    if not isinstance(msg, expected):
        raise ConfigError(path, f"expected {expected.DESCRIPTOR.full_name}")
    return msg
