"""The ``helix`` command: the iteration history of a store, read from its catalog.

``helix log | show | diff | metrics | dag | du | gc``; ``--store`` (or ``HELIX_STORE``) names the
store, ``--scheduler`` a running scheduler whose helix plugin answers the reads (where the catalog
is not on this machine), ``--json`` prints machine-readable output. Reading is safe while a run
is going.
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

from . import _config, history, usage
from ._drawing import render_png, render_svg
from ._errors import HelixConfigError, HelixError, HelixStoreError
from .catalog import Catalog, CatalogWriter
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

STORE_ENV = "HELIX_STORE"


# -- output helpers -----------------------------------------------------------------------------


def _print_json(obj: Any, out: TextIO) -> None:
    json.dump(to_data(obj), out, indent=2, default=str)
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


def cmd_dag(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    if args.plan:
        return _plan_dag(cat, args, out)
    if args.version is None:
        raise HelixConfigError("helix dag needs a version (3, v3, latest) or --plan MODULE:NAME")
    v = _version(cat, args.version)
    graph = history.dag(cat, v)
    path = Path(args.output)
    kind = _kind(path, args)
    if kind == "svg":
        path.write_text(render_svg(graph))
    elif kind == "html":
        run = cat.run(v)
        path.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>helix v{v}</title></head>"
            f"<body style='font-family:sans-serif'><h2>helix v{v}</h2>"
            f"<p>{escape(run.summary())} &mdash; {escape(run.message)}</p>"
            f"{render_svg(graph)}</body></html>\n"
        )
    else:
        render_png(graph, path)
    if args.json:
        return _print_json(
            {"version": v, "output": str(path), "format": kind, "nodes": len(graph)}, out
        )
    out.write(f"wrote v{v} ({len(graph)} nodes) to {path}\n")


def _kind(path: Path, args: argparse.Namespace) -> str:
    """The picture format: ``--format``, else the file's suffix."""
    kind = (args.format or path.suffix.lstrip(".")).lower()
    if kind not in ("svg", "png", "html"):
        raise HelixConfigError(
            f"cannot write {path.name!r}: pick an .svg, .png or .html file (or --format)"
        )
    return kind


