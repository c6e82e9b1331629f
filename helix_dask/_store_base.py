"""What every artifact store is: the contract both backends keep (:class:`ArtifactStore`), the
record a write returns (:class:`ArtifactInfo`), the version of the ``helix`` attributes they
write, and :data:`MISSING`."""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["FORMAT", "MISSING", "ArtifactInfo", "ArtifactStore"]

FORMAT: Final = 1
"""Version of the ``helix`` attributes every artifact carries."""


class _Missing(enum.Enum):
    """Type of :data:`MISSING`: an enum, so it stays a singleton across pickling."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    __str__ = __repr__


MISSING: Final = _Missing.MISSING
"""Sentinel for "no result"; never ``None``, which a task may legitimately return."""


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """What a committed artifact is and what writing it cost.

    Attributes
    ----------
    signature : str
        The 32-hex-digit signature the artifact is stored under.
    location : str
        Path of the artifact relative to the store root (POSIX separators).
    kind : str
        ``"ndarray"``, ``"dask_array"``, ``"dataframe"``, ``"series"``, ``"mapping"``,
        ``"json"``, ``"pickle"`` or ``"none"``.
    nbytes : int
        Bytes on disk, after compression.
    seconds : float
        Wall time of the ``put`` call that returned this record.
    """

    signature: str
    location: str
    kind: str
    nbytes: int
    seconds: float


class ArtifactStore(abc.ABC):
    """Results by signature.

    Contract: ``get(sig)`` returns exactly what ``put(sig, v)`` stored, or raises ``KeyError``;
    a reader never sees a half-written artifact.
    """

    @abc.abstractmethod
    def put(self, signature: str, value: object, *, name: str = "") -> ArtifactInfo:
        """Store ``value`` under ``signature``; keep an artifact already committed there."""

    @abc.abstractmethod
    def get(self, signature: str) -> object:
        """Return the value stored under ``signature``; ``KeyError`` if there is none."""

    @abc.abstractmethod
    def contains(self, signature: str) -> bool:
        """Whether a committed artifact exists under ``signature``."""

    @abc.abstractmethod
    def delete(self, signature: str) -> int:
        """Remove the artifact; return the bytes freed (0 if it was absent)."""

    @abc.abstractmethod
    def signatures(self) -> Iterator[str]:
        """Iterate over the signatures of committed artifacts."""

    @abc.abstractmethod
    def nbytes(self, signature: str) -> int:
        """Bytes on disk of the artifact; ``KeyError`` if there is none."""
