"""The iteration history as records: what each version did, what changed between two and why,
metrics across versions, the DAG of one version.

Plain functions over a :class:`~helix_dask.catalog.Catalog` shared by the CLI, the dashboard
and notebooks: they read the catalog with a few aggregate queries (never one per version) and
return frozen records. Nodes are named and paired across versions by lineage
(:mod:`helix_dask._lineage`); how records are shown lives in :mod:`helix_dask.presentation`.
"""

from __future__ import annotations

import ast
import difflib
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import HelixConfigError
from ._events import Decision, Materialization, NodeRecord, RunReport
from ._lineage import Lineage, is_upstream

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


# -- diff ---------------------------------------------------------------------------------------


class ChangeKind(enum.StrEnum):
    """Why a node differs between two versions."""

    CODE = "code"
    """The source of the task function or of a project helper it reaches changed."""
    CODE_VALUE = "code value"
    """A module constant, closure value or default the code reads changed; the source did not."""
    ARGUMENT = "argument"
    """An argument value changed (for an estimator: one of its parameters)."""
    DATA_FILE = "data file"
    """An ``hx.File`` argument kept its path but its content changed."""
    PACKAGE = "package"
    """The version of an installed package the code calls changed."""
    UPSTREAM = "upstream"
    """A parent node changed, so this one was recomputed as a consequence."""
    RUNTIME = "run-time dependency"
    """Code the node reached only while running (a traced function, a library) changed: same
    signature, another effective signature."""
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
    parameter: str = ""
    """For an estimator argument: the parameter that changed (``pca__n_components``)."""

    def describe(self) -> str:
        """One line, e.g. ``argument bins: 10 -> 5``."""
        if self.kind is ChangeKind.ARGUMENT and self.parameter:
            return f"argument {self.subject}: {self.parameter}: {self.old} -> {self.new}"
        if self.kind in (ChangeKind.ARGUMENT, ChangeKind.PACKAGE, ChangeKind.RUNTIME):
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


_ABSENT = "(default)"


