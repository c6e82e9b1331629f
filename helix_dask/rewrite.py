"""Apply a plan to the scheduler's fresh task states: loads replace subtrees, pruned nodes go.

Runs inside ``SchedulerPlugin.update_graph``, after the new TaskStates exist (all ``released``)
and before the scheduler's first transition of the graph, so no task of it has started.

A load task carries the run specs of what it replaced (the node and its ancestors, as a
:class:`Recompute`): if the artifact turns out to be missing or corrupt when the load runs, the
worker computes the result from them with dask's synchronous scheduler, so the run still returns
what a fresh run would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dask._task_spec import Alias, DataNode, GraphNode, Task

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

LOAD_PREFIX = "load-"


def load_key(key: str) -> str:
    """The key of the task that reads ``key``'s artifact: ``load-<name>-<signature>``."""
    return LOAD_PREFIX + key


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
) -> None:
    """Replace each key in ``loads`` (key → signature) by an alias of a dependency-free load
    task, then forget the pruned nodes and ancestors that nothing needs any more.

    All or nothing: every change is worked out before the first is made, and the changes
    made are undone if one fails, so an exception leaves the graph as it was submitted (it
    then runs as plain Dask). A pruned node can also be an orphan from the start: the
    submitted graph re-created the parents of a key the cluster already holds, which the
    scheduler does not link to it.
    """
    from .store import load_artifact  # Zarr loads on the scheduler only, never on import

    planned: list[tuple[TaskState, str, Task | None]] = []
    for key, signature in loads.items():
        ts = scheduler.tasks[key]
        lkey = load_key(key)
        spec = None
        if lkey not in scheduler.tasks:
            spec = Task(lkey, load_artifact, root, signature, _recompute(ts))
        planned.append((ts, lkey, spec))
    pruned = [scheduler.tasks[k] for k in prune if k in scheduler.tasks]
    undo = _Undo(scheduler, stimulus_id)
    try:
        orphans: list[TaskState] = []
        for ts, lkey, spec in planned:
            orphans.extend(_alias(undo, ts, lkey, spec))
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


def _alias(undo: _Undo, ts: TaskState, lkey: str, spec: Task | None) -> list[TaskState]:
    """Make ``ts`` an alias of the load task ``lkey`` (created from ``spec`` if new); its
    former dependencies, now orphans unless something else needs them."""
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
    lts.priority = ts.priority
    for dts in old_deps:
        ts.dependencies.discard(dts)
        dts.dependents.discard(ts)
    ts.run_spec = Alias(ts.key, lkey)
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
