"""Access-log files, as Envoy's AccessLogManager: one buffered writer per path, shared by every
logger that writes to it.

A logger appends its line to the path's buffer (no system call). The buffer goes to the file
when it grows past ``min_flush_size``, every ``flush_interval`` seconds, or on ``flush_all()``
(Envoy's ``--file-flush-min-size-kb`` and ``--file-flush-interval-msec``). Once ``start(loop)``
has been called those writes happen on one writer thread, as Envoy's flush thread, so a slow
pipe (``/dev/stdout`` read by a container runtime) never blocks the event loop. Before that,
and in ``flush_all()`` / ``close()``, they happen in the caller.

Write failures are counted (``write_failed``) and the data is dropped: logging never raises
into the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import select
import threading
from typing import Protocol

from pilotfish.stream_info import StreamInfo

__all__ = ["AccessLogFile", "AccessLogManager", "AccessLogger"]

# Paths that mean the process's own streams: written through fds 1 and 2 (never closed or
# reopened), so they follow whatever the process's stdout/stderr are.
_STANDARD_FDS = {"/dev/stdout": 1, "/dev/stderr": 2}
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_OPEN_MODE = 0o644  # Envoy: S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH


class AccessLogger(Protocol):
    """What the HTTP connection manager and tcp_proxy call once per request / connection."""

    def log(self, info: StreamInfo) -> None: ...


class AccessLogFile:
    """The buffer and file descriptor of one path."""

    def __init__(self, path: str, manager: AccessLogManager) -> None:
        self.path = path
        self._manager = manager
        self._buffer = bytearray()
        self._lock = threading.Lock()  # guards _buffer, _queued and _reopen
        self._io_lock = threading.Lock()  # one writer of the fd at a time
        self._queued = False  # handed to the writer thread, not yet flushed
        self._reopen = False
        self._owned = path not in _STANDARD_FDS  # fds 1 and 2 are never closed or reopened
        self._fd = os.open(path, _OPEN_FLAGS, _OPEN_MODE) if self._owned else _STANDARD_FDS[path]

    # -- the request path ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Buffer ``data``; flush (or ask the writer thread to) once the buffer is full."""
        with self._lock:
            self._buffer += data
            full = len(self._buffer) > self._manager.min_flush_size
        self._manager.write_buffered += 1
        if full:
            self._manager.request_flush(self)

    # -- flushing --------------------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._buffer)

    def mark_queued(self) -> bool:
        """Claim this file for the writer thread; False if it is already waiting there."""
        with self._lock:
            if self._queued:
                return False
            self._queued = True
            return True

    def flush(self) -> None:
        """Write what is buffered (reopening first if asked), in the calling thread."""
        with self._io_lock:
            with self._lock:
                data = self._buffer
                self._buffer = bytearray()
                self._queued = False
                reopen, self._reopen = self._reopen, False
            if reopen:
                self._do_reopen()
            if data:
                self._write_all(data)

    def request_reopen(self) -> None:
        with self._lock:
            self._reopen = True

    def close(self) -> None:
        self.flush()
        with self._io_lock:
            if self._owned:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = -1

    def _do_reopen(self) -> None:
        if not self._owned:
            return
        try:
            fd = os.open(self.path, _OPEN_FLAGS, _OPEN_MODE)
        except OSError:
            self._manager.count("reopen_failed")
            return  # keep writing to the old file
        old, self._fd = self._fd, fd
        with contextlib.suppress(OSError):
            os.close(old)

    def _write_all(self, data: bytearray) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:  # a non-blocking stdout: wait until it drains
                    select.select([], [self._fd], [], 1.0)
                    continue
                view = view[n:]
        except OSError:
            self._manager.count("write_failed")
            return
        self._manager.count("write_completed")


class AccessLogManager:
    """Owns the access-log files of one server. Not a global: the Server builds it."""

    def __init__(self, flush_interval: float = 10.0, min_flush_size: int = 64 * 1024) -> None:
        self.flush_interval = flush_interval
        self.min_flush_size = min_flush_size
        self._files: dict[str, AccessLogFile] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queue: queue.SimpleQueue[AccessLogFile | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        # Envoy's filesystem.* stats.
        self.write_buffered = 0  # lines buffered
        self.write_completed = 0  # buffers written
        self.write_failed = 0  # buffers dropped because the write failed
        self.flushed_by_timer = 0
        self.reopen_failed = 0

    def open(self, path: str) -> AccessLogFile:
        """The file for ``path``, shared with other loggers. Raises OSError if it cannot be
        opened (Envoy: ``unable to open file '<path>': <reason>``)."""
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = AccessLogFile(path, self)
        return f

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread and the periodic flush timer on ``loop``."""
        if self._loop is not None:
            return
        self._loop = loop
        self._thread = threading.Thread(target=self._writer, name="access-log-flush", daemon=True)
        self._thread.start()
        self._arm_timer()

    def flush_all(self) -> None:
        """Write every buffer now, in the calling thread."""
        for f in list(self._files.values()):
            f.flush()

    def reopen_all(self) -> None:
        """Reopen every file before its next write (SIGUSR1, after log rotation)."""
        for f in list(self._files.values()):
            f.request_reopen()
            self.request_flush(f)

    def close(self) -> None:
        """Stop the timer and the writer thread, flush, and close the files."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._loop = None
        for f in list(self._files.values()):
            f.close()
        self._files.clear()

    # -- internals -------------------------------------------------------------------------------

    def request_flush(self, f: AccessLogFile) -> None:
        if self._thread is None:
            f.flush()
        elif f.mark_queued():
            self._queue.put(f)

    def count(self, stat: str) -> None:
        """Counters touched from the writer thread and the loop thread."""
        with self._stats_lock:
            setattr(self, stat, getattr(self, stat) + 1)

    def _arm_timer(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        for f in list(self._files.values()):
            if f.pending():
                self.flushed_by_timer += 1
                self.request_flush(f)
        self._arm_timer()

    def _writer(self) -> None:
        while (f := self._queue.get()) is not None:
            f.flush()