def estimator_parameters(text: str) -> dict[str, str] | None:
    """The parameters an estimator's repr shows, flattened scikit-learn style
    (``Pipeline(steps=[('pca', PCA(n_components=5))])`` -> ``{'pca__n_components': '5'}``);
    None when ``text`` is not such a repr (or was shortened)."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name) or tree.args:
        return None
    out: dict[str, str] = {}

    def walk(call: ast.Call, prefix: str) -> None:
        for kw in call.keywords:
            value = kw.value
            if kw.arg in ("steps", "transformer_list", "transformers", "estimators") and (
                isinstance(value, ast.List)
            ):
                for item in value.elts:
                    if (
                        isinstance(item, ast.Tuple)
                        and len(item.elts) >= 2
                        and isinstance(item.elts[0], ast.Constant)
                    ):
                        step, est = str(item.elts[0].value), item.elts[1]
                        if isinstance(est, ast.Call):
                            out[f"{prefix}{step}"] = ast.unparse(est.func)
                            walk(est, f"{prefix}{step}__")
                        else:
                            out[f"{prefix}{step}"] = ast.unparse(est)
                continue
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                out[f"{prefix}{kw.arg}"] = ast.unparse(value.func)
                walk(value, f"{prefix}{kw.arg}__")
            else:
                out[f"{prefix}{kw.arg}"] = ast.unparse(value)

    walk(tree, "")
    out[""] = tree.func.id  # the estimator's class
    return out


def _argument_causes(arg: str, old: str | None, new: str | None) -> list[Cause]:
    """An argument change: per parameter when both values are estimator reprs."""
    params = (
        (estimator_parameters(old), estimator_parameters(new))
        if old is not None and new is not None
        else (None, None)
    )
    before, after = params
    if before is None or after is None or before[""] != after[""]:
        return [Cause(ChangeKind.ARGUMENT, arg, old or "(absent)", new or "(absent)")]
    return [
        Cause(
            ChangeKind.ARGUMENT,
            arg,
            before.get(p, _ABSENT),
            after.get(p, _ABSENT),
            parameter=p,
        )
        for p in sorted(set(before) | set(after))
        if before.get(p) != after.get(p)
    ]


def _causes(
    cat: Catalog, a: NodeRecord, b: NodeRecord, va: int, vb: int, parent_names: Mapping[str, str]
) -> tuple[Cause, ...]:
    if not b.code or not a.code:
        return (Cause(ChangeKind.UNKNOWN, b.name, detail="the task is not deterministic"),)
    causes = _code_causes(cat, a, b, va, vb) if a.code != b.code else []
    for arg in sorted(set(a.args) | set(b.args)):
        if a.args.get(arg) == b.args.get(arg):
            continue
        old, new = a.arg_values.get(arg), b.arg_values.get(arg)
        if is_upstream(old) and is_upstream(new):
            continue  # the parent's own change explains it
        if old == new and old is not None and old.startswith("File("):
            causes.append(Cause(ChangeKind.DATA_FILE, old, a.args.get(arg), b.args.get(arg)))
        elif old == new:
            causes.append(
                Cause(ChangeKind.ARGUMENT, arg, old, new, detail="content changed, repr did not")
            )
        else:
            causes.extend(_argument_causes(arg, old, new))
    for parent in sorted(set(b.parents) - set(a.parents)):
        causes.append(
            Cause(ChangeKind.UPSTREAM, parent_names.get(parent, parent.rsplit("-", 1)[0]))
        )
    return tuple(causes) or (Cause(ChangeKind.UNKNOWN, b.name),)


def _runtime_causes(cat: Catalog, a: NodeRecord, b: NodeRecord) -> tuple[Cause, ...]:
    """Same signature, another identity: the run-time dependencies whose digests differ."""
    found = cat.requirements_of([a.stored_as, b.stored_as])
    old, new = found.get(a.stored_as, {}), found.get(b.stored_as, {})
    return tuple(
        Cause(ChangeKind.RUNTIME, dep, old.get(dep, "(absent)"), new.get(dep, "(absent)"))
        for dep in sorted(set(old) | set(new))
        if old.get(dep) != new.get(dep)
    )


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


# -- metrics ------------------------------------------------------------------------------------


def _known_metrics(runs: Sequence[RunReport]) -> dict[str, Mapping[str, float]]:
    """Metrics by signature: a loaded or pruned metrics node reports what its compute recorded."""
    return {n.signature: n.metrics for r in runs for n in r.nodes if n.metrics is not None}


def _metrics_by_track(
    runs: Sequence[RunReport], lin: Lineage, i: int, known: Mapping | None = None
) -> dict[str, dict[str, float]]:
    """Track -> the metrics its node reported in the ``i``-th run."""
    known = _known_metrics(runs) if known is None else known
    out = {}
    for n in runs[i].nodes:
        values = n.metrics if n.metrics is not None else known.get(n.signature)
        if values is not None:
            out[lin.track(i, n.key)] = dict(values)
    return out


def _metric_tracks(runs: Sequence[RunReport], lin: Lineage) -> list[str]:
    known = _known_metrics(runs)
    return [
        lin.track(i, n.key)
        for i, r in enumerate(runs)
        for n in r.nodes
        if n.metrics is not None or n.signature in known
    ]


@dataclass(frozen=True, slots=True)
class MetricsRow:
    version: int
    started: float
    message: str
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class MetricsTable:
    """Metrics across versions: one column per metric; ``<node>.<metric>`` when several nodes
    report it, the node named by its label or its lineage (the same call in every version)."""

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

    def to_pandas(self):
        """A DataFrame indexed by version: ``message`` and one column per metric."""
        import pandas as pd

        frame = pd.DataFrame(
            [{"version": r.version, "message": r.message, **r.values} for r in self.rows],
            columns=["version", "message", *self.columns],
        )
        return frame.set_index("version")


def metrics_table(cat: Catalog) -> MetricsTable:
    """The metrics every ``@hx.task(metrics=True)`` node reported, one row per version (oldest
    first), a node's metrics in the same column in every version."""
    runs = cat.runs()
    lin = Lineage(r.nodes for r in runs)
    known = _known_metrics(runs)
    per_run = [(r, _metrics_by_track(runs, lin, i, known)) for i, r in enumerate(runs)]
    names = lin.names(t for _, by_track in per_run for t in by_track)
    owners: dict[str, set[str]] = {}
    for _, by_track in per_run:
        for t, values in by_track.items():
            for metric in values:
                owners.setdefault(metric, set()).add(t)
    columns: list[str] = []
    rows = []
    for run, by_track in per_run:
        values = {}
        for t in sorted(by_track, key=lambda t: names[t]):
            for metric, value in by_track[t].items():
                col = metric if len(owners[metric]) == 1 else f"{names[t]}.{metric}"
                values[col] = value
                if col not in columns:
                    columns.append(col)
        if values:
            rows.append(MetricsRow(run.version, run.started, run.message, values))
    return MetricsTable(tuple(columns), tuple(rows))


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
