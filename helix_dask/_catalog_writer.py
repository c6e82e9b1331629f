"""The catalog's writers: versions and nodes (written by the scheduler plugin only), artifacts,
leases, code and what results required; readers use :class:`~helix_dask.catalog.Catalog`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from ._catalog_schema import (
    LEASE_SECONDS,
    NODE_COLUMNS,
    NODE_FIELDS,
    ArtifactRow,
    chunks,
    insert_artifact,
    live_leases,
    placeholders,
)
from ._events import EventRecord, Materialization, NodeRecord
from ._owner import Owner, is_dead
from .catalog import Catalog, MetadataStore

__all__ = ["CatalogWriter"]


class CatalogWriter(Catalog, MetadataStore):
    """The catalog with its writers: what the scheduler plugin (the only writer of versions and
    nodes), ``helix gc``, ``helix verify --repair`` and quarantines use; readers use
    :class:`Catalog`."""

    @contextmanager
    def batch(self) -> Iterator[Catalog]:
        """Apply the writes made inside in one transaction (all or none)."""
        with self._lock:
            self._batch_thread = threading.get_ident()
            try:
                with self._forgetting_on_rollback(), self._db:
                    self._db.execute("BEGIN IMMEDIATE")  # see _tx
                    yield self
            finally:
                self._batch_thread = None

    def begin_version(
        self,
        workflow: str,
        message: str,
        outputs: Sequence[str],
        predicted_seconds: float | None = None,
        *,
        version: int | None = None,
        started: float | None = None,
        owner: Owner | None = None,
    ) -> int:
        """Insert a running version; ``version`` gives its id, None takes the next one (what
        the plugin does: ids are unique across the processes sharing the catalog).
        ``owner``: the plugin instance running it, so that it can be marked interrupted once
        that instance is gone."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO versions (id, workflow, started, status, message, outputs, "
                "predicted_seconds, owner, owner_started) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    version,
                    workflow,
                    time.time() if started is None else started,
                    message,
                    json.dumps(list(outputs)),
                    predicted_seconds,
                    owner.name if owner else "",
                    owner.started if owner else None,
                ),
            )
            return int(cur.lastrowid or 0)

    def lease(
        self,
        version: int,
        signatures: Iterable[str],
        owner: Owner,
        seconds: float = LEASE_SECONDS,
    ) -> set[str]:
        """Protect ``signatures`` from eviction and gc while ``version`` runs (until
        :meth:`finish_version`, its owner's death or ``seconds``); return those that have no
        artifact row any more (another process removed them after they were planned)."""
        sigs = sorted(set(signatures))
        if not sigs:
            return set()
        expires = time.time() + seconds
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                [(s, version, owner.name, owner.started, expires) for s in sigs],
            )
            present = set()
            for chunk in chunks(sigs):
                marks = placeholders(len(chunk))
                sql = f"SELECT signature FROM artifacts WHERE signature IN ({marks})"
                present.update(r[0] for r in db.execute(sql, chunk))
        return set(sigs) - present

    def interrupt_dead_versions(self) -> list[int]:
        """Mark 'interrupted' every running version whose owner is certainly gone, and drop
        the leases of dead owners and expired ones; return the versions marked."""
        now = time.time()
        with self._tx() as db:
            dead = [
                v
                for v, owner, started in db.execute(
                    "SELECT id, owner, owner_started FROM versions WHERE status = 'running'"
                )
                if is_dead(owner, started)
            ]
            db.executemany(
                "UPDATE versions SET status = 'interrupted', finished = ? WHERE id = ?",
                [(now, v) for v in dead],
            )
            stale = [
                (s, v)
                for s, v, owner, started, expires in db.execute("SELECT * FROM leases")
                if expires <= now or is_dead(owner, started)
            ]
            db.executemany("DELETE FROM leases WHERE signature = ? AND version = ?", stale)
        return dead

    def record_nodes(self, version: int, records: Iterable[NodeRecord]) -> None:
        rows = [
            (
                version,
                r.key,
                r.name,
                r.signature,
                r.code,
                json.dumps(dict(r.args), sort_keys=True),
                json.dumps(list(r.parents)),
                r.decision.value,
                r.compute_seconds,
                r.load_seconds,
                r.write_seconds,
                r.nbytes,
                r.materialization.value if r.materialization else None,
                r.reason,
                r.estimated_compute_seconds,
                json.dumps(dict(r.arg_values), sort_keys=True),
                None if r.metrics is None else json.dumps(dict(r.metrics), sort_keys=True),
                r.identity if r.identity != r.signature else "",
                r.label,
            )
            for r in records
        ]
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO nodes ({NODE_COLUMNS}) VALUES ({placeholders(19)})", rows
            )

    def record_code(self, digest: str, sources: Mapping[str, str], packages: Mapping[str, str]):
        """Keep the sources behind a code digest once, for diffs between versions."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO code VALUES (?, ?, ?)",
                (digest, json.dumps(dict(sources)), json.dumps(dict(packages))),
            )

    def record_requirements(
        self,
        signature: str,
        requires: Mapping[str, str],
        code: str,
        traced: Iterable[str] | None,
        identity: str | None = None,
    ) -> None:
        """What the computation of ``signature`` required beyond its static signature
        (dependency id -> digest where it ran); ``traced``: the dependencies a trace of ``code``
        found, merged into that code's set (``None`` when it was not traced)."""
        body = json.dumps(dict(sorted(requires.items())))
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO requirements VALUES (?, ?)", (signature, body))
            if identity is not None and identity != signature:  # what made it this identity
                db.execute(
                    "INSERT OR REPLACE INTO identities VALUES (?, ?, ?)",
                    (identity, signature, body),
                )
            if traced is not None and not set(traced) <= self._traced.get(code, frozenset()):
                row = db.execute("SELECT deps FROM traces WHERE code = ?", (code,)).fetchone()
                deps = set(json.loads(row[0])) if row else set()
                merged = frozenset(deps | set(traced))
                body = json.dumps(sorted(merged))
                db.execute("INSERT OR REPLACE INTO traces VALUES (?, ?)", (code, body))
                # Traces only grow: what this writer wrote or read needs no rewrite (a call that
                # reaches nothing new, most of them, costs no read and no write of its trace).
                self._traced[code] = merged

    def update_node(self, version: int, key: str, **fields: object) -> None:
        unknown = set(fields) - set(NODE_FIELDS)
        if unknown:
            raise ValueError(f"unknown node fields {sorted(unknown)}; expected {NODE_FIELDS}")
        values = [
            v.value
            if isinstance(v, Materialization)
            else json.dumps(v, sort_keys=True)
            if isinstance(v, dict)
            else v
            for v in fields.values()
        ]
        sets = ", ".join(f"{f} = ?" for f in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE nodes SET {sets} WHERE version = ? AND key = ?", (*values, version, key)
            )

    def finish_version(
        self,
        version: int,
        status: str,
        time_saved: float,
        measured_seconds: float | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET finished = ?, status = ?, time_saved = ?, "
                "measured_seconds = ? WHERE id = ?",
                (time.time(), status, time_saved, measured_seconds, version),
            )
            db.execute("DELETE FROM leases WHERE version = ?", (version,))

    def record_events(self, events: Iterable[EventRecord]) -> None:
        """Log materializer events (stored, skipped, no_space, failed, evicted) in one go."""
        rows = [
            (e.time, e.version, str(e.kind), e.signature, e.name, e.nbytes, e.reason)
            for e in events
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (time, version, kind, signature, name, nbytes, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def update_measurements(self, version: int, records: Iterable[NodeRecord]) -> None:
        """Write what a run measured for its nodes (inserted by :meth:`record_nodes` when it
        was planned) in one statement per node, one transaction."""
        rows = [
            (
                r.compute_seconds,
                r.load_seconds,
                r.write_seconds,
                r.nbytes,
                r.materialization.value if r.materialization else None,
                r.reason,
                None if r.metrics is None else json.dumps(dict(r.metrics), sort_keys=True),
                r.identity if r.identity != r.signature else "",
                version,
                r.key,
            )
            for r in records
        ]
        with self._tx() as db:
            db.executemany(
                "UPDATE nodes SET compute_seconds = ?, load_seconds = ?, write_seconds = ?, "
                "nbytes = ?, materialization = ?, reason = ?, metrics = ?, identity = ? "
                "WHERE version = ? AND key = ?",
                rows,
            )

    def record_event(
        self,
        version: int | None,
        kind: str,
        signature: str,
        name: str,
        nbytes: int | None,
        reason: str,
    ) -> None:
        """Log one materializer event (stored, skipped, no_space, failed, evicted)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (time, version, kind, signature, name, nbytes, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), version, kind, signature, name, nbytes, reason),
            )

    def add_artifact(self, row: ArtifactRow) -> None:
        with self._tx() as db:
            insert_artifact(db, row)

    def remove_artifact(self, signature: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM artifacts WHERE signature = ?", (signature,))

    def add_artifact_if(self, row: ArtifactRow, present: Callable[[], bool]) -> bool:
        """Add ``row`` if ``present()`` (its files are committed), checked under the write
        lock: a removal by another process cannot slip in between. False if absent."""
        with self._tx() as db:
            if not present():
                return False
            insert_artifact(db, row)
        return True

    def remove_unless_leased(self, signature: str, delete: Callable[[str], int]) -> int | None:
        """Drop the row of ``signature`` and call ``delete(signature)`` (its files), in one
        transaction holding the write lock, unless a live lease protects it; return what
        ``delete`` returned (bytes freed), or None if a lease protects it (nothing changes)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT signature, owner, owner_started FROM leases "
                "WHERE signature = ? AND expires > ?",
                (signature, time.time()),
            ).fetchall()
            if live_leases(rows):
                return None
            db.execute("DELETE FROM artifacts WHERE signature = ?", (signature,))
            return delete(signature)

    def discard_unrecorded(self, signature: str, delete: Callable[[str], object]) -> bool:
        """Delete the files of ``signature`` unless the catalog lists it (another process's
        write of the same result committed it); True if deleted."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM artifacts WHERE signature = ?", (signature,)).fetchone():
                return False
            delete(signature)
        return True

    def record_load(self, signature: str, seconds: float) -> None:
        """Remember the measured load time and that the artifact was just used."""
        with self._tx() as db:
            db.execute(
                "UPDATE artifacts SET load_seconds = ?, last_used = ? WHERE signature = ?",
                (seconds, time.time(), signature),
            )
