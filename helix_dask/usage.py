"""Where the store's bytes go, and garbage collection of artifacts old versions left behind.

``helix du`` and ``helix gc`` (and ``Catalog.gc``) are thin shells over it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import HelixConfigError
from ._events import Materialization

if TYPE_CHECKING:
    from .catalog import Catalog


@dataclass(frozen=True, slots=True)
class TaskUsage:
    name: str
    artifacts: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class VersionUsage:
    version: int
    message: str
    referenced: int
    """Artifacts in the store whose signature a node of this version has."""
    referenced_bytes: int
    added: int
    """Artifacts this version wrote that are still in the store."""
    added_bytes: int


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Stored bytes in total, per task and per version (newest first)."""

    total_bytes: int
    artifacts: int
    by_task: tuple[TaskUsage, ...]
    by_version: tuple[VersionUsage, ...]


def disk_usage(cat: Catalog) -> DiskUsage:
    """Where the store's bytes go: per task name and per version."""
    rows = {r.signature: r for r in cat.artifacts()}
    tasks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows.values():
        tasks[r.name][0] += 1
        tasks[r.name][1] += r.nbytes
    versions = []
    for run in reversed(cat.runs()):
        used = {n.stored_as for n in run.nodes if n.stored_as in rows}
        added = {
            n.stored_as
            for n in run.nodes
            if n.materialization is Materialization.STORED and n.stored_as in rows
        }
        versions.append(
            VersionUsage(
                run.version,
                run.message,
                len(used),
                sum(rows[s].nbytes for s in used),
                len(added),
                sum(rows[s].nbytes for s in added),
            )
        )
    return DiskUsage(
        total_bytes=sum(r.nbytes for r in rows.values()),
        artifacts=len(rows),
        by_task=tuple(
            TaskUsage(name, n, b) for name, (n, b) in sorted(tasks.items(), key=lambda t: -t[1][1])
        ),
        by_version=tuple(versions),
    )


@dataclass(frozen=True, slots=True)
class GcItem:
    """An artifact :func:`gc_plan` would remove, and why."""

    signature: str
    name: str
    nbytes: int
    last_version: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class GcPlan:
    """What ``helix gc --keep N`` removes and what it keeps."""

    keep: int
    kept_versions: tuple[int, ...]
    running_versions: tuple[int, ...]
    remove: tuple[GcItem, ...]
    kept: int
    kept_bytes: int

    @property
    def freed_bytes(self) -> int:
        return sum(i.nbytes for i in self.remove)


def _running_signatures(cat: Catalog) -> tuple[tuple[int, ...], set[str]]:
    """The versions still running (owner alive, or not known dead) and the artifacts they and
    every live lease protect."""
    running = tuple(cat.running_versions())
    runs = cat.runs(running) if running else []
    return running, {n.stored_as for r in runs for n in r.nodes} | cat.leased()


def interrupt_dead(cat: Catalog) -> list[int]:
    """Mark interrupted the running versions whose scheduler is gone (``helix gc`` does it
    before collecting); their artifacts are no longer protected by them."""
    from .catalog import CatalogWriter

    writer = cat if isinstance(cat, CatalogWriter) else CatalogWriter(cat.root)
    try:
        return writer.interrupt_dead_versions()
    finally:
        if writer is not cat:
            writer.close()


def gc_plan(cat: Catalog, keep: int) -> GcPlan:
    """Artifacts no node of the last ``keep`` versions uses (nor any version still running).

    Examples
    --------
    >>> plan = gc_plan(hx.Catalog("./.helix"), keep=2)          # doctest: +SKIP
    >>> [(i.name, i.reason) for i in plan.remove]              # doctest: +SKIP
    [('featurize', 'last used by v1, older than the last 2 versions')]
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise HelixConfigError(f"keep={keep!r} is not a count of versions; pass an int >= 0")
    runs = cat.runs()
    kept_versions = tuple(r.version for r in runs[::-1][:keep])
    running, protected = _running_signatures(cat)
    used = {n.stored_as for r in runs if r.version in kept_versions for n in r.nodes} | protected
    last: dict[str, int] = {n.stored_as: r.version for r in runs for n in r.nodes}
    remove, kept, kept_bytes = [], 0, 0
    for row in cat.artifacts():
        if row.signature in used:
            kept, kept_bytes = kept + 1, kept_bytes + row.nbytes
            continue
        where = last.get(row.signature)
        reason = (
            "used by no version"
            if where is None
            else f"last used by v{where}, older than the last {keep} versions"
        )
        remove.append(GcItem(row.signature, row.name, row.nbytes, where, reason))
    return GcPlan(keep, kept_versions, running, tuple(remove), kept, kept_bytes)


@dataclass(frozen=True, slots=True)
class GcResult:
    deleted: tuple[str, ...]
    freed_bytes: int
    skipped: tuple[str, ...]
    """Signatures left in place because a version that started meanwhile uses them."""


def apply_gc(
    cat: Catalog, plan: GcPlan, *, progress: Callable[[int, int, int], None] | None = None
) -> GcResult:
    """Delete the artifacts of ``plan``: the catalog row and the Zarr group in one transaction
    holding the catalog's write lock. Artifacts of versions running by now, or under a live
    lease (a plan of another process loads them), are skipped. ``progress(done, total,
    freed_bytes)`` is called after each deletion."""
    from ._store_access import open_store
    from .catalog import CatalogWriter

    store = open_store(getattr(cat, "location", str(cat.root)))
    writer = cat if isinstance(cat, CatalogWriter) else CatalogWriter(cat.root)
    _, protected = _running_signatures(cat)
    deleted, skipped, freed = [], [], 0
    try:
        for i, item in enumerate(plan.remove, 1):
            gone = None
            if item.signature not in protected:
                gone = writer.remove_unless_leased(item.signature, store.delete)
            if gone is None:
                skipped.append(item.signature)
            else:
                freed += gone
                deleted.append(item.signature)
            if progress is not None:
                progress(i, len(plan.remove), freed)
    finally:
        if writer is not cat:
            writer.close()
    return GcResult(tuple(deleted), freed, tuple(skipped))
