"""Views of the iteration history: plain functions over a :class:`~helix_dask.catalog.Catalog`
that the CLI, the dashboard and notebooks share.

Every function reads the catalog and returns frozen records; nothing here prints or talks to a
cluster. The one exception is :func:`apply_gc`, which deletes what :func:`gc_plan` chose.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import html
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._drawing import COLOURS, DagView, layout, render_svg
from ._errors import HelixConfigError
from ._events import Decision, Materialization, NodeRecord, RunReport
from .usage import DiskUsage, GcPlan, GcResult, apply_gc, disk_usage, gc_plan

if TYPE_CHECKING:
    import networkx as nx

    from .catalog import Catalog

__all__ = [
    "COLOURS",
    "Cause",
    "ChangeKind",
    "DagView",
    "DiskUsage",
    "GcPlan",
    "GcResult",
    "LogRow",
    "MetricsTable",
    "NodeChange",
    "VersionDiff",
    "apply_gc",
    "dag",
    "diff",
    "disk_usage",
    "gc_plan",
    "layout",
    "log_rows",
    "match_nodes",
    "metrics_table",
    "render_svg",
    "to_data",
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

    @property
    def wall_seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


def _stored_bytes(cat: Catalog, node: NodeRecord) -> int:
    if node.materialization is not Materialization.STORED:
        return 0
    row = cat.artifact(node.stored_as)
    return row.nbytes if row is not None else node.nbytes or 0


def _full_seconds(run: RunReport) -> float:
    return sum(
        n.compute_seconds if n.compute_seconds is not None else n.estimated_compute_seconds
        for n in run.nodes
    )


def log_rows(cat: Catalog, limit: int | None = None) -> list[LogRow]:
    """Every version (or the newest ``limit``), newest first, with its counts per decision,
    times and storage added."""
    rows = []
    for run in (cat.run(v.id) for v in cat.versions()[:limit]):
        count = {d: sum(n.decision is d for n in run.nodes) for d in Decision}
        rows.append(
            LogRow(
                version=run.version,
                workflow=run.workflow,
                started=run.started,
                finished=run.finished,
                status=run.status,
                message=run.message,
                computed=count[Decision.COMPUTE],
                loaded=count[Decision.LOAD],
                pruned=count[Decision.PRUNE],
                in_cluster=count[Decision.IN_CLUSTER],
                time_saved=run.time_saved,
                full_seconds=_full_seconds(run),
                stored_bytes=sum(_stored_bytes(cat, n) for n in run.nodes),
            )
        )
    return rows


# -- matching nodes across versions -------------------------------------------------------------


def _task_name(key: str) -> str:
    return key.rsplit("-", 1)[0]


def _depths(run: RunReport) -> dict[str, int]:
    """Longest distance from a root, per key: the node's generation in the DAG."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(n.key for n in run.nodes)
    graph.add_edges_from((p, n.key) for n in run.nodes for p in n.parents if p in graph)
    return {k: i for i, gen in enumerate(nx.topological_generations(graph)) for k in gen}


def match_nodes(
    old: RunReport, new: RunReport
) -> list[tuple[NodeRecord | None, NodeRecord | None]]:
    """Pair each node of ``old`` with its counterpart in ``new``.

    Nodes pair by task name: the same key first, then the same parents' names, then by position
    among the remaining same-named nodes (depth in the DAG, then argument values).
    """
    pairs: list[tuple[NodeRecord | None, NodeRecord | None]] = []
    groups: dict[str, tuple[list[NodeRecord], list[NodeRecord]]] = defaultdict(lambda: ([], []))
    for side, run in enumerate((old, new)):
        depth = _depths(run)
        for n in sorted(run.nodes, key=lambda n: (depth[n.key], sorted(n.arg_values.items()))):
            groups[n.name][side].append(n)

    def lineage(n: NodeRecord) -> tuple[str, ...]:
        return tuple(sorted(_task_name(p) for p in n.parents))

    for name in sorted(groups):
        left, right = (list(g) for g in groups[name])
        for same in (lambda n: n.key, lineage):
            for a in list(left):
                b = next((b for b in right if same(b) == same(a)), None)
                if b is not None:
                    pairs.append((a, b))
                    left.remove(a)
                    right.remove(b)
        pairs.extend(zip(left, right, strict=False))
        pairs.extend((a, None) for a in left[len(right) :])
        pairs.extend((None, b) for b in right[len(left) :])
    return pairs


