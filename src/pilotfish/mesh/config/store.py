"""The config store: applied objects by (kind, namespace, name), all-or-nothing changes,
change listeners for the xDS translation, and a state directory that survives restarts.

An apply (or delete) is checked as a whole on the store it would produce: every per-object
problem of the new objects and every *new* cross-object problem (a dangling subset, a
conflicting host) is reported in one ``ConfigValidationError`` and nothing changes, neither in
memory nor on disk. Problems that were already there (left by ``delete(force=True)``) do not
block unrelated changes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.parse import (
    ParsedObject,
    load_documents,
    parse_document,
    parse_file,
    parse_yaml,
)
from pilotfish.mesh.config.references import check_references
from pilotfish.mesh.config.validate import validate_object

__all__ = ["Action", "Change", "ConfigStore", "Listener", "resolve_kind"]

log = logging.getLogger(__name__)

Action = Literal["created", "configured", "unchanged", "deleted"]
T = TypeVar("T", bound=m.Resource)
STATE_FILE = "config.json"
_STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Change:
    """What one apply/delete did to one object, in kubectl's words."""

    action: Action
    key: m.ObjectKey
    old: m.Resource | None
    new: m.Resource | None


Listener = Callable[[Sequence[Change]], None]

_BY_KIND: dict[str, type[m.Resource]] = {k.kind: k for k in m.KINDS}
_SHORT_NAMES = {
    "svc": "Service",
    "deploy": "Deployment",
    "sa": "ServiceAccount",
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "gw": "Gateway",
    "se": "ServiceEntry",
    "we": "WorkloadEntry",
    "pa": "PeerAuthentication",
}
_ALIASES: dict[str, type[m.Resource]] = {}
for _kind, _cls in _BY_KIND.items():
    _ALIASES[_kind.lower()] = _ALIASES[_kind.lower() + "s"] = _cls
for _short, _kind in _SHORT_NAMES.items():
    _ALIASES[_short] = _BY_KIND[_kind]


def resolve_kind(name: str) -> type[m.Resource]:
    """``VirtualService``, ``virtualservices`` or ``vs`` → the model class (as kubectl does)."""
    cls = _ALIASES.get(name.lower())
    if cls is None:
        raise KeyError(f"unknown kind {name!r} (known: {', '.join(sorted(_BY_KIND))})")
    return cls


ApplyItem = Path | ParsedObject | Mapping[str, Any]
DeleteItem = Path | ParsedObject | Mapping[str, Any] | m.ObjectKey


