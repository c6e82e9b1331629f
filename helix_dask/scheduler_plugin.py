"""The scheduler half: plans each graph with helix tasks, rewrites it, decides what to store,
keeps the catalog, and installs its worker twin."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

from . import _config
from ._events import Decision, Materialization, NodeRecord, report_to_dict
from ._location import catalog_dir, store_location
from ._trace import effective_signature
from .catalog import ArtifactRow, Catalog
from .costs import (
    IOModel,
    compute_seconds,
    expected_reuses,
    read_probability,
    reuse_probability,
    survival_rates,
)
from .materializer import Candidate, Stored, choose_evictions, get_policy
from .planning import GraphNode, io_model, plan_graph, verified_identities
from .rewrite import load_key, rewrite
from .task import ANNOTATION, NodeMeta
from .worker_plugin import HelixWorkerPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger("helix_dask")

PLUGIN_NAME = "helix"
CHILDREN_TIMEOUT = 600.0
"""Seconds a result's storage decision waits for its children's (then decides without)."""


@dataclass(slots=True)
class _Node:
    """Mutable progress of one node within a run; frozen into a NodeRecord at the end."""

    meta: NodeMeta
    decision: Decision
    estimate: float
    compute_seconds: float | None = None
    load_seconds: float | None = None
    write_seconds: float | None = None
    nbytes: int | None = None
    materialization: Materialization | None = None
    reason: str = ""
    metrics: dict[str, float] | None = None
    recompute: float = 0.0
    eff: str | None = None
    """Effective signature (static + verified requirements): what its artifact is stored and
    looked up under; None while unknown (computing) or when it cannot be verified."""
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``eff`` is final for this run (children's storage waits for it)."""
    done: bool = False
    accepted: bool = False
    """The policy chose to store it (the write may still be in flight)."""
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once its materialization is decided, or once it never will be (not computed here,
    failed, forgotten)."""

    def record(self, key: str) -> NodeRecord:
        m = self.meta
        return NodeRecord(
            key=key,
            name=m.name,
            signature=m.signature,
            code=m.code,
            args=m.args,
            parents=m.parents,
            decision=self.decision,
            compute_seconds=self.compute_seconds,
            load_seconds=self.load_seconds,
            write_seconds=self.write_seconds,
            nbytes=self.nbytes,
            materialization=self.materialization,
            reason=self.reason,
            estimated_compute_seconds=self.estimate,
            arg_values=m.arg_values,
            metrics=self.metrics,
            identity=self.eff or "",
        )


@dataclass(slots=True)
class _Run:
    """One version in flight: its nodes, what is still pending, and who waits for the end."""

    version: int
    workflow: str
    started: float
    nodes: dict[str, _Node]
    children: dict[str, list[str]] = field(default_factory=dict)
    """Key of each node -> keys of the nodes in this run that take it as an argument."""
    failed: bool = False
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def pending(self) -> int:
        return sum(not n.done for n in self.nodes.values())


@dataclass(frozen=True, slots=True)
class _Model:
    """The fitted cost model of the current plan: I/O costs, reuse rates, and the task names
    whose results the store holds."""

    io: IOModel
    rates: Mapping[str, float]
    history: Sequence[Mapping[str, frozenset[str]]]
    stored: frozenset[str]

    @property
    def latest(self) -> Mapping[str, frozenset[str]]:
        return self.history[-1] if self.history else {}

    def read(
        self, name: str, children: Iterable[str], stored: Collection[str] | None = None
    ) -> float:
        """Chance that a node computed now is read next time: it survives and a child of it
        (task names) must run rather than load. ``stored``: the task names whose results are
        kept, when the caller knows better than the store's contents."""
        return read_probability(
            name, children, self.rates, self.stored if stored is None else stored, self.history
        )

    def reuse(
        self,
        name: str,
        signature: str,
        current: Mapping[str, frozenset[str]],
        children: Iterable[str] = (),
    ) -> float:
        """Chance that a stored artifact is read next time, judged against ``current`` (the
        signatures of the running version, or else of the last one)."""
        read = self.read(name, children)
        return reuse_probability(name, signature, current or self.latest, self.rates, read)


