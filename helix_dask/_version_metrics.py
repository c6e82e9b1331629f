"""Metrics across versions: what every metrics node reported (a loaded or pruned one reports
what its compute recorded), one column per metric, one row per version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import HelixConfigError
from ._events import RunReport
from ._lineage import Lineage

if TYPE_CHECKING:
    from .catalog import Catalog


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


MetricsRow.__module__ = MetricsTable.__module__ = metrics_table.__module__ = "helix_dask.history"
