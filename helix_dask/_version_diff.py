"""What changed from one version to another: nodes paired by lineage, each changed node with
its causes, what the newer version recomputed, how each metric moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._change_causes import Cause, ChangeKind, _causes, _runtime_causes
from ._events import Decision, RunReport
from ._lineage import Lineage
from ._version_metrics import _metric_tracks, _metrics_by_track

if TYPE_CHECKING:
    from .catalog import Catalog


@dataclass(frozen=True, slots=True)
class NodeChange:
    """A node whose signature differs between the two versions, and every reason found."""

    name: str
    """The node's readable name (label, task name, or lineage for a repeated task)."""
    old_key: str | None
    new_key: str | None
    causes: tuple[Cause, ...]
    new_decision: Decision | None
    """What the newer version did with the node (``compute`` when it was recomputed)."""

    @property
    def direct(self) -> bool:
        """Whether the node itself changed, not only something upstream of it."""
        return any(c.kind is not ChangeKind.UPSTREAM for c in self.causes)


@dataclass(frozen=True, slots=True)
class MetricDelta:
    """One metric of one metrics node in both versions."""

    node: str
    metric: str
    old: float | None
    new: float | None

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """What changed from version ``old`` to version ``new``, why, and with what effect."""

    old: int
    new: int
    changes: tuple[NodeChange, ...]
    unchanged: tuple[str, ...]
    recomputed: tuple[str, ...]
    """Names of the changed nodes the newer version computed: the consequence of the changes."""
    recomputed_unchanged: tuple[str, ...] = ()
    """Names of unchanged nodes it computed anyway (no artifact, or cheaper than loading)."""
    metrics: tuple[MetricDelta, ...] = field(default_factory=tuple)
    code: tuple[Cause, ...] = field(default_factory=tuple)
    """Every distinct code change once, with its unified diff (several nodes may share one)."""

    def _repr_html_(self) -> str:
        from .presentation import diff_html

        return diff_html(self)


def diff(cat: Catalog, a: int, b: int) -> VersionDiff:
    """Which nodes changed from version ``a`` to ``b`` and why, what ``b`` recomputed, and how
    each metric moved. Nodes are paired by lineage, as in ``helix metrics``.

    Examples
    --------
    >>> d = diff(hx.Catalog("./.helix"), 2, 3)                   # doctest: +SKIP
    >>> [c.describe() for c in d.changes[0].causes]             # doctest: +SKIP
    ['code of flow.helper changed']
    """
    runs = cat.runs()
    index = {r.version: i for i, r in enumerate(runs)}
    for v in (a, b):
        if v not in index:
            raise KeyError(f"version {v} is not in the catalog {str(cat.path)!r}")
    lin = Lineage(r.nodes for r in runs)
    ia, ib = index[a], index[b]
    old, new = runs[ia], runs[ib]
    names_old, names_new = lin.node_names(ia), lin.node_names(ib)
    old_by_track = {lin.track(ia, n.key): n for n in old.nodes}
    new_by_track = {lin.track(ib, n.key): n for n in new.nodes}
    changes, unchanged, same = [], [], set()
    for t in sorted(set(old_by_track) | set(new_by_track)):
        x, y = old_by_track.get(t), new_by_track.get(t)
        if x is not None and y is not None and x.signature == y.signature:
            if x.stored_as != y.stored_as and (runtime := _runtime_causes(cat, x, y)):
                changes.append(NodeChange(names_new[y.key], x.key, y.key, runtime, y.decision))
                continue
            unchanged.append(names_new[y.key])
            same.add(y.key)
        elif x is None and y is not None:
            name = names_new[y.key]
            changes.append(
                NodeChange(name, None, y.key, (Cause(ChangeKind.ADDED, name),), y.decision)
            )
        elif y is None and x is not None:
            name = names_old[x.key]
            changes.append(NodeChange(name, x.key, None, (Cause(ChangeKind.REMOVED, name),), None))
        elif x is not None and y is not None:
            causes = _causes(cat, x, y, a, b, names_new)
            changes.append(NodeChange(names_new[y.key], x.key, y.key, causes, y.decision))
    depth_old, depth_new = _depths(old), _depths(new)

    def order(c: NodeChange) -> int:
        return depth_new[c.new_key] if c.new_key else depth_old.get(c.old_key or "", 0)

    code: dict[tuple[str, str], Cause] = {}
    for c in changes:
        for cause in c.causes:
            if cause.kind is ChangeKind.CODE:
                code.setdefault((cause.subject, cause.detail), cause)
    before, after = _metrics_by_track(runs, lin, ia), _metrics_by_track(runs, lin, ib)
    names = lin.names(_metric_tracks(runs, lin))
    deltas = [
        MetricDelta(names[t], metric, before.get(t, {}).get(metric), after.get(t, {}).get(metric))
        for t in sorted(set(before) | set(after), key=lambda t: names[t])
        for metric in sorted(set(before.get(t, {})) | set(after.get(t, {})))
    ]
    return VersionDiff(
        old=a,
        new=b,
        changes=tuple(sorted(changes, key=lambda c: (not c.direct, order(c), c.name))),
        unchanged=tuple(sorted(unchanged)),
        recomputed=tuple(sorted(c.name for c in changes if c.new_decision is Decision.COMPUTE)),
        recomputed_unchanged=tuple(
            sorted(
                names_new[n.key]
                for n in new.nodes
                if n.decision is Decision.COMPUTE and n.key in same
            )
        ),
        metrics=tuple(deltas),
        code=tuple(code.values()),
    )


def _depths(run: RunReport) -> dict[str, int]:
    """Longest distance from a root, per key: the node's generation in the DAG."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(n.key for n in run.nodes)
    graph.add_edges_from((p, n.key) for n in run.nodes for p in n.parents if p in graph)
    return {k: i for i, gen in enumerate(nx.topological_generations(graph)) for k in gen}


NodeChange.__module__ = MetricDelta.__module__ = VersionDiff.__module__ = diff.__module__ = (
    "helix_dask.history"
)
