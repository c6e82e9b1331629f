"""Damaged artifacts: one that fails a check is moved to ``<root>/quarantine/`` and its catalog
row dropped, so the next plan recomputes it; a whole store is checked against its catalog
(``helix verify``), and repaired on request."""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from helix_dask._errors import HelixCorruptArtifact, HelixStoreError
from helix_dask._location import catalog_dir

if TYPE_CHECKING:
    from helix_dask.store import ZarrArtifactStore

__all__ = ["StoreCheck", "quarantine", "verify_store"]

logger = logging.getLogger("helix_dask.store")

_QUARANTINE: Final = "quarantine"


def quarantine(path: Path, error: HelixCorruptArtifact) -> None:
    """Move the artifact directory ``path`` to ``<root>/quarantine/`` and drop its catalog row.

    Logs a WARNING naming the artifact and ``error.reason``. Safe to call twice or on an
    artifact another process already moved: the first one moves it, the others do nothing.
    """
    root = path.parents[2]
    target = root / _QUARANTINE / f"{path.name}-{uuid.uuid4().hex}"
    try:
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.rename(path, target)
    except FileNotFoundError:
        return  # already moved, or deleted
    except OSError as exc:
        logger.warning(
            "helix artifact %s is unusable (%s) and could not be moved to %s: %s; remove it "
            "with `helix verify --repair`",
            path.name,
            error.reason,
            target.parent,
            exc,
        )
        return
    (target / "helix-quarantine.txt").write_text(f"{error.reason}\n")
    logger.warning(
        "helix artifact %s is unusable (%s); moved it to %s", path.name, error.reason, target
    )
    _forget_in_catalog(catalog_dir(root), path.name)


def _forget_in_catalog(catalog: str | os.PathLike[str], signature: str) -> None:
    """Drop the catalog row of an artifact that left the store, when the catalog (directory
    ``catalog``) is on this machine; else the scheduler drops it when a plan misses it."""
    if not (Path(catalog) / "catalog.sqlite").is_file():
        return
    from .catalog import CatalogWriter  # the catalog imports the store's readers: only when needed

    try:
        cat = CatalogWriter(catalog)
        try:
            cat.remove_artifact(signature)
        finally:
            cat.close()
    except (sqlite3.Error, OSError, HelixStoreError) as exc:
        logger.warning(
            "helix could not drop artifact %s from the catalog in %s: %s; `helix verify "
            "--repair` drops it",
            signature,
            catalog,
            exc,
        )


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """What :func:`verify_store` found: the artifacts checked and every inconsistency."""

    checked: int
    corrupt: tuple[tuple[str, str], ...]
    """Signature and reason of each artifact that failed a check."""
    rows_without_artifact: tuple[str, ...]
    artifacts_without_row: tuple[str, ...]
    """Committed artifacts the catalog does not list (a write in flight, or a lost row)."""
    repaired: bool

    @property
    def clean(self) -> bool:
        """Whether nothing needs repair (rows without artifacts and corrupt artifacts do)."""
        return not self.corrupt and not self.rows_without_artifact


def verify_store(store: ZarrArtifactStore, catalog: Any, *, repair: bool = False) -> StoreCheck:
    """Check every artifact of ``store`` byte for byte and against ``catalog`` (a Catalog).

    With ``repair``, corrupt artifacts are quarantined (their rows dropped) and rows whose
    artifact is gone are dropped, so no plan loads either. Nothing is unpickled.
    """
    on_disk = list(store.signatures())
    corrupt = []
    for signature in on_disk:
        try:
            problem = store.verify(signature, repair=repair)
        except KeyError:  # removed meanwhile
            continue
        if problem is not None:
            corrupt.append((signature, problem.reason))
    rows = {a.signature for a in catalog.artifacts()}
    missing = sorted(rows - set(on_disk))
    if repair:
        for signature in missing + [s for s, _ in corrupt]:
            catalog.remove_artifact(signature)
    orphans = sorted(set(on_disk) - rows - {s for s, _ in corrupt})
    return StoreCheck(len(on_disk), tuple(corrupt), tuple(missing), tuple(orphans), repair)
