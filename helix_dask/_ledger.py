"""The storage ledger: budget, stored bytes, reservations and committed artifacts, in memory.

The ledger answers the plugin's questions without a query per offer. It is read from the
catalog at plugin start, and again before a plan when the catalog's count or bytes of artifacts
differ from the ledger's (another process sharing the store committed or removed some).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .catalog import ArtifactRow


class StorageLedger:
    """What the store holds and has promised, in bytes, against the budget."""

    def __init__(self, budget: int, rows: Iterable[ArtifactRow]) -> None:
        self.budget = budget
        self.reload(rows)
        self.reserved = 0
        self._reservations: dict[str, int] = {}

    def reload(self, rows: Iterable[ArtifactRow]) -> None:
        """Take the committed artifacts from the catalog's ``rows``; reservations stay."""
        self._rows: dict[str, ArtifactRow] = {r.signature: r for r in rows}
        self.stored_bytes = sum(r.nbytes for r in self._rows.values())

    @property
    def free(self) -> int:
        """Bytes still available: budget minus stored minus reserved for writes in flight."""
        return self.budget - self.stored_bytes - self.reserved

    def row(self, signature: str) -> ArtifactRow | None:
        return self._rows.get(signature)

    def rows(self) -> list[ArtifactRow]:
        return list(self._rows.values())

    def rows_for(self, signatures: Iterable[str]) -> dict[str, ArtifactRow]:
        return {s: r for s in signatures if (r := self._rows.get(s)) is not None}

    def names(self) -> frozenset[str]:
        """Task names with at least one stored result."""
        return frozenset(r.name for r in self._rows.values())

    def io_samples(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Measured (bytes, seconds) of loads and of writes, as the catalog would give them."""
        rows = self._rows.values()
        loads = [(r.nbytes, r.load_seconds) for r in rows if r.load_seconds and r.load_seconds > 0]
        writes = [(r.nbytes, r.write_seconds) for r in rows if r.write_seconds > 0]
        return loads, writes  # type: ignore[return-value]

    def writing(self, signature: str) -> bool:
        return signature in self._reservations

    def reserve(self, signature: str, nbytes: int) -> None:
        self._reservations[signature] = self._reservations.get(signature, 0) + nbytes
        self.reserved += nbytes

    def release(self, signature: str, nbytes: int) -> None:
        left = self._reservations.get(signature, 0) - nbytes
        if left > 0:
            self._reservations[signature] = left
        else:
            self._reservations.pop(signature, None)
        self.reserved -= nbytes

    def fits_written(self, nbytes: int) -> bool:
        """Whether a write of ``nbytes`` (its real size, after its reservation was released)
        keeps the committed bytes within the budget."""
        return self.stored_bytes + nbytes <= self.budget

    def commit(self, row: ArtifactRow) -> None:
        old = self._rows.get(row.signature)
        self.stored_bytes += row.nbytes - (old.nbytes if old else 0)
        self._rows[row.signature] = row

    def loaded(self, signature: str, seconds: float, now: float) -> None:
        row = self._rows.get(signature)
        if row is not None:
            self._rows[signature] = dataclasses.replace(row, load_seconds=seconds, last_used=now)

    def remove(self, signature: str) -> ArtifactRow | None:
        row = self._rows.pop(signature, None)
        if row is not None:
            self.stored_bytes -= row.nbytes
        return row
