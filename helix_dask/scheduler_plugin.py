"""The scheduler half: thin hooks that plan each graph with helix tasks, route progress to its
:class:`~helix_dask._run.Run`, hand offers to the materialization flow, keep the storage
ledger, and install the worker twin. Catalog writes go through a write queue (one thread)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

from . import _config
from ._errors import HelixStoreError
from ._events import (
    Decision,
    EventKind,
    EventRecord,
    Materialization,
    RunStatus,
    report_to_dict,
)
from ._flow import CHILDREN_TIMEOUT, MaterializationFlow
from ._ledger import StorageLedger
from ._location import catalog_dir
from ._owner import Owner, new_owner, retire
from ._run import NodeProgress, Run, RunBook
from ._settings import Settings
from ._trace import DIST, TRACE_NEW, effective_signature
from ._wire import ANNOTATION, NodeMeta
from ._write_queue import WriteQueue
from .catalog import ArtifactRow, CatalogWriter
from .costs import CostModel, compute_seconds
from .materializer import StorageLimits, Stored, Verdict, choose_evictions
from .planning import plan_update
from .rewrite import SMALL_LOAD, rewrite
from .worker_plugin import OFFER, VERDICT, WRITTEN, HelixWorkerPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger("helix_dask")

PLUGIN_NAME = "helix"
REPLANS = 3
"""Times a graph is planned again when loads it planned were removed before their leases."""

_STARTED: weakref.WeakSet[HelixSchedulerPlugin] = weakref.WeakSet()
"""Plugin instances started in this process and not closed (to retire a replaced one)."""


class HelixSchedulerPlugin(SchedulerPlugin):
    """Plans, rewrites and records every graph that contains helix tasks.

    Settings not given are read from ``helix.*`` in the scheduler's dask.config when the plugin
    starts (where the store is), with code defaults when unset. Graphs without helix tasks pass
    through untouched.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        store: str | None = None,
        budget: int | str | None = None,
        policy: str | None = None,
        workflow: str | None = None,
        solver: str | None = None,
    ) -> None:
        self.requested = Settings.requested(store, budget, policy, workflow, solver)

    def settings(self) -> tuple[str, str, str, str, str]:
        """The settings in force: store, budget (as configured), policy, workflow, solver."""
        return self.resolved.as_tuple()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        threading.Thread(target=_warm_planner, name="helix-warm", daemon=True).start()
        self.scheduler = scheduler
        self.resolved = s = self.requested.resolve()
        self.store, self.budget, self.workflow, self.solver = s.store, s.bytes, s.workflow, s.solver
        self.policy_name, self.policy = s.policy, s.policy_object()
        self.owner: Owner = new_owner()
        await _retire_replaced(scheduler, self)
        _STARTED.add(self)
        self._open_catalog()
        # Imported here: the client only pickles this plugin, and Zarr takes 0.2 s to import.
        from ._scheduler_api import install_handlers
        from .dashboard import install_routes
        from .store import open_store

        self.artifacts = open_store(self.store)
        self.artifacts.sweep_temporaries()  # writes a killed worker left behind
        self.ledger = StorageLedger(self.budget, self.catalog.artifacts())
        self.book = RunBook()
        self._model: CostModel | None = None
        self.flow = MaterializationFlow(
            self.policy, self.ledger, self.book, scheduler, self.cost_model, self._evict
        )
        self._unrecorded = itertools.count(-1, -1)
        """Provisional ids of versions the catalog could not record when they were planned."""
        self._tasks: set[asyncio.Task[None]] = set()
        # Offers and write reports come on the workers' streams: routed to whichever helix
        # plugin is installed when they arrive (an unknown op would close the stream).
        scheduler.stream_handlers[OFFER] = functools.partial(_route, scheduler, "handle_offer")
        scheduler.stream_handlers[WRITTEN] = functools.partial(_route, scheduler, "handle_written")
        scheduler.handlers.update(
            {
                "helix_run": self.handle_run,
                "helix_info": self.handle_info,
                "helix_settings": self.handle_settings,
                "helix_requirements": self.handle_requirements,
                "helix_digests": self.handle_digests,
            }
        )
        install_handlers(scheduler, self)  # catalog reads and the pickle key, for elsewhere
        # Sent by hx.last_run on the client's stream, after its graphs: ordered behind them.
        scheduler.stream_handlers["helix-mark"] = self._mark
        self._marks: dict[str, asyncio.Event] = {}
        self._digests: dict[str, dict[str, str]] = {}
        """Client id -> its current digests of run-time dependencies, for its next graph."""
        self._producers: dict[str, NodeProgress] = {}
        """Key of a helix result on the cluster -> the node (of whichever run) that computed
        or loaded it: where its effective signature is settled."""
        await scheduler.register_worker_plugin(
            None,
            dumps(HelixWorkerPlugin(self.store, StorageLimits(*self.limits()))),
            name=PLUGIN_NAME,
            idempotent=False,
        )
        logger.info(
            "helix store %s, budget %d bytes, policy %s", self.store, self.budget, self.policy_name
        )
        self._enforce_budget()
        await self.writer.drained()  # hx.setup returns once the store fits its budget
        install_routes(scheduler, self)
        self._closed = False

    def _open_catalog(self) -> None:
        """Two connections: the event loop's (reads, and recording a version before its graph
        is rewritten, waiting at most ``helix.catalog-timeout``) and the write queue's; then
        versions whose owner is gone are marked interrupted."""
        where = catalog_dir(self.store)
        self.catalog = CatalogWriter(where, timeout=_catalog_timeout())
        self.writer = WriteQueue(CatalogWriter(where))
        try:
            gone = self.catalog.interrupt_dead_versions()
        except sqlite3.Error as e:
            logger.warning("helix could not check for versions left running: %s", e)
        else:
            if gone:
                logger.warning(
                    "helix marked versions %s interrupted: the scheduler running them is gone",
                    ", ".join(f"v{v}" for v in gone),
                )

    async def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _STARTED.discard(self)
        for run in list(self.book.running()):
            self._finish(run, RunStatus.INTERRUPTED)
        await asyncio.to_thread(self.writer.close)
        retire(self.owner)
        self.writer.catalog.close()
        self.catalog.close()

    # -- plan and rewrite -----------------------------------------------------------------------

    def update_graph(
        self,
        scheduler: Scheduler,
        *,
        client: str,
        keys: set,
        tasks: list,
        stimulus_id: str,
        **kwargs: Any,
    ) -> None:
        helix: dict[str, tuple[TaskState, NodeMeta]] = {}
        for k in tasks:
            ts = scheduler.tasks.get(k)
            ann = ts.annotations.get(ANNOTATION) if ts is not None and ts.annotations else None
            if ann is not None:
                helix[k] = (ts, NodeMeta.from_annotation(ann))
        if not helix:
            return
        run = Run(0, self.workflow, _message(helix, keys), None)
        run.outputs = frozenset(map(str, keys))
        digests = self._digests.pop(client, {})
        planned = self._plan(helix, keys, digests, stimulus_id)
        recorded = False
        if planned is not None:
            run.predicted = planned.cost
            planned, recorded = self._record(
                run, keys, planned, lambda: self._plan(helix, keys, digests, stimulus_id)
            )
        if planned is not None:
            _fill(run, helix, planned.decisions, planned.estimates, planned.identities)
            run.predicted = planned.cost
            self.writer.submit(_nodes(run, helix.values()))
            try:
                small = [k for k, sig in planned.loads.items() if self._small(sig)]
                tasks = rewrite(
                    scheduler, planned.loads, planned.pruned, self.store, stimulus_id, small
                )
            except Exception:  # the scheduler would swallow it into an INFO line
                logger.warning(
                    "helix could not rewrite version %d; its graph runs unchanged as plain Dask",
                    run.version,
                    exc_info=True,
                )
                run = self._unplanned(run, helix, keys, recorded=True)
            else:
                for k, lkey in tasks.items():
                    run.nodes[k].load_task = lkey
                for k, why in planned.stale.items():
                    run.event(EventKind.STALE, run.nodes[k], reason=why)
        else:
            run = self._unplanned(run, helix, keys, recorded=recorded)
        decisions = {k: n.decision for k, n in run.nodes.items()}
        self._ask_traces(helix, decisions)
        for k, node in run.nodes.items():
            if node.decision in (Decision.COMPUTE, Decision.LOAD):
                self._producers[k] = node
        self.book.open(run, client)
        if run.pending == 0:
            self._finish(run)

    def _plan(
        self,
        helix: Mapping[str, tuple[TaskState, NodeMeta]],
        keys: set,
        digests: Mapping[str, str],
        stimulus_id: str,
    ) -> Any:
        """The plan of a new graph (an UpdatePlan), or None when planning failed (logged).

        Waits at most ``helix.catalog-timeout`` for this process's queued catalog writes
        (planning reads what earlier runs measured), then takes in what other processes
        committed to or removed from the store meanwhile."""
        try:
            if self.writer.flush(timeout=_catalog_timeout()):
                self._sync_ledger()
            self._model = model = self.cost_model(refit=True)
            held = {k: n.eff for k, n in self._producers.items() if n.eff is not None}
            return plan_update(
                helix,
                keys,
                self.catalog,
                self.ledger,
                self.artifacts,
                model.io,
                self.solver,
                digests,
                held,
            )
        except Exception:  # the scheduler would swallow it into an INFO line
            logger.warning(
                "helix could not plan a graph (%s); it runs unchanged as plain Dask",
                stimulus_id,
                exc_info=True,
            )
            return None

    def _small(self, signature: str) -> bool:
        """Whether the committed artifact ``signature`` is small enough to load with others."""
        row = self.ledger.row(signature)
        return row is not None and row.nbytes <= SMALL_LOAD

    def _sync_ledger(self) -> None:
        """Re-read the committed artifacts when the catalog's differ from the ledger's (another
        process sharing the store stored or removed some): one aggregate query per plan."""
        if self.catalog.artifact_totals() != (len(self.ledger.rows()), self.ledger.stored_bytes):
            self.ledger.reload(self.catalog.artifacts())

    def _record(
        self, run: Run, keys: set, planned: Any, replan: Callable[[], Any]
    ) -> tuple[Any, bool]:
        """Record the planned version (its id comes from the catalog) and leases on what it
        loads, in one transaction, before its graph is rewritten (its code and nodes follow
        through the write queue). Waits at most ``helix.catalog-timeout`` (on the event loop).

        The leases keep eviction and ``helix gc`` in other processes from removing a planned
        load. An artifact another process removed between the plan and the lease is found
        then: the graph is planned again (``replan``) without it, up to :data:`REPLANS` times,
        so the run computes what it can no longer load instead of failing a load.

        Returns the plan to run (None: the graph runs unrewritten) and whether the version
        was recorded; a catalog that cannot be written is a WARNING, and nothing is loaded or
        stored then."""
        recorded = False
        try:
            with self.catalog.batch():
                _begin(run, keys, self.owner)(self.catalog)
                gone = self.catalog.lease(run.version, planned.loads.values(), self.owner)
            recorded = True
            for _ in range(REPLANS):
                if not gone:
                    break
                logger.info(
                    "helix v%d planned to load %d artifacts another process removed meanwhile; "
                    "planning again",
                    run.version,
                    len(gone),
                )
                planned = replan()
                if planned is None:
                    return None, recorded
                gone = self.catalog.lease(run.version, planned.loads.values(), self.owner)
        except (sqlite3.Error, OSError, HelixStoreError) as e:
            logger.warning(
                "helix could not record a new version in the catalog %s within %.1fs (%s); "
                "its graph runs unchanged as plain Dask, nothing is loaded or stored",
                self.catalog.path,
                _catalog_timeout(),
                e,
            )
            return None, recorded
        if gone:  # removed again and again: these loads fall back to computing
            logger.info(
                "helix v%d plans to load %d artifacts removed meanwhile; they are computed",
                run.version,
                len(gone),
            )
        return planned, recorded

    def _unplanned(
        self,
        planned: Run,
        helix: Mapping[str, tuple[TaskState, NodeMeta]],
        keys: set,
        *,
        recorded: bool,
    ) -> Run:
        """The run of a graph that runs unrewritten: its fresh nodes compute. Recorded later
        through the write queue (under a new id) when it was not recorded already."""
        version = planned.version if recorded else next(self._unrecorded)
        run = Run(version, planned.workflow, planned.message, None)
        run.outputs, run.unplanned = planned.outputs, True
        decisions = {
            k: Decision.COMPUTE if f else Decision.IN_CLUSTER for k, f in _fresh(helix).items()
        }
        _fill(run, helix, decisions, {}, {})
        if recorded:
            nodes = list(run.nodes.values())  # their records are built on the writer thread
            self.writer.submit(lambda c: c.record_nodes(run.version, [n.record() for n in nodes]))
        else:
            version, nodes = _begin(run, keys, self.owner), _nodes(run, helix.values())
            self.writer.submit(lambda c: (version(c), nodes(c)))
        return run

    def cost_model(self, refit: bool = False) -> CostModel:
        """The cost model of the current plan (refit from the catalog once per plan)."""
        if self._model is None or refit:
            from .planning import cost_model

            self._model = cost_model(self.catalog, self.ledger, self.workflow, self.store)
        return self._model

    # -- progress -------------------------------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            self._producers.pop(key, None)
        if key not in self.book.watch:
            return
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
                self._settle(node)
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
            self._settle(node)

    def _reached_memory(self, key: str, node: NodeProgress, kwargs: Mapping[str, Any]) -> None:
        seconds = compute_seconds(kwargs.get("startstops", ()))
        node.nbytes = kwargs.get("nbytes", node.nbytes)
        node.in_memory = True
        if node.compute_seconds is None:
            node.compute_seconds = seconds  # the worker's offer may come first

    # -- materialization (called by the worker twin) --------------------------------------------

    def handle_offer(
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
            source = self._producers.get(p) or node.run.nodes.get(p)
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
                source = self._producers.get(p) or node.run.nodes.get(p)
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
            self._settle(node, verdict.outcome, verdict.reason)
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

    def _ask_traces(
        self,
        helix: Mapping[str, tuple[TaskState, NodeMeta]],
        decisions: Mapping[str, Decision],
    ) -> None:
        """Tell workers to trace nodes whose code was never traced or was found to reach project
        code its signature misses (every node, with ``helix.trace: always``); else which
        dependencies (libraries) earlier traces of the code found. Under policy ``none``
        nothing is traced unless ``always``."""
        always = str(_config.get("trace")) == "always"
        if self.policy.name == "none" and not always:
            return  # nothing will be stored: nothing to verify later, so nothing is traced
        computed = [k for k, d in decisions.items() if d is Decision.COMPUTE]
        metas = [helix[k][1] for k in computed]
        if not any(m.deterministic for m in metas):
            return
        traced = self.catalog.traced(m.code for m in metas if m.code)
        for k, m in zip(computed, metas, strict=True):
            if m.deterministic:
                known = traced.get(m.code)
                # Code known to reach project code the signature misses is traced every time:
                # another call may reach other code (a module imported by a computed name).
                dynamic = known is not None and any(not d.startswith(DIST) for d in known)
                if always or dynamic:
                    _ask_trace(helix[k][0], None)
                elif known is None:
                    _ask_trace(helix[k][0], None, new=True)
                else:
                    _ask_trace(helix[k][0], known)

    def handle_requirements(self, signatures: list[str]) -> list[str]:
        """The run-time dependencies recorded for these signatures, for the client to digest."""
        self.writer.flush(timeout=_catalog_timeout())
        found: set[str] = set()
        for req in self.catalog.requirements(signatures).values():
            found.update(req)
        return sorted(found)

    def handle_digests(self, client: str, digests: dict[str, str]) -> None:
        """A client's current digests of run-time dependencies, for its next graph."""
        self._digests.setdefault(client, {}).update(digests)

    def handle_written(
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
                self._settle(node, Materialization.SKIPPED, error)
            return
        if not ok:
            logger.warning("helix could not store %s: %s", key, error)
            if node is not None:
                self._settle(node, Materialization.FAILED, error)
            return
        if not self.ledger.fits_written(nbytes):
            # Its written size exceeded what was reserved (in-memory sizes are estimates).
            # Unless another process's write of the same result committed it first.
            self.writer.submit(lambda c: c.discard_unrecorded(signature, self.artifacts.delete))
            if node is not None:
                self._settle(
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
        self.writer.submit(self._recording(row))
        if node is not None:
            node.write_seconds = seconds
            self._settle(node, Materialization.STORED, node.reason)

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
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
            self._settle(
                node,
                Materialization.FAILED,
                f"worker {worker} left while writing it; nothing was committed",
            )

    def _settle(
        self, node: NodeProgress, outcome: Materialization | None = None, reason: str = ""
    ) -> None:
        run = node.run
        if outcome is not None and not node.done:
            node.materialization = outcome
            node.reason = reason
            run.event(EventKind(outcome.value), node, reason=reason)
        if run.settle(node):
            self._finish(run)

    # -- budget and eviction --------------------------------------------------------------------

    def _evict(self, victims: Iterable[Stored], why: str, run: Run | None) -> None:
        """Remove artifacts: from the ledger at once (no plan loads them any more), then the
        catalog row and the files, in that order, on the writer thread."""
        events = []
        protected = self._protected()
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
            self.writer.submit(self._removal(v.signature, row))
            logger.info("evicted %s-%s (%d bytes): %s", v.name, v.signature[:8], v.nbytes, why)
        if events:
            self.writer.submit(lambda c: c.record_events(events))

    def _protected(self) -> set[str]:
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

    def _removal(self, signature: str, row: ArtifactRow | None):
        """The write that removes an evicted artifact: its row, then its files, unless a lease
        taken since (by another process) protects it; the ledger gets it back then."""
        artifacts, loop = self.artifacts, self.scheduler.loop

        def remove(c: CatalogWriter) -> None:
            if c.remove_unless_leased(signature, artifacts.delete) is None and row is not None:
                logger.info("helix kept %s: a plan of another process loads it", signature)
                loop.add_callback(self.ledger.commit, row)

        return remove

    def _recording(self, row: ArtifactRow):
        """The write that records a committed artifact, if its files are still there (another
        process may have removed it since)."""
        artifacts, loop = self.artifacts, self.scheduler.loop

        def record(c: CatalogWriter) -> None:
            if not c.add_artifact_if(row, lambda: artifacts.contains(row.signature)):
                logger.info("helix did not record %s: removed before it was", row.signature)
                loop.add_callback(self.ledger.remove, row.signature)

        return record

    def _enforce_budget(self) -> None:
        """After the budget shrank: evict least value per byte until the store fits."""
        over = self.ledger.stored_bytes - self.budget
        if over <= 0:
            return
        model = self.cost_model(refit=True)
        victims = choose_evictions(self.flow.stored_values(model), over, self._protected())
        self._evict(victims or [], f"budget lowered to {self.budget} bytes", None)

    # -- versions -------------------------------------------------------------------------------

    def _finish(self, run: Run, status: RunStatus | None = None) -> None:
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
        nodes = list(run.nodes.values())
        events = list(run.events)

        def write(c: CatalogWriter) -> None:
            # run.version is read here: an unrecorded run gets its id when its row is written.
            # On the writer thread, off the event loop; the rows of nodes nothing measured
            # (pruned, held on the cluster) were written whole when the run was planned.
            records = [n.record() for n in nodes if n.measured()]
            c.update_measurements(run.version, records)
            c.record_events(dataclasses.replace(e, version=run.version) for e in events)
            c.finish_version(run.version, str(status), run.time_saved, run.measured)

        self.writer.submit(write)

    def _mark(self, token: str, client: str | None = None, **kwargs: Any) -> None:
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
        return {
            "store": self.store,
            "budget": self.budget,
            "stored_bytes": self.ledger.stored_bytes,
            "reserved_bytes": self.ledger.reserved,
            "policy": self.policy_name,
            "running": [r.version for r in self.book.running()],
        }

    def handle_settings(self) -> list[str]:
        return list(self.settings())

    def leftovers(self) -> dict[str, Any]:
        """What is still held after every compute finished: empty when the plugin drained."""
        out: dict[str, Any] = {}
        if self.ledger.reserved:
            out["reserved_bytes"] = self.ledger.reserved
        running = [r.version for r in self.book.running()]
        if running:
            out["unfinished_runs"] = running
        if self.book.watch:
            out["watched_keys"] = sorted(self.book.watch)[:20]
        if self.book.writing:
            out["writes"] = sorted(self.book.writing)[:20]
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Found:
    """What an offer says its result required where it ran (see ``handle_offer``)."""

    requires: Mapping[str, str] | None
    traced: list[str] | None
    worker: str | None
    outdated: str | None


def _route(scheduler: Scheduler, handler: str, **msg: Any) -> None:
    """Hand a worker's stream message to the helix plugin; without one, let a held result go."""
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    method = getattr(plugin, handler, None)
    if method is not None:
        method(**msg)
    elif msg.get("offer") is not None and msg.get("worker") in scheduler.stream_comms:
        scheduler.stream_comms[msg["worker"]].send(
            {"op": VERDICT, "offer": msg["offer"], "store": False}
        )


def _ask_trace(ts: TaskState, deps: list[str] | None, *, new: bool = False) -> None:
    """Tell the worker to trace a node (``deps`` None), else which dependencies earlier traces
    of its code found (to digest where it runs). ``new``: no recorded trace has seen its code,
    so a worker that traced it already may reuse what it found (see ``_trace.learn``)."""
    ann = dict(ts.annotations[ANNOTATION])
    if deps is None:
        ann["trace"] = TRACE_NEW if new else True
    else:
        ann["deps"] = deps
    ts.annotations = {**ts.annotations, ANNOTATION: ann}


def _fresh(helix: Mapping[str, tuple[TaskState, NodeMeta]]) -> dict[str, bool]:
    """Per key: whether this graph runs its task (False: held or running on the cluster)."""
    return {k: ts.state == "released" and ts.run_spec is not None for k, (ts, _) in helix.items()}


def _message(helix: Mapping[str, tuple[TaskState, NodeMeta]], wanted: set) -> str:
    """The version's message: an output's (stamped at compute), else any node's (at build)."""
    for k in wanted:
        if k in helix and helix[k][1].message:
            return helix[k][1].message
    return next((m.message for _, m in helix.values() if m.message), "")


def _catalog_timeout() -> float:
    """Seconds the event loop may wait for the catalog (``helix.catalog-timeout``)."""
    return float(_config.get("catalog-timeout"))  # type: ignore[arg-type]


async def _retire_replaced(scheduler: Scheduler, new: HelixSchedulerPlugin) -> None:
    """Close the plugins of this scheduler that another ``hx.setup`` replaced (distributed
    removes them without closing them): their runs end as interrupted, their writes apply."""
    for old in list(_STARTED):
        if old is not new and old.scheduler is scheduler and old.name not in scheduler.plugins:
            await old.close()


def _fill(
    run: Run,
    helix: Mapping[str, tuple[TaskState, NodeMeta]],
    decisions: Mapping[str, Decision],
    estimates: Mapping[str, float],
    identities: Mapping[str, str | None],
) -> None:
    """Add a node per decision to ``run``; a node not computed is identified by the plan."""
    for k, d in decisions.items():
        node = NodeProgress(k, helix[k][1], d, estimates.get(k, 0.0), run)
        if d is not Decision.COMPUTE:
            node.eff = identities.get(k)
        run.add(node)


def _begin(run: Run, keys: set, owner: Owner) -> Callable[[CatalogWriter], None]:
    """The catalog write of a new version's row (``run.version`` becomes the id the catalog
    gives it)."""
    outputs = sorted(map(str, keys))

    def write(c: CatalogWriter) -> None:
        run.version = c.begin_version(
            run.workflow,
            run.message,
            outputs,
            run.predicted,
            started=run.started,
            owner=owner,
        )

    return write


def _nodes(run: Run, metas: Iterable[tuple[Any, NodeMeta]]) -> Callable[[CatalogWriter], None]:
    """The catalog writes of a version's code and planned nodes (after its row: ``run.version``
    is read when they are applied; the records are built then, on the writer's thread)."""
    codes = {m.code: m for _, m in metas if m.code}
    nodes = list(run.nodes.values())

    def write(c: CatalogWriter) -> None:
        for digest, m in codes.items():
            c.record_code(digest, m.sources, m.packages)
        c.record_nodes(run.version, [n.record() for n in nodes])

    return write


def _warm_planner() -> None:
    """Import the min-cut solver off the first plan's critical path (1-4 s for scipy)."""
    try:
        import scipy.sparse.csgraph  # noqa: F401
    except ImportError:  # networkx solver only
        pass