class ConfigStore:
    def __init__(self, state_dir: Path | None = None) -> None:
        self._state_dir = state_dir
        self._entries: dict[m.ObjectKey, ParsedObject] = {}
        self._listeners: list[Listener] = []
        self.revision = 0  # bumped by every apply/delete that changes something
        if state_dir is not None:
            self._load(state_dir / STATE_FILE)

    # --- reading -----------------------------------------------------------------------------

    @overload
    def get(self, kind: type[T], namespace: str | None = None) -> list[T]: ...
    @overload
    def get(self, kind: str, namespace: str | None = None) -> list[m.Resource]: ...

    def get(self, kind: type[m.Resource] | str, namespace: str | None = None) -> list[Any]:
        """Objects of one kind (class, kind name or kubectl alias), sorted by namespace/name."""
        cls = resolve_kind(kind) if isinstance(kind, str) else kind
        return [
            e.obj
            for k, e in sorted(self._entries.items())
            if k.kind == cls.kind and (namespace is None or k.namespace == namespace)
        ]

    def get_object(self, key: m.ObjectKey) -> m.Resource | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.obj

    def source_of(self, key: m.ObjectKey) -> str | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.source

    def list_all(self) -> list[m.Resource]:
        return [e.obj for _, e in sorted(self._entries.items())]

    def documents(self) -> list[tuple[m.ObjectKey, Mapping[str, Any]]]:
        """Every object's document as it was applied, sorted by key (for a control plane
        that reads Istio's YAML itself, e.g. istiod's ``--configDir``)."""
        return [(k, e.raw) for k, e in sorted(self._entries.items())]

    def __len__(self) -> int:
        return len(self._entries)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` after each apply/delete that changed something; returns
        a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- changing ----------------------------------------------------------------------------

    def apply(self, items: ApplyItem | Iterable[ApplyItem]) -> list[Change]:
        """Create or replace objects from files, parsed objects or raw documents."""
        parsed = self._parse(items)
        messages: list[str] = []
        batch: dict[m.ObjectKey, ParsedObject] = {}
        for p in parsed:
            if p.key in batch:
                messages.append(f"{p.where}: {p.key}: defined twice (also in {batch[p.key].where})")
            batch[p.key] = p
            messages += [
                f"{p.where}: {p.key}: {path}: {msg}" for path, msg in validate_object(p.obj)
            ]
        result = {**self._entries, **batch}
        messages += self._new_reference_problems(result)
        if messages:
            raise ConfigValidationError(messages)
        changes = []
        for key, p in batch.items():
            old = self._entries.get(key)
            if old is None:
                changes.append(Change("created", key, None, p.obj))
            elif old.obj == p.obj:
                changes.append(Change("unchanged", key, old.obj, old.obj))
                result[key] = old  # keep where it first came from
            else:
                changes.append(Change("configured", key, old.obj, p.obj))
        self._commit(result, changes)
        return changes

    def apply_yaml(self, text: str, source: str = "<inline>") -> list[Change]:
        return self.apply(parse_yaml(text, source))

    def delete(
        self,
        items: DeleteItem | Iterable[DeleteItem],
        *,
        force: bool = False,
        ignore_not_found: bool = False,
    ) -> list[Change]:
        """Delete the objects named by files (as ``kubectl delete -f``), documents or keys.
        A delete that would leave a VirtualService pointing at a missing subset or Gateway is
        refused unless ``force``."""
        keys = self._keys(items)
        messages = (
            []
            if ignore_not_found
            else [f"{key}: not found" for key in keys if key not in self._entries]
        )
        result = {k: e for k, e in self._entries.items() if k not in keys}
        if not force:
            messages += [
                f"{msg} (delete it first, or force)" for msg in self._new_reference_problems(result)
            ]
        if messages:
            raise ConfigValidationError(messages)
        changes = [
            Change("deleted", key, self._entries[key].obj, None)
            for key in keys
            if key in self._entries
        ]
        self._commit(result, changes)
        return changes

    def delete_object(
        self,
        kind: str | type[m.Resource],
        name: str,
        namespace: str = m.DEFAULT_NAMESPACE,
        **kw: bool,
    ) -> list[Change]:
        cls = resolve_kind(kind) if isinstance(kind, str) else kind
        return self.delete(m.ObjectKey(cls.kind, namespace, name), **kw)

    # --- internals ---------------------------------------------------------------------------

    def _parse(self, items: ApplyItem | Iterable[ApplyItem]) -> list[ParsedObject]:
        if isinstance(items, Path | ParsedObject | Mapping):
            items = [items]
        out: list[ParsedObject] = []
        messages: list[str] = []
        for item in items:
            try:
                if isinstance(item, Path):
                    out += parse_file(item)
                elif isinstance(item, ParsedObject):
                    out.append(item)
                else:
                    obj, problems = parse_document(item, "<inline>")
                    messages += problems
                    if obj is not None:
                        out.append(ParsedObject(obj, item, "<inline>", "<inline>"))
            except ConfigValidationError as e:
                messages += e.messages  # keep going: report every file's problems at once
        if messages:
            raise ConfigValidationError(messages)
        return out

    def _keys(self, items: DeleteItem | Iterable[DeleteItem]) -> list[m.ObjectKey]:
        if isinstance(items, Path | ParsedObject | Mapping | m.ObjectKey):
            items = [items]
        keys: list[m.ObjectKey] = []
        for item in items:
            if isinstance(item, m.ObjectKey):
                keys.append(item)
            elif isinstance(item, ParsedObject):
                keys.append(item.key)
            elif isinstance(item, Path):
                # Only the names matter: a file that no longer validates can still be deleted.
                keys += [_key_of(doc) for _, doc in load_documents(item.read_text(), str(item))]
            else:
                keys.append(_key_of(item))
        return list(dict.fromkeys(keys))

    def _new_reference_problems(self, result: Mapping[m.ObjectKey, ParsedObject]) -> list[str]:
        before = set(check_references(e.obj for e in self._entries.values()))
        return [
            f"{result[r.key].where}: {r.key}: {r.path}: {r.message}"
            for r in check_references(e.obj for e in result.values())
            if r not in before
        ]

    def _commit(self, result: dict[m.ObjectKey, ParsedObject], changes: list[Change]) -> None:
        real = [c for c in changes if c.action != "unchanged"]
        if not real:
            return
        if self._state_dir is not None:
            self._save(self._state_dir / STATE_FILE, result, self.revision + 1)  # disk first
        self._entries = result
        self.revision += 1
        for listener in list(self._listeners):
            try:
                listener(real)
            except Exception:
                # The change is made; a failing listener must not hide it from the others.
                log.exception("config store listener %r failed", listener)

    @staticmethod
    def _save(path: Path, entries: Mapping[m.ObjectKey, ParsedObject], revision: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": _STATE_FORMAT,
            "revision": revision,
            "objects": [
                {"source": e.source, "where": e.where, "document": e.raw}
                for _, e in sorted(entries.items())
            ],
        }
        tmp = path.with_suffix(".tmp")
        # default=str: YAML timestamps (metadata.creationTimestamp) are not JSON.
        tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash leaves the old state or the new one

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigValidationError([f"{path}: cannot read the state: {e}"]) from e
        if state.get("format") != _STATE_FORMAT:
            raise ConfigValidationError([f"{path}: unknown state format {state.get('format')!r}"])
        messages = []
        for item in state["objects"]:
            obj, problems = parse_document(item["document"], f"{path}: {item['where']}")
            messages += problems
            if obj is not None:
                self._entries[obj.key] = ParsedObject(
                    obj, item["document"], item["source"], item["where"]
                )
        if messages:
            raise ConfigValidationError(messages)
        self.revision = int(state.get("revision", 0))


def _key_of(doc: Any) -> m.ObjectKey:
    meta = doc.get("metadata") if isinstance(doc, Mapping) else None
    if (
        not isinstance(meta, Mapping)
        or not isinstance(doc.get("kind"), str)
        or not meta.get("name")
    ):
        raise ConfigValidationError([f"cannot tell which object to delete from {doc!r}"])
    return m.ObjectKey(doc["kind"], meta.get("namespace") or m.DEFAULT_NAMESPACE, str(meta["name"]))
