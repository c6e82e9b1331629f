"""Apply a plan to the scheduler's fresh task states: loads replace subtrees, pruned nodes go.

Runs inside ``SchedulerPlugin.update_graph``, after the new TaskStates exist (all ``released``)
and before the scheduler's first transition of the graph, so no task of it has started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from dask._task_spec import Alias, Task

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

LOAD_PREFIX = "load-"


def load_key(key: str) -> str:
    """The key of the task that reads ``key``'s artifact: ``load-<name>-<signature>``."""
    return LOAD_PREFIX + key


def rewrite(
    scheduler: Scheduler,
    loads: Mapping[str, str],
    prune: Iterable[str],
    root: str,
    stimulus_id: str,
) -> None:
    """Replace each key in ``loads`` (key → signature) by an alias of a dependency-free load
    task, then forget the pruned nodes and ancestors that nothing needs any more.

    A pruned node can also be an orphan from the start: the submitted graph re-created the
    parents of a key the cluster already holds, which the scheduler does not link to it.
    """
    from .store import load_artifact  # Zarr loads on the scheduler only, never on import

    computation = scheduler.computations[-1] if scheduler.computations else None
    orphans: list[TaskState] = []
    for key, signature in loads.items():
        ts = scheduler.tasks[key]
        lkey = load_key(key)
        lts = scheduler.tasks.get(lkey)
        if lts is None:
            lts = scheduler.new_task(
                lkey, Task(lkey, load_artifact, root, signature), "released", computation
            )
        lts.priority = ts.priority
        _same_span(scheduler, ts, lts)
        for dts in list(ts.dependencies):
            ts.dependencies.discard(dts)
            dts.dependents.discard(ts)
            orphans.append(dts)
        ts.run_spec = Alias(key, lkey)
        ts.add_dependency(lts)
    orphans.extend(scheduler.tasks[k] for k in prune if k in scheduler.tasks)
    forget = {
        dts.key: "forgotten"
        for dts in orphans
        if dts.state == "released" and not dts.dependents and not dts.who_wants
    }
    if forget:
        scheduler.transitions(forget, stimulus_id)


def _same_span(scheduler: Scheduler, ts: TaskState, lts: TaskState) -> None:
    """Put the load task in the span of the task it replaces (the dashboard groups by span)."""
    spans = scheduler.extensions.get("spans")
    if spans is None or lts.group.span_id:
        return
    span = (ts.annotations or {}).get("span")
    lts.annotations = {"span": span} if span else {}
    spans.observe_tasks([lts], code=(), span_metadata={})
