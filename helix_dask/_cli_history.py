"""The ``helix`` commands reading a store's history: ``log`` lists versions, ``show`` one version's
nodes and costs, ``diff`` two versions, ``metrics`` the metrics across versions (and a plot);
versions named on the command line and JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from . import history
from ._errors import HelixConfigError
from .catalog import Catalog
from .presentation import (
    arguments,
    clip,
    diff_lines,
    num,
    secs,
    size,
    status,
    table,
    to_data,
    when,
)


def _print_json(obj: Any, out: TextIO) -> None:
    json.dump(to_data(obj), out, indent=2, default=str)
    out.write("\n")


def _version(cat: Catalog, text: str) -> int:
    """``3``, ``v3``, ``latest`` or ``-1`` (newest), ``-2`` (the one before) as a version id."""
    ids = [v.id for v in cat.versions()]
    if not ids:
        raise HelixConfigError(f"the catalog {cat.path} has no versions yet; run a workflow first")
    t = text.strip().lower().removeprefix("v")
    if t in ("latest", "last"):
        return ids[0]
    try:
        n = int(t)
    except ValueError:
        raise HelixConfigError(
            f"version {text!r} is not a number; pass e.g. 3, v3 or latest"
        ) from None
    if n < 0 and -n <= len(ids):
        return ids[-n - 1]
    if n not in ids:
        raise HelixConfigError(
            f"version {text!r} is not in {cat.path}; `helix log` lists the versions"
        )
    return n


def cmd_log(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    rows = history.log_rows(cat, args.limit or None)
    if args.json:
        return _print_json(rows, out)
    extra = any(r.in_cluster for r in rows)
    headers = ["VERSION", "STARTED", "STATUS", "MESSAGE", "COMPUTED", "LOADED", "PRUNED"]
    headers += ["IN CLUSTER"] * extra + ["WALL", "SAVED", "STORED"]
    body = [
        [
            f"v{r.version}",
            when(r.started),
            status(r),
            clip(r.message, 40),
            r.computed,
            r.loaded,
            r.pruned,
            *([r.in_cluster] if extra else []),
            "running" if r.wall_seconds is None else secs(r.wall_seconds),
            f"{secs(r.time_saved)} of {secs(r.full_seconds)}",
            size(r.stored_bytes),
        ]
        for r in rows
    ]
    out.write(table(headers, body, numeric={4, 5, 6, *range(7, len(headers))}) + "\n")


def cmd_show(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    v = _version(cat, args.version)
    run, graph = cat.run(v), history.dag(cat, v)
    from ._drawing import layout

    slots = layout(graph)
    order = sorted(graph, key=lambda k: (slots[k], k))
    if args.json:
        nodes = [
            {"key": k, **graph.nodes[k], "parents": list(graph.predecessors(k))} for k in order
        ]
        return _print_json(
            {"version": v, "summary": run.summary(), "run": run, "nodes": nodes}, out
        )
    out.write(
        f"v{v}  {when(run.started)}  {run.status}  workflow {run.workflow!r}"
        f"  message {run.message!r}\n{run.summary()}\n"
    )
    if run.predicted_seconds is not None and run.measured_seconds is not None:
        out.write(
            f"plan predicted {run.predicted_seconds:.3f}s of compute and loads, measured "
            f"{run.measured_seconds:.3f}s\n"
        )
    out.write("\n")
    headers = ["NODE", "TASK", "ARGUMENTS", "STATE", "SIGNATURE", "COMPUTE", "LOAD", "WRITE"]
    headers += ["EST", "SIZE", "ARTIFACT", "REASON"]
    body = []
    for k in order:
        a = graph.nodes[k]
        state = a["state"] + (" (changed)" if a["changed"] else "")
        body.append(
            [
                a["label"],
                a["name"],
                arguments(a["arg_values"]) or "-",
                state + (", stored" if a["stored"] else ""),
                a["signature"][:12],
                secs(a["compute_seconds"]),
                secs(a["load_seconds"]),
                secs(a["write_seconds"]),
                secs(a["estimated_compute_seconds"]),
                size(a["nbytes"]),
                a["artifact"] or "-",
                clip(a["reason"] or "", 48),
            ]
        )
    out.write(table(headers, body, numeric={5, 6, 7, 8, 9}) + "\n")


def cmd_diff(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    ids = [v.id for v in cat.versions()]
    new = _version(cat, args.new) if args.new else ids[0]
    if args.old:
        old = _version(cat, args.old)
    elif len(ids) > 1 and new != ids[-1]:
        old = max(i for i in ids if i < new)
    else:
        raise HelixConfigError("diff needs two versions; pass `helix diff OLD NEW`")
    d = history.diff(cat, old, new)
    if args.json:
        return _print_json(d, out)
    out.write("\n".join(diff_lines(d)) + "\n")


def cmd_metrics(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    t = history.metrics_table(cat)
    if args.sort:
        t = t.sorted_by(args.sort, descending=not args.ascending)
    if args.plot:
        _plot_metrics(t, Path(args.plot))
    if args.json:
        return _print_json(t, out)
    if not t.rows:
        out.write(
            "no metrics recorded yet; mark a task returning a dict with @hx.task(metrics=True)\n"
        )
        return
    body = [
        [f"v{r.version}", clip(r.message, 40), *(num(r.values.get(c)) for c in t.columns)]
        for r in t.rows
    ]
    out.write(
        table(["VERSION", "MESSAGE", *t.columns], body, set(range(2, 2 + len(t.columns)))) + "\n"
    )
    if args.plot:
        sys.stderr.write(f"wrote {args.plot}\n")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HelixConfigError("PNG output needs matplotlib; pip install matplotlib") from None
    return plt


def _plot_metrics(t: history.MetricsTable, path: Path) -> None:
    """One panel per metric (their scales differ), versions along a shared x axis."""
    plt = _pyplot()
    rows = sorted(t.rows, key=lambda r: r.version)
    n = max(len(t.columns), 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1 + 2.2 * n), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], t.columns, strict=False):
        points = [(r.version, r.values[col]) for r in rows if col in r.values]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("version")
    axes[-1, 0].set_xticks([r.version for r in rows])
    axes[0, 0].set_title("helix metrics across versions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
