"""The catalog: versions, nodes per version and artifacts, in SQLite beside the artifacts.

:class:`Catalog` reads (any process, also while a run is going: WAL mode);
:class:`CatalogWriter` adds the writers, used by the scheduler plugin (the only writer of
versions and nodes) and by garbage collection and repairs of artifacts. The reads of versions
and their runs are in :mod:`helix_dask._catalog_history`, the tables and records in
:mod:`helix_dask._catalog_schema`.
"""

from __future__ import annotations

import abc
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._catalog_history import HistoryReads, Runs
from ._catalog_schema import (
    SCHEMA,
    ArtifactRow,
    VersionRow,
    VersionStats,
    chunks,
    live_leases,
    owner_only,
    placeholders,
)
from ._errors import HelixStoreError
from ._events import NodeRecord, RunReport
from ._keys import private_root
from ._owner import is_dead

if TYPE_CHECKING:
    from ._catalog_writer import CatalogWriter

__all__ = ["ArtifactRow", "Catalog", "CatalogWriter", "MetadataStore", "Runs", "VersionRow"]
__all__ += ["VersionStats"]


class MetadataStore(abc.ABC):
    """Versions, nodes and artifacts. Contract: each write is one transaction; reads see only
    committed writes."""

    @abc.abstractmethod
    def begin_version(self, workflow: str, message: str, outputs: Sequence[str]) -> int: ...

    @abc.abstractmethod
    def record_nodes(self, version: int, records: Iterable[NodeRecord]) -> None: ...

    @abc.abstractmethod
    def update_node(self, version: int, key: str, **fields: object) -> None: ...

    @abc.abstractmethod
    def finish_version(self, version: int, status: str, time_saved: float) -> None: ...

    @abc.abstractmethod
    def add_artifact(self, row: ArtifactRow) -> None: ...

    @abc.abstractmethod
    def remove_artifact(self, signature: str) -> None: ...

    @abc.abstractmethod
    def artifact(self, signature: str) -> ArtifactRow | None: ...

    @abc.abstractmethod
    def artifacts(self) -> list[ArtifactRow]: ...

    @abc.abstractmethod
    def versions(self) -> list[VersionRow]: ...

    @abc.abstractmethod
    def run(self, version: int) -> RunReport: ...


