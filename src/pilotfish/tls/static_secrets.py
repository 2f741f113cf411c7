"""The bootstrap's ``static_resources.secrets``, loaded into the SecretStore at startup."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pilotfish.tls.config import secret_from_proto
from pilotfish.tls.secrets import SecretStore


def load_static_secrets(store: SecretStore, protos: Iterable[Any]) -> None:
    """Raises ConfigError naming the secret's field when one cannot be read."""
    for i, proto in enumerate(protos):
        path = f"static_resources.secrets[{i}]"
        value = secret_from_proto(proto, path)
        store.set(proto.name, value, source="static", proto=proto, now=time.time())
