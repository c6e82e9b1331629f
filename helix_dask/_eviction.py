"""Eviction: artifacts leave the store, least value per byte first, to make room for a result
or to fit a lowered budget; from the ledger at once, then their catalog row and files on the
writer thread, never one that a running plan loads or a live lease of any process protects."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._catalog_writes import artifact_removal
from ._events import Decision, EventKind, EventRecord
from ._ledger import StorageLedger
from ._run import Run, RunBook
from ._write_queue import WriteQueue
from .catalog import CatalogWriter
from .materializer import Stored, choose_evictions

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from ._store_base import ArtifactStore

logger = logging.getLogger("helix_dask")


class Eviction:
    """Removes stored artifacts for the materialization flow and for a lowered budget."""

    def __init__(
        self,
        ledger: StorageLedger,
        book: RunBook,
        catalog: CatalogWriter,
        writer: WriteQueue,
        artifacts: ArtifactStore,
        scheduler: Scheduler,
    ) -> None:
        self.ledger = ledger
        self.book = book
        self.catalog = catalog
        self.writer = writer
        self.artifacts = artifacts
        self.scheduler = scheduler

    def evict(self, victims: Iterable[Stored], why: str, run: Run | None) -> None:
        """Remove artifacts: from the ledger at once (no plan loads them any more), then the
        catalog row and the files, in that order, on the writer thread."""
        events = []
        protected = self.protected()
        for v in victims:
            if v.signature in protected:
                continue
            row = self.ledger.remove(v.signature)
            reason = f"{why}; it saved {v.density * 1e6:.3f}s per MB"
            if run is not None:
                run.event(EventKind.EVICTED, v.name, v.signature, v.nbytes, reason)
            else:
                events.append(
                    EventRecord(
                        time.time(),
                        None,
                        EventKind.EVICTED,
                        v.signature,
                        v.name,
                        v.nbytes,
                        reason,
                    )
                )
            self.writer.submit(
                artifact_removal(v.signature, row, self.artifacts, self.ledger, self.scheduler)
            )
            logger.info("evicted %s-%s (%d bytes): %s", v.name, v.signature[:8], v.nbytes, why)
        if events:
            self.writer.submit(lambda c: c.record_events(events))

    def protected(self) -> set[str]:
        """Artifacts no eviction may remove: what a running plan of this process loads (until
        its run ends: a lazily loaded array reads its chunks later), and what a live lease of
        any process sharing the catalog protects."""
        own = {
            n.identity
            for r in self.book.running()
            for n in r.nodes.values()
            if n.decision is Decision.LOAD
        }
        try:
            leased = self.catalog.leased()
        except sqlite3.Error as e:
            logger.warning("helix could not read the catalog's leases, evicting nothing: %s", e)
            return {r.signature for r in self.ledger.rows()}
        return own | set(self.book.protected) | leased

    def fit_budget(self, stored: Callable[[], list[Stored]]) -> None:
        """After the budget shrank: evict least value per byte (``stored``: every artifact with
        its value) until the store fits."""
        budget = self.ledger.budget
        over = self.ledger.stored_bytes - budget
        if over <= 0:
            return
        victims = choose_evictions(stored(), over, self.protected())
        self.evict(victims or [], f"budget lowered to {budget} bytes", None)
