"""The scheduler's catalog writes, each a function of a CatalogWriter that the write queue
applies on its thread, off the event loop: a version's row, its code and nodes, its end; the
record of a committed artifact and the removal of an evicted one."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._events import RunStatus
from ._owner import Owner
from ._run import Run
from ._wire import NodeMeta
from ._write_queue import Write
from .catalog import ArtifactRow, CatalogWriter

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from ._ledger import StorageLedger
    from ._store_base import ArtifactStore

logger = logging.getLogger("helix_dask")


def version_row(run: Run, keys: set, owner: Owner) -> Write:
    """The catalog write of a new version's row (``run.version`` becomes the id the catalog
    gives it)."""
    outputs = sorted(map(str, keys))

    def write(c: CatalogWriter) -> None:
        run.version = c.begin_version(
            run.workflow,
            run.message,
            outputs,
            run.predicted,
            started=run.started,
            owner=owner,
        )

    return write


def version_nodes(run: Run, metas: Iterable[tuple[Any, NodeMeta]]) -> Write:
    """The catalog writes of a version's code and planned nodes (after its row: ``run.version``
    is read when they are applied; the records are built then, on the writer's thread)."""
    codes = {m.code: m for _, m in metas if m.code}
    nodes = list(run.nodes.values())

    def write(c: CatalogWriter) -> None:
        for digest, m in codes.items():
            c.record_code(digest, m.sources, m.packages)
        c.record_nodes(run.version, [n.record() for n in nodes])

    return write


def version_end(run: Run, status: RunStatus) -> Write:
    """The catalog write of a finished run: what it measured, its events and its end."""
    nodes = list(run.nodes.values())
    events = list(run.events)

    def write(c: CatalogWriter) -> None:
        # run.version is read here: an unrecorded run gets its id when its row is written.
        # On the writer thread, off the event loop; the rows of nodes nothing measured
        # (pruned, held on the cluster) were written whole when the run was planned.
        records = [n.record() for n in nodes if n.measured()]
        c.update_measurements(run.version, records)
        c.record_events(dataclasses.replace(e, version=run.version) for e in events)
        c.finish_version(run.version, str(status), run.time_saved, run.measured)

    return write


def artifact_record(
    row: ArtifactRow, artifacts: ArtifactStore, ledger: StorageLedger, scheduler: Scheduler
) -> Write:
    """The write that records a committed artifact, if its files are still there (another
    process may have removed it since)."""
    loop = scheduler.loop

    def record(c: CatalogWriter) -> None:
        if not c.add_artifact_if(row, lambda: artifacts.contains(row.signature)):
            logger.info("helix did not record %s: removed before it was", row.signature)
            loop.add_callback(ledger.remove, row.signature)

    return record


def artifact_removal(
    signature: str,
    row: ArtifactRow | None,
    artifacts: ArtifactStore,
    ledger: StorageLedger,
    scheduler: Scheduler,
) -> Write:
    """The write that removes an evicted artifact: its row, then its files, unless a lease
    taken since (by another process) protects it; the ledger gets it back then."""
    loop = scheduler.loop

    def remove(c: CatalogWriter) -> None:
        if c.remove_unless_leased(signature, artifacts.delete) is None and row is not None:
            logger.info("helix kept %s: a plan of another process loads it", signature)
            loop.add_callback(ledger.commit, row)

    return remove
