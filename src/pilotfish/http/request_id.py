"""x-request-id values: random (version 4) UUIDs, as Envoy's UUID request-id extension makes."""

from __future__ import annotations

import random

_bits = random.getrandbits
_VERSION_MASK = ~(0xF000 << 64) & ((1 << 128) - 1)
_VARIANT_MASK = ~(0xC000 << 48) & ((1 << 128) - 1)


def new_request_id() -> bytes:
    # Like Envoy's, not cryptographic: uuid.uuid4() costs ~2 us and a getrandom() syscall.
    n = (_bits(128) & _VERSION_MASK & _VARIANT_MASK) | (0x4000 << 64) | (0x8000 << 48)
    h = "%032x" % n
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()
