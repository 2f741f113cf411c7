"""The server's drain decision: whether a response closes its HTTP/1.1 connection
(``connection: close``), as Envoy's ``DrainManagerImpl::drainClose()``.

While a drain sequence runs (SIGTERM, ``/drain_listeners?graceful``), the ``gradual`` strategy
closes a growing share of connections; ``immediate`` closes every one. The gradual share is
what Envoy 1.40 was measured doing (tests/integration/test_drain.py): a response closes its
connection with probability 2 x (whole seconds elapsed) / ``--drain-time-s``, so none in the
first second and all from half the drain time on (its source reads elapsed / drain time; the
measured pace is twice that). A failed health check
(``/healthcheck/fail``) closes every connection. Listeners with ``drain_type: MODIFY_ONLY``
take part in neither (they drain only when they are modified or removed).

The connection manager asks only when ``ServerContext.draining`` is set, so the request path
pays one attribute check when nothing drains.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

GRADUAL = "gradual"
IMMEDIATE = "immediate"


class DrainManager:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        strategy: str,
        drain_time: float,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.strategy = strategy
        self.drain_time = int(drain_time)
        self.rng = rng if rng is not None else random.Random()
        self.health_check_failed = False
        self.deadline: float | None = None  # when the drain sequence ends; None: no drain
        self.scope: set[int] | None = None  # ids of the draining handlers; None: all of them
        self.modify_only: set[int] = set()  # handlers of MODIFY_ONLY listeners

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def exempt(self, handler: Any) -> None:
        """``handler`` (a listener's connection manager) belongs to a MODIFY_ONLY listener."""
        self.modify_only.add(id(handler))

    def start(self, handlers: Iterable[Any] | None = None) -> None:
        """Begin a drain sequence of ``--drain-time-s`` over ``handlers`` (None: every
        listener). A sequence already running keeps its start."""
        running = self.deadline is not None
        if not running:
            self.deadline = self.loop.time() + self.drain_time
        if handlers is None:
            self.scope = None
        elif not running:
            self.scope = {id(h) for h in handlers}
        elif self.scope is not None:
            self.scope |= {id(h) for h in handlers}

    def drain_close(self, handler: Any) -> bool:
        """Whether the response being sent on a connection of ``handler`` closes it."""
        key = id(handler)
        if key in self.modify_only:
            return False
        if self.health_check_failed:
            return True
        deadline = self.deadline
        if deadline is None or (self.scope is not None and key not in self.scope):
            return False
        if self.strategy == IMMEDIATE:
            return True
        now = self.loop.time()
        if now >= deadline or self.drain_time == 0:
            return True
        elapsed = int(now - (deadline - self.drain_time))  # whole seconds
        return 2 * elapsed > self.rng.getrandbits(64) % self.drain_time