def _ask_trace(ts: TaskState, deps: list[str] | None) -> None:
    """Tell the worker to trace a node whose code was never traced, else which dependencies
    earlier traces of its code found (to digest where it runs)."""
    ann = dict(ts.annotations[ANNOTATION])
    if deps is None:
        ann["trace"] = True
    else:
        ann["deps"] = deps
    ts.annotations = {**ts.annotations, ANNOTATION: ann}


class HelixSchedulerPlugin(SchedulerPlugin):
    """Plans, rewrites and records every graph that contains helix tasks.

    Parameters are read from ``helix.*`` in dask.config when not given. Graphs without helix
    tasks pass through untouched.
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
        self.store = store_location(store or str(_config.get("store")))  # a path or a URL
        self._budget_setting = budget if budget is not None else _config.get("budget")
        self.budget = _config.resolve_budget(self._budget_setting, self.store)  # type: ignore[arg-type]
        self.policy_name = str(policy or _config.get("policy"))
        self.policy = get_policy(self.policy_name)
        self.workflow = str(workflow or _config.get("workflow") or "default")
        self.solver = str(solver or _config.get("solver"))
        self._runs: dict[int, _Run] = {}
        self._key_run: dict[str, _Run] = {}
        self._last_by_client: dict[str, int] = {}
        self._load_of: dict[str, str] = {}
        """Key of each load task in flight -> key of the node it loads."""
        self._reserved = 0
        self._model: _Model | None = None
        self._digests: dict[str, dict[str, str]] = {}
        """Client id -> its current digests of run-time dependencies, for its next graph."""
        self._producers: dict[str, _Node] = {}
        """Key of a helix result on the cluster -> the node (of whichever run) that computed or
        loaded it: where its effective signature is settled."""

    def settings(self) -> tuple[str, str, str, str, str]:
        """What ``hx.setup`` was given: store, budget (as configured, so a default of a share of
        the free space stays the same setting), policy, workflow and solver."""
        return (
            self.store,
            repr(self._budget_setting),
            self.policy_name,
            self.workflow,
            self.solver,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.catalog = Catalog(catalog_dir(self.store))
        # Imported here: the client only pickles this plugin, and Zarr takes 0.2 s to import.
        from .dashboard import install_routes
        from .store import open_store

        self.artifacts = open_store(self.store)
        self.artifacts.sweep_temporaries()  # what writers killed before this start left behind
        scheduler.handlers.update(
            {
                "helix_offer": self.handle_offer,
                "helix_written": self.handle_written,
                "helix_run": self.handle_run,
                "helix_info": self.handle_info,
                "helix_requirements": self.handle_requirements,
                "helix_digests": self.handle_digests,
            }
        )
        await scheduler.register_worker_plugin(
            None, dumps(HelixWorkerPlugin(self.store)), name=PLUGIN_NAME, idempotent=False
        )
        logger.info(
            "helix store %s, budget %d bytes, policy %s", self.store, self.budget, self.policy_name
        )
        self._enforce_budget()
        install_routes(scheduler, self)

    async def close(self) -> None:
        for run in list(self._runs.values()):
            if run.finished is None:
                self._finish(run, status="interrupted")
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
        digests = self._digests.pop(client, {})
        try:
            nodes, loads, predicted = self._plan(helix, keys, digests)
        except Exception:  # the scheduler would swallow it into an INFO line and run unplanned
            logger.warning("helix could not plan this graph; it runs unchanged", exc_info=True)
            return
        pruned = [k for k, n in nodes.items() if n.decision is Decision.PRUNE]
        try:
            rewrite(scheduler, loads, pruned, self.store, stimulus_id)
        except Exception:
            logger.error("helix failed while rewriting a planned graph", exc_info=True)
            raise
        message = next((m.message for _, m in helix.values() if m.message), "")
        version = self.catalog.begin_version(
            self.workflow, message, sorted(map(str, keys)), predicted_seconds=predicted
        )
        for digest, m in {m.code: m for _, m in helix.values() if m.code}.items():
            self.catalog.record_code(digest, m.sources, m.packages)
        run = _Run(version, self.workflow, time.time(), nodes)
        self._runs[version] = run
        self._last_by_client[client] = version
        for key, node in nodes.items():
            for parent in node.meta.parents:
                run.children.setdefault(parent, []).append(key)
            if node.decision in (Decision.COMPUTE, Decision.LOAD):
                self._producers[key] = node
            if node.decision is Decision.COMPUTE:
                self._key_run[key] = run
                continue
            node.identified.set()
            node.decided.set()  # never offered: nothing to decide
            if node.decision is Decision.LOAD:
                self._key_run[load_key(key)] = run
                self._load_of[load_key(key)] = key
            else:
                node.done = True
        self.catalog.record_nodes(version, (n.record(k) for k, n in nodes.items()))
        self._maybe_finish(run)

    def _plan(
        self,
        helix: Mapping[str, tuple[TaskState, NodeMeta]],
        wanted: set,
        digests: Mapping[str, str],
    ) -> tuple[dict[str, _Node], dict[str, str], float]:
        """Decisions for every helix node, the loads to rewrite and the predicted seconds.

        Reads the catalog and the scheduler's task states; changes neither, except that nodes
        to compute are told whether to trace their code. A node whose task already exists on
        the scheduler (held, or running for another graph) is used as is.
        """
        fresh = {
            k
            for k, (ts, _) in helix.items()
            if ts.state == "released" and ts.run_spec is not None and k not in self._key_run
        }
        graph = {
            k: GraphNode(
                meta=m,
                parents=tuple(d.key for d in ts.dependencies if d.key in helix),
                is_output=k in wanted or any(d.key not in helix for d in ts.dependents),
                fixed=k not in fresh,
            )
            for k, (ts, m) in helix.items()
        }
        self._model = model = self._cost_model()
        held = {k: n.eff for k, n in self._producers.items() if n.eff is not None}
        identities, stale = verified_identities(graph, self.catalog, digests, held)
        chosen = plan_graph(
            graph, self.catalog, self.artifacts, model.io, self.solver, identities=identities
        )
        nodes: dict[str, _Node] = {}
        loads: dict[str, str] = {}
        traced = self.catalog.traced(g.meta.code for g in graph.values() if g.meta.code)
        for k, d in chosen.decisions.items():
            meta = graph[k].meta
            if k not in fresh:
                d = Decision.IN_CLUSTER
            elif d is Decision.LOAD:
                loads[k] = identities[k]  # type: ignore[assignment]
            node = nodes[k] = _Node(meta, d, chosen.estimates[k], eff=identities[k])
            if k in stale:
                node.reason = stale[k]
            if d is Decision.COMPUTE and meta.deterministic:
                node.eff = None
                _ask_trace(helix[k][0], traced.get(meta.code))
        return nodes, loads, chosen.cost

    # -- progress -------------------------------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            self._producers.pop(key, None)
        run = self._key_run.get(key)
        if run is None:
            return
        loaded = self._load_of.get(key)
        is_load = loaded is not None
        node = run.nodes.get(loaded if is_load else key)
        if node is None:
            return
        if finish == "memory" and start == "processing":
            seconds = compute_seconds(kwargs.get("startstops", ()))
            node.nbytes = kwargs.get("nbytes", node.nbytes)
            if is_load:
                node.load_seconds = seconds
                node.done = True
                self._key_run.pop(key, None)
                self._load_of.pop(key, None)
                self.catalog.record_load(node.meta.signature, seconds)
            elif node.compute_seconds is None:
                node.compute_seconds = seconds  # the worker's offer may have come first
        elif finish == "erred" or (finish == "forgotten" and node.compute_seconds is None):
            # A node that reached memory is settled by its worker's offer, not by being forgotten.
            run.failed = run.failed or finish == "erred"
            node.done = True
            node.identified.set()
            node.decided.set()
            self._key_run.pop(key, None)
            self._load_of.pop(key, None)
        else:
            return
        self._maybe_finish(run)

    # -- materialization (called by the worker twin) --------------------------------------------

    async def handle_offer(
        self,
        key: str,
        signature: str,
        compute_seconds: float,
        nbytes: int,
        metrics: dict[str, float] | None = None,
        requires: dict[str, str] | None = None,
        traced: list[str] | None = None,
    ) -> dict[str, Any]:
        """A worker finished a helix task: decide whether it stores the result.

        ``requires`` is what the result required beyond its static signature (dependency ->
        digest where it ran; None: it could not be told, so the result is never stored) and
        ``traced`` the dependencies a trace of its code found (None: not traced).

        Unless the answer is the same whatever its children get, the decision waits until every
        child computed in this run is decided: a child that is stored makes this result needed
        less often (the child loads instead), and a child decided first counts this node's
        compute in what it would cost to recreate, so the policy prefers the result that covers
        more work. The worker holds the result meanwhile, as it does anyway while the children
        run.
        """
        run = self._key_run.get(key)
        node = run.nodes.get(key) if run else None
        if run is None or node is None or node.meta.signature != signature:
            return {"store": False}
        node.compute_seconds = compute_seconds
        node.nbytes = nbytes
        node.metrics = metrics
        if not node.meta.deterministic:
            node.eff = signature
            node.identified.set()
            return self._settle(run, key, Materialization.SKIPPED, "task is not deterministic")
        if requires is not None:
            self.catalog.record_requirements(signature, requires, node.meta.code, traced)
        why = await self._identify(run, key, requires)
        if why:
            return self._settle(run, key, Materialization.SKIPPED, why)
        signature = node.eff  # type: ignore[assignment]
        if self.catalog.artifact(signature) is not None and self.artifacts.contains(signature):
            return self._settle(run, key, Materialization.SKIPPED, "already stored")
        children = [run.nodes[c] for c in run.children.get(key, ()) if c in run.nodes]
        names = [c.meta.name for c in children]
        model = self._model or self._cost_model()
        recompute = self._recompute_seconds(run, key)

        def make_candidate(kept: Collection[str]) -> Candidate:
            """This node as a candidate, with the task names whose results are kept."""
            return Candidate(
                name=node.meta.name,
                signature=signature,
                compute_seconds=compute_seconds,
                recompute_seconds=recompute,
                nbytes=nbytes,
                load_seconds=model.io.load_seconds(nbytes),
                is_output=key in self.scheduler.tasks and bool(self.scheduler.tasks[key].who_wants),
                forced=node.meta.materialize,
                reuse_probability=model.read(node.meta.name, names, kept),
                write_seconds=model.io.write_seconds(nbytes),
            )

        if any(not c.decided.is_set() for c in children):
            # Wait for the children unless their outcome cannot change the answer: skipped even
            # if no child is kept, or stored even if every child is.
            free = self._free()
            if (
                self.policy.decide(make_candidate(()), free).outcome is not Materialization.SKIPPED
                and not self.policy.decide(make_candidate(names), free).store
            ):
                waits = [
                    asyncio.ensure_future(c.decided.wait())
                    for c in children
                    if not c.decided.is_set()
                ]
                _, late = await asyncio.wait(waits, timeout=CHILDREN_TIMEOUT)
                for w in late:
                    w.cancel()
                if node.done or run.finished is not None:  # settled meanwhile (interrupted)
                    return {"store": False}
        kept = set(model.stored)
        for c in children:
            if c.accepted or c.decision is Decision.LOAD:
                kept.add(c.meta.name)
            elif c.materialization is not None:
                kept.discard(c.meta.name)  # decided in this run: not kept
        candidate = make_candidate(kept)
        verdict = self.policy.decide(candidate, self._free())
        if verdict.outcome is Materialization.NO_SPACE and self.policy.evicts:
            victims = choose_evictions(
                self._stored_values(model),
                nbytes - self._free(),
                self._protected(),
                below_density=candidate.density,
            )
            if victims:
                self._evict(victims, f"made room for {node.meta.name}-{signature[:8]}", run)
                verdict = self.policy.decide(candidate, self._free())
        if not verdict.store:
            return self._settle(run, key, verdict.outcome, verdict.reason)
        self._reserved += nbytes
        node.reason = verdict.reason
        node.recompute = candidate.recompute_seconds
        node.accepted = True
        node.decided.set()
        return {"store": True, "reserved": nbytes, "signature": signature}

    async def _identify(self, run: _Run, key: str, requires: Mapping[str, str] | None) -> str:
        """Settle a computed node's effective signature from what it required and its parents'
        (waiting for parents whose offers are still on their way); the reason it cannot be
        stored, or ''."""
        node = run.nodes[key]
        try:
            parents = []
            for p in node.meta.parents:
                source = self._producers.get(p) or run.nodes.get(p)
                if source is not None and not source.identified.is_set():
                    await asyncio.wait_for(source.identified.wait(), CHILDREN_TIMEOUT)
                if source is None or source.eff is None:
                    return f"input {p} could not be verified"
                parents.append((source.meta.signature, source.eff))
            if requires is None:
                return "what it required at run time could not be digested"
            node.eff = effective_signature(node.meta.signature, requires, parents)
            return ""
        except TimeoutError:
            return "its inputs were not identified in time"
        finally:
            node.identified.set()

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
    ) -> None:
        """A worker finished (or failed) writing an artifact: commit its catalog row."""
        self._reserved -= reserved
        run = self._key_run.get(key)
        if not ok:
            logger.warning("helix could not store %s: %s", key, error)
            if run is not None:
                self._settle(run, key, Materialization.FAILED, error)
            return
        if self.catalog.stored_bytes() + nbytes > self.budget:
            # Its written size exceeded what was reserved (in-memory sizes are estimates).
            self.artifacts.delete(signature)
            if run is not None:
                self._settle(
                    run, key, Materialization.NO_SPACE, "written size exceeded the budget; removed"
                )
            return
        now = time.time()
        node = run.nodes.get(key) if run else None
        name = node.meta.name if node else key
        recompute = node.recompute if node else 0.0
        self.catalog.add_artifact(
            ArtifactRow(signature, name, location, kind, nbytes, seconds, None, now, now, recompute)
        )
        if run is not None and key in run.nodes:
            run.nodes[key].write_seconds = seconds
            self._settle(run, key, Materialization.STORED, run.nodes[key].reason)

    def _settle(self, run: _Run, key: str, outcome: Materialization, reason: str) -> dict[str, Any]:
        node = run.nodes[key]
        node.materialization = outcome
        node.reason = reason
        node.done = True
        node.decided.set()
        self.catalog.record_event(
            run.version, outcome.value, node.meta.signature, node.meta.name, node.nbytes, reason
        )
        self._key_run.pop(key, None)
        self._maybe_finish(run)
        return {"store": False}

    def _recompute_seconds(self, run: _Run, key: str) -> float:
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

    # -- budget and eviction --------------------------------------------------------------------

    def _free(self) -> int:
        return self.budget - self.catalog.stored_bytes() - self._reserved

    def _cost_model(self) -> _Model:
        """Refit I/O costs and reuse rates from the catalog (a few small queries)."""
        history = self.catalog.signature_history(self.workflow)
        stored = frozenset(a.name for a in self.catalog.artifacts())
        return _Model(io_model(self.catalog, self.store), survival_rates(history), history, stored)

    def _protected(self) -> set[str]:
        """Signatures that a running plan is loading: never evicted."""
        return {
            n.eff or n.meta.signature
            for r in self._runs.values()
            if r.finished is None
            for n in r.nodes.values()
            if n.decision is Decision.LOAD and not n.done
        }

    def _stored_values(self, model: _Model) -> list[Stored]:
        current: dict[str, set[str]] = {}
        for r in self._runs.values():
            if r.finished is None:
                for n in r.nodes.values():
                    current.setdefault(n.meta.name, set()).add(n.meta.signature)
        current = {k: frozenset(v) for k, v in current.items()}  # type: ignore[misc]
        children: dict[str, set[str]] = {}
        if self._runs:  # the task graph of the newest run, by task name
            newest = self._runs[max(self._runs)]
            for key, child_keys in newest.children.items():
                if key in newest.nodes:
                    children.setdefault(newest.nodes[key].meta.name, set()).update(
                        newest.nodes[c].meta.name for c in child_keys if c in newest.nodes
                    )
        out = []
        for a in self.catalog.artifacts():
            load = a.load_seconds if a.load_seconds is not None else model.io.load_seconds(a.nbytes)
            p = model.reuse(a.name, a.signature, current, children.get(a.name, ()))
            saving = expected_reuses(p) * max(0.0, a.recompute_seconds - load)
            out.append(Stored(a.signature, a.name, a.nbytes, saving / max(a.nbytes, 1)))
        return out

    def _evict(self, victims: Iterable[Stored], why: str, run: _Run | None) -> None:
        for v in victims:
            self.artifacts.delete(v.signature)
            self.catalog.remove_artifact(v.signature)
            self.catalog.record_event(
                run.version if run else None,
                "evicted",
                v.signature,
                v.name,
                v.nbytes,
                f"{why}; it saved {v.density * 1e6:.3f}s per MB",
            )
            logger.info("evicted %s-%s (%d bytes): %s", v.name, v.signature[:8], v.nbytes, why)

    def _enforce_budget(self) -> None:
        """After the budget shrank: evict least value per byte until the store fits."""
        over = self.catalog.stored_bytes() - self.budget
        if over <= 0:
            return
        victims = choose_evictions(self._stored_values(self._cost_model()), over, self._protected())
        self._evict(victims or [], f"budget lowered to {self.budget} bytes", None)

    # -- versions -------------------------------------------------------------------------------

    def _maybe_finish(self, run: _Run) -> None:
        if run.finished is None and run.pending() == 0:
            self._finish(run, status="failed" if run.failed else "done")

    def _finish(self, run: _Run, status: str) -> None:
        run.finished = time.time()
        for n in run.nodes.values():
            n.identified.set()
            n.decided.set()
        saved = sum(
            n.estimate - (n.load_seconds or 0.0)
            for n in run.nodes.values()
            if n.decision in (Decision.LOAD, Decision.PRUNE, Decision.IN_CLUSTER)
        )
        self.catalog.record_nodes(run.version, (n.record(k) for k, n in run.nodes.items()))
        measured = sum(
            (n.compute_seconds or 0.0)
            if n.decision is Decision.COMPUTE
            else (n.load_seconds or 0.0)
            for n in run.nodes.values()
            if n.decision in (Decision.COMPUTE, Decision.LOAD)
        )
        self.catalog.finish_version(run.version, status, saved, measured_seconds=measured)
        run.done.set()
        for old in [v for v, r in self._runs.items() if r.finished and v < run.version - 16]:
            del self._runs[old]

    async def handle_run(
        self, client: str | None = None, version: int | None = None, timeout: float = 60.0
    ) -> dict[str, Any] | None:
        """The report of ``version`` (default: the client's last run), once it has finished."""
        if version is None:
            version = self._last_by_client.get(client) if client else self.catalog.last_version()
        if version is None:
            return None
        run = self._runs.get(version)
        if run is not None:
            try:
                await asyncio.wait_for(run.done.wait(), timeout)
            except TimeoutError:
                logger.warning("helix run v%d still has %d pending nodes", version, run.pending())
        return report_to_dict(self.catalog.run(version))

    def handle_requirements(self, signatures: list[str]) -> list[str]:
        """The run-time dependencies recorded for these signatures, for the client to digest."""
        found: set[str] = set()
        for req in self.catalog.requirements(signatures).values():
            found.update(req)
        return sorted(found)

    def handle_digests(self, client: str, digests: dict[str, str]) -> None:
        """A client's current digests of run-time dependencies, for its next graph."""
        self._digests.setdefault(client, {}).update(digests)

    def handle_info(self) -> dict[str, Any]:
        """Where the store is and how full it is."""
        return {
            "store": self.store,
            "budget": self.budget,
            "stored_bytes": self.catalog.stored_bytes(),
            "reserved_bytes": self._reserved,
            "policy": self.policy_name,
            "running": [v for v, r in self._runs.items() if r.finished is None],
        }
