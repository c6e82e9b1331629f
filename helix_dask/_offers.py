"""Workers' offers and write reports: a computed result's effective signature is settled from
what it required and its parents', the materialization flow decides whether the store keeps
it, the verdict goes back to the worker holding it, and a finished write is committed to the
ledger and the catalog, or its reservation released."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._catalog_writes import artifact_record
from ._events import Materialization
from ._flow import CHILDREN_TIMEOUT, MaterializationFlow
from ._ledger import StorageLedger
from ._progress import Progress
from ._requirements import effective_signature
from ._run import NodeProgress, RunBook
from ._write_queue import WriteQueue
from .catalog import ArtifactRow
from .materializer import Policy, Verdict
from .worker_plugin import VERDICT

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from ._store_base import ArtifactStore

logger = logging.getLogger("helix_dask")


class Offers:
    """Answers the worker twin's offers of finished results and reports of finished writes."""

    def __init__(
        self,
        scheduler: Scheduler,
        book: RunBook,
        ledger: StorageLedger,
        flow: MaterializationFlow,
        progress: Progress,
        writer: WriteQueue,
        artifacts: ArtifactStore,
        policy: Policy,
        policy_name: str,
        budget: int,
    ) -> None:
        self.scheduler = scheduler
        self.book = book
        self.ledger = ledger
        self.flow = flow
        self.progress = progress
        self.writer = writer
        self.artifacts = artifacts
        self.policy = policy
        self.policy_name = policy_name
        self.budget = budget
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(
        self,
        key: str,
        signature: str,
        compute_seconds: float,
        nbytes: int,
        metrics: dict[str, float] | None = None,
        requires: dict[str, str] | None = None,
        traced: list[str] | None = None,
        worker: str | None = None,
        outdated: str | None = None,
        offer: int | None = None,
        skip: list[str] | None = None,
        **extra: Any,
    ) -> None:
        """A worker finished a helix task (a stream message): settle its effective signature,
        then decide whether it stores the result (see
        :class:`~helix_dask._flow.MaterializationFlow`) and, when the worker holds it
        (``offer``: its id there), send the verdict back.

        ``requires``: what the result required beyond its static signature (dependency ->
        digest where it ran; None: could not be told, so it is never stored); ``traced``: the
        dependencies a trace of its code found (None: not traced); ``outdated``: project code
        the worker ran in another version than the client signed (its result is not stored);
        ``skip``: the outcome and reason of a result the worker did not keep (it could never be
        stored). Unknown keyword arguments (fields a newer worker sends) are accepted and
        ignored."""
        node = self.book.offered(key, signature)
        if node is None:
            self._answer(worker, offer)
            return
        node.compute_seconds = compute_seconds
        node.nbytes = nbytes
        node.metrics = metrics
        skipped = Verdict(Materialization(skip[0]), skip[1]) if skip else None
        found = _Found(requires, traced, worker, outdated)
        if self._waiting_parents(node):
            self._spawn(self._offer_later(node, found, offer, skipped))
        else:
            why = self._found(node, self._identify(node, requires), found)
            self._decide(node, why, worker, offer, skipped)

    async def _offer_later(
        self, node: NodeProgress, found: _Found, offer: int | None, skipped: Verdict | None
    ) -> None:
        """The rest of an offer whose parents' identities are still on their way."""
        try:
            for source in self._waiting_parents(node):
                await asyncio.wait_for(source.wait_identified(), CHILDREN_TIMEOUT)
        except TimeoutError:
            node.identify(None)
            why = "its inputs were not identified in time"
        else:
            why = self._identify(node, found.requires)
        self._decide(node, self._found(node, why, found), found.worker, offer, skipped)

    def _found(self, node: NodeProgress, why: str, found: _Found) -> str:
        """Record what an identified node required where it ran (the requirements of its code,
        read by later plans, whether or not its result is stored); the reason its result
        cannot be stored, or ''."""
        if found.outdated:
            why = (
                f"worker {found.worker} ran {found.outdated} in another version than the client "
                "signed (a module loaded before it was edited); restart the workers"
            )
        requires, traced = found.requires, found.traced
        if requires is not None and node.meta.deterministic and self.policy.name != "none":
            # (under policy 'none' nothing was traced: what was recorded before stays)
            signature, code, eff = node.meta.signature, node.meta.code, node.eff
            self.writer.submit(
                lambda c: c.record_requirements(signature, requires, code, traced, eff)
            )
        return why

    def _waiting_parents(self, node: NodeProgress) -> list[NodeProgress]:
        """The parents whose effective signature is not settled yet."""
        out = []
        for p in node.meta.parents:
            source = self.book.producers.get(p) or node.run.nodes.get(p)
            if source is not None and not source.identified:
                out.append(source)
        return out

    def _identify(self, node: NodeProgress, requires: Mapping[str, str] | None) -> str:
        """Settle a computed node's effective signature from what it required and its
        parents' (all settled by now); the reason its result cannot be stored, or ''."""
        eff: str | None = None
        try:
            if not node.meta.deterministic:
                eff = node.meta.signature
                return "task is not deterministic"
            parents = []
            for p in node.meta.parents:
                source = self.book.producers.get(p) or node.run.nodes.get(p)
                if source is None or source.eff is None or not source.identified:
                    return f"input {p} could not be verified"
                parents.append((source.meta.signature, source.eff))
            if requires is None:
                return "what it required at run time could not be digested"
            eff = effective_signature(node.meta.signature, requires, parents)
            return ""
        finally:
            node.identify(eff)

    def _decide(
        self,
        node: NodeProgress,
        why: str,
        worker: str | None,
        offer: int | None,
        skipped: Verdict | None,
    ) -> None:
        """Decide an identified node's storage now, or once its children are decided."""
        if why:
            verdict: Verdict | None = Verdict(Materialization.SKIPPED, why)
        else:
            verdict = self.flow.decide_now(node, skipped if offer is None else None)
        if verdict is None:
            self._spawn(self._decide_later(node, worker, offer))
        else:
            self._conclude(node, verdict, worker, offer)

    async def _decide_later(self, node: NodeProgress, worker: str | None, offer: int | None):
        self._conclude(node, await self.flow.decide_later(node), worker, offer)

    def _conclude(
        self, node: NodeProgress, verdict: Verdict, worker: str | None, offer: int | None
    ) -> None:
        if verdict.store:
            node.writer = worker
            self._answer(worker, offer, store=True, reserved=node.reserved, signature=node.identity)
            return
        if not node.done:
            self.progress.settle(node, verdict.outcome, verdict.reason)
        self._answer(worker, offer)

    def _answer(self, worker: str | None, offer: int | None, **answer: Any) -> None:
        """Send a held result's verdict to its worker, with the limits it may decide alone."""
        if offer is None or worker is None:
            return
        comm = self.scheduler.stream_comms.get(worker)
        if comm is not None:
            comm.send({"op": VERDICT, "offer": offer, "limits": self.limits(), **answer})

    def limits(self) -> list[Any]:
        """The :class:`~helix_dask.materializer.StorageLimits` workers decide alone with."""
        return [self.policy_name, self.policy.evicts, self.budget, self.ledger.free]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def written(
        self,
        key: str,
        signature: str,
        reserved: int,
        ok: bool,
        error: str = "",
        location: str = "",
        kind: str = "",
        nbytes: int = 0,
        seconds: float = 0.0,
        let_go: bool = False,
        **extra: Any,
    ) -> None:
        """A worker finished (or failed) writing an artifact (a stream message): commit it to
        the ledger and the catalog, or say why not. ``let_go``: the worker no longer held the
        result when its verdict came (Dask had released it; see ``helix.worker-hold``)."""
        self.ledger.release(signature, reserved)
        node = self.book.writing.pop(signature, None)
        if let_go:
            logger.info("helix did not store %s: %s", key, error)
            if node is not None:
                self.progress.settle(node, Materialization.SKIPPED, error)
            return
        if not ok:
            logger.warning("helix could not store %s: %s", key, error)
            if node is not None:
                self.progress.settle(node, Materialization.FAILED, error)
            return
        if not self.ledger.fits_written(nbytes):
            # Its written size exceeded what was reserved (in-memory sizes are estimates).
            # Unless another process's write of the same result committed it first.
            self.writer.submit(lambda c: c.discard_unrecorded(signature, self.artifacts.delete))
            if node is not None:
                self.progress.settle(
                    node, Materialization.NO_SPACE, "written size exceeded the budget; removed"
                )
            return
        now = time.time()
        row = ArtifactRow(
            signature,
            node.meta.name if node else key,
            location,
            kind,
            nbytes,
            seconds,
            None,
            now,
            now,
            node.recompute if node else 0.0,
        )
        self.ledger.commit(row)
        self.writer.submit(artifact_record(row, self.artifacts, self.ledger, self.scheduler))
        if node is not None:
            node.write_seconds = seconds
            self.progress.settle(node, Materialization.STORED, node.reason)

    def worker_left(self, worker: str) -> None:
        """A worker left: the writes it had accepted will never report. Release their
        reservations and settle their nodes, so the budget stays exact and the run ends."""
        lost = [(s, n) for s, n in self.book.writing.items() if n.writer == worker]
        for signature, node in lost:
            self.book.writing.pop(signature, None)
            self.ledger.release(signature, node.reserved)
            logger.warning(
                "helix lost the write of %s: worker %s left before committing it",
                node.key,
                worker,
            )
            self.progress.settle(
                node,
                Materialization.FAILED,
                f"worker {worker} left while writing it; nothing was committed",
            )


@dataclasses.dataclass(frozen=True, slots=True)
class _Found:
    """What an offer says its result required where it ran (see :meth:`Offers.offer`)."""

    requires: Mapping[str, str] | None
    traced: list[str] | None
    worker: str | None
    outdated: str | None
