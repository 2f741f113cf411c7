"""Translation of the small messages every resource uses (addresses, durations, matchers,
header options). Each function takes the proto and the field path it came from, and raises
ConfigError naming that path."""

from __future__ import annotations

import ipaddress
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from pilotfish.errors import ConfigError
from pilotfish.model.common import (
    NO_MUTATIONS,
    Address,
    AppendAction,
    FractionalPercent,
    HeaderMutations,
    HeaderValueOption,
    InternalAddress,
    Locality,
    PipeAddress,
    RuntimeFraction,
    SocketAddress,
    StringMatcher,
    StringMatchKind,
)
from pilotfish.regex import Regex, RegexError, compile_regex

_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


def has(msg: Message, field: str) -> bool:
    try:
        return msg.HasField(field)
    except ValueError:  # scalar proto3 field without presence
        return bool(getattr(msg, field))


def duration(msg: Message, field: str, default: float) -> float:
    """A google.protobuf.Duration field in seconds, or ``default`` if unset."""
    if not msg.HasField(field):
        return default
    d = getattr(msg, field)
    return float(d.seconds) + d.nanos / 1e9


def uint32_value(msg: Message, field: str, default: int) -> int:
    """A google.protobuf.UInt32Value (or other wrapper) field, or ``default`` if unset."""
    if not msg.HasField(field):
        return default
    return int(getattr(msg, field).value)


def bool_value(msg: Message, field: str, default: bool) -> bool:
    if not msg.HasField(field):
        return default
    return bool(getattr(msg, field).value)


def struct_to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def metadata(msg: Message, path: str) -> dict[str, Any]:
    """envoy.config.core.v3.Metadata: filter_metadata (and typed_filter_metadata names)."""
    if not msg.HasField("metadata"):
        return {}
    md = msg.metadata  # type: ignore[attr-defined]
    return {k: struct_to_dict(v) for k, v in md.filter_metadata.items()}


def socket_address(sa: Any, path: str) -> SocketAddress:
    """envoy.config.core.v3.SocketAddress."""
    if sa.named_port:
        raise ConfigError(f"{path}.named_port", "named ports are not supported")
    if sa.resolver_name:
        raise ConfigError(f"{path}.resolver_name", "custom resolvers are not supported")
    if not sa.address:
        raise ConfigError(f"{path}.address", "value length must be at least 1")
    if sa.port_value > 65535:
        raise ConfigError(f"{path}.port_value", "value must be less than or equal to 65535")
    protocol = "UDP" if sa.protocol == 1 else "TCP"
    return SocketAddress(sa.address, sa.port_value, protocol, sa.ipv4_compat)


def address(msg: Any, path: str) -> Address:
    """envoy.config.core.v3.Address."""
    kind = msg.WhichOneof("address")
    if kind == "socket_address":
        return socket_address(msg.socket_address, f"{path}.socket_address")
    if kind == "pipe":
        if not msg.pipe.path:
            raise ConfigError(f"{path}.pipe.path", "value length must be at least 1")
        return PipeAddress(msg.pipe.path, msg.pipe.mode)
    if kind == "envoy_internal_address":
        ia = msg.envoy_internal_address
        return InternalAddress(ia.server_listener_name, ia.endpoint_id)
    raise ConfigError(
        path, "an address (socket_address, pipe or envoy_internal_address) is required"
    )


