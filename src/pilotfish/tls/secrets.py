"""The secret store: Envoy's named secrets (``tls_certificate`` and ``validation_context``),
from the bootstrap's ``static_resources.secrets`` and from SDS.

TLS contexts look secrets up by name and watch them: when SDS rotates one, watchers rebuild
their SSL contexts so that new connections use the new certificate while existing ones keep
theirs (as Envoy does). Secret values are kept as PEM bytes; nothing here does crypto.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """A certificate chain and its private key (PEM)."""

    certificate_chain: bytes
    private_key: bytes


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """Trusted CAs (PEM) and the peer checks configured with them in the secret."""

    trusted_ca: bytes
    # SAN matchers as parsed from the secret's validation context (see tls/san.py), if any.
    match_subject_alt_names: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class SdsSecretRef:
    """A secret a TLS context names (``sds_secret_config``): its name and the ConfigSource
    proto to fetch it from (None: it must be a static secret of the bootstrap)."""

    name: str
    sds_config: object = None


Secret = TlsCertificate | ValidationContext
Watcher = Callable[[str, "Secret | None"], None]


@dataclass
class SecretEntry:
    name: str
    value: Secret | None = None
    version_info: str = ""
    last_updated: float = 0.0
    source: str = "static"  # "static" or "sds"
    proto: object = None  # the Secret proto it came from, for /config_dump
    watchers: list[Watcher] = field(default_factory=list)


class SecretStore:
    """Secrets by name. ``set`` installs or replaces one and notifies its watchers."""

    def __init__(self) -> None:
        self.entries: dict[str, SecretEntry] = {}

    def get(self, name: str) -> Secret | None:
        entry = self.entries.get(name)
        return entry.value if entry is not None else None

    def set(
        self,
        name: str,
        value: Secret,
        *,
        version_info: str = "",
        source: str = "static",
        proto: object = None,
        now: float = 0.0,
    ) -> None:
        entry = self.entries.setdefault(name, SecretEntry(name))
        entry.value, entry.version_info, entry.source = value, version_info, source
        entry.proto, entry.last_updated = proto, now
        for watcher in list(entry.watchers):
            watcher(name, value)

    def remove(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is None or entry.value is None:
            return
        entry.value = None
        for watcher in list(entry.watchers):
            watcher(name, None)

    def watch(self, name: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(name, secret)`` on every change of ``name``; returns the unwatch."""
        entry = self.entries.setdefault(name, SecretEntry(name))
        entry.watchers.append(watcher)

        def unwatch() -> None:
            if watcher in entry.watchers:
                entry.watchers.remove(watcher)

        return unwatch
