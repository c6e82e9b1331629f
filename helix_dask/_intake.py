"""Graph intake, the scheduler's side of planning: each graph submitted with helix tasks is
planned against what the catalog measured and the ledger holds
(:func:`~helix_dask.planning.plan_update`), recorded as a version with leases on what it loads,
rewritten to load and prune (:func:`~helix_dask.rewrite.rewrite`) and opened as a
:class:`~helix_dask._run.Run`; workers are told which of its nodes to trace."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import _config
from ._catalog_writes import version_nodes, version_row
from ._config import catalog_timeout
from ._distributions import DIST
from ._errors import HelixStoreError
from ._events import Decision, EventKind
from ._ledger import StorageLedger
from ._owner import Owner
from ._run import NodeProgress, Run, RunBook
from ._settings import Settings
from ._trace import TRACE_NEW
from ._wire import ANNOTATION, NodeMeta
from ._write_queue import WriteQueue
from .catalog import CatalogWriter
from .costs import CostModel
from .materializer import Policy
from .planning import plan_update
from .rewrite import SMALL_LOAD, rewrite

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

    from ._store_base import ArtifactStore

logger = logging.getLogger("helix_dask")

REPLANS = 3
"""Times a graph is planned again when loads it planned were removed before their leases."""


class GraphIntake:
    """Turns each submitted graph with helix tasks into a planned, recorded, rewritten run."""

    def __init__(
        self,
        scheduler: Scheduler,
        settings: Settings,
        policy: Policy,
        owner: Owner,
        catalog: CatalogWriter,
        writer: WriteQueue,
        ledger: StorageLedger,
        artifacts: ArtifactStore,
        book: RunBook,
        cost_model: Callable[..., CostModel],
    ) -> None:
        self.scheduler = scheduler
        self.store, self.workflow = settings.store, settings.workflow
        self.policy = policy
        self.owner = owner
        self.catalog = catalog
        self.writer = writer
        self.ledger = ledger
        self.artifacts = artifacts
        self.book = book
        self.cost_model = cost_model
        self.digests: dict[str, dict[str, str]] = {}
        """Client id -> its current digests of run-time dependencies, for its next graph."""
        self._unrecorded = itertools.count(-1, -1)
        """Provisional ids of versions the catalog could not record when they were planned."""

    def open(
        self, client: str, keys: set, tasks: list, stimulus_id: str, solver: str
    ) -> Run | None:
        """The run of a graph just submitted (``tasks``: its keys), planned with ``solver``
        (the plugin's, read per graph), recorded and rewritten, or run as plain Dask when any of
        that failed (logged); None when the graph has no helix tasks."""
        scheduler = self.scheduler
        helix: dict[str, tuple[TaskState, NodeMeta]] = {}
        for k in tasks:
            ts = scheduler.tasks.get(k)
            ann = ts.annotations.get(ANNOTATION) if ts is not None and ts.annotations else None
            if ann is not None:
                helix[k] = (ts, NodeMeta.from_annotation(ann))
        if not helix:
            return None
        run = Run(0, self.workflow, _message(helix, keys), None)
        run.outputs = frozenset(map(str, keys))
        digests = self.digests.pop(client, {})
        planned = self._plan(helix, keys, digests, stimulus_id, solver)
        recorded = False
        if planned is not None:
            run.predicted = planned.cost
            planned, recorded = self._record(
                run, keys, planned, lambda: self._plan(helix, keys, digests, stimulus_id, solver)
            )
        if planned is not None:
            _fill(run, helix, planned.decisions, planned.estimates, planned.identities)
            run.predicted = planned.cost
            self.writer.submit(version_nodes(run, helix.values()))
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
        return run

    def _plan(
        self,
        helix: Mapping[str, tuple[TaskState, NodeMeta]],
        keys: set,
        digests: Mapping[str, str],
        stimulus_id: str,
        solver: str,
    ) -> Any:
        """The plan of a new graph (an UpdatePlan), or None when planning failed (logged).

        Waits at most ``helix.catalog-timeout`` for this process's queued catalog writes
        (planning reads what earlier runs measured), then takes in what other processes
        committed to or removed from the store meanwhile."""
        try:
            if self.writer.flush(timeout=catalog_timeout()):
                self._sync_ledger()
            model = self.cost_model(refit=True)
            held = {k: n.eff for k, n in self.book.producers.items() if n.eff is not None}
            return plan_update(
                helix,
                keys,
                self.catalog,
                self.ledger,
                self.artifacts,
                model.io,
                solver,
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
                version_row(run, keys, self.owner)(self.catalog)
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
                catalog_timeout(),
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
            version, nodes = version_row(run, keys, self.owner), version_nodes(run, helix.values())
            self.writer.submit(lambda c: (version(c), nodes(c)))
        return run

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


def _ask_trace(ts: TaskState, deps: list[str] | None, *, new: bool = False) -> None:
    """Tell the worker to trace a node (``deps`` None), else which dependencies earlier traces
    of its code found (to digest where it runs). ``new``: no recorded trace has seen its code,
    so a worker that traced it already may reuse what it found (see ``_requirements.learn``)."""
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
