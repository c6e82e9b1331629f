"""The ``helix`` command: the iteration history of a store, read from its catalog.

``helix log | show | diff | metrics | dag | du | gc``; ``--store`` (or ``HELIX_STORE``) names the
store, ``--json`` prints machine-readable output. Reading is safe while a run is going.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any, TextIO

from dask.utils import format_bytes

from . import _config, views
from ._drawing import BOX_H, BOX_W, LEGEND, MARGIN, STORED_OUTLINE, colour, cost_label, positions
from ._errors import HelixConfigError, HelixError, HelixStoreError
from .catalog import Catalog

STORE_ENV = "HELIX_STORE"


# -- output helpers -----------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int] = frozenset()
):
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


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _size(value: int | None) -> str:
    return "-" if value is None else format_bytes(int(value))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _print_json(obj: Any, out: TextIO) -> None:
    json.dump(views.to_data(obj), out, indent=2, default=str)
    out.write("\n")


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, a few lines otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._tenth = -1

    def __call__(self, done: int, total: int, freed: int) -> None:
        line = f"{self.label}: {done}/{total} artifacts, {format_bytes(freed)} freed"
        end = done >= total
        if self.tty:
            now = time.monotonic()
            if end or now - self._last > 0.1:
                self._last = now
                self.stream.write("\r" + line + ("\n" if end else ""))
        elif end or done * 10 // max(total, 1) > self._tenth:
            self._tenth = done * 10 // max(total, 1)
            self.stream.write(line + "\n")
        self.stream.flush()


# -- commands -----------------------------------------------------------------------------------


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
    rows = views.log_rows(cat, args.limit or None)
    if args.json:
        return _print_json(rows, out)
    extra = any(r.in_cluster for r in rows)
    headers = ["VERSION", "STARTED", "STATUS", "MESSAGE", "COMPUTED", "LOADED", "PRUNED"]
    headers += ["IN CLUSTER"] * extra + ["WALL", "SAVED", "STORED"]
    body = [
        [
            f"v{r.version}",
            views.when(r.started),
            r.status,
            _clip(r.message, 40),
            r.computed,
            r.loaded,
            r.pruned,
            *([r.in_cluster] if extra else []),
            "running" if r.wall_seconds is None else _secs(r.wall_seconds),
            f"{_secs(r.time_saved)} of {_secs(r.full_seconds)}",
            _size(r.stored_bytes),
        ]
        for r in rows
    ]
    out.write(table(headers, body, numeric={4, 5, 6, *range(7, len(headers))}) + "\n")


def cmd_show(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    v = _version(cat, args.version)
    run, graph = cat.run(v), views.dag(cat, v)
    order = sorted(graph, key=lambda k: (views.layout(graph)[k], k))
    if args.json:
        nodes = [
            {"key": k, **graph.nodes[k], "parents": list(graph.predecessors(k))} for k in order
        ]
        return _print_json(
            {"version": v, "summary": run.summary(), "run": run, "nodes": nodes}, out
        )
    out.write(
        f"v{v}  {views.when(run.started)}  {run.status}  workflow {run.workflow!r}"
        f"  message {run.message!r}\n{run.summary()}\n"
    )
    if run.predicted_seconds is not None and run.measured_seconds is not None:
        out.write(
            f"plan predicted {run.predicted_seconds:.3f}s of compute and loads, measured "
            f"{run.measured_seconds:.3f}s\n"
        )
    out.write("\n")
    headers = [
        "NODE",
        "STATE",
        "SIGNATURE",
        "COMPUTE",
        "LOAD",
        "WRITE",
        "EST",
        "SIZE",
        "ARTIFACT",
        "REASON",
    ]
    body = []
    for k in order:
        a = graph.nodes[k]
        state = a["state"] + (" (changed)" if a["changed"] else "")
        body.append(
            [
                a["name"],
                state + (", stored" if a["stored"] else ""),
                a["signature"][:12],
                _secs(a["compute_seconds"]),
                _secs(a["load_seconds"]),
                _secs(a["write_seconds"]),
                _secs(a["estimated_compute_seconds"]),
                _size(a["nbytes"]),
                a["artifact"] or "-",
                _clip(a["reason"] or "", 48),
            ]
        )
    out.write(table(headers, body, numeric={3, 4, 5, 6, 7}) + "\n")


def cmd_diff(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    ids = [v.id for v in cat.versions()]
    new = _version(cat, args.new) if args.new else ids[0]
    if args.old:
        old = _version(cat, args.old)
    elif len(ids) > 1 and new != ids[-1]:
        old = max(i for i in ids if i < new)
    else:
        raise HelixConfigError("diff needs two versions; pass `helix diff OLD NEW`")
    d = views.diff(cat, old, new)
    if args.json:
        return _print_json(d, out)
    direct = [c for c in d.changes if c.direct]
    out.write(
        f"v{old} -> v{new}: {len(direct)} changed, {len(d.changes) - len(direct)} changed "
        f"upstream only, {len(d.unchanged)} unchanged\n"
    )
    for c in d.changes:
        now = c.new_decision or "gone"
        out.write(f"\n{c.name}  [{views.STATES.get(now, now) if c.new_key else 'removed'}]\n")
        for cause in c.causes:
            out.write(f"  {cause.describe()}\n")
            if cause.kind is views.ChangeKind.CODE and cause.detail:
                out.write("".join(f"    {line}\n" for line in cause.detail.splitlines()))
    out.write(f"\nrecomputed in v{new}: {', '.join(d.recomputed) or 'nothing'}\n")
    if d.recomputed_unchanged:
        out.write(f"also computed, unchanged: {', '.join(d.recomputed_unchanged)}\n")
    if d.metrics:
        body = [
            [
                m.node,
                m.metric,
                _num(m.old),
                _num(m.new),
                "-" if m.delta is None else f"{m.delta:+.4g}",
            ]
            for m in d.metrics
        ]
        out.write(
            "\n" + table(["NODE", "METRIC", f"v{old}", f"v{new}", "DELTA"], body, {2, 3, 4}) + "\n"
        )


def cmd_metrics(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    t = views.metrics_table(cat)
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
        [f"v{r.version}", _clip(r.message, 40), *(_num(r.values.get(c)) for c in t.columns)]
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


def _plot_metrics(t: views.MetricsTable, path: Path) -> None:
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


def cmd_dag(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    if args.plan:
        return _plan_dag(cat, args, out)
    if args.version is None:
        raise HelixConfigError("helix dag needs a version (3, v3, latest) or --plan MODULE:NAME")
    v = _version(cat, args.version)
    graph = views.dag(cat, v)
    path = Path(args.output)
    kind = (args.format or path.suffix.lstrip(".")).lower()
    if kind == "svg":
        path.write_text(views.render_svg(graph))
    elif kind == "html":
        run = cat.run(v)
        path.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>helix v{v}</title></head>"
            f"<body style='font-family:sans-serif'><h2>helix v{v}</h2>"
            f"<p>{escape(run.summary())} &mdash; {escape(run.message)}</p>"
            f"{views.render_svg(graph)}</body></html>\n"
        )
    elif kind == "png":
        _plot_dag(graph, path)
    else:
        raise HelixConfigError(
            f"cannot write {path.name!r}: pick an .svg, .png or .html file (or --format)"
        )
    if args.json:
        return _print_json(
            {"version": v, "output": str(path), "format": kind, "nodes": len(graph)}, out
        )
    out.write(f"wrote v{v} ({len(graph)} nodes) to {path}\n")


def _plan_dag(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    """The plan of a graph not run yet: ``--plan pkg.module:name`` names helix nodes, or a
    function without arguments that returns them."""
    import importlib

    from .planning import preview
    from .task import HelixNode

    module_name, _, attr = args.plan.partition(":")
    if not module_name or not attr:
        raise HelixConfigError(
            f"--plan {args.plan!r} is not MODULE:NAME; pass e.g. --plan workflow:build"
        )
    sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attr)
    finally:
        sys.path.pop(0)
    if callable(target) and not isinstance(target, HelixNode):
        target = target()
    nodes = list(target) if isinstance(target, (list, tuple)) else [target]
    if not nodes or not all(isinstance(n, HelixNode) for n in nodes):
        raise HelixConfigError(
            f"--plan {args.plan!r} gave {type(target).__name__}, not helix nodes; name a node, "
            "a list of nodes, or a function without arguments that returns them"
        )
    graph = preview(*nodes, store=cat.root).graph
    path = Path(args.output)
    if path.suffix.lower() != ".svg" and (args.format or "svg") != "svg":
        raise HelixConfigError(f"cannot write {path.name!r}: a plan is written as .svg")
    path.write_text(views.render_svg(graph))
    states = {}
    for _, d in graph.nodes(data=True):
        states[d["state"]] = states.get(d["state"], 0) + 1
    if args.json:
        return _print_json({"plan": args.plan, "output": str(path), "states": states}, out)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    out.write(f"wrote the plan of {args.plan} ({counts}) to {path}\n")


def _plot_dag(graph, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.patches import FancyBboxPatch, Rectangle

    pos, width, height = positions(graph)
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for parent, child in graph.edges:
        (x1, y1), (x2, y2) = pos[parent], pos[child]
        ax.annotate(
            "",
            xy=(x2 + BOX_W / 2, y2),
            xytext=(x1 + BOX_W / 2, y1 + BOX_H),
            arrowprops={"arrowstyle": "-|>", "color": "#555"},
        )
    for key, (x, y) in pos.items():
        a = graph.nodes[key]
        stored = a["stored"]
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                BOX_W,
                BOX_H,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor=colour(a),
                edgecolor=STORED_OUTLINE if stored else "#333",
                linewidth=3 if stored else 1,
            )
        )
        ax.text(
            x + BOX_W / 2, y + 16, a["name"], ha="center", va="center", fontsize=9, weight="bold"
        )
        ax.text(x + BOX_W / 2, y + 33, cost_label(a), ha="center", va="center", fontsize=7)
    x = MARGIN
    for label, fill in LEGEND:
        stored = label == "stored"
        ax.add_patch(
            Rectangle(
                (x, height - 18),
                12,
                12,
                facecolor=fill,
                edgecolor=STORED_OUTLINE if stored else "#333",
                linewidth=3 if stored else 1,
            )
        )
        ax.text(x + 16, height - 8, label, fontsize=8)
        x += 24 + 7 * len(label)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_du(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    du = views.disk_usage(cat)
    if args.json:
        return _print_json(du, out)
    out.write(f"{cat.root}: {du.artifacts} artifacts, {_size(du.total_bytes)}\n\n")
    out.write(
        table(
            ["TASK", "ARTIFACTS", "SIZE"],
            [[t.name, t.artifacts, _size(t.nbytes)] for t in du.by_task],
            {1, 2},
        )
    )
    body = [
        [
            f"v{u.version}",
            _clip(u.message, 40),
            u.referenced,
            _size(u.referenced_bytes),
            u.added,
            _size(u.added_bytes),
        ]
        for u in du.by_version
    ]
    out.write(
        "\n\n"
        + table(["VERSION", "MESSAGE", "USES", "SIZE", "ADDED", "SIZE"], body, {2, 3, 4, 5})
        + "\n"
    )


def cmd_gc(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    if not args.dry_run:
        from .store import ZarrArtifactStore

        ZarrArtifactStore(cat.root).sweep_temporaries()  # what killed writers left behind
    plan = views.gc_plan(cat, args.keep)
    result = None
    if not args.dry_run and plan.remove:
        result = views.apply_gc(cat, plan, progress=Progress("gc"))
    if args.json:
        return _print_json({"dry_run": args.dry_run, "plan": plan, "result": result}, out)
    kept = ", ".join(f"v{v}" for v in plan.kept_versions) or "none"
    running = ", ".join(f"v{v}" for v in plan.running_versions) or "none"
    out.write(
        f"keeping the artifacts of {kept} (running: {running}): {plan.kept} artifacts, "
        f"{_size(plan.kept_bytes)}\n"
    )
    if not plan.remove:
        out.write("nothing to remove\n")
        return
    verb = "would remove" if args.dry_run else "removing"
    out.write(f"{verb} {len(plan.remove)} artifacts, {_size(plan.freed_bytes)}:\n")
    body = [[i.signature, i.name, _size(i.nbytes), i.reason] for i in plan.remove]
    out.write(table(["SIGNATURE", "TASK", "SIZE", "REASON"], body, {2}) + "\n")
    if result is not None:
        out.write(f"removed {len(result.deleted)} artifacts, freed {_size(result.freed_bytes)}\n")
        if result.skipped:
            out.write(f"kept {len(result.skipped)} that a running version now uses\n")


def cmd_verify(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    from .store import ZarrArtifactStore, verify_store  # Zarr: only for the commands needing it

    check = verify_store(ZarrArtifactStore(cat.root), cat, repair=args.repair)
    if args.json:
        _print_json(check, out)
    else:
        done = "quarantined" if args.repair else "corrupt"
        for signature, reason in check.corrupt:
            out.write(f"{done} {signature}: {reason}\n")
        fix = "dropped" if args.repair else "no artifact for"
        for signature in check.rows_without_artifact:
            out.write(f"{fix} catalog row {signature}\n")
        for signature in check.artifacts_without_row:
            out.write(f"not in the catalog (kept): {signature}\n")
        out.write(
            f"checked {check.checked} artifacts: {len(check.corrupt)} corrupt, "
            f"{len(check.rows_without_artifact)} catalog rows without an artifact\n"
        )
    if not check.clean and not args.repair:
        raise HelixStoreError("the store has problems; run `helix verify --repair` to fix them")


COMMANDS: dict[str, Callable[[Catalog, argparse.Namespace, TextIO], None]] = {
    "log": cmd_log,
    "show": cmd_show,
    "diff": cmd_diff,
    "metrics": cmd_metrics,
    "dag": cmd_dag,
    "du": cmd_du,
    "gc": cmd_gc,
    "verify": cmd_verify,
}


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the subcommand's default.
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"helix store (default: ${STORE_ENV} or helix.store)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = argparse.ArgumentParser(prog="helix", description=__doc__.split("\n")[0], parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("log", parents=[common], help="versions, newest first")
    s.add_argument("-n", "--limit", type=int, default=0, help="show only the newest N versions")
    s = sub.add_parser("show", parents=[common], help="one version: every node's state and costs")
    s.add_argument("version", help="3, v3, latest or -2")
    s = sub.add_parser("diff", parents=[common], help="what changed between two versions, and why")
    s.add_argument("old", nargs="?", help="older version (default: the one before NEW)")
    s.add_argument("new", nargs="?", help="newer version (default: latest)")
    s = sub.add_parser("metrics", parents=[common], help="metrics across versions")
    s.add_argument("--sort", metavar="METRIC", help="order by this metric, highest first")
    s.add_argument("--ascending", action="store_true", help="lowest first with --sort")
    s.add_argument("--plot", metavar="PNG", help="also write a plot (needs matplotlib)")
    s = sub.add_parser("dag", parents=[common], help="the DAG of a version as SVG, PNG or HTML")
    s.add_argument("version", nargs="?", help="3, v3, latest or -2")
    s.add_argument(
        "--plan",
        metavar="MODULE:NAME",
        help="instead of a version: the plan of helix nodes not run yet (a node, a list of "
        "nodes, or a function without arguments returning them), as SVG",
    )
    s.add_argument("-o", "--output", required=True, help="file.svg, file.png or file.html")
    s.add_argument("--format", choices=["svg", "png", "html"], help="override the file suffix")
    sub.add_parser("du", parents=[common], help="storage per task and per version")
    s = sub.add_parser(
        "gc", parents=[common], help="remove artifacts the last N versions do not use"
    )
    s.add_argument(
        "--keep", type=int, required=True, metavar="N", help="versions whose artifacts stay"
    )
    s.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    s = sub.add_parser(
        "verify", parents=[common], help="check every artifact byte for byte against the catalog"
    )
    s.add_argument(
        "--repair", action="store_true", help="quarantine corrupt artifacts, drop stale rows"
    )
    return p


def open_catalog(store: str | None) -> Catalog:
    """The catalog of ``store`` (default ``$HELIX_STORE``, then ``helix.store``); never new."""
    root = Path(store or os.environ.get(STORE_ENV) or str(_config.get("store")))
    if not (root / "catalog.sqlite").is_file():
        raise HelixConfigError(f"no helix catalog at {root}; pass --store DIR or set {STORE_ENV}")
    return Catalog(root)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one ``helix`` command; returns the exit status."""
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    out = out or sys.stdout
    try:
        cat = open_catalog(getattr(args, "store", None))
        try:
            COMMANDS[args.command](cat, args, out)
        finally:
            cat.close()
    except (HelixError, KeyError) as e:
        sys.stderr.write(f"helix {args.command}: error: {e.args[0] if e.args else e}\n")
        return 2
    except BrokenPipeError:  # `helix log | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
