"""The ``helix`` command: the iteration history of a store, read from its catalog.

``helix log | show | diff | metrics | dag | du | gc``; ``--store`` (or ``HELIX_STORE``) names the
store, ``--scheduler`` a running scheduler whose helix plugin answers the reads (where the catalog
is not on this machine), ``--json`` prints machine-readable output. Reading is safe while a run
is going.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from . import _config
from ._cli_dag import cmd_dag
from ._cli_history import cmd_diff, cmd_log, cmd_metrics, cmd_show
from ._cli_storage import cmd_du, cmd_gc, cmd_verify
from ._errors import HelixConfigError, HelixError
from .catalog import Catalog, CatalogWriter

STORE_ENV = "HELIX_STORE"

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
