"""The catalog's tables, the records read from them and the SQL helpers its reader and writer
share (:mod:`helix_dask.catalog`, :mod:`helix_dask._catalog_writer`)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._events import Decision, Materialization, NodeRecord
from ._owner import is_dead

__all__ = ["LEASE_SECONDS", "NODE_COLUMNS", "NODE_FIELDS", "SCHEMA", "ArtifactRow"]
__all__ += ["VersionRow", "VersionStats", "chunks", "insert_artifact", "live_leases"]
__all__ += ["node_record", "owner_only", "placeholders"]

SCHEMA = """
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

NODE_COLUMNS = (
    "version, key, name, signature, code, args, parents, decision, compute_seconds, "
    "load_seconds, write_seconds, nbytes, materialization, reason, estimated_compute_seconds, "
    "arg_values, metrics, identity, label"
)
"""The nodes table's columns in the order records are written and read (explicit, because a
migrated catalog has its added columns last)."""

NODE_FIELDS = (
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


def node_record(r: Sequence) -> NodeRecord:
    """A row of ``SELECT {NODE_COLUMNS} FROM nodes`` as a record."""
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


def insert_artifact(db: sqlite3.Connection, row: ArtifactRow) -> None:
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


def live_leases(rows: Iterable[Sequence]) -> set[str]:
    """The signatures of lease rows ``(signature, owner, owner_started)`` whose owner may live."""
    return {r[0] for r in rows if not is_dead(r[1], r[2])}


def owner_only(path: Path) -> None:
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


def placeholders(n: int) -> str:
    return ",".join("?" * n)


def chunks(items: list, size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
