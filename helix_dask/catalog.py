"""The catalog: versions, nodes per version and artifacts, in SQLite beside the artifacts.

:class:`Catalog` reads (any process, also while a run is going: WAL mode);
:class:`CatalogWriter` adds the writers, used by the scheduler plugin (the only writer of
versions and nodes) and by garbage collection and repairs of artifacts.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._errors import HelixStoreError
from ._events import Decision, EventRecord, Materialization, NodeRecord, RunReport
from ._keys import private_root
from ._owner import Owner, is_dead

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '[]',
    time_saved REAL NOT NULL DEFAULT 0,
    predicted_seconds REAL,
    measured_seconds REAL,
    owner TEXT NOT NULL DEFAULT '',
    owner_started REAL
);
CREATE TABLE IF NOT EXISTS nodes (
    version INTEGER NOT NULL REFERENCES versions(id),
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    signature TEXT NOT NULL,
    code TEXT NOT NULL,
    args TEXT NOT NULL,
    parents TEXT NOT NULL,
    decision TEXT NOT NULL,
    compute_seconds REAL,
    load_seconds REAL,
    write_seconds REAL,
    nbytes INTEGER,
    materialization TEXT,
    reason TEXT NOT NULL DEFAULT '',
    estimated_compute_seconds REAL NOT NULL DEFAULT 0,
    arg_values TEXT NOT NULL DEFAULT '{}',
    metrics TEXT,
    identity TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (version, key)
);
CREATE TABLE IF NOT EXISTS code (
    digest TEXT PRIMARY KEY,
    sources TEXT NOT NULL,
    packages TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requirements (
    signature TEXT PRIMARY KEY,
    requires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    identity TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    requires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS traces (
    code TEXT PRIMARY KEY,
    deps TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_signature ON nodes(signature);
CREATE INDEX IF NOT EXISTS nodes_name ON nodes(name);
CREATE TABLE IF NOT EXISTS artifacts (
    signature TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    location TEXT NOT NULL,
    kind TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    write_seconds REAL NOT NULL,
    load_seconds REAL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    recompute_seconds REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    version INTEGER,
    kind TEXT NOT NULL,
    signature TEXT NOT NULL,
    name TEXT NOT NULL,
    nbytes INTEGER,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_version ON events(version);
CREATE TABLE IF NOT EXISTS leases (
    signature TEXT NOT NULL,
    version INTEGER NOT NULL,
    owner TEXT NOT NULL,
    owner_started REAL,
    expires REAL NOT NULL,
    PRIMARY KEY (signature, version)
);
"""

LEASE_SECONDS = 24 * 3600.0
"""How long a lease protects an artifact at most: a run whose owner cannot be checked (another
host) stops protecting what it loads after this long."""

_NODE_COLUMNS = (
    "version, key, name, signature, code, args, parents, decision, compute_seconds, "
    "load_seconds, write_seconds, nbytes, materialization, reason, estimated_compute_seconds, "
    "arg_values, metrics, identity, label"
)
"""The nodes table's columns in the order records are written and read (explicit, because a
migrated catalog has its added columns last)."""

_NODE_FIELDS = (
    "compute_seconds",
    "load_seconds",
    "write_seconds",
    "nbytes",
    "materialization",
    "reason",
    "metrics",
)


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    """A committed artifact as the catalog records it."""

    signature: str
    name: str
    location: str
    kind: str
    nbytes: int
    write_seconds: float
    load_seconds: float | None
    created: float
    last_used: float
    recompute_seconds: float = 0.0
    """Seconds to recreate it (itself and its un-stored ancestors) when it was stored."""


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version's headline: id, workflow, times, status and counts per decision."""

    id: int
    workflow: str
    started: float
    finished: float | None
    status: str
    message: str
    time_saved: float
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class VersionStats:
    """One version's headline with aggregates over its nodes (:meth:`Catalog.version_stats`)."""

    id: int
    workflow: str
    started: float
    finished: float | None
    status: str
    message: str
    time_saved: float
    computed: int = 0
    loaded: int = 0
    pruned: int = 0
    in_cluster: int = 0
    full_seconds: float = 0.0
    """Estimated seconds to compute every node of the version from scratch."""
    stored_bytes: int = 0
    """Bytes of the artifacts this version wrote (as committed, or as measured in memory)."""
    repeats: int | None = None
    """The newest earlier version of the workflow with exactly the same signatures: this one is
    an identical re-run of it."""


