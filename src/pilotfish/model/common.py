"""Value types shared by listeners, routes and clusters.

The model is what the data plane runs on: frozen dataclasses with no protobuf and no asyncio,
built by the pure translation in ``pilotfish.xds.translate``. Byte strings are used where the
data plane compares against wire data (header names and values, paths), so the per-request path
never has to decode.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pilotfish.regex import Regex, compile_regex


@dataclass(frozen=True, slots=True)
class SocketAddress:
    address: str
    port: int
    protocol: str = "TCP"
    ipv4_compat: bool = False

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class PipeAddress:
    path: str
    mode: int = 0

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class InternalAddress:
    """envoy_internal_address: a listener reached without a socket (``internal_listener``)."""

    server_listener_name: str
    endpoint_id: str = ""

    def __str__(self) -> str:
        return f"envoy://{self.server_listener_name}/{self.endpoint_id}"


Address = SocketAddress | PipeAddress | InternalAddress


class AppendAction(enum.Enum):
    APPEND_IF_EXISTS_OR_ADD = 0
    ADD_IF_ABSENT = 1
    OVERWRITE_IF_EXISTS_OR_ADD = 2
    OVERWRITE_IF_EXISTS = 3


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """A header to add: ``value`` may hold substitution commands (``%START_TIME%``), in which
    case ``render`` produces it per request."""

    name: bytes
    value: str
    action: AppendAction = AppendAction.APPEND_IF_EXISTS_OR_ADD
    keep_empty_value: bool = False
    # For a value with substitution commands: renders it for a request (a StreamInfo).
    render: Callable[[Any], str] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class HeaderMutations:
    """Headers to add and remove at one level (route config, virtual host, route, cluster)."""

    add: tuple[HeaderValueOption, ...] = ()
    remove: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


NO_MUTATIONS = HeaderMutations()


class StringMatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    SAFE_REGEX = "safe_regex"


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """envoy.type.matcher.v3.StringMatcher, matching bytes (header values, paths)."""

    kind: StringMatchKind
    value: str
    ignore_case: bool = False
    # The RE2 program of a SAFE_REGEX matcher when the translation already compiled it (with
    # its google_re2 limits); compiled here otherwise.
    regex: Regex | None = field(default=None, repr=False, compare=False)
    matches: Callable[[bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches", _compile_string_matcher(self))


def _compile_string_matcher(m: StringMatcher) -> Callable[[bytes], bool]:
    kind = m.kind
    if kind is StringMatchKind.SAFE_REGEX:
        # Envoy: safe_regex is a full match and ignore_case does not apply to it.
        return (m.regex or compile_regex(m.value)).fullmatch
    v = m.value.encode()
    if m.ignore_case:
        v = v.lower()
        if kind is StringMatchKind.EXACT:
            return lambda s: s.lower() == v
        if kind is StringMatchKind.PREFIX:
            return lambda s: s.lower().startswith(v)
        if kind is StringMatchKind.SUFFIX:
            return lambda s: s.lower().endswith(v)
        return lambda s: v in s.lower()
    if kind is StringMatchKind.EXACT:
        return v.__eq__
    if kind is StringMatchKind.PREFIX:
        return lambda s: s.startswith(v)
    if kind is StringMatchKind.SUFFIX:
        return lambda s: s.endswith(v)
    return lambda s: v in s


@dataclass(frozen=True, slots=True)
class FractionalPercent:
    """A probability as numerator/denominator (denominator 100, 10_000 or 1_000_000)."""

    numerator: int
    denominator: int = 100

    @property
    def ratio(self) -> float:
        return min(1.0, self.numerator / self.denominator)


@dataclass(frozen=True, slots=True)
class RuntimeFraction:
    default: FractionalPercent
    runtime_key: str = ""


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class TypedExtension:
    """A translated extension: its well-known name, type URL and the factory's parsed config.

    ``config`` is whatever the extension's factory produced when it validated the proto.
    """

    name: str
    type_url: str
    config: Any
    factory: Any = field(repr=False, compare=False, default=None)
