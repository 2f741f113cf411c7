"""A cluster's upstream transport sockets: its ``transport_socket`` and
``transport_socket_matches``, run as TLS contexts, and the choice of one per host.

Envoy's rule: a host uses the first match whose ``match`` fields all equal the host's
``filter_metadata["envoy.transport_socket_match"]`` (an empty match matches every host), else
the cluster's ``transport_socket``. The choice is made when a host is added or its metadata
changes, never per request. Istio's shape: ``{tlsMode: istio}`` -> its mTLS context, then a
catch-all raw_buffer match.
"""

from __future__ import annotations

from typing import Any

from pilotfish.stats.store import Scope
from pilotfish.tls.config import TlsContextConfig
from pilotfish.tls.context import TlsContext, TlsStats
from pilotfish.tls.secrets import SecretStore

MATCH_KEY = "envoy.transport_socket_match"
# pilotfish's upstream codec is HTTP/1.1: offering h2 would let the server choose a protocol
# that is not going to be spoken.
_UNSPOKEN_ALPN = frozenset(("h2", "h2c", "h3"))


def _spoken(alpn: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in alpn if p not in _UNSPOKEN_ALPN)


class _Match:
    __slots__ = ("counter", "fields", "tls")

    def __init__(self, fields: dict[str, Any], tls: TlsContext | None, counter: Any) -> None:
        self.fields = fields
        self.tls = tls
        self.counter = counter

    def matches(self, host_fields: dict[str, Any]) -> bool:
        return all(host_fields.get(k) == v for k, v in self.fields.items())


class UpstreamTransportSockets:
    def __init__(self, config: Any, secrets: SecretStore | None, scope: Scope) -> None:
        self._contexts: list[TlsContext] = []
        self._stats: TlsStats | None = None
        self._scope = scope
        self._secrets = secrets
        self.default = self._context(config.transport_socket)
        self.default_counter = scope.counter("default.total_match_count")
        self.matches = tuple(
            _Match(fields, self._context(ts), scope.counter(f"{name}.total_match_count"))
            for name, fields, ts in config.transport_socket_matches
        )

    def _context(self, extension: Any) -> TlsContext | None:
        config = extension.config if extension is not None else None
        if not isinstance(config, TlsContextConfig):
            return None
        if self._stats is None:
            self._stats = TlsStats(self._scope)  # cluster.X.ssl.*
        tls = TlsContext(config, self._secrets, self._stats, alpn_filter=_spoken)
        self._contexts.append(tls)
        return tls

    def select(self, metadata: dict[str, Any], *, count: bool) -> TlsContext | None:
        """The TLS context (None: plain TCP) for a host with this metadata; ``count``: the
        host is new, counted in the matching ``*total_match_count``."""
        if self.matches:
            fields = metadata.get(MATCH_KEY) or {}
            for m in self.matches:
                if m.matches(fields):
                    if count:
                        m.counter.value += 1
                    return m.tls
        if count:
            self.default_counter.value += 1
        return self.default

    def close(self) -> None:
        for tls in self._contexts:
            tls.close()
