"""The artifact store: task results, content-addressed by signature, as Zarr v3 groups.

Each result lives at ``<root>/artifacts/<sig[:2]>/<sig>/``. It is written whole into a temporary
sibling directory, sealed with a manifest of its files' checksums (:mod:`helix_dask._integrity`)
and committed with one ``os.rename``, so a reader sees a complete artifact or none, and a load
returns only bytes that match the manifest. An artifact that fails a check is moved to
``<root>/quarantine/`` and its catalog row dropped, so the next plan recomputes it.

A small result (its encoding within 256 KiB: a score, metrics, a fitted scaler) is one file
beside the manifest, with no Zarr group (:mod:`helix_dask._packed`), so that storing and loading
it costs well under a millisecond. How every other value is laid out inside its group is
:mod:`helix_dask._codecs`: arrays and frame columns natively (chunked, with a per-dtype codec),
dicts of results entry by entry, JSON-safe values in the group attributes, everything else as a
signed pickle in a ``uint8`` array. Dask arrays are written chunk by chunk by tasks on the
cluster and read back lazily.

The contract every backend keeps is :mod:`helix_dask._store_base`; quarantine and checking a
store against its catalog, :mod:`helix_dask._store_repair`; opening a store by location and the
functions Dask tasks call, :mod:`helix_dask._store_access`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import zarr

from helix_dask._codec_pickle import check_pickles, qualname
from helix_dask._codecs import decode, encode
from helix_dask._errors import HelixConfigError, HelixCorruptArtifact, HelixStoreError
from helix_dask._integrity import ArtifactFiles, read_manifest, seal, verify_tree
from helix_dask._keys import pickle_key, private_root
from helix_dask._packed import LAYOUT, PackedValue, pack
from helix_dask._packed import write as write_packed
from helix_dask._store_base import FORMAT, ArtifactInfo, ArtifactStore
from helix_dask._store_repair import _QUARANTINE, quarantine

__all__ = ["ZarrArtifactStore"]

logger = logging.getLogger(__name__)

_SIGNATURE = re.compile(r"[0-9a-f]{32}")
_TMP_PREFIX: Final = ".tmp-"
_COMMIT_ATTEMPTS: Final = 5
"""Renames tried when another writer's commit of the same signature vanishes under ours."""
_HOST: Final = socket.gethostname()
# ".tmp-<sig>-<uuid>-<pid>@<host>": a write in progress, by the process <pid> on <host>.
_WRITER = re.compile(r"\.tmp-[0-9a-f]{32}-[0-9a-f]{32}-(\d+)@(.+)")


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
    Pickles are signed with the store's key (:mod:`helix_dask._keys`) and unpickled only when
    their tag verifies; every file is checked against the artifact's manifest as it is read.

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
        Directory of the store (the ``helix.store`` setting); it and ``<root>/artifacts`` are
        created owner-only if missing.

    Examples
    --------
    >>> store = ZarrArtifactStore(tmp_path)  # doctest: +SKIP
    >>> info = store.put("0123456789abcdef0123456789abcdef", np.arange(3))  # doctest: +SKIP
    >>> store.get(info.signature)  # doctest: +SKIP
    array([0, 1, 2])
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = private_root(root)
        self._artifacts = self.root / "artifacts"
        self._artifacts.mkdir(mode=0o700, exist_ok=True)

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

    def _info(
        self, signature: str, path: Path, kind: str, started: float, nbytes: int | None = None
    ) -> ArtifactInfo:
        location = path.relative_to(self.root).as_posix()
        nbytes = _tree_nbytes(path) if nbytes is None else nbytes
        return ArtifactInfo(signature, location, kind, nbytes, time.perf_counter() - started)

    def _open(
        self, signature: str, *, quarantine_on_error: bool = True
    ) -> tuple[zarr.Group | PackedValue, dict[str, Any]]:
        """Open a committed artifact, check its manifest and its ``helix`` attributes: a Zarr
        group, or the one file of a small result (:mod:`helix_dask._packed`)."""
        path = self._path(signature)
        if not path.is_dir():
            raise KeyError(signature)
        try:
            manifest = read_manifest(path, signature)
            opened: zarr.Group | PackedValue
            if manifest.attributes is not None:
                opened = PackedValue(path, manifest, pickle_key(self.root))
                meta: Any = opened.meta
                if meta.get("layout") != LAYOUT:
                    raise ValueError(f"its manifest holds attributes {meta!r} of no layout")
            else:
                files = ArtifactFiles(
                    path,
                    read_only=True,
                    manifest=manifest,
                    signature=signature,
                    key=pickle_key(self.root),
                    moves_corrupt=quarantine_on_error,
                )
                opened = zarr.open_group(files, mode="r", zarr_format=3)
                meta = opened.attrs["helix"]
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or "kind" not in meta:
                raise ValueError(f"attribute 'helix' is {meta!r}, expected format {FORMAT}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not path.is_dir():  # deleted while we were opening it
                raise KeyError(signature) from None
            raise self._corrupt(signature, path, exc, move=quarantine_on_error) from exc
        return opened, meta

    @staticmethod
    def _corrupt(
        signature: str, path: Path, exc: BaseException, *, move: bool = True
    ) -> HelixCorruptArtifact:
        """``exc`` as the typed error, the artifact moved out of the store (``move``)."""
        if isinstance(exc, HelixCorruptArtifact):
            error = exc
        else:
            reason = f"it is corrupt, partial or from an incompatible version ({exc!r})"
            error = HelixCorruptArtifact(signature, str(path), reason)
        if move:
            quarantine(path, error)
        return error

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
            # KeyError: deleted meanwhile; corrupt: moved out of the way. Either way, write it.
            with contextlib.suppress(KeyError, HelixCorruptArtifact):
                return self._info(signature, final, self._open(signature)[1]["kind"], started)
        tmp = final.parent / f"{_TMP_PREFIX}{signature}-{uuid.uuid4().hex}-{os.getpid()}@{_HOST}"
        nbytes: int | None = None  # of a Zarr group: summed after the commit
        try:
            final.parent.mkdir(mode=0o700, exist_ok=True)  # a full or read-only disk: below
            tmp.mkdir(mode=0o700)  # first: a write in progress is visible, and swept if killed
            meta = {"type": qualname(value), "name": name, "format": FORMAT}
            encoded = pack(value)
            if encoded is not None and encoded.small:
                kind, nbytes = write_packed(tmp, signature, pickle_key(self.root), encoded, meta)
            else:
                files = ArtifactFiles(tmp, signature=signature, key=pickle_key(self.root))
                group = zarr.open_group(files, mode="w", zarr_format=3)
                pickled = None if encoded is None else (encoded.payload, encoded.pickler)
                kind, extra = encode(group, value, scheduler, pickled=pickled)
                group.attrs.put({"helix": {"kind": kind, **meta, **extra}})
                seal(tmp, signature)
        except BaseException as exc:
            _remove_tree(tmp)
            if isinstance(exc, HelixStoreError) or not isinstance(exc, Exception):
                raise
            raise HelixStoreError(
                f"writing artifact {signature} ({qualname(value)}) to {tmp} failed: "
                f"{type(exc).__name__}: {exc}; nothing was committed, fix the cause and retry"
            ) from exc
        for _attempt in range(_COMMIT_ATTEMPTS):
            try:
                os.rename(tmp, final)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not final.is_dir():
                    _remove_tree(tmp)
                    raise HelixStoreError(
                        f"could not commit artifact {signature} to {final}: {exc}; "
                        "check that the store root is writable"
                    ) from exc
            try:  # another writer committed it first: keep theirs
                theirs = self._open(signature)[1]["kind"]
            except (KeyError, HelixCorruptArtifact):
                continue  # removed (evicted, collected, quarantined) since: commit ours
            _remove_tree(tmp)
            logger.debug("artifact %s was committed by another writer first", signature)
            return self._info(signature, final, theirs, started)
        else:
            _remove_tree(tmp)
            raise HelixStoreError(
                f"could not commit artifact {signature} to {final}: other processes kept "
                f"committing and removing it ({_COMMIT_ATTEMPTS} attempts); nothing was "
                "committed, retry"
            )
        info = self._info(signature, final, kind, started, nbytes)
        logger.debug(
            "wrote %s artifact %s: %d bytes in %.3fs", kind, signature, info.nbytes, info.seconds
        )
        return info

    def get(self, signature: str) -> object:
        """The value under ``signature``; ``KeyError`` if absent.

        ``HelixCorruptArtifact`` if the artifact fails a check or cannot be decoded; it is then
        moved to ``<root>/quarantine/`` and dropped from the catalog, so it is not planned again.
        """
        opened, meta = self._open(signature)
        try:
            return opened.load() if isinstance(opened, PackedValue) else decode(opened, meta)
        except (MemoryError, RecursionError):
            raise  # the machine's limits, not the artifact's fault
        except Exception as exc:
            path = self._path(signature)
            if not path.is_dir():  # deleted (evicted, collected) while it was being read
                raise KeyError(signature) from None
            raise self._corrupt(signature, path, exc) from exc

    def verify(self, signature: str, *, repair: bool = False) -> HelixCorruptArtifact | None:
        """Read and hash every file of the artifact and check its pickles' tags, unpickling
        nothing; return the problem found, or None. ``repair`` quarantines a bad artifact.

        ``KeyError`` if there is no artifact under ``signature``.
        """
        path = self._path(signature)
        if not path.is_dir():
            raise KeyError(signature)
        try:
            verify_tree(path, signature)
            opened, meta = self._open(signature, quarantine_on_error=repair)
            if isinstance(opened, PackedValue):
                opened.check()
            else:
                check_pickles(opened, meta)
        except HelixCorruptArtifact as exc:
            if repair:
                quarantine(path, exc)
            return exc
        except (KeyError, ValueError, TypeError) as exc:  # metadata that decodes wrongly
            error = HelixCorruptArtifact(signature, str(path), f"its metadata is wrong ({exc!r})")
            if repair:
                quarantine(path, error)
            return error
        return None

    def quarantine(self, signature: str, error: HelixCorruptArtifact) -> None:
        """Move the artifact out of the store and drop its catalog row (see :func:`quarantine`)."""
        quarantine(self._path(signature), error)

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
        """Remove what crashed writes and old quarantines left; return how many were removed.

        A temporary directory goes when the process that made it is gone (same host), when it
        holds a finished delete, or when nothing changed in it for ``older_than`` seconds; a
        younger one of a live writer (or of another host) may be a write in progress and stays.
        Quarantined artifacts go ``older_than`` seconds after they were moved there.
        """
        if older_than < 0:
            raise HelixConfigError(
                f"older_than={older_than!r} is negative; pass seconds >= 0 so that writes "
                "in progress are not removed"
            )
        cutoff = time.time() - older_than
        removed = 0
        for tmp in self._artifacts.glob(f"??/{_TMP_PREFIX}*"):
            if _writer_is_gone(tmp.name) or tmp.name.endswith("-deleted") or _idle(tmp, cutoff):
                _remove_tree(tmp)
                removed += 1
        for entry in (self.root / _QUARANTINE).glob("*"):
            if _idle(entry, cutoff):
                _remove_tree(entry)
                removed += 1
        return removed


def _idle(path: Path, cutoff: float) -> bool:
    """Whether nothing changed under ``path`` since ``cutoff``; False when (part of) it went
    while looked at: its writer committed it by a rename, or removed it."""
    # A directory's mtime changes when entries are added to it, so the newest directory in
    # the tree says when the write last made progress.
    newest = 0.0
    for folder, _, _ in os.walk(path):
        try:
            newest = max(newest, os.stat(folder).st_mtime)
        except FileNotFoundError:
            return False
    return newest < cutoff and path.exists()


def _writer_is_gone(name: str) -> bool:
    """Whether the temporary ``name`` was made by a process of this host that has exited."""
    match = _WRITER.fullmatch(name)
    if match is None or match[2] != _HOST:
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
