"""Versioned sets of xDS resources, one per type URL, for the ADS server.

Each resource is serialized once when it is stored: the wire bytes of its ``Any`` (for
state-of-the-world responses) and of its ``Resource`` wrapper (for delta responses) are kept
next to it, already framed as a repeated field of the response message. A response is then the
concatenation of those chunks plus a few scalar fields, so pushing 1,000 clusters to many
streams costs no protobuf work per stream.

The store is plain data (no asyncio, no locks): the server calls it from its event loop and
hears about changes through the listener callbacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from pilotfish.xds.resource_types import BY_URL, resource_name

__all__ = [
    "Change",
    "Entry",
    "ResourceStore",
    "TypeSet",
    "encode_delta_response",
    "encode_sotw_response",
    "is_wildcard_type",
]


# --- protobuf wire framing ----------------------------------------------------------------
# Field numbers come from the descriptors, not from memory.


def _number(msg: type[Message], name: str) -> int:
    return int(msg.DESCRIPTOR.fields_by_name[name].number)


_DR = discovery_pb2.DiscoveryResponse
_DDR = discovery_pb2.DeltaDiscoveryResponse
_RES = discovery_pb2.Resource
_SOTW_VERSION, _SOTW_RESOURCES = _number(_DR, "version_info"), _number(_DR, "resources")
_SOTW_TYPE_URL, _SOTW_NONCE = _number(_DR, "type_url"), _number(_DR, "nonce")
_DELTA_VERSION = _number(_DDR, "system_version_info")
_DELTA_RESOURCES, _DELTA_REMOVED = _number(_DDR, "resources"), _number(_DDR, "removed_resources")
_DELTA_TYPE_URL, _DELTA_NONCE = _number(_DDR, "type_url"), _number(_DDR, "nonce")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or sub-message); empty ones are omitted, as
    proto3 does for default values."""
    if not payload:
        return b""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_sotw_response(type_url: str, version: str, nonce: str, chunks: Iterable[bytes]) -> bytes:
    """A serialized DiscoveryResponse from pre-framed resource chunks (Entry.sotw_chunk)."""
    return b"".join(
        (
            _field(_SOTW_VERSION, version.encode()),
            *chunks,
            _field(_SOTW_TYPE_URL, type_url.encode()),
            _field(_SOTW_NONCE, nonce.encode()),
        )
    )


def encode_delta_response(
    type_url: str, version: str, nonce: str, chunks: Iterable[bytes], removed: Iterable[str]
) -> bytes:
    """A serialized DeltaDiscoveryResponse from pre-framed chunks (Entry.delta_chunk)."""
    return b"".join(
        (
            _field(_DELTA_VERSION, version.encode()),
            *chunks,
            _field(_DELTA_TYPE_URL, type_url.encode()),
            _field(_DELTA_NONCE, nonce.encode()),
            *(_field(_DELTA_REMOVED, name.encode()) for name in removed),
        )
    )


# --- the store ----------------------------------------------------------------------------


def is_wildcard_type(type_url: str) -> bool:
    """LDS and CDS may be subscribed to as a whole; unknown types are treated as named."""
    known = BY_URL.get(type_url)
    return known is not None and known.wildcard


@dataclass(slots=True)
class Entry:
    """One stored resource with its wire forms."""

    name: str
    message: Message
    version: str  # per-resource version (delta): a short hash of the serialized resource
    sotw_chunk: bytes  # DiscoveryResponse.resources[i], framed
    _delta_chunk: bytes | None = None

    @classmethod
    def build(cls, type_url: str, message: Message) -> Entry:
        value = message.SerializeToString(deterministic=True)
        any_bytes = _field(1, type_url.encode()) + _field(2, value)  # google.protobuf.Any
        version = hashlib.blake2b(value, digest_size=8).hexdigest()
        return cls(resource_name(message), message, version, _frame(_SOTW_RESOURCES, any_bytes))

    @property
    def delta_chunk(self) -> bytes:
        """DeltaDiscoveryResponse.resources[i], framed; built on first use (delta clients)."""
        if self._delta_chunk is None:
            any_bytes = _unframe(self.sotw_chunk)
            wrapper = b"".join(
                (
                    _field(_number(_RES, "version"), self.version.encode()),
                    _frame(_number(_RES, "resource"), any_bytes),
                    _field(_number(_RES, "name"), self.name.encode()),
                )
            )
            self._delta_chunk = _frame(_DELTA_RESOURCES, wrapper)
        return self._delta_chunk


def _frame(number: int, payload: bytes) -> bytes:
    # Like _field, but a present empty sub-message still counts (an Any of an empty message).
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _unframe(chunk: bytes) -> bytes:
    """The payload of a chunk made by _frame (skip the tag byte and the length varint)."""
    pos = 1
    while chunk[pos] & 0x80:
        pos += 1
    return chunk[pos + 1 :]


@dataclass(slots=True)
class TypeSet:
    """All resources of one type URL and the type's version."""

    type_url: str
    version: str = ""
    counter: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """What one set_resources/update did to a type: names added or changed, names removed."""

    type_url: str
    version: str
    changed: frozenset[str]
    removed: frozenset[str]


Listener = Callable[[Change], None]


class ResourceStore:
    """Type URL -> TypeSet. A type exists once it has been set (even to an empty list):
    from then on wildcard subscribers get a (possibly empty) response."""

    def __init__(self) -> None:
        self.types: dict[str, TypeSet] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def get(self, type_url: str) -> TypeSet | None:
        return self.types.get(type_url)

    def resources(self, type_url: str) -> dict[str, Message]:
        ts = self.types.get(type_url)
        return {} if ts is None else {n: e.message for n, e in ts.entries.items()}

    def set_resources(
        self, type_url: str, resources: Iterable[Message], version: str | None = None
    ) -> str:
        """Replace the whole set of ``type_url``."""
        new = _entries(type_url, resources)
        ts = self.types.get(type_url) or TypeSet(type_url)
        removed = ts.entries.keys() - new.keys()
        return self._commit(ts, new, removed, version)

    def update(
        self,
        type_url: str,
        upsert: Iterable[Message] = (),
        remove: Iterable[str] = (),
        version: str | None = None,
    ) -> str:
        """Add or replace ``upsert`` and delete the names in ``remove``; others are kept."""
        ts = self.types.get(type_url) or TypeSet(type_url)
        new = dict(ts.entries)
        removed = set()
        for name in remove:
            if new.pop(name, None) is not None:
                removed.add(name)
        added = _entries(type_url, upsert)
        new.update(added)
        removed -= added.keys()
        return self._commit(ts, new, removed, version)

    def _commit(
        self, ts: TypeSet, new: dict[str, Entry], removed: Iterable[str], version: str | None
    ) -> str:
        old = ts.entries
        changed = frozenset(
            n for n, e in new.items() if n not in old or old[n].version != e.version
        )
        ts.counter += 1
        ts.version = version if version is not None else str(ts.counter)
        ts.entries = new
        self.types[ts.type_url] = ts
        change = Change(ts.type_url, ts.version, changed, frozenset(removed))
        for listener in list(self._listeners):
            listener(change)
        return ts.version


def _entries(type_url: str, resources: Iterable[Message]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for msg in resources:
        entry = Entry.build(type_url, msg)
        if not entry.name:
            raise ValueError(f"a {type_url} resource without a name")
        out[entry.name] = entry
    return out
