"""``helix dag``: the DAG of a version, or the plan of helix nodes not run yet, written as SVG,
PNG or HTML."""

from __future__ import annotations

import argparse
import os
import sys
from html import escape
from pathlib import Path
from typing import TextIO

from . import history
from ._cli_history import _print_json, _version
from ._drawing import render_png, render_svg
from ._errors import HelixConfigError
from .catalog import Catalog


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
