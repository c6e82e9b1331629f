"""What the scheduler answers its clients: a run's report (once the client's graphs arrived,
the run finished and its catalog writes applied), the store's state, the settings in force, the
run-time dependencies recorded for signatures, and the client's digests for its next plan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ._catalog_writer import CatalogWriter
from ._config import catalog_timeout
from ._events import report_to_dict
from ._ledger import StorageLedger
from ._run import RunBook
from ._settings import Settings
from ._write_queue import WriteQueue

logger = logging.getLogger("helix_dask")


class ClientHandlers:
    """The scheduler handlers ``helix_run``, ``helix_info``, ``helix_settings``,
    ``helix_requirements`` and ``helix_digests``, and the stream handler ``helix-mark``."""

    def __init__(
        self,
        settings: Settings,
        book: RunBook,
        ledger: StorageLedger,
        catalog: CatalogWriter,
        writer: WriteQueue,
        digests: dict[str, dict[str, str]],
    ) -> None:
        self.resolved = settings
        self.book = book
        self.ledger = ledger
        self.catalog = catalog
        self.writer = writer
        self.digests = digests
        """Client id -> its current digests of run-time dependencies (read by the next plan)."""
        self._marks: dict[str, asyncio.Event] = {}

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The comm handlers, by the name clients call them with."""
        return {
            "helix_run": self.handle_run,
            "helix_info": self.handle_info,
            "helix_settings": self.handle_settings,
            "helix_requirements": self.handle_requirements,
            "helix_digests": self.handle_digests,
        }

    def handle_mark(self, token: str, client: str | None = None, **kwargs: Any) -> None:
        """Sent by ``hx.last_run`` on the client's stream, after its graphs: ordered behind
        them."""
        self._marks.setdefault(token, asyncio.Event()).set()

    async def handle_run(
        self,
        client: str | None = None,
        version: int | None = None,
        timeout: float = 60.0,
        mark: str | None = None,
    ) -> dict[str, Any] | None:
        """The report of ``version`` (default: the client's last run), once it has finished
        and its catalog writes are applied. ``mark``: a token the client sent on its stream
        after its graphs; the answer waits for it, so every graph it sent before is counted
        (this call comes on another connection and can overtake them)."""
        if mark is not None:
            event = self._marks.setdefault(mark, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                logger.warning("helix never received the client's mark %s", mark)
            self._marks.pop(mark, None)
        if version is None:
            version = self.book.last_by_client.get(client) if client else self._last_version()
        if version is None:
            return None
        run = self.book.runs.get(version)
        if run is not None and not await run.wait(timeout):
            logger.warning("helix run v%d still has %d pending nodes", version, run.pending)
        await self.writer.drained()
        if run is not None:
            return report_to_dict(run.report())
        try:
            return report_to_dict(self.catalog.run(version))
        except KeyError:  # never recorded, and no longer in memory
            return None

    def _last_version(self) -> int | None:
        return max(self.book.runs) if self.book.runs else self.catalog.last_version()

    def handle_info(self) -> dict[str, Any]:
        """Where the store is and how full it is."""
        s = self.resolved
        return {
            "store": s.store,
            "budget": s.bytes,
            "stored_bytes": self.ledger.stored_bytes,
            "reserved_bytes": self.ledger.reserved,
            "policy": s.policy,
            "running": [r.version for r in self.book.running()],
        }

    def handle_settings(self) -> list[str]:
        """The settings in force: store, budget (as configured), policy, workflow, solver."""
        return list(self.resolved.as_tuple())

    def handle_requirements(self, signatures: list[str]) -> list[str]:
        """The run-time dependencies recorded for these signatures, for the client to digest."""
        self.writer.flush(timeout=catalog_timeout())
        found: set[str] = set()
        for req in self.catalog.requirements(signatures).values():
            found.update(req)
        return sorted(found)

    def handle_digests(self, client: str, digests: dict[str, str]) -> None:
        """A client's current digests of run-time dependencies, for its next graph."""
        self.digests.setdefault(client, {}).update(digests)
