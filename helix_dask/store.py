"""The artifact store: task results, content-addressed by signature, as Zarr v3 groups.

Each result lives at ``<root>/artifacts/<sig[:2]>/<sig>/``. It is written whole into a temporary
sibling directory and committed with one ``os.rename``, so a reader sees a complete artifact or
none. How each kind of value is laid out inside the group is :mod:`helix_dask._codecs`: arrays
and frame columns natively (chunked, with a per-dtype codec), dicts of results entry by entry,
small JSON-safe values in the group attributes, everything else as a pickle in a ``uint8`` array.
Dask arrays are written chunk by chunk by tasks on the cluster and read back lazily.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import errno
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zarr
from zarr.storage import LocalStore

from helix_dask._codecs import decode, encode, qualname
from helix_dask._errors import HelixConfigError, HelixStoreError

__all__ = ["MISSING", "ArtifactInfo", "ArtifactStore", "ZarrArtifactStore"]
__all__ += ["load_artifact", "write_artifact"]

logger = logging.getLogger(__name__)

FORMAT: Final = 1
_SIGNATURE = re.compile(r"[0-9a-f]{32}")
_TMP_PREFIX: Final = ".tmp-"


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


# -- the store ----------------------------------------------------------------------------------


def _tree_nbytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _remove_tree(path: Path) -> None:
    """Remove ``path`` recursively; log (never raise) what cannot be removed."""

    def report(function: Any, target: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            logger.warning("could not remove %s (%s): %s", target, function.__name__, exc_info[1])

    shutil.rmtree(path, onerror=report)


class ZarrArtifactStore(ArtifactStore):
    """Artifacts as Zarr v3 groups under ``<root>/artifacts/<sig[:2]>/<sig>/``.

    A ``put`` writes the whole group into a temporary sibling directory and renames it into
    place, so the rename is the commit: readers see the complete artifact or ``KeyError``, and
    the first of several concurrent writers of one signature wins while the others discard their
    copy. The store pickles as its root path alone, so it can be shipped to Dask workers.
    Pickled artifacts are unpickled on ``get``: only open stores whose contents you trust.

    A ``dict`` with ``str`` keys that holds arrays or frames, such as ``{"X": array, "model":
    estimator}``, is stored entry by entry, each value by the rule for its own type, and read
    back as a plain ``dict`` with the same key order; a dict of small values is one pickle.

    A ``dask.array.Array`` is never gathered: its chunks are computed and written by tasks on the
    cluster, wherever the scheduler runs them, and ``get`` returns a lazy ``from_zarr`` array
    whose chunks are read by tasks too. So every worker must see the store at the same path:
    a local directory for a one-machine cluster, shared storage (NFS, Lustre...) otherwise.

    Parameters
    ----------
    root : str or os.PathLike
        Directory of the store; ``<root>/artifacts`` is created if missing.

    Examples
    --------
    >>> store = ZarrArtifactStore(tmp_path)  # doctest: +SKIP
    >>> info = store.put("0123456789abcdef0123456789abcdef", np.arange(3))  # doctest: +SKIP
    >>> store.get(info.signature)  # doctest: +SKIP
    array([0, 1, 2])
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._artifacts = self.root / "artifacts"
        self._artifacts.mkdir(parents=True, exist_ok=True)

    def __reduce__(self) -> tuple[type[ZarrArtifactStore], tuple[str]]:
        return type(self), (str(self.root),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def _path(self, signature: str) -> Path:
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            raise HelixStoreError(
                f"signature {signature!r} is not 32 lowercase hex digits; "
                "pass a signature computed by helix_dask"
            )
        return self._artifacts / signature[:2] / signature

    def _info(self, signature: str, path: Path, kind: str, started: float) -> ArtifactInfo:
        location, nbytes = path.relative_to(self.root).as_posix(), _tree_nbytes(path)
        return ArtifactInfo(signature, location, kind, nbytes, time.perf_counter() - started)

    def _open(self, signature: str) -> tuple[zarr.Group, dict[str, Any]]:
        """Open a committed artifact and check its ``helix`` attributes."""
        path = self._path(signature)
        if not path.is_dir():
            raise KeyError(signature)
        try:
            group = zarr.open_group(LocalStore(path, read_only=True), mode="r", zarr_format=3)
            meta = group.attrs["helix"]
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or "kind" not in meta:
                raise ValueError(f"attribute 'helix' is {meta!r}, expected format {FORMAT}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not path.is_dir():  # deleted while we were opening it
                raise KeyError(signature) from None
            raise self._corrupt(signature, path, exc) from exc
        return group, meta

    @staticmethod
    def _corrupt(signature: str, path: Path, exc: BaseException) -> HelixStoreError:
        return HelixStoreError(
            f"artifact {path} is corrupt, partial or from an incompatible version "
            f"({type(exc).__name__}: {exc}); delete it with store.delete({signature!r}) "
            "and recompute"
        )

    def put(
        self, signature: str, value: object, *, name: str = "", scheduler: Any = None
    ) -> ArtifactInfo:
        """Store ``value`` under ``signature`` unless an artifact is already committed there.

        ``name`` (the task's name) is recorded in the attributes. ``scheduler`` runs the chunk
        writes of a dask array (anything ``dask.compute(scheduler=)`` takes, such as a worker's
        ``Client``); by default the cluster of the worker task calling ``put``, else dask's
        default scheduler. Returns the committed artifact: this write, or the one that was there
        first. Raises ``HelixStoreError`` if the value cannot be pickled or the write fails;
        nothing is left behind then.
        """
        started = time.perf_counter()
        final = self._path(signature)
        if final.is_dir():
            with contextlib.suppress(KeyError):  # KeyError: deleted meanwhile, so write it
                return self._info(signature, final, self._open(signature)[1]["kind"], started)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{_TMP_PREFIX}{signature}-{uuid.uuid4().hex}"
        try:
            group = zarr.open_group(LocalStore(tmp), mode="w", zarr_format=3)
            kind, extra = encode(group, value, scheduler)
            meta = {"kind": kind, "type": qualname(value), "name": name, "format": FORMAT}
            group.attrs.put({"helix": {**meta, **extra}})
        except BaseException as exc:
            _remove_tree(tmp)
            if isinstance(exc, HelixStoreError) or not isinstance(exc, Exception):
                raise
            raise HelixStoreError(
                f"writing artifact {signature} ({qualname(value)}) to {tmp} failed: "
                f"{type(exc).__name__}: {exc}; nothing was committed, fix the cause and retry"
            ) from exc
        try:
            os.rename(tmp, final)
        except OSError as exc:
            _remove_tree(tmp)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not final.is_dir():
                raise HelixStoreError(
                    f"could not commit artifact {signature} to {final}: {exc}; "
                    "check that the store root is writable"
                ) from exc
            logger.debug("artifact %s was committed by another writer first", signature)
            return self._info(signature, final, self._open(signature)[1]["kind"], started)
        info = self._info(signature, final, kind, started)
        logger.debug(
            "wrote %s artifact %s: %d bytes in %.3fs", kind, signature, info.nbytes, info.seconds
        )
        return info

    def get(self, signature: str) -> object:
        """The value under ``signature``; ``KeyError`` if absent, ``HelixStoreError`` if corrupt."""
        group, meta = self._open(signature)
        try:
            return decode(group, meta)
        except Exception as exc:
            raise self._corrupt(signature, self._path(signature), exc) from exc

    def contains(self, signature: str) -> bool:
        """Whether a committed artifact exists under ``signature``."""
        return self._path(signature).is_dir()

    def delete(self, signature: str) -> int:
        """Remove the artifact under ``signature``; return the bytes freed (0 if absent)."""
        final = self._path(signature)
        # Rename first, so readers never see a half-deleted artifact.
        trash = final.parent / f"{_TMP_PREFIX}{signature}-{uuid.uuid4().hex}-deleted"
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            return 0
        freed = _tree_nbytes(trash)
        _remove_tree(trash)
        return freed

    def signatures(self) -> Iterator[str]:
        """Iterate over the signatures of committed artifacts (temporaries excluded)."""
        for prefix in sorted(os.listdir(self._artifacts)):
            try:
                entries = sorted(os.listdir(self._artifacts / prefix))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if _SIGNATURE.fullmatch(entry) and entry[:2] == prefix:
                    yield entry

    def nbytes(self, signature: str) -> int:
        """Bytes on disk of the artifact under ``signature``; ``KeyError`` if absent."""
        path = self._path(signature)
        if not path.is_dir():
            raise KeyError(signature)
        return _tree_nbytes(path)

    def sweep_temporaries(self, older_than: float = 3600) -> int:
        """Remove the temporary directories of crashed writes; return how many were removed.

        A temporary directory in which nothing changed for ``older_than`` seconds is stale;
        younger ones may belong to a write in progress and are kept.
        """
        if older_than < 0:
            raise HelixConfigError(
                f"older_than={older_than!r} is negative; pass seconds >= 0 so that writes "
                "in progress are not removed"
            )
        cutoff = time.time() - older_than
        removed = 0
        for tmp in self._artifacts.glob(f"??/{_TMP_PREFIX}*"):
            # A directory's mtime changes when entries are added to it, so the newest
            # directory in the tree says when the write last made progress.
            folders = (os.stat(folder).st_mtime for folder, _, _ in os.walk(tmp))
            if max(folders, default=0.0) < cutoff:
                _remove_tree(tmp)
                removed += 1
        return removed


# -- thin functions for Dask worker tasks --------------------------------------------------------
_STORES: dict[str, ZarrArtifactStore] = {}


def _store_for(root: str | os.PathLike[str]) -> ZarrArtifactStore:
    key = os.fspath(root)
    if (store := _STORES.get(key)) is None:
        if len(_STORES) >= 16:  # a worker sees one or two roots; never grow without bound
            _STORES.clear()
        store = _STORES[key] = ZarrArtifactStore(key)
    return store


def load_artifact(root: str, signature: str) -> object:
    """Return the artifact ``signature`` of the store at ``root`` (``KeyError`` if absent)."""
    return _store_for(root).get(signature)


def write_artifact(root: str, signature: str, value: object, name: str = "") -> ArtifactInfo:
    """Store ``value`` as artifact ``signature`` in the store at ``root``."""
    return _store_for(root).put(signature, value, name=name)
