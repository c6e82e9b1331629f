"""The materialization flow: turns a worker's offer of a finished result into a verdict with
the pure policies of ``materializer.py``, reserving budget for what it accepts and making room
by eviction when the policy may evict."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ._events import Decision, Materialization
from ._ledger import StorageLedger
from ._run import NodeProgress, Run, RunBook
from .costs import CostModel
from .materializer import Candidate, Policy, Stored, Verdict, choose_evictions

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

CHILDREN_TIMEOUT = 600.0
"""Seconds a result's storage decision waits for its children's (then decides without)."""

Evict = Callable[[list[Stored], str, "Run | None"], None]
_Memo = dict[frozenset[str], tuple[Candidate, Verdict]]
"""Children kept -> the candidate and its verdict, within one decision (nothing is reserved
between the verdicts it holds, so the free bytes they were judged with are the same)."""


class MaterializationFlow:
    """Decides, for each offered result, whether the store keeps it.

    Unless the answer is the same whatever its children get, the decision waits until every
    child computed in this run is decided: a child that is stored makes this result needed less
    often (the child loads instead), and a child decided first counts this node's compute in
    what it would cost to recreate, so the policy prefers the result that covers more work. A
    result that cannot be stored (too large for the budget, opted out, skipped even with no
    child kept) is answered at once, so its worker releases it as plain Dask would.
    """

    def __init__(
        self,
        policy: Policy,
        ledger: StorageLedger,
        book: RunBook,
        scheduler: Scheduler,
        model: Callable[[], CostModel],
        evict: Evict,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.book = book
        self.scheduler = scheduler
        self._model = model
        self._evict = evict

    def precheck(self, node: NodeProgress) -> Verdict | None:
        """The verdict that no measurement changes (not deterministic, stored, too large), or
        None."""
        run, meta, nbytes = node.run, node.meta, node.nbytes or 0
        if run.unplanned:
            return Verdict(Materialization.SKIPPED, "the version could not be planned")
        if not meta.deterministic:
            return Verdict(Materialization.SKIPPED, "task is not deterministic")
        if self.policy.name == "none":
            return Verdict(Materialization.SKIPPED, "policy 'none' stores nothing")
        identity = node.identity
        if self.ledger.row(identity) is not None:
            return Verdict(Materialization.SKIPPED, "already stored")
        if self.ledger.writing(identity):
            return Verdict(Materialization.SKIPPED, "already being stored by another version")
        if nbytes > self.ledger.budget:
            return Verdict(
                Materialization.NO_SPACE,
                f"{nbytes} bytes exceed the whole budget of {self.ledger.budget} bytes",
            )
        return None

    def decide_now(self, node: NodeProgress, skip: Verdict | None = None) -> Verdict | None:
        """The verdict for ``node`` (computed; its measurements set), or None when it must
        wait for its children's (then :meth:`decide_later`). ``skip``: the worker already let
        the result go, for this reason. Reserves the bytes of an accepted result."""
        if (early := self.precheck(node)) is not None:
            return early
        if skip is not None:
            return skip
        model = self._model()
        children = self.book_children(node)
        names = [c.meta.name for c in children]
        # One walk over the ancestors per decision (a fan-in's root has the whole graph above).
        recompute = recompute_seconds(node.run, node.key)
        memo: _Memo = {}
        if any(not c.decided for c in children):
            alone = self._judged(node, (), model, names, recompute, memo)[1]
            if alone.outcome is Materialization.NO_SPACE and not self.policy.evicts:
                return alone
            if (
                alone.outcome is not Materialization.SKIPPED
                and not self._judged(node, names, model, names, recompute, memo)[1].store
            ):
                return None
        return self._final(node, model, children, recompute, memo)

    async def decide_later(self, node: NodeProgress) -> Verdict:
        """The verdict for ``node`` once its children computed in this run are decided."""
        run = node.run
        waits = [c.wait_decided() for c in self.book_children(node) if not c.decided]
        if waits:
            _, late = await asyncio.wait(waits, timeout=CHILDREN_TIMEOUT)
            for w in late:
                w.cancel()
        if node.done or run.finished is not None:  # settled meanwhile (interrupted)
            return Verdict(Materialization.SKIPPED, "the version ended first")
        if (early := self.precheck(node)) is not None:  # another version stored it meanwhile
            return early
        return self._final(node, self._model(), self.book_children(node))

    @staticmethod
    def book_children(node: NodeProgress) -> list[NodeProgress]:
        return node.run.child_nodes(node.key)

    def _final(
        self,
        node: NodeProgress,
        model: CostModel,
        children: list[NodeProgress],
        recompute: float | None = None,
        memo: _Memo | None = None,
    ) -> Verdict:
        """The policy's verdict with what is known of the children, evicting to make room when
        the policy may; reserves the bytes of an accepted result. ``recompute``: its
        recreation cost, when just computed; ``memo``: the verdicts judged so far."""
        run, meta, nbytes, identity = node.run, node.meta, node.nbytes or 0, node.identity
        names = [c.meta.name for c in children]
        kept = set(model.stored)
        for c in children:
            if c.accepted or c.decision is Decision.LOAD:
                kept.add(c.meta.name)
            elif c.materialization is not None:
                kept.discard(c.meta.name)  # decided in this run: not kept
        if recompute is None:
            recompute = recompute_seconds(run, node.key)
        candidate, verdict = self._judged(node, kept, model, names, recompute, memo or {})
        if verdict.outcome is Materialization.NO_SPACE and self.policy.evicts:
            victims = choose_evictions(
                self.stored_values(model),
                nbytes - self.ledger.free,
                self.book.protected.keys(),
                below_density=candidate.density,
            )
            if victims:
                self._evict(victims, f"made room for {meta.name}-{meta.signature[:8]}", run)
                verdict = self.policy.decide(candidate, self.ledger.free)
        if verdict.store:
            self.ledger.reserve(identity, nbytes)
            node.reserved = nbytes
            node.recompute = candidate.recompute_seconds
            node.accepted = True
            node.reason = verdict.reason
            self.book.writing[identity] = node
            node.decide()
        return verdict

    def _judged(
        self,
        node: NodeProgress,
        kept: Collection[str],
        model: CostModel,
        names: list[str],
        recompute: float,
        memo: _Memo,
    ) -> tuple[Candidate, Verdict]:
        """``node`` as a candidate and the policy's verdict on it now, judged once per set of
        its children kept (the only part of ``kept`` the reuse probability reads)."""
        key = frozenset(kept).intersection(names)
        found = memo.get(key)
        if found is None:
            candidate = self._candidate(node, key, model, names, recompute)
            found = memo[key] = (candidate, self.policy.decide(candidate, self.ledger.free))
        return found

    def _candidate(
        self,
        node: NodeProgress,
        kept: Collection[str],
        model: CostModel,
        names: Collection[str] = (),
        recompute: float | None = None,
    ) -> Candidate:
        """``node`` as a candidate, with the task names whose results are kept (``recompute``:
        its recreation cost, walked over its ancestors when not given)."""
        nbytes = node.nbytes or 0
        ts = self.scheduler.tasks.get(node.key)
        return Candidate(
            name=node.meta.name,
            signature=node.identity,
            compute_seconds=node.compute_seconds or 0.0,
            recompute_seconds=(
                recompute if recompute is not None else recompute_seconds(node.run, node.key)
            ),
            nbytes=nbytes,
            load_seconds=model.io.load_seconds(nbytes),
            is_output=node.key in node.run.outputs or (ts is not None and bool(ts.who_wants)),
            forced=node.meta.materialize,
            reuse_probability=model.read(node.meta.name, names, kept),
            write_seconds=model.io.write_seconds(nbytes),
        )

    def stored_values(self, model: CostModel) -> list[Stored]:
        """Every committed artifact with its expected saving per byte, for eviction."""
        current = self.book.current_signatures()
        children = self.book.newest_children()
        out = []
        for a in self.ledger.rows():
            p = model.reuse(a.name, a.signature, current, children.get(a.name, ()))
            saving = model.saving(p, a.recompute_seconds, a.nbytes, a.load_seconds)
            out.append(Stored(a.signature, a.name, a.nbytes, saving / max(a.nbytes, 1)))
        return out


def recompute_seconds(run: Run, key: str) -> float:
    """Its own compute plus every ancestor's that has no artifact to load instead."""
    total, seen, stack = 0.0, set(), [key]
    while stack:
        k = stack.pop()
        if k in seen or k not in run.nodes:
            continue
        seen.add(k)
        node = run.nodes[k]
        if k != key and (
            node.decision is Decision.LOAD or node.materialization is Materialization.STORED
        ):
            continue
        total += node.compute_seconds if node.compute_seconds is not None else node.estimate
        stack.extend(node.meta.parents)
    return total