def ip_address(text: str, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(path, f"malformed IP address: {text}") from None


def cidr_ranges(
    ranges: Any, path: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """envoy.config.core.v3.CidrRange list (prefix_len defaults to 0, as in Envoy)."""
    out = []
    for i, r in enumerate(ranges):
        prefix_len = r.prefix_len.value if r.HasField("prefix_len") else 0
        try:
            out.append(ipaddress.ip_network(f"{r.address_prefix}/{prefix_len}", strict=False))
        except ValueError as e:
            raise ConfigError(f"{path}[{i}]", f"malformed CIDR range: {e}") from None
    return tuple(out)


def fractional_percent(msg: Message) -> FractionalPercent:
    return FractionalPercent(msg.numerator, _DENOMINATORS.get(msg.denominator, 100))  # type: ignore[attr-defined]


def runtime_fraction(msg: Message) -> RuntimeFraction:
    return RuntimeFraction(
        fractional_percent(msg.default_value),  # type: ignore[attr-defined]
        msg.runtime_key,  # type: ignore[attr-defined]
    )


def locality(msg: Message) -> Locality:
    return Locality(msg.region, msg.zone, msg.sub_zone)  # type: ignore[attr-defined]


def regex(pattern: str, path: str, max_program_size: int | None = None) -> Regex:
    """An RE2 pattern, compiled once here (the per-request path only matches)."""
    try:
        return compile_regex(pattern, max_program_size=max_program_size)
    except RegexError as e:
        raise ConfigError(path, str(e)) from None


def regex_matcher(msg: Message, path: str) -> Regex:
    """envoy.type.matcher.v3.RegexMatcher -> compiled pattern. The deprecated
    ``google_re2.max_program_size`` replaces the runtime limits, as in Envoy."""
    limit = None
    if msg.HasField("google_re2") and msg.google_re2.HasField("max_program_size"):  # type: ignore[attr-defined]
        limit = msg.google_re2.max_program_size.value  # type: ignore[attr-defined]
    return regex(msg.regex, f"{path}.regex", limit)  # type: ignore[attr-defined]


def string_matcher(msg: Message, path: str) -> StringMatcher:
    """envoy.type.matcher.v3.StringMatcher."""
    kind = msg.WhichOneof("match_pattern")
    ignore_case = bool(msg.ignore_case)  # type: ignore[attr-defined]
    if kind == "safe_regex":
        compiled = regex_matcher(msg.safe_regex, f"{path}.safe_regex")  # type: ignore[attr-defined]
        return StringMatcher(StringMatchKind.SAFE_REGEX, compiled.pattern, ignore_case, compiled)
    if kind in ("exact", "prefix", "suffix", "contains"):
        value = getattr(msg, kind)
        if kind != "exact" and not value:
            raise ConfigError(f"{path}.{kind}", "value length must be at least 1")
        return StringMatcher(StringMatchKind(kind), value, ignore_case)
    if kind is None:
        raise ConfigError(path, "match_pattern is required")
    raise ConfigError(f"{path}.{kind}", "this kind of string match is not supported")


def _valid_header_name(name: str) -> bool:
    if not name:
        return False
    body = name[1:] if name.startswith(":") else name
    return all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in body) and bool(body)


def header_value_options(options: Any, path: str) -> tuple[HeaderValueOption, ...]:
    out = []
    for i, opt in enumerate(options):
        p = f"{path}[{i}]"
        h = opt.header
        if not _valid_header_name(h.key):
            raise ConfigError(f"{p}.header.key", f"invalid header name '{h.key}'")
        lower = h.key.lower()
        if lower.startswith(":") or lower == "host":
            raise ConfigError(
                f"{p}.header.key", f":-prefixed or host headers may not be modified: {h.key}"
            )
        value = h.value if h.value else h.raw_value.decode("latin-1")
        if any(c in value for c in "\r\n\x00"):
            raise ConfigError(f"{p}.header.value", "header value contains invalid characters")
        if opt.HasField("append"):
            if opt.append_action != 0:
                raise ConfigError(p, "Both append and append_action are set and it's not allowed")
            action = (
                AppendAction.APPEND_IF_EXISTS_OR_ADD
                if opt.append.value
                else AppendAction.OVERWRITE_IF_EXISTS_OR_ADD
            )
        else:
            action = AppendAction(opt.append_action)
        render = None
        if "%" in value:
            from pilotfish.accesslog.formatter import compile_header_value

            render = compile_header_value(value, f"{p}.header.value")
        out.append(
            HeaderValueOption(
                name=lower.encode(),
                value=value,
                action=action,
                keep_empty_value=opt.keep_empty_value,
                render=render,
            )
        )
    return tuple(out)


def header_names(names: Any, path: str) -> tuple[bytes, ...]:
    out = []
    for i, n in enumerate(names):
        if not _valid_header_name(n):
            raise ConfigError(f"{path}[{i}]", f"invalid header name '{n}'")
        lower = n.lower()
        if lower.startswith(":") or lower == "host":
            raise ConfigError(f"{path}[{i}]", f":-prefixed or host headers may not be removed: {n}")
        out.append(lower.encode())
    return tuple(out)


def header_mutations(msg: Message, add_field: str, remove_field: str, path: str) -> HeaderMutations:
    add = header_value_options(getattr(msg, add_field), f"{path}.{add_field}")
    remove = header_names(getattr(msg, remove_field), f"{path}.{remove_field}")
    if not add and not remove:
        return NO_MUTATIONS
    return HeaderMutations(add, remove)
