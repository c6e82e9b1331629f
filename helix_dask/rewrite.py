"""Apply a plan to the scheduler's fresh task states: loads replace subtrees, pruned nodes go.

Runs inside ``SchedulerPlugin.update_graph``, after the new TaskStates exist (all ``released``)
and before the scheduler's first transition of the graph, so no task of it has started.

A load task carries the run specs of what it replaced (the node and its ancestors, as a
:class:`Recompute`): if the artifact turns out to be missing or corrupt when the load runs, the
worker computes the result from them with dask's synchronous scheduler, so the run still returns
what a fresh run would.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef
from dask.base import tokenize

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

LOAD_PREFIX = "load-"

SMALL_LOAD = 256 << 10
"""Artifacts of at most this many bytes are read in one task when a graph loads several: each
read takes well under a millisecond, so one task apiece would cost more in scheduling than in
reading (and Dask queues dependency-free tasks, one round trip each)."""


def load_key(key: str) -> str:
    """The key of the task that reads ``key``'s artifact: ``load-<name>-<signature>``."""
    return LOAD_PREFIX + key


def batch_key(keys: Iterable[str]) -> str:
    """The key of the task that reads the small artifacts of ``keys`` together."""
    return f"{LOAD_PREFIX}batch-{tokenize(sorted(keys))}"


def load_artifacts(
    root: str, signatures: tuple[str, ...], fallbacks: tuple[Recompute, ...]
) -> tuple[object, ...]:
    """The artifacts ``signatures`` of the store at ``root``, each computed from its fallback
    when it cannot be loaded (see :func:`helix_dask._store_access.load_artifact`)."""
    from ._store_access import load_artifact

    return tuple(load_artifact(root, s, f) for s, f in zip(signatures, fallbacks, strict=True))


def _pick(values: tuple[object, ...], index: int) -> object:
    return values[index]


@dataclass(frozen=True, slots=True)
class Recompute:
    """How to compute a loaded node without its artifact: the run specs the load replaced.

    ``graph`` holds the node's own spec and those of its ancestors; ``held`` names ancestors
    that only the cluster has (results in memory, scattered data), fetched only when needed.
    """

    key: str
    graph: Mapping[Hashable, GraphNode]
    held: tuple[Hashable, ...] = ()

    def compute(self) -> object:
        """The node's result, computed here with dask's synchronous scheduler."""
        from dask.local import get_sync

        graph = dict(self.graph)
        if self.held:
            graph.update(_gather(self.held))
        return get_sync(graph, self.key)


def _gather(keys: tuple[Hashable, ...]) -> dict[Hashable, GraphNode]:
    """The values of ``keys`` from the cluster this worker task runs on."""
    from distributed import Future, worker_client

    with worker_client() as client:
        values = client.gather([Future(k, client) for k in keys])
    return {k: DataNode(k, v) for k, v in zip(keys, values, strict=True)}


def _recompute(ts: TaskState) -> Recompute:
    """The specs of ``ts`` and every ancestor it needs, as they stand now."""
    graph: dict[Hashable, GraphNode] = {}
    held: list[Hashable] = []
    stack, seen = [ts], {ts.key}
    while stack:
        t = stack.pop()
        if t is not ts and (t.run_spec is None or t.state == "memory"):
            held.append(t.key)
            continue
        graph[t.key] = t.run_spec
        for dts in t.dependencies:
            if dts.key not in seen:
                seen.add(dts.key)
                stack.append(dts)
    return Recompute(ts.key, graph, tuple(held))