def _plan_target(spec: str) -> object:
    """The object ``MODULE:NAME`` names (imported from the working directory)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise HelixConfigError(
            f"--plan {spec!r} is not MODULE:NAME; pass e.g. --plan workflow:build"
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise HelixConfigError(
            f"--plan {spec!r}: cannot import {module_name!r} ({e}); run helix from the directory "
            "that holds it or put it on PYTHONPATH"
        ) from None
    except SyntaxError as e:
        raise HelixConfigError(f"--plan {spec!r}: {module_name!r} does not parse: {e}") from None
    finally:
        sys.path.pop(0)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise HelixConfigError(
            f"--plan {spec!r}: module {module_name!r} has no {attr!r}; name a node, a list of "
            "nodes, or a function without arguments that returns them"
        ) from None


def _plan_dag(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    """The plan of a graph not run yet: ``--plan pkg.module:name`` names helix nodes, or a
    function without arguments that returns them."""
    from .planning import preview
    from .task import HelixNode

    path = Path(args.output)
    kind = _kind(path, args)
    target = _plan_target(args.plan)
    if callable(target) and not isinstance(target, HelixNode):
        target = target()
    nodes = list(target) if isinstance(target, (list, tuple)) else [target]
    if not nodes or not all(isinstance(n, HelixNode) for n in nodes):
        raise HelixConfigError(
            f"--plan {args.plan!r} gave {type(target).__name__}, not helix nodes; name a node, "
            "a list of nodes, or a function without arguments that returns them"
        )
    graph = preview(*nodes, store=getattr(cat, "location", cat.root)).graph
    if kind == "png":
        render_png(graph, path)
    elif kind == "html":
        path.write_text(
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>helix plan</title></head>"
            f"<body style='font-family:sans-serif'><h2>plan of {escape(args.plan)}</h2>"
            f"{render_svg(graph)}</body></html>\n"
        )
    else:
        path.write_text(render_svg(graph))
    states: dict[str, int] = {}
    for _, d in graph.nodes(data=True):
        states[d["state"]] = states.get(d["state"], 0) + 1
    if args.json:
        return _print_json({"plan": args.plan, "output": str(path), "states": states}, out)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    out.write(f"wrote the plan of {args.plan} ({counts}) to {path}\n")


def cmd_du(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    du = usage.disk_usage(cat)
    if args.json:
        return _print_json(du, out)
    out.write(f"{cat.root}: {du.artifacts} artifacts, {size(du.total_bytes)}\n\n")
    out.write(
        table(
            ["TASK", "ARTIFACTS", "SIZE"],
            [[t.name, t.artifacts, size(t.nbytes)] for t in du.by_task],
            {1, 2},
        )
    )
    body = [
        [
            f"v{u.version}",
            clip(u.message, 40),
            u.referenced,
            size(u.referenced_bytes),
            u.added,
            size(u.added_bytes),
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
        _artifacts(cat).sweep_temporaries()  # what killed writers left behind
        usage.interrupt_dead(cat)  # versions whose scheduler is gone protect nothing
    plan = usage.gc_plan(cat, args.keep)
    result = None
    if not args.dry_run and plan.remove:
        result = usage.apply_gc(cat, plan, progress=Progress("gc"))
    if args.json:
        return _print_json({"dry_run": args.dry_run, "plan": plan, "result": result}, out)
    kept = ", ".join(f"v{v}" for v in plan.kept_versions) or "none"
    running = ", ".join(f"v{v}" for v in plan.running_versions) or "none"
    out.write(
        f"keeping the artifacts of {kept} (running: {running}): {plan.kept} artifacts, "
        f"{size(plan.kept_bytes)}\n"
    )
    if not plan.remove:
        out.write("nothing to remove\n")
        return
    verb = "would remove" if args.dry_run else "removing"
    out.write(f"{verb} {len(plan.remove)} artifacts, {size(plan.freed_bytes)}:\n")
    body = [[i.signature, i.name, size(i.nbytes), i.reason] for i in plan.remove]
    out.write(table(["SIGNATURE", "TASK", "SIZE", "REASON"], body, {2}) + "\n")
    if result is not None:
        out.write(f"removed {len(result.deleted)} artifacts, freed {size(result.freed_bytes)}\n")
        if result.skipped:
            out.write(f"kept {len(result.skipped)} that a running version now uses\n")


def cmd_verify(cat: Catalog, args: argparse.Namespace, out: TextIO) -> None:
    from ._store_repair import verify_store  # Zarr: only for the commands needing it

    check = verify_store(_artifacts(cat), cat, repair=args.repair)
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
        "--scheduler",
        default=argparse.SUPPRESS,
        metavar="ADDRESS",
        help="read the catalog from this running scheduler instead: its address "
        "(tcp://host:8786) or its dashboard's URL (http://host:8787)",
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


WRITING = {"gc", "verify"}
"""Commands that change the store (and so open the catalog with its writers)."""


def open_catalog(store: str | None, *, write: bool = False) -> Catalog:
    """The catalog of ``store`` (a directory or a URL; default ``$HELIX_STORE``, then
    ``helix.store``); never new. A URL store's catalog is on this machine (``helix.catalog``,
    by default under ``~/.helix/catalogs``): run the command where the scheduler runs, or ask
    the scheduler (:func:`open_remote`)."""
    from ._location import catalog_dir, store_location

    location = store or os.environ.get(STORE_ENV) or str(_config.get("store"))
    root = Path(catalog_dir(location))
    if not (root / "catalog.sqlite").is_file():
        raise HelixConfigError(
            f"no helix catalog at {root} (store {location!r}); pass --store DIR or URL, set "
            f"{STORE_ENV}, or (for a URL store) run where the scheduler keeps its catalog or "
            "pass --scheduler ADDRESS"
        )
    cat = CatalogWriter(root) if write else Catalog(root)
    cat.location = store_location(location)  # type: ignore[attr-defined]
    return cat


def open_remote(address: str, args: argparse.Namespace) -> Catalog:
    """The catalog of the scheduler at ``address``, for the read commands; the others are
    refused with what to run instead."""
    from ._remote_catalog import RemoteCatalog

    if getattr(args, "store", None):
        raise HelixConfigError("pass --store or --scheduler, not both")
    if args.command == "verify" or (args.command == "gc" and not args.dry_run):
        hint = " (`--dry-run` lists here what it would remove)" if args.command == "gc" else ""
        raise HelixConfigError(
            f"helix {args.command} changes the store and its catalog, which only the "
            f"scheduler's machine holds: run `helix {args.command} --store STORE` there{hint}"
        )
    if args.command == "dag" and args.plan:
        raise HelixConfigError(
            "helix dag --plan plans against the catalog on this machine; run it where the "
            "scheduler keeps its catalog, with --store"
        )
    return RemoteCatalog(address)  # type: ignore[return-value]  (its read methods)


def _artifacts(cat: Catalog):
    """The artifact store behind ``cat`` (a directory or an object store)."""
    from ._store_access import open_store

    return open_store(getattr(cat, "location", str(cat.root)))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one ``helix`` command; returns the exit status."""
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    out = out or sys.stdout
    try:
        address = getattr(args, "scheduler", None)
        cat = (
            open_remote(address, args)
            if address
            else open_catalog(getattr(args, "store", None), write=args.command in WRITING)
        )
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
