"""The ``helix`` commands about storage: ``du`` (storage per task and per version), ``gc``
(remove what the last versions do not use, with a progress line) and ``verify`` (every artifact
against the catalog)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from dask.utils import format_bytes

from . import usage
from ._cli_history import _print_json
from ._errors import HelixStoreError
from .catalog import Catalog
from .presentation import clip, size, table


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


def _artifacts(cat: Catalog):
    """The artifact store behind ``cat`` (a directory or an object store)."""
    from ._store_access import open_store

    return open_store(getattr(cat, "location", str(cat.root)))