def rewrite(
    scheduler: Scheduler,
    loads: Mapping[str, str],
    prune: Iterable[str],
    root: str,
    stimulus_id: str,
    small: Collection[str] = (),
) -> dict[str, str]:
    """Replace each key in ``loads`` (key → signature) by an alias of a dependency-free load
    task, then forget the pruned nodes and ancestors that nothing needs any more. The keys in
    ``small`` (artifacts of at most :data:`SMALL_LOAD` bytes), when there are several, are
    read by one task instead, each key taking its item. Returns key -> its load task's key.

    All or nothing: every change is worked out before the first is made, and the changes
    made are undone if one fails, so an exception leaves the graph as it was submitted (it
    then runs as plain Dask). A pruned node can also be an orphan from the start: the
    submitted graph re-created the parents of a key the cluster already holds, which the
    scheduler does not link to it.
    """
    from ._store_access import load_artifact  # Zarr loads on the scheduler only, never on import

    together = [k for k in loads if k in small]
    if len(together) < 2:
        together = []
    planned: list[tuple[TaskState, str, Task | None, int | None]] = []
    if together:
        bkey = batch_key(together)
        spec = None
        if bkey not in scheduler.tasks:
            signatures = tuple(loads[k] for k in together)
            fallbacks = tuple(_recompute(scheduler.tasks[k]) for k in together)
            spec = Task(bkey, load_artifacts, root, signatures, fallbacks)
        for i, key in enumerate(together):
            planned.append((scheduler.tasks[key], bkey, spec, i))
    for key, signature in loads.items():
        if key in together:
            continue
        ts = scheduler.tasks[key]
        lkey = load_key(key)
        spec = None
        if lkey not in scheduler.tasks:
            spec = Task(lkey, load_artifact, root, signature, _recompute(ts))
        planned.append((ts, lkey, spec, None))
    pruned = [scheduler.tasks[k] for k in prune if k in scheduler.tasks]
    undo = _Undo(scheduler, stimulus_id)
    try:
        orphans: list[TaskState] = []
        for ts, lkey, spec, index in planned:
            orphans.extend(_alias(undo, ts, lkey, spec, index))
            _same_span(scheduler, ts, scheduler.tasks[lkey])
    except BaseException:
        undo.run()
        raise
    orphans.extend(pruned)
    forget = {
        dts.key: "forgotten"
        for dts in orphans
        if dts.state == "released" and not dts.dependents and not dts.who_wants
    }
    if forget:
        scheduler.transitions(forget, stimulus_id)
    return {ts.key: lkey for ts, lkey, _, _ in planned}


class _Undo:
    """The inverse of each change :func:`rewrite` made so far, run newest first."""

    def __init__(self, scheduler: Scheduler, stimulus_id: str) -> None:
        self.scheduler = scheduler
        self.stimulus_id = stimulus_id
        self.steps: list[Callable[[], None]] = []

    def run(self) -> None:
        for step in reversed(self.steps):
            step()
        self.steps.clear()


def _alias(
    undo: _Undo, ts: TaskState, lkey: str, spec: Task | None, index: int | None = None
) -> list[TaskState]:
    """Make ``ts`` an alias of the load task ``lkey`` (created from ``spec`` if new), or of
    its item ``index`` (a task loading several); its former dependencies, now orphans unless
    something else needs them."""
    scheduler = undo.scheduler
    lts = scheduler.tasks.get(lkey)
    if lts is None:
        computation = scheduler.computations[-1] if scheduler.computations else None
        lts = scheduler.new_task(lkey, spec, "released", computation)
        new = lts

        def drop() -> None:
            if new.state == "released" and not new.dependents and not new.who_wants:
                scheduler.transitions({lkey: "forgotten"}, undo.stimulus_id)

        undo.steps.append(drop)
    old_priority, old_spec, old_deps = lts.priority, ts.run_spec, list(ts.dependencies)

    def restore() -> None:
        lts.priority = old_priority
        ts.run_spec = old_spec
        ts.dependencies.discard(lts)
        lts.dependents.discard(ts)
        for dts in old_deps:
            ts.add_dependency(dts)

    undo.steps.append(restore)
    # A shared load runs as early as the most urgent task reading it.
    lts.priority = ts.priority if index is None else min(lts.priority or ts.priority, ts.priority)
    for dts in old_deps:
        ts.dependencies.discard(dts)
        dts.dependents.discard(ts)
    ts.run_spec = (
        Alias(ts.key, lkey) if index is None else Task(ts.key, _pick, TaskRef(lkey), index)
    )
    ts.add_dependency(lts)
    return old_deps


def _same_span(scheduler: Scheduler, ts: TaskState, lts: TaskState) -> None:
    """Put the load task in the span of the task it replaces (the dashboard groups by span)."""
    spans = scheduler.extensions.get("spans")
    if spans is None or lts.group.span_id:
        return
    span = (ts.annotations or {}).get("span")
    lts.annotations = {"span": span} if span else {}
    spans.observe_tasks([lts], code=(), span_metadata={})