# -- diff ---------------------------------------------------------------------------------------


class ChangeKind(enum.StrEnum):
    """Why a node differs between two versions."""

    CODE = "code"
    """The source of the task function or of a project helper it reaches changed."""
    CODE_VALUE = "code value"
    """A module constant, closure value or default the code reads changed; the source did not."""
    ARGUMENT = "argument"
    """An argument value changed."""
    DATA_FILE = "data file"
    """An ``hx.File`` argument kept its path but its content changed."""
    PACKAGE = "package"
    """The version of an installed package the code calls changed."""
    UPSTREAM = "upstream"
    """A parent node changed, so this one was recomputed as a consequence."""
    ADDED = "added"
    """The node has no counterpart in the older version."""
    REMOVED = "removed"
    """The node has no counterpart in the newer version."""
    UNKNOWN = "unknown"
    """The signature changed and the catalog does not say why (a non-deterministic task)."""


@dataclass(frozen=True, slots=True)
class Cause:
    """One reason a node changed: what kind, which part, its old and new value."""

    kind: ChangeKind
    subject: str
    old: str | None = None
    new: str | None = None
    detail: str = ""
    """A unified diff for code changes; an explanation otherwise."""

    def describe(self) -> str:
        """One line, e.g. ``argument bins: 10 -> 5``."""
        if self.kind in (ChangeKind.ARGUMENT, ChangeKind.PACKAGE):
            return f"{self.kind} {self.subject}: {self.old} -> {self.new}"
        if self.kind is ChangeKind.CODE:
            return f"code of {self.subject} changed"
        if self.kind is ChangeKind.DATA_FILE:
            return f"data file {self.subject}: content changed, path did not"
        if self.kind is ChangeKind.UPSTREAM:
            return f"upstream {self.subject} changed"
        return f"{self.kind} {self.subject}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class NodeChange:
    """A node whose signature differs between the two versions, and every reason found."""

    name: str
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
    """One metric of one metrics task in both versions."""

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

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{_e(c.name)}</td><td>{_e(c.new_decision or '')}</td><td>"
            + "<br>".join(_cause_html(x) for x in c.causes)
            + "</td></tr>"
            for c in self.changes
        )
        metrics = "".join(
            f"<tr><td>{_e(m.node)}</td><td>{_e(m.metric)}</td><td>{_num(m.old)}</td>"
            f"<td>{_num(m.new)}</td><td>{_num(m.delta, signed=True)}</td></tr>"
            for m in self.metrics
        )
        return (
            f"<div><b>v{self.old} &rarr; v{self.new}</b>: {len(self.changes)} changed, "
            f"{len(self.unchanged)} unchanged, recomputed: {_e(', '.join(self.recomputed))}"
            "<table><tr><th>node</th><th>now</th><th>why</th></tr>"
            + rows
            + "</table>"
            + (
                "<table><tr><th>node</th><th>metric</th><th>old</th><th>new</th><th>delta</th>"
                "</tr>" + metrics + "</table>"
                if metrics
                else ""
            )
            + "</div>"
        )


def _cause_html(c: Cause) -> str:
    pre = f"<pre>{_e(c.detail)}</pre>" if c.kind is ChangeKind.CODE and c.detail else ""
    return _e(c.describe()) + pre


def _code_causes(cat: Catalog, a: NodeRecord, b: NodeRecord, va: int, vb: int) -> list[Cause]:
    old, new = cat.code(a.code), cat.code(b.code)
    if old is None or new is None:
        return [Cause(ChangeKind.CODE, b.name, detail="the source was not recorded")]
    causes = []
    (src_a, pkg_a), (src_b, pkg_b) = old, new
    for qualname in sorted(set(src_a) | set(src_b)):
        before, after = src_a.get(qualname, ""), src_b.get(qualname, "")
        if before != after:
            lines = difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                f"v{va}/{qualname}",
                f"v{vb}/{qualname}",
                lineterm="",
            )
            causes.append(Cause(ChangeKind.CODE, qualname, detail="\n".join(lines)))
    for dist in sorted(set(pkg_a) | set(pkg_b)):
        if pkg_a.get(dist) != pkg_b.get(dist):
            causes.append(Cause(ChangeKind.PACKAGE, dist, pkg_a.get(dist), pkg_b.get(dist)))
    return causes or [
        Cause(ChangeKind.CODE_VALUE, b.name, detail="a constant, closure value or default changed")
    ]


