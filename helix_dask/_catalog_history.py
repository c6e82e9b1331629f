"""The catalog's reads of the history: versions and their statistics, run reports (a
:class:`Runs` list, a table with ``to_pandas``), materializer events, and the history records
built from them (diff, metrics, DAG, garbage collection)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ._catalog_schema import (
    NODE_COLUMNS,
    VersionRow,
    VersionStats,
    chunks,
    node_record,
    placeholders,
)
from ._events import Decision, EventRecord, Materialization, NodeRecord, RunReport


class Runs(list[RunReport]):
    """Run reports, oldest first: a list, and a table with :meth:`to_pandas`."""

    def to_pandas(self):
        """One row per version: headline, counts per decision, seconds and bytes."""
        import pandas as pd

        rows = []
        for r in self:
            count = {d: sum(n.decision is d for n in r.nodes) for d in Decision}
            rows.append(
                {
                    "version": r.version,
                    "workflow": r.workflow,
                    "status": r.status,
                    "message": r.message,
                    "started": pd.to_datetime(r.started, unit="s"),
                    "finished": pd.to_datetime(r.finished, unit="s"),
                    "computed": count[Decision.COMPUTE],
                    "loaded": count[Decision.LOAD],
                    "pruned": count[Decision.PRUNE],
                    "in_cluster": count[Decision.IN_CLUSTER],
                    "stored": sum(n.materialization is Materialization.STORED for n in r.nodes),
                    "time_saved": r.time_saved,
                    "predicted_seconds": r.predicted_seconds,
                    "measured_seconds": r.measured_seconds,
                }
            )
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["version"])


class HistoryReads:
    """The reads of versions and their runs, for :class:`~helix_dask.catalog.Catalog`."""

    path: Path
    _query: Callable[..., list[tuple]]

    def events(self, version: int | None = None) -> list[EventRecord]:
        """Materializer events, oldest first; only those of ``version`` when given."""
        sql = "SELECT time, version, kind, signature, name, nbytes, reason FROM events"
        rows = (
            self._query(sql + " WHERE version = ? ORDER BY id", (version,))
            if version is not None
            else self._query(sql + " ORDER BY id")
        )
        return [EventRecord(*r) for r in rows]

    def versions(self) -> list[VersionRow]:
        counts: dict[int, dict[str, int]] = {}
        for v, decision, n in self._query(
            "SELECT version, decision, COUNT(*) FROM nodes GROUP BY version, decision"
        ):
            counts.setdefault(v, {})[decision] = n
        return [
            VersionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], counts.get(r[0], {}))
            for r in self._query(
                "SELECT id, workflow, started, finished, status, message, time_saved "
                "FROM versions ORDER BY id DESC"
            )
        ]

    def version_stats(self, limit: int | None = None) -> list[VersionStats]:
        """The newest ``limit`` versions (all when None), newest first, with their counts per
        decision, seconds to compute everything, bytes stored and the earlier version each
        repeats exactly, if any: three queries, whatever the number of versions."""
        rows = self._query(
            "SELECT v.id, v.workflow, v.started, v.finished, v.status, v.message, v.time_saved, "
            "TOTAL(n.decision = 'compute'), TOTAL(n.decision = 'load'), "
            "TOTAL(n.decision = 'prune'), TOTAL(n.decision = 'in_cluster'), "
            "TOTAL(COALESCE(n.compute_seconds, n.estimated_compute_seconds)), "
            "TOTAL(CASE WHEN n.materialization = 'stored' THEN COALESCE(a.nbytes, n.nbytes, 0) "
            "ELSE 0 END) "
            "FROM versions v LEFT JOIN nodes n ON n.version = v.id "
            "LEFT JOIN artifacts a ON a.signature = "
            "(CASE WHEN n.identity != '' THEN n.identity ELSE n.signature END) "
            "GROUP BY v.id ORDER BY v.id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        repeats = self._repeats()
        return [
            VersionStats(
                *r[:7],
                computed=int(r[7]),
                loaded=int(r[8]),
                pruned=int(r[9]),
                in_cluster=int(r[10]),
                full_seconds=float(r[11]),
                stored_bytes=int(r[12]),
                repeats=repeats.get(r[0]),
            )
            for r in rows
        ]

    def _repeats(self) -> dict[int, int]:
        """Version -> the newest earlier version of its workflow with exactly its signatures."""
        sigs: dict[int, set[str]] = {}
        for v, sig in self._query("SELECT version, signature FROM nodes"):
            sigs.setdefault(v, set()).add(sig)
        last: dict[tuple[str, frozenset[str]], int] = {}
        out: dict[int, int] = {}
        for v, workflow in self._query("SELECT id, workflow FROM versions ORDER BY id"):
            key = (workflow, frozenset(sigs.get(v, ())))
            if key[1] and key in last:
                out[v] = last[key]
            last[key] = v
        return out

    def runs(self, versions: Iterable[int] | None = None) -> Runs:
        """Every version's report (or those of ``versions``), oldest first, read in a few
        queries; ``.to_pandas()`` gives one row per version.

        Examples
        --------
        >>> hx.Catalog("./.helix").runs().to_pandas()[["version", "computed"]]  # doctest: +SKIP
        """
        where, params = "", ()
        if versions is not None:
            ids = sorted(set(versions))
            where, params = f" WHERE id IN ({placeholders(len(ids))})", tuple(ids)
        heads = self._query(
            "SELECT id, workflow, started, finished, status, message, time_saved, "
            f"predicted_seconds, measured_seconds FROM versions{where} ORDER BY id",
            params,
        )
        nodes: dict[int, list[NodeRecord]] = {h[0]: [] for h in heads}
        events: dict[int, list[EventRecord]] = {h[0]: [] for h in heads}
        node_sql = f"SELECT {NODE_COLUMNS} FROM nodes"
        event_sql = "SELECT time, version, kind, signature, name, nbytes, reason FROM events"
        if versions is None:
            node_rows = self._query(node_sql + " ORDER BY version, name")
            event_rows = self._query(event_sql + " WHERE version IS NOT NULL ORDER BY id")
        else:
            node_rows, event_rows = [], []
            for chunk in chunks(list(nodes)):
                marks = placeholders(len(chunk))
                node_rows += self._query(
                    f"{node_sql} WHERE version IN ({marks}) ORDER BY version, name", chunk
                )
                event_rows += self._query(f"{event_sql} WHERE version IN ({marks})", chunk)
        for r in node_rows:
            if r[0] in nodes:
                nodes[r[0]].append(node_record(r))
        for e in event_rows:
            if e[1] in events:
                events[e[1]].append(EventRecord(*e))
        return Runs(
            RunReport(
                vid,
                workflow,
                started,
                finished,
                status,
                tuple(nodes[vid]),
                saved,
                message,
                predicted_seconds=predicted,
                measured_seconds=measured,
                events=tuple(events[vid]),
            )
            for vid, workflow, started, finished, status, message, saved, predicted, measured in (
                heads
            )
        )

    def next_version(self) -> int:
        """The id the next version gets (ids are never reused, even after a delete)."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'versions'")
        last = self._query("SELECT MAX(id) FROM versions")[0][0]
        return max(rows[0][0] if rows else 0, last or 0) + 1

    def last_version(self) -> int | None:
        """The newest version id, or None for an empty catalog."""
        row = self._query("SELECT MAX(id) FROM versions")[0]
        return row[0]

    def run(self, version: int) -> RunReport:
        found = self.runs([version])
        if not found:
            raise KeyError(f"version {version} is not in the catalog {str(self.path)!r}")
        return found[0]

    def diff(self, a: int, b: int):
        """What changed from version ``a`` to ``b`` and why: a
        :class:`~helix_dask.history.VersionDiff` (``helix diff a b``)."""
        from .history import diff

        return diff(self, a, b)

    def metrics(self):
        """The metrics of every version: a :class:`~helix_dask.history.MetricsTable`
        (``helix metrics``; ``.to_pandas()``)."""
        from .history import metrics_table

        return metrics_table(self)

    def dag(self, v: int):
        """The DAG of version ``v`` with node states: a :class:`~helix_dask._drawing.DagView`
        (``.graph``, ``.to_svg()``, drawn inline in notebooks)."""
        from ._drawing import DagView
        from .history import dag

        return DagView(dag(self, v))

    def gc(self, keep: int, *, dry_run: bool = True):
        """Remove artifacts that no node of the last ``keep`` versions uses (``helix gc``).

        With ``dry_run`` (the default) nothing is deleted: the returned
        :class:`~helix_dask.usage.GcPlan` lists what would go and why. Otherwise returns the
        :class:`~helix_dask.usage.GcResult`. Artifacts of running versions always stay.
        """
        from .usage import apply_gc, gc_plan

        plan = gc_plan(self, keep)
        return plan if dry_run else apply_gc(self, plan)


Runs.__module__ = "helix_dask.catalog"
