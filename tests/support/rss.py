"""Watch a process's resident memory (``VmRSS`` in ``/proc/<pid>/status``) while a test runs.

with PeakRss(proxy.pid) as rss:
    ...  # move a gigabyte through the proxy
assert rss.peak < 150 * MB, rss.summary()
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

__all__ = ["MB", "PeakRss", "rss_bytes"]

MB = 1_000_000


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakRss:
    """Samples ``VmRSS`` of ``pid`` every ``interval`` seconds from a thread; ``start`` is the
    value when the watch began, ``peak`` the highest value seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start = rss_bytes(pid)
        self.peak = self.start
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = rss_bytes(self.pid)
            except (OSError, RuntimeError):
                return  # the process is gone
            self.peak = max(self.peak, value)
            self.samples += 1
            self._stop.wait(self.interval)

    def summary(self) -> str:
        return (
            f"pid {self.pid}: VmRSS {self.start / MB:.1f} MB at start, peak {self.peak / MB:.1f} MB "
            f"({self.samples} samples)"
        )

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
