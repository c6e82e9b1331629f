"""Run progress on the scheduler: task transitions measure each watched node as it reaches
memory or settle it as it fails, a run ends when its last node is settled, and a finished run's
measurements and events are written to the catalog."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._catalog_writes import version_end
from ._events import Decision, EventKind, Materialization, RunStatus
from ._ledger import StorageLedger
from ._run import NodeProgress, Run, RunBook
from ._write_queue import WriteQueue
from .costs import compute_seconds


class Progress:
    """Moves the runs of a :class:`RunBook` along to their end."""

    def __init__(self, book: RunBook, ledger: StorageLedger, writer: WriteQueue) -> None:
        self.book = book
        self.ledger = ledger
        self.writer = writer

    def transition(self, key: Any, start: str, finish: str, kwargs: Mapping[str, Any]) -> None:
        """The task ``key``, which a running version watches, went from ``start`` to
        ``finish`` (``kwargs``: the scheduler's transition arguments)."""
        node = self.book.computing(key)
        if node is None:
            return
        if finish == "memory" and start == "processing":
            if node.decision is Decision.LOAD:
                self._loaded(key, kwargs)
            else:
                self._reached_memory(key, node, kwargs)
        elif finish == "erred" or finish == "forgotten":
            # A task loading several nodes settles them all.
            while node is not None:
                node.run.failed = node.run.failed or finish == "erred"
                self.book.unwatch(key, node)
                self.settle(node)
                node = self.book.computing(key)

    def _loaded(self, key: str, kwargs: Mapping[str, Any]) -> None:
        """The load task ``key`` finished: every node it loads is in memory (a task loading
        several shares its time between them)."""
        nodes = self.book.loading(key)
        seconds = compute_seconds(kwargs.get("startstops", ())) / max(len(nodes), 1)
        for node in nodes:
            if len(nodes) == 1:
                node.nbytes = kwargs.get("nbytes", node.nbytes)
            elif (row := self.ledger.row(node.identity)) is not None:
                node.nbytes = row.nbytes
            node.in_memory = True
            node.load_seconds = seconds
            self.book.unwatch(key, node)
            now, sig = time.time(), node.identity
            self.ledger.loaded(sig, seconds, now)
            self.writer.submit(lambda c, sig=sig: c.record_load(sig, seconds))
            self.settle(node)

    def _reached_memory(self, key: str, node: NodeProgress, kwargs: Mapping[str, Any]) -> None:
        seconds = compute_seconds(kwargs.get("startstops", ()))
        node.nbytes = kwargs.get("nbytes", node.nbytes)
        node.in_memory = True
        if node.compute_seconds is None:
            node.compute_seconds = seconds  # the worker's offer may come first

    def settle(
        self, node: NodeProgress, outcome: Materialization | None = None, reason: str = ""
    ) -> None:
        """Mark ``node`` finished, with the outcome of its storage; end its run if it was the
        last pending node."""
        run = node.run
        if outcome is not None and not node.done:
            node.materialization = outcome
            node.reason = reason
            run.event(EventKind(outcome.value), node, reason=reason)
        if run.settle(node):
            self.finish(run)

    def finish(self, run: Run, status: RunStatus | None = None) -> None:
        """End ``run`` (``status`` by default from how it went) and write it to the catalog."""
        if status is None:
            status = (
                RunStatus.FAILED
                if run.failed
                else RunStatus.PLAN_FAILED
                if run.unplanned
                else RunStatus.DONE
            )
        run.finish(status)
        self.book.close(run)
        self.writer.submit(version_end(run, status))