class Runs(list[RunReport]):
    """Run reports, oldest first: a list, and a table with :meth:`to_pandas`."""

    def to_pandas(self):
        """One row per version: headline, counts per decision, seconds and bytes."""
        import pandas as pd

        rows = []
        for r in self:
            count = {d: sum(n.decision is d for n in r.nodes) for d in Decision}
            rows.append(
                {
                    "version": r.version,
                    "workflow": r.workflow,
                    "status": r.status,
                    "message": r.message,
                    "started": pd.to_datetime(r.started, unit="s"),
                    "finished": pd.to_datetime(r.finished, unit="s"),
                    "computed": count[Decision.COMPUTE],
                    "loaded": count[Decision.LOAD],
                    "pruned": count[Decision.PRUNE],
                    "in_cluster": count[Decision.IN_CLUSTER],
                    "stored": sum(n.materialization is Materialization.STORED for n in r.nodes),
                    "time_saved": r.time_saved,
                    "predicted_seconds": r.predicted_seconds,
                    "measured_seconds": r.measured_seconds,
                }
            )
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["version"])


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


class Catalog:
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
            _owner_only(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.executescript(_SCHEMA)
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
        for chunk in _chunks(list(set(signatures))):
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
        for chunk in _chunks(list(set(identities))):
            marks = _marks(len(chunk))
            for identity, req in self._query(
                f"SELECT identity, requires FROM identities WHERE identity IN ({marks})", chunk
            ):
                out[identity] = json.loads(req)
        return out

    def traced(self, codes: Iterable[str]) -> dict[str, list[str]]:
        """Code digest -> dependencies its traces found, for the codes traced so far."""
        out: dict[str, list[str]] = {}
        for chunk in _chunks(list(set(codes))):
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
        for chunk in _chunks(sorted(set(signatures))):
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
        return _live_leases(rows)

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
        for chunk in _chunks(sorted(set(values))):
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

    def events(self, version: int | None = None) -> list[EventRecord]:
        """Materializer events, oldest first; only those of ``version`` when given."""
        sql = "SELECT time, version, kind, signature, name, nbytes, reason FROM events"
        rows = (
            self._query(sql + " WHERE version = ? ORDER BY id", (version,))
            if version is not None
            else self._query(sql + " ORDER BY id")
        )
        return [EventRecord(*r) for r in rows]

    def versions(self) -> list[VersionRow]:
        counts: dict[int, dict[str, int]] = {}
        for v, decision, n in self._query(
            "SELECT version, decision, COUNT(*) FROM nodes GROUP BY version, decision"
        ):
            counts.setdefault(v, {})[decision] = n
        return [
            VersionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], counts.get(r[0], {}))
            for r in self._query(
                "SELECT id, workflow, started, finished, status, message, time_saved "
                "FROM versions ORDER BY id DESC"
            )
        ]

    def version_stats(self, limit: int | None = None) -> list[VersionStats]:
        """The newest ``limit`` versions (all when None), newest first, with their counts per
        decision, seconds to compute everything, bytes stored and the earlier version each
        repeats exactly, if any: three queries, whatever the number of versions."""
        rows = self._query(
            "SELECT v.id, v.workflow, v.started, v.finished, v.status, v.message, v.time_saved, "
            "TOTAL(n.decision = 'compute'), TOTAL(n.decision = 'load'), "
            "TOTAL(n.decision = 'prune'), TOTAL(n.decision = 'in_cluster'), "
            "TOTAL(COALESCE(n.compute_seconds, n.estimated_compute_seconds)), "
            "TOTAL(CASE WHEN n.materialization = 'stored' THEN COALESCE(a.nbytes, n.nbytes, 0) "
            "ELSE 0 END) "
            "FROM versions v LEFT JOIN nodes n ON n.version = v.id "
            "LEFT JOIN artifacts a ON a.signature = "
            "(CASE WHEN n.identity != '' THEN n.identity ELSE n.signature END) "
            "GROUP BY v.id ORDER BY v.id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        repeats = self._repeats()
        return [
            VersionStats(
                *r[:7],
                computed=int(r[7]),
                loaded=int(r[8]),
                pruned=int(r[9]),
                in_cluster=int(r[10]),
                full_seconds=float(r[11]),
                stored_bytes=int(r[12]),
                repeats=repeats.get(r[0]),
            )
            for r in rows
        ]

    def _repeats(self) -> dict[int, int]:
        """Version -> the newest earlier version of its workflow with exactly its signatures."""
        sigs: dict[int, set[str]] = {}
        for v, sig in self._query("SELECT version, signature FROM nodes"):
            sigs.setdefault(v, set()).add(sig)
        last: dict[tuple[str, frozenset[str]], int] = {}
        out: dict[int, int] = {}
        for v, workflow in self._query("SELECT id, workflow FROM versions ORDER BY id"):
            key = (workflow, frozenset(sigs.get(v, ())))
            if key[1] and key in last:
                out[v] = last[key]
            last[key] = v
        return out

    def runs(self, versions: Iterable[int] | None = None) -> Runs:
        """Every version's report (or those of ``versions``), oldest first, read in a few
        queries; ``.to_pandas()`` gives one row per version.

        Examples
        --------
        >>> hx.Catalog("./.helix").runs().to_pandas()[["version", "computed"]]  # doctest: +SKIP
        """
        where, params = "", ()
        if versions is not None:
            ids = sorted(set(versions))
            where, params = f" WHERE id IN ({_marks(len(ids))})", tuple(ids)
        heads = self._query(
            "SELECT id, workflow, started, finished, status, message, time_saved, "
            f"predicted_seconds, measured_seconds FROM versions{where} ORDER BY id",
            params,
        )
        nodes: dict[int, list[NodeRecord]] = {h[0]: [] for h in heads}
        events: dict[int, list[EventRecord]] = {h[0]: [] for h in heads}
        node_sql = f"SELECT {_NODE_COLUMNS} FROM nodes"
        event_sql = "SELECT time, version, kind, signature, name, nbytes, reason FROM events"
        if versions is None:
            node_rows = self._query(node_sql + " ORDER BY version, name")
            event_rows = self._query(event_sql + " WHERE version IS NOT NULL ORDER BY id")
        else:
            node_rows, event_rows = [], []
            for chunk in _chunks(list(nodes)):
                marks = _marks(len(chunk))
                node_rows += self._query(
                    f"{node_sql} WHERE version IN ({marks}) ORDER BY version, name", chunk
                )
                event_rows += self._query(f"{event_sql} WHERE version IN ({marks})", chunk)
        for r in node_rows:
            if r[0] in nodes:
                nodes[r[0]].append(_node_record(r))
        for e in event_rows:
            if e[1] in events:
                events[e[1]].append(EventRecord(*e))
        return Runs(
            RunReport(
                vid,
                workflow,
                started,
                finished,
                status,
                tuple(nodes[vid]),
                saved,
                message,
                predicted_seconds=predicted,
                measured_seconds=measured,
                events=tuple(events[vid]),
            )
            for vid, workflow, started, finished, status, message, saved, predicted, measured in (
                heads
            )
        )

    def next_version(self) -> int:
        """The id the next version gets (ids are never reused, even after a delete)."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'versions'")
        last = self._query("SELECT MAX(id) FROM versions")[0][0]
        return max(rows[0][0] if rows else 0, last or 0) + 1

    def last_version(self) -> int | None:
        """The newest version id, or None for an empty catalog."""
        row = self._query("SELECT MAX(id) FROM versions")[0]
        return row[0]

    def run(self, version: int) -> RunReport:
        found = self.runs([version])
        if not found:
            raise KeyError(f"version {version} is not in the catalog {str(self.path)!r}")
        return found[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def diff(self, a: int, b: int):
        """What changed from version ``a`` to ``b`` and why: a
        :class:`~helix_dask.history.VersionDiff` (``helix diff a b``)."""
        from .history import diff

        return diff(self, a, b)

    def metrics(self):
        """The metrics of every version: a :class:`~helix_dask.history.MetricsTable`
        (``helix metrics``; ``.to_pandas()``)."""
        from .history import metrics_table

        return metrics_table(self)

    def dag(self, v: int):
        """The DAG of version ``v`` with node states: a :class:`~helix_dask._drawing.DagView`
        (``.graph``, ``.to_svg()``, drawn inline in notebooks)."""
        from ._drawing import DagView
        from .history import dag

        return DagView(dag(self, v))

    def gc(self, keep: int, *, dry_run: bool = True):
        """Remove artifacts that no node of the last ``keep`` versions uses (``helix gc``).

        With ``dry_run`` (the default) nothing is deleted: the returned
        :class:`~helix_dask.usage.GcPlan` lists what would go and why. Otherwise returns the
        :class:`~helix_dask.usage.GcResult`. Artifacts of running versions always stay.
        """
        from .usage import apply_gc, gc_plan

        plan = gc_plan(self, keep)
        return plan if dry_run else apply_gc(self, plan)


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
            for chunk in _chunks(sigs):
                marks = _marks(len(chunk))
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
                f"INSERT OR REPLACE INTO nodes ({_NODE_COLUMNS}) VALUES ({_marks(19)})", rows
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
        unknown = set(fields) - set(_NODE_FIELDS)
        if unknown:
            raise ValueError(f"unknown node fields {sorted(unknown)}; expected {_NODE_FIELDS}")
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
            _insert_artifact(db, row)

    def remove_artifact(self, signature: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM artifacts WHERE signature = ?", (signature,))

    def add_artifact_if(self, row: ArtifactRow, present: Callable[[], bool]) -> bool:
        """Add ``row`` if ``present()`` (its files are committed), checked under the write
        lock: a removal by another process cannot slip in between. False if absent."""
        with self._tx() as db:
            if not present():
                return False
            _insert_artifact(db, row)
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
            if _live_leases(rows):
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


def _node_record(r: Sequence) -> NodeRecord:
    """A row of ``SELECT {_NODE_COLUMNS} FROM nodes`` as a record."""
    return NodeRecord(
        key=r[1],
        name=r[2],
        signature=r[3],
        code=r[4],
        args=json.loads(r[5]),
        parents=tuple(json.loads(r[6])),
        decision=Decision(r[7]),
        compute_seconds=r[8],
        load_seconds=r[9],
        write_seconds=r[10],
        nbytes=r[11],
        materialization=Materialization(r[12]) if r[12] else None,
        reason=r[13],
        estimated_compute_seconds=r[14],
        arg_values=json.loads(r[15]),
        metrics=None if r[16] is None else json.loads(r[16]),
        identity=r[17],
        label=r[18],
    )


def _insert_artifact(db: sqlite3.Connection, row: ArtifactRow) -> None:
    db.execute(
        "INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            row.signature,
            row.name,
            row.location,
            row.kind,
            row.nbytes,
            row.write_seconds,
            row.load_seconds,
            row.created,
            row.last_used,
            row.recompute_seconds,
        ),
    )


def _live_leases(rows: Iterable[Sequence]) -> set[str]:
    """The signatures of lease rows ``(signature, owner, owner_started)`` whose owner may live."""
    return {r[0] for r in rows if not is_dead(r[1], r[2])}


def _owner_only(path: Path) -> None:
    """Create the catalog file ``0600`` (SQLite gives its WAL and index the same mode), and
    take group and other access from one created before.

    An existing file is never opened here: closing a descriptor of it would drop the locks
    SQLite holds on it for the other connections of this process."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            with contextlib.suppress(OSError):  # read-only: SQLite says what it can do
                path.chmod(0o600)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: list, size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