def _is_upstream(value: str | None) -> bool:
    return value is not None and value.startswith("<") and value.endswith(">")


def _causes(cat: Catalog, a: NodeRecord, b: NodeRecord, va: int, vb: int) -> tuple[Cause, ...]:
    if not b.code or not a.code:
        return (Cause(ChangeKind.UNKNOWN, b.name, detail="the task is not deterministic"),)
    causes = _code_causes(cat, a, b, va, vb) if a.code != b.code else []
    for arg in sorted(set(a.args) | set(b.args)):
        if a.args.get(arg) == b.args.get(arg):
            continue
        old, new = a.arg_values.get(arg), b.arg_values.get(arg)
        if _is_upstream(old) and _is_upstream(new):
            continue  # the parent's own change explains it
        if old == new and old is not None and old.startswith("File("):
            causes.append(Cause(ChangeKind.DATA_FILE, old, a.args.get(arg), b.args.get(arg)))
        elif old == new:
            causes.append(
                Cause(ChangeKind.ARGUMENT, arg, old, new, detail="content changed, repr did not")
            )
        else:
            causes.append(Cause(ChangeKind.ARGUMENT, arg, old or "(absent)", new or "(absent)"))
    for parent in sorted(set(b.parents) - set(a.parents)):
        causes.append(Cause(ChangeKind.UPSTREAM, _task_name(parent)))
    return tuple(causes) or (Cause(ChangeKind.UNKNOWN, b.name),)


def diff(cat: Catalog, a: int, b: int) -> VersionDiff:
    """Which nodes changed from version ``a`` to ``b`` and why, what ``b`` recomputed, and how
    each metric moved.

    Examples
    --------
    >>> d = diff(hx.Catalog("./.helix"), 2, 3)                   # doctest: +SKIP
    >>> [c.describe() for c in d.changes[0].causes]             # doctest: +SKIP
    ['code of flow.helper changed']
    """
    old, new = cat.run(a), cat.run(b)
    changes, unchanged, same = [], [], set()
    for x, y in match_nodes(old, new):
        if x is not None and y is not None and x.signature == y.signature:
            unchanged.append(y.name)
            same.add(y.key)
        elif x is None and y is not None:
            changes.append(
                NodeChange(y.name, None, y.key, (Cause(ChangeKind.ADDED, y.name),), y.decision)
            )
        elif y is None and x is not None:
            changes.append(
                NodeChange(x.name, x.key, None, (Cause(ChangeKind.REMOVED, x.name),), None)
            )
        elif x is not None and y is not None:
            changes.append(NodeChange(y.name, x.key, y.key, _causes(cat, x, y, a, b), y.decision))
    depth_old, depth_new = _depths(old), _depths(new)

    def order(c: NodeChange) -> int:
        return depth_new[c.new_key] if c.new_key else depth_old.get(c.old_key or "", 0)

    known = _known_metrics(cat.runs())
    before, after = _metrics_by_node(old, known), _metrics_by_node(new, known)
    deltas = [
        MetricDelta(node, metric, before.get(node, {}).get(metric), after.get(node, {}).get(metric))
        for node in sorted(set(before) | set(after))
        for metric in sorted(set(before.get(node, {})) | set(after.get(node, {})))
    ]
    return VersionDiff(
        old=a,
        new=b,
        changes=tuple(sorted(changes, key=lambda c: (not c.direct, order(c), c.name))),
        unchanged=tuple(sorted(unchanged)),
        recomputed=tuple(sorted(c.name for c in changes if c.new_decision is Decision.COMPUTE)),
        recomputed_unchanged=tuple(
            sorted(n.name for n in new.nodes if n.decision is Decision.COMPUTE and n.key in same)
        ),
        metrics=tuple(deltas),
    )


# -- metrics ------------------------------------------------------------------------------------


def _known_metrics(runs: Iterable[RunReport]) -> dict[str, Mapping[str, float]]:
    """Metrics by signature: a loaded or pruned metrics node reports what its compute recorded."""
    return {n.signature: n.metrics for r in runs for n in r.nodes if n.metrics is not None}


