"""Extension registries keyed by Envoy type URL, one per category (as Envoy's).

A factory validates its proto config once, at translation time (``parse``, pure), and the
runtime builds cheap per-connection or per-stream objects from the parsed config.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf.message import Message


class Category(enum.Enum):
    LISTENER_FILTER = "listener_filter"
    NETWORK_FILTER = "network_filter"
    HTTP_FILTER = "http_filter"
    ACCESS_LOGGER = "access_logger"
    TRANSPORT_SOCKET = "transport_socket"
    BOOTSTRAP = "bootstrap_extension"
    TRACER = "tracer"
    STAT_SINK = "stat_sink"
    RESOURCE_MONITOR = "resource_monitor"
    REQUEST_ID = "request_id"
    COMPRESSOR_LIBRARY = "compressor_library"
    PROTOCOL_OPTIONS = "protocol_options"
    ACCESS_LOG_FILTER = "access_log_filter"


@dataclass(frozen=True, slots=True)
class NotRun:
    """What ``parse`` returns for a valid config that pilotfish leaves out of the chain.

    ``telemetry``: the extension only observes traffic in this form (an Istio telemetry
    plugin in a Wasm wrapper, ...): skipped with a warning and counted, like a
    ``telemetry_only`` type. Otherwise the config is a no-op as given (a fault filter with no
    fault configured, ...): dropped silently, since running it would change nothing.
    """

    telemetry: bool
    why: str = ""


class ExtensionFactory:
    """Base of every extension. Subclasses set the class attributes and override ``parse``."""

    category: ClassVar[Category]
    name: ClassVar[str]  # Envoy's well-known name
    type_names: ClassVar[tuple[str, ...]]  # message full names (no type.googleapis.com/)
    # Accepted and skipped: the extension only observes traffic (stats, tracing, logs sent
    # to a collector) so leaving it out changes no request's outcome.
    telemetry_only: ClassVar[bool] = False
    # HTTP filters with a per-route config (``typed_per_filter_config`` of a route, virtual
    # host or route table): its message full names, parsed by ``parse_per_route``.
    per_route_type_names: ClassVar[tuple[str, ...]] = ()

    def parse(self, msg: Message, ctx: Any, path: str) -> Any:
        """Validate ``msg`` and return the config the runtime needs. Raise ConfigError."""
        return msg

    def parse_per_route(self, msg: Message, ctx: Any, path: str) -> Any:
        """Validate a per-route config (one of ``per_route_type_names``) once, at translation
        time; the result is what the filter gets from ``stream.per_filter_config(name)``."""
        return msg


class TelemetryOnly(ExtensionFactory):
    """A type pilotfish accepts but does not run (see docs/compatibility.md)."""

    telemetry_only = True

    def __init__(self, category: Category, name: str, *type_names: str) -> None:
        self.category = category  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self.type_names = type_names  # type: ignore[misc]


class Refused(ExtensionFactory):
    """A type Envoy knows and pilotfish deliberately does not implement, because skipping it
    would change what traffic is let through (RBAC, external authorization, ...). Refused with
    ``reason`` rather than Envoy's "not registered" message, so that the NACK says why."""

    def __init__(self, category: Category, name: str, reason: str, *type_names: str) -> None:
        self.category = category  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self.type_names = type_names  # type: ignore[misc]
        self.reason = reason

    def parse(self, msg: Message, ctx: Any, path: str) -> Any:
        from pilotfish.errors import ConfigError

        raise ConfigError(f"{path}.typed_config", f"'{self.name}' is not supported: {self.reason}")


class Registry:
    def __init__(self) -> None:
        self._by_type: dict[tuple[Category, str], ExtensionFactory] = {}
        self._by_name: dict[tuple[Category, str], ExtensionFactory] = {}
        self._per_route: dict[str, ExtensionFactory] = {}

    def register(self, factory: ExtensionFactory) -> None:
        for t in factory.type_names:
            self._by_type[(factory.category, t)] = factory
        for t in factory.per_route_type_names:
            self._per_route[t] = factory
        self._by_name[(factory.category, factory.name)] = factory

    def register_all(self, factories: Iterable[ExtensionFactory]) -> None:
        for f in factories:
            self.register(f)

    def by_type(self, category: Category, type_name: str) -> ExtensionFactory | None:
        return self._by_type.get((category, type_name))

    def per_route(self, type_name: str) -> ExtensionFactory | None:
        """The HTTP filter whose per-route config is of type ``type_name``."""
        return self._per_route.get(type_name)

    def by_name(self, category: Category, name: str) -> ExtensionFactory | None:
        return self._by_name.get((category, name))

    def known_type(self, type_name: str) -> bool:
        return any(t == type_name for (_, t) in self._by_type)


@functools.cache
def default_registry() -> Registry:
    """The registry with every built-in extension (an immutable table, built once)."""
    from pilotfish.extensions.builtin import builtin_factories

    reg = Registry()
    reg.register_all(builtin_factories())
    return reg
