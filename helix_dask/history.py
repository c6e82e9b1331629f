"""The iteration history as records: what each version did, what changed between two and why,
metrics across versions, the DAG of one version.

Plain functions over a :class:`~helix_dask.catalog.Catalog` shared by the CLI, the dashboard
and notebooks: they read the catalog with a few aggregate queries (never one per version) and
return frozen records. Nodes are named and paired across versions by lineage
(:mod:`helix_dask._lineage`); how records are shown lives in :mod:`helix_dask.presentation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._change_causes import Cause, ChangeKind
from ._change_causes import estimator_parameters as estimator_parameters
from ._events import Decision, Materialization
from ._lineage import Lineage
from ._version_diff import MetricDelta, NodeChange, VersionDiff, diff
from ._version_metrics import MetricsRow, MetricsTable, metrics_table

if TYPE_CHECKING:
    import networkx as nx

    from .catalog import Catalog

__all__ = [
    "STATES",
    "Cause",
    "ChangeKind",
    "LogRow",
    "MetricDelta",
    "MetricsRow",
    "MetricsTable",
    "NodeChange",
    "VersionDiff",
    "dag",
    "diff",
    "log_rows",
    "metrics_table",
]

STATES = {
    Decision.COMPUTE: "computed",
    Decision.LOAD: "loaded",
    Decision.PRUNE: "pruned",
    Decision.IN_CLUSTER: "in cluster",
}
"""The word each decision shows as in tables and pictures."""


# -- log ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRow:
    """One version as ``helix log`` shows it."""

    version: int
    workflow: str
    started: float
    finished: float | None
    status: str
    message: str
    computed: int
    loaded: int
    pruned: int
    in_cluster: int
    time_saved: float
    full_seconds: float
    """Estimated seconds to compute every node of the version from scratch."""
    stored_bytes: int
    """Bytes of the artifacts this version wrote (as committed, or as measured in memory)."""
    repeats: int | None = None
    """The earlier version this one re-ran identically (same signatures), if any."""

    @property
    def wall_seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


def log_rows(cat: Catalog, limit: int | None = None) -> list[LogRow]:
    """Every version (or the newest ``limit``), newest first, with its counts per decision,
    times, storage added and whether it repeats an earlier version exactly."""
    return [
        LogRow(
            s.id,
            s.workflow,
            s.started,
            s.finished,
            s.status,
            s.message,
            s.computed,
            s.loaded,
            s.pruned,
            s.in_cluster,
            s.time_saved,
            s.full_seconds,
            s.stored_bytes,
            s.repeats,
        )
        for s in cat.version_stats(limit)
    ]


# -- the DAG of one version ---------------------------------------------------------------------


def dag(cat: Catalog, version: int) -> nx.DiGraph:
    """Version ``version`` as a DAG keyed by node key, edges parent -> child.

    Node attributes: ``name`` (the task), ``label`` (the node's readable name: its label, or its
    lineage when the task is used more than once), ``signature``, ``state`` (``computed``,
    ``loaded``, ``pruned``, ``in cluster``), ``changed`` (differs from the previous version of
    the workflow), ``stored``, ``artifact`` (location or None), ``nbytes``, the costs
    (``compute_seconds``, ``load_seconds``, ``write_seconds``, ``estimated_compute_seconds``),
    ``reason``, ``metrics``, ``arg_values``.
    """
    import networkx as nx

    run = cat.run(version)
    older = [v.id for v in cat.versions() if v.id < run.version and v.workflow == run.workflow]
    runs = [cat.run(max(older)), run] if older else [run]
    lin = Lineage(r.nodes for r in runs)
    now = len(runs) - 1
    names = lin.node_names(now)
    before = {lin.track(0, n.key): n.signature for n in runs[0].nodes} if older else None
    stored = cat.artifacts_for(n.stored_as for n in run.nodes)
    graph = nx.DiGraph(version=run.version, message=run.message, status=run.status)
    for n in run.nodes:
        row = stored.get(n.stored_as)
        changed = before is not None and before.get(lin.track(now, n.key)) != n.signature
        graph.add_node(
            n.key,
            name=n.name,
            label=names[n.key],
            signature=n.signature,
            state=STATES[n.decision],
            changed=changed,
            stored=n.materialization is Materialization.STORED,
            materialization=str(n.materialization) if n.materialization else None,
            artifact=row.location if row is not None else None,
            nbytes=row.nbytes if row is not None else n.nbytes,
            compute_seconds=n.compute_seconds,
            load_seconds=n.load_seconds,
            write_seconds=n.write_seconds,
            estimated_compute_seconds=n.estimated_compute_seconds,
            reason=n.reason,
            metrics=dict(n.metrics) if n.metrics is not None else None,
            arg_values=dict(n.arg_values),
        )
    graph.add_edges_from((p, n.key) for n in run.nodes for p in n.parents if p in graph)
    return graph