class Catalog(HistoryReads):
    """The SQLite catalog at ``<store>/catalog.sqlite``.

    Parameters
    ----------
    store
        The helix store directory (the one given to :func:`helix_dask.setup`).

    Examples
    --------
    >>> cat = hx.Catalog("./.helix")                        # doctest: +SKIP
    >>> [v.id for v in cat.versions()]                      # doctest: +SKIP
    [3, 2, 1]
    >>> cat.run(3).summary()                                # doctest: +SKIP
    'v3: computed 1, loaded 2, pruned 1, stored 1, saved ~12.40s'
    """

    def __init__(self, store: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.root = Path(store)
        private_root(store)  # created owner-only; a file or an unwritable path is an error
        self.path = self.root / "catalog.sqlite"
        self._lock = threading.Lock()
        self._batch_thread: int | None = None
        self._traced: dict[str, frozenset[str]] = {}
        """Code digest -> trace dependencies this connection wrote or read (writers only)."""
        try:
            owner_only(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.executescript(SCHEMA)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(nodes)")}
                if "identity" not in columns:  # a catalog written before effective signatures
                    self._db.execute(
                        "ALTER TABLE nodes ADD COLUMN identity TEXT NOT NULL DEFAULT ''"
                    )
                if "label" not in columns:  # a catalog written before calls had labels
                    self._db.execute("ALTER TABLE nodes ADD COLUMN label TEXT NOT NULL DEFAULT ''")
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(versions)")}
                if "owner" not in columns:  # a catalog written before versions had owners
                    self._db.execute(
                        "ALTER TABLE versions ADD COLUMN owner TEXT NOT NULL DEFAULT ''"
                    )
                    self._db.execute("ALTER TABLE versions ADD COLUMN owner_started REAL")
        except (sqlite3.Error, OSError) as e:
            raise HelixStoreError(
                f"cannot open the catalog {str(self.path)!r}: {e}; check that the store directory "
                "is writable and not on a filesystem without file locks"
            ) from e

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._batch_thread == threading.get_ident():
            yield self._db  # inside batch(): one transaction for all
            return
        with self._lock, self._forgetting_on_rollback(), self._db:
            # IMMEDIATE: take the write lock first, so what a write checks (a lease, an
            # artifact's files) cannot change before it commits.
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db

    @contextmanager
    def _forgetting_on_rollback(self) -> Iterator[None]:
        """What this connection remembers having written is forgotten when a transaction
        rolls back."""
        try:
            yield
        except BaseException:
            self._traced.clear()
            raise

    # -- reads ----------------------------------------------------------------------------------

    def requirements(self, signatures: Iterable[str]) -> dict[str, dict[str, str]]:
        """Signature -> recorded requirements, for the signatures that have any."""
        out: dict[str, dict[str, str]] = {}
        for chunk in chunks(list(set(signatures))):
            marks = ",".join("?" * len(chunk))
            for sig, req in self._query(
                f"SELECT signature, requires FROM requirements WHERE signature IN ({marks}) "
                "AND requires != '{}'",
                chunk,
            ):
                out[sig] = json.loads(req)
        return out

    def requirements_of(self, identities: Iterable[str]) -> dict[str, dict[str, str]]:
        """Effective signature -> the run-time requirements (dependency -> digest) it was
        computed with, for identities other than their plain signature."""
        out: dict[str, dict[str, str]] = {}
        for chunk in chunks(list(set(identities))):
            marks = placeholders(len(chunk))
            for identity, req in self._query(
                f"SELECT identity, requires FROM identities WHERE identity IN ({marks})", chunk
            ):
                out[identity] = json.loads(req)
        return out

    def traced(self, codes: Iterable[str]) -> dict[str, list[str]]:
        """Code digest -> dependencies its traces found, for the codes traced so far."""
        out: dict[str, list[str]] = {}
        for chunk in chunks(list(set(codes))):
            marks = ",".join("?" * len(chunk))
            for code, deps in self._query(
                f"SELECT code, deps FROM traces WHERE code IN ({marks})", chunk
            ):
                out[code] = json.loads(deps)
        return out

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def artifact(self, signature: str) -> ArtifactRow | None:
        rows = self._query("SELECT * FROM artifacts WHERE signature = ?", (signature,))
        return ArtifactRow(*rows[0]) if rows else None

    def artifacts(self) -> list[ArtifactRow]:
        return [ArtifactRow(*r) for r in self._query("SELECT * FROM artifacts ORDER BY created")]

    def artifacts_for(self, signatures: Iterable[str]) -> dict[str, ArtifactRow]:
        """The committed artifacts among ``signatures``, by signature (one query per 500)."""
        found: dict[str, ArtifactRow] = {}
        for chunk in chunks(sorted(set(signatures))):
            marks = ",".join("?" * len(chunk))
            for r in self._query(f"SELECT * FROM artifacts WHERE signature IN ({marks})", chunk):
                found[r[0]] = ArtifactRow(*r)
        return found

    def artifact_totals(self) -> tuple[int, int]:
        """How many artifacts the catalog lists and their bytes (one aggregate query)."""
        n, total = self._query("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM artifacts")[0]
        return int(n), int(total)

    def running_versions(self) -> list[int]:
        """Ids of the versions marked running whose owner is not known to be gone."""
        rows = self._query("SELECT id, owner, owner_started FROM versions WHERE status = 'running'")
        return [v for v, owner, started in rows if not is_dead(owner, started)]

    def leased(self, now: float | None = None) -> set[str]:
        """Signatures a live lease protects: a running plan of some process loads them."""
        rows = self._query(
            "SELECT signature, owner, owner_started FROM leases WHERE expires > ?",
            (time.time() if now is None else now,),
        )
        return live_leases(rows)

    def stored_bytes(self) -> int:
        """Bytes of all committed artifacts."""
        return int(self._query("SELECT COALESCE(SUM(nbytes), 0) FROM artifacts")[0][0])

    def compute_costs(
        self, signatures: Iterable[str], names: Iterable[str]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Measured compute seconds: the latest per signature, and the latest per task name."""
        return self._latest_compute("signature", signatures), self._latest_compute("name", names)

    def _latest_compute(self, column: str, values: Iterable[str]) -> dict[str, float]:
        latest: dict[str, float] = {}
        for chunk in chunks(sorted(set(values))):
            marks = ",".join("?" * len(chunk))
            for value, secs in self._query(
                f"SELECT {column}, compute_seconds FROM nodes WHERE compute_seconds IS NOT NULL "
                f"AND {column} IN ({marks}) ORDER BY version",
                chunk,
            ):
                latest[value] = secs  # ordered by version: the last one wins
        return latest

    def code(self, digest: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The sources and package versions recorded for a code digest, or None."""
        rows = self._query("SELECT sources, packages FROM code WHERE digest = ?", (digest,))
        return (json.loads(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def io_samples(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Measured (bytes, seconds) of artifact loads and of artifact writes."""
        loads = self._query("SELECT nbytes, load_seconds FROM artifacts WHERE load_seconds > 0")
        writes = self._query("SELECT nbytes, write_seconds FROM artifacts WHERE write_seconds > 0")
        return [tuple(r) for r in loads], [tuple(r) for r in writes]  # type: ignore[misc]

    def signature_history(self, workflow: str, last: int = 20) -> list[dict[str, frozenset[str]]]:
        """Per version of ``workflow`` (oldest first, at most ``last``): signatures per task."""
        ids = [
            r[0]
            for r in self._query(
                "SELECT id FROM versions WHERE workflow = ? AND status = 'done' "
                "ORDER BY id DESC LIMIT ?",
                (workflow, last),
            )
        ][::-1]
        if not ids:
            return []
        by_version: dict[int, dict[str, set[str]]] = {v: {} for v in ids}
        marks = ",".join("?" * len(ids))
        for v, name, sig in self._query(
            f"SELECT version, name, signature FROM nodes WHERE version IN ({marks})", ids
        ):
            by_version[v].setdefault(name, set()).add(sig)
        return [{n: frozenset(s) for n, s in by_version[v].items()} for v in ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


def __getattr__(name: str) -> object:
    # The writer subclasses the reader: imported on first use, so both can live in one import.
    if name == "CatalogWriter":
        from ._catalog_writer import CatalogWriter

        return CatalogWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
