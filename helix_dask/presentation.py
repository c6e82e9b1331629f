"""How history records are shown: text tables for the CLI, HTML for notebooks and the
dashboard, JSON-ready data for ``--json`` and the dashboard's API.

One module, so the CLI, notebooks and the ``/helix`` page word and format things the same way;
the DAG picture is drawn by :mod:`helix_dask._drawing`.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

if TYPE_CHECKING:
    from .history import Cause, LogRow, VersionDiff


def e(text: object) -> str:
    """``text`` escaped for HTML (quotes too)."""
    return html.escape(str(text), quote=True)


def num(value: float | None, *, signed: bool = False) -> str:
    """A number in four significant digits, ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def size(value: int | None) -> str:
    return "-" if value is None else format_bytes(int(value))


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def when(ts: float | None) -> str:
    """A local timestamp as ``YYYY-MM-DD HH:MM:SS`` (``-`` for None)."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def status(row: LogRow) -> str:
    """A version's status, with the version it re-ran identically: ``done, = v4``."""
    return row.status + (f", = v{row.repeats}" if row.repeats is not None else "")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int] = frozenset()
) -> str:
    """Columns aligned with two spaces between them; ``numeric`` columns align right."""
    cells = [[str(c) for c in headers], *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def arguments(values: Mapping[str, str], width: int = 60) -> str:
    """A node's arguments in one line, ``bins=5, model=<train>``."""
    return clip(", ".join(f"{k}={v}" for k, v in sorted(values.items())), width)


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


def diff_lines(d: VersionDiff) -> list[str]:
    """``helix diff`` as text lines: every changed node with its causes, each code change's
    unified diff once (after the first node it explains), then what recomputed."""
    from .history import STATES, ChangeKind

    direct = [c for c in d.changes if c.direct]
    out = [
        f"v{d.old} -> v{d.new}: {len(direct)} changed, {len(d.changes) - len(direct)} changed "
        f"upstream only, {len(d.unchanged)} unchanged"
    ]
    shown: set[tuple[str, str]] = set()
    for c in d.changes:
        now = c.new_decision or "gone"
        out.append(f"\n{c.name}  [{STATES.get(now, now) if c.new_key else 'removed'}]")
        for cause in c.causes:
            code = cause.kind is ChangeKind.CODE and cause.detail
            if code and (cause.subject, cause.detail) in shown:
                out.append(f"  {cause.describe()} (diff above)")
                continue
            out.append(f"  {cause.describe()}")
            if code:
                shown.add((cause.subject, cause.detail))
                out.extend(f"    {line}" for line in cause.detail.splitlines())
    out.append(f"\nrecomputed in v{d.new}: {', '.join(d.recomputed) or 'nothing'}")
    if d.recomputed_unchanged:
        out.append(f"also computed, unchanged: {', '.join(d.recomputed_unchanged)}")
    if d.metrics:
        body = [
            [m.node, m.metric, num(m.old), num(m.new), num(m.delta, signed=True)] for m in d.metrics
        ]
        out.append(
            "\n" + table(["NODE", "METRIC", f"v{d.old}", f"v{d.new}", "DELTA"], body, {2, 3, 4})
        )
    return out


def _cause_html(c: Cause, shown: set[tuple[str, str]]) -> str:
    from .history import ChangeKind

    if c.kind is not ChangeKind.CODE or not c.detail:
        return e(c.describe())
    if (c.subject, c.detail) in shown:
        return e(c.describe() + " (diff above)")
    shown.add((c.subject, c.detail))
    return e(c.describe()) + f"<pre>{e(c.detail)}</pre>"


def diff_html(d: VersionDiff) -> str:
    """A :class:`~helix_dask.history.VersionDiff` as HTML (notebooks, the dashboard)."""
    shown: set[tuple[str, str]] = set()
    rows = "".join(
        f"<tr><td>{e(c.name)}</td><td>{e(c.new_decision or '')}</td><td>"
        + "<br>".join(_cause_html(x, shown) for x in c.causes)
        + "</td></tr>"
        for c in d.changes
    )
    metrics = "".join(
        f"<tr><td>{e(m.node)}</td><td>{e(m.metric)}</td><td>{num(m.old)}</td>"
        f"<td>{num(m.new)}</td><td>{num(m.delta, signed=True)}</td></tr>"
        for m in d.metrics
    )
    return (
        f"<div><b>v{d.old} &rarr; v{d.new}</b>: {len(d.changes)} changed, "
        f"{len(d.unchanged)} unchanged, recomputed: {e(', '.join(d.recomputed))}"
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