def _metrics_by_node(
    run: RunReport, known: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """``task name`` (``name#2`` for the second of a name) -> its metrics in ``run``."""
    out: dict[str, dict[str, float]] = {}
    seen: dict[str, int] = defaultdict(int)
    depth = _depths(run)
    for n in sorted(run.nodes, key=lambda n: (n.name, depth[n.key], sorted(n.arg_values.items()))):
        values = n.metrics if n.metrics is not None else known.get(n.signature)
        if values is None:
            continue
        seen[n.name] += 1
        out[n.name if seen[n.name] == 1 else f"{n.name}#{seen[n.name]}"] = dict(values)
    return out


@dataclass(frozen=True, slots=True)
class MetricsRow:
    version: int
    started: float
    message: str
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class MetricsTable:
    """Metrics across versions: one column per metric (``task.metric`` when names clash)."""

    columns: tuple[str, ...]
    rows: tuple[MetricsRow, ...]

    def sorted_by(self, column: str, *, descending: bool = True) -> MetricsTable:
        """The rows ordered by ``column``; versions without it go last."""
        if column not in self.columns:
            raise HelixConfigError(f"no metric {column!r}; expected one of {list(self.columns)}")
        have = [r for r in self.rows if column in r.values]
        rest = [r for r in self.rows if column not in r.values]
        have.sort(key=lambda r: r.values[column], reverse=descending)
        return MetricsTable(self.columns, tuple(have + rest))


def metrics_table(cat: Catalog) -> MetricsTable:
    """The metrics every ``@hx.task(metrics=True)`` node reported, one row per version (oldest
    first)."""
    runs = cat.runs()
    known = _known_metrics(runs)
    per_run = [(r, _metrics_by_node(r, known)) for r in runs]
    owners: dict[str, set[str]] = defaultdict(set)
    for _, by_node in per_run:
        for node, values in by_node.items():
            for metric in values:
                owners[metric].add(node)
    columns: list[str] = []
    rows = []
    for run, by_node in per_run:
        values = {}
        for node, metrics in by_node.items():
            for metric, value in metrics.items():
                col = metric if len(owners[metric]) == 1 else f"{node}.{metric}"
                values[col] = value
                if col not in columns:
                    columns.append(col)
        if values:
            rows.append(MetricsRow(run.version, run.started, run.message, values))
    return MetricsTable(tuple(columns), tuple(rows))


# -- the DAG of one version ---------------------------------------------------------------------


def _previous(cat: Catalog, run: RunReport) -> RunReport | None:
    """The newest older version of the same workflow."""
    older = [v.id for v in cat.versions() if v.id < run.version and v.workflow == run.workflow]
    return cat.run(max(older)) if older else None


def dag(cat: Catalog, version: int) -> nx.DiGraph:
    """Version ``version`` as a DAG keyed by node key, edges parent -> child.

    Node attributes: ``name``, ``signature``, ``state`` (``computed``, ``loaded``, ``pruned``,
    ``in cluster``), ``changed`` (differs from the previous version of the workflow),
    ``stored``, ``artifact`` (location or None), ``nbytes``, the costs (``compute_seconds``,
    ``load_seconds``, ``write_seconds``, ``estimated_compute_seconds``), ``reason``, ``metrics``.
    """
    import networkx as nx

    run = cat.run(version)
    before = _previous(cat, run)
    changed: set[str] = set()
    if before is not None:
        for a, b in match_nodes(before, run):
            if b is not None and (a is None or a.signature != b.signature):
                changed.add(b.key)
    graph = nx.DiGraph(version=run.version, message=run.message, status=run.status)
    for n in run.nodes:
        row = cat.artifact(n.stored_as)
        graph.add_node(
            n.key,
            name=n.name,
            signature=n.signature,
            state=STATES[n.decision],
            changed=n.key in changed,
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


# -- small formatting shared by the HTML views --------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def to_data(obj: Any) -> Any:
    """Records as JSON-ready data: dataclasses (with their derived properties) as dicts, tuples
    as lists; str enums stay strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name, attr in vars(type(obj)).items():
            if isinstance(attr, property) and not name.startswith("_"):
                out[name] = to_data(getattr(obj, name))
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_data(v) for v in obj]
    return obj


def when(ts: float | None) -> str:
    """A local timestamp as ``YYYY-MM-DD HH:MM:SS`` (``-`` for None)."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
