"""CatalogWriter writes off the scheduler's event loop: one thread applies them in order, batching
whatever queued while it was busy into one transaction."""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable

from ._catalog_writer import CatalogWriter
from ._errors import HelixStoreError

logger = logging.getLogger("helix_dask")

Write = Callable[[CatalogWriter], object]

_STOP = object()
_WAKE = object()
"""Queued by :meth:`WriteQueue.flush`: applies nothing, only ends the wait for more writes."""

LINGER = 0.05
"""Seconds the writer waits for more writes before applying a batch (none when flushed)."""


class WriteQueue:
    """Applies writes (functions of the catalog) in submission order on a daemon thread."""

    def __init__(self, catalog: CatalogWriter) -> None:
        self.catalog = catalog
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._submitted = 0
        self._applied = 0
        self._cond = threading.Condition()
        self._waiters = 0
        self._hurry = threading.Event()
        """Set by :meth:`flush` and :meth:`close`: end the wait for more writes now."""
        self._thread = threading.Thread(target=self._loop, name="helix-catalog", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> None:
        self._submitted += 1
        self._queue.put(write)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Let writes pile up for a moment (a busy scheduler sends a write per finished
            # task: one transaction each would keep this thread, and the GIL, busy), unless
            # someone waits for the writes (flush) or the queue is closing. The thread sleeps
            # on an event, not on the queue: a write submitted meanwhile wakes nothing, so the
            # event loop hands the GIL over once per batch instead of once per write.
            if batch[0] is not _STOP and batch[0] is not _WAKE and not self._waiters:
                self._hurry.wait(LINGER)
            self._hurry.clear()
            while True:  # and whatever queued meanwhile
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is _STOP for b in batch)
            writes = [b for b in batch if b is not _STOP and b is not _WAKE]
            if writes:
                self._apply(writes)
            if stop:
                return

    def _apply(self, writes: list) -> None:
        try:
            with self.catalog.batch():
                for w in writes:
                    w(self.catalog)
        except (sqlite3.Error, HelixStoreError, OSError):
            logger.warning("helix could not write %d catalog updates", len(writes), exc_info=True)
        with self._cond:
            self._applied += len(writes)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is applied; False on timeout."""
        target = self._submitted
        with self._cond:
            self._waiters += 1
            try:
                self._queue.put(_WAKE)  # wakes an idle writer
                self._hurry.set()  # ends a batch that is waiting for more writes
                return self._cond.wait_for(lambda: self._applied >= target, timeout)
            finally:
                self._waiters -= 1

    async def drained(self, timeout: float = 60.0) -> bool:
        """Wait (without blocking the event loop) until everything submitted so far is applied."""
        if self._applied >= self._submitted:
            return True
        return await asyncio.to_thread(self.flush, timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._hurry.set()
        self._thread.join(timeout=60)
