"""Artifacts on object storage (S3, GCS, Azure... through fsspec): the manifest is the commit.

Object stores have no atomic rename of a directory, so a put never moves anything. Each write
goes to a folder of its own, and the manifest, written last, commits it::

    <url>/artifacts/<sig[:2]>/<sig>/w-<write id>/...          the Zarr group of one write
    <url>/artifacts/<sig[:2]>/<sig>/helix-manifest.json       names that folder, with checksums

A single object PUT is atomic, so a reader sees the manifest of a finished write or none, and
trusts only the files it lists, each checked against its digest as it is read. A write that
dies leaves a folder no manifest names: never read, and removed by :meth:`sweep_temporaries`
once it is older than the age given (an hour by default), since on object storage no lock or
process id says whether a writer is still alive. Two writers of one signature each write their
own folder; the last manifest wins and the other folder is swept as an orphan. A corrupt
artifact is uncommitted by deleting its manifest (a note with the reason goes to
``<url>/quarantine/``), so the next plan recomputes it.

Workers write straight to the bucket: Zarr's ``FsspecStore`` for arrays (a Dask array's chunks
by tasks wherever they run), the same signed pickles for the rest; nothing goes through the
scheduler or the client. Digests are taken from the bytes on their way out, so sealing a write
costs one listing, not a second download (chunks that tasks wrote elsewhere are read back).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import fsspec
import zarr
from zarr.storage import FsspecStore

from helix_dask._codec_pickle import qualname
from helix_dask._codecs import decode, encode
from helix_dask._errors import HelixConfigError, HelixCorruptArtifact, HelixStoreError
from helix_dask._fsspec_upkeep import _SIGNATURE, _WRITE, ObjectStoreUpkeep
from helix_dask._integrity import (
    MANIFEST,
    Manifest,
    digest_buffer,
    parse_manifest,
)
from helix_dask._keys import pickle_key
from helix_dask._location import storage_options, store_location
from helix_dask._object_files import ObjectFiles, one_get
from helix_dask._store_base import FORMAT, ArtifactInfo, ArtifactStore

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["ObjectArtifactStore", "ObjectFiles"]

logger = logging.getLogger("helix_dask.store")

_DEFAULT_OPTIONS: Final = {"use_listings_cache": False}
"""Listings are never cached: another process may commit or delete at any time."""


class ObjectArtifactStore(ObjectStoreUpkeep, ArtifactStore):
    """Artifacts as Zarr v3 groups on object storage, committed by their manifest.

    The same contract, layout of values and checks as
    :class:`~helix_dask.store.ZarrArtifactStore`; the commit is the manifest (see the module
    docstring). Credentials and endpoint come from ``helix.storage-options`` (or
    ``hx.setup(storage_options=...)``) and fsspec's own configuration (for S3: the usual AWS
    environment variables and files). The store pickles as its URL; each process resolves the
    options of its own configuration. The pickle key stays on local disk (:mod:`._keys`).

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix`` and the like; the bucket must exist.

    Examples
    --------
    >>> store = ObjectArtifactStore("s3://bucket/helix")  # doctest: +SKIP
    >>> info = store.put("0123456789abcdef0123456789abcdef", np.arange(3))  # doctest: +SKIP
    >>> store.get(info.signature)  # doctest: +SKIP
    array([0, 1, 2])
    """

    def __init__(self, url: str) -> None:
        self.url = store_location(url)
        self.options = {**_DEFAULT_OPTIONS, **storage_options(self.url)}
        try:
            zstore = FsspecStore.from_url(self.url, storage_options=self.options)
            self.fs: AbstractFileSystem = fsspec.filesystem(
                zstore.fs.protocol
                if isinstance(zstore.fs.protocol, str)
                else zstore.fs.protocol[0],
                **self.options,
            )
        except (ImportError, ValueError, TypeError) as exc:
            raise HelixConfigError(
                f"store {self.url!r} cannot be opened through fsspec ({exc}); install its "
                "filesystem (pip install 'helix_dask[s3]' for s3://) and check "
                "helix.storage-options"
            ) from exc
        self._afs = zstore.fs  # async, for Zarr; self.fs for listing, manifests and deletes
        self.root = zstore.path.rstrip("/")
        self._artifacts = f"{self.root}/artifacts"

    def __reduce__(self) -> tuple[type[ObjectArtifactStore], tuple[str]]:
        return type(self), (self.url,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- paths -----------------------------------------------------------------------------------

    def _dir(self, signature: str) -> str:
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            raise HelixStoreError(
                f"signature {signature!r} is not 32 lowercase hex digits; "
                "pass a signature computed by helix_dask"
            )
        return f"{self._artifacts}/{signature[:2]}/{signature}"

    def _where(self, signature: str) -> str:
        return f"{self.url}/artifacts/{signature[:2]}/{signature}"

    def _manifest(self, signature: str) -> Manifest:
        """The committed manifest; ``KeyError`` if there is none, ``HelixCorruptArtifact`` if it
        does not parse (the artifact is then uncommitted)."""
        try:
            text = self.fs.cat_file(f"{self._dir(signature)}/{MANIFEST}", **one_get(self.fs))
        except FileNotFoundError:
            raise KeyError(signature) from None
        try:
            manifest = parse_manifest(text, signature, self._where(signature))
            if not _WRITE.fullmatch(manifest.prefix):
                raise HelixCorruptArtifact(
                    signature, self._where(signature), "its manifest names no write folder"
                )
        except HelixCorruptArtifact as exc:
            self.quarantine(signature, exc)
            raise
        return manifest

    def _files(
        self, signature: str, manifest: Manifest | None, write: str, **kw: Any
    ) -> ObjectFiles:
        return ObjectFiles(
            self._afs,
            f"{self._dir(signature)}/{write}",
            manifest=manifest,
            signature=signature,
            key=pickle_key(self.url),
            owner=self,
            **kw,
        )

    def _info(self, signature: str, manifest: Manifest, kind: str, started: float) -> ArtifactInfo:
        location = f"artifacts/{signature[:2]}/{signature}"
        nbytes = sum(size for size, _ in manifest.files.values()) + len(manifest.to_json())
        return ArtifactInfo(signature, location, kind, nbytes, time.perf_counter() - started)

    # -- reads -----------------------------------------------------------------------------------

    def _open(
        self, signature: str, *, quarantine_on_error: bool = True
    ) -> tuple[zarr.Group, dict[str, Any], Manifest]:
        """Open a committed artifact and check its ``helix`` attributes."""
        manifest = self._manifest(signature)
        try:
            files = self._files(
                signature,
                manifest,
                manifest.prefix,
                read_only=True,
                moves_corrupt=quarantine_on_error,
            )
            group = zarr.open_group(files, mode="r", zarr_format=3)
            meta = group.attrs["helix"]
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or "kind" not in meta:
                raise ValueError(f"attribute 'helix' is {meta!r}, expected format {FORMAT}")
        except HelixCorruptArtifact:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            error = HelixCorruptArtifact(
                signature, self._where(signature), f"it is corrupt or partial ({exc!r})"
            )
            if quarantine_on_error:
                self.quarantine(signature, error, write=manifest.prefix)
            raise error from exc
        return group, meta, manifest

    def get(self, signature: str) -> object:
        """The value under ``signature``; ``KeyError`` if absent, ``HelixCorruptArtifact`` (and
        the artifact uncommitted) if it fails a check or cannot be decoded."""
        group, meta, manifest = self._open(signature)
        try:
            return decode(group, meta)
        except (MemoryError, RecursionError, HelixCorruptArtifact):
            raise
        except Exception as exc:
            error = HelixCorruptArtifact(
                signature, self._where(signature), f"it cannot be decoded ({exc!r})"
            )
            self.quarantine(signature, error, write=manifest.prefix)
            raise error from exc

    def contains(self, signature: str) -> bool:
        """Whether a manifest commits an artifact under ``signature``."""
        return bool(self.fs.exists(f"{self._dir(signature)}/{MANIFEST}"))

    def nbytes(self, signature: str) -> int:
        """Bytes of the committed artifact (from its manifest); ``KeyError`` if absent."""
        manifest = self._manifest(signature)
        return sum(size for size, _ in manifest.files.values()) + len(manifest.to_json())

    def signatures(self) -> Iterator[str]:
        """Signatures whose manifest exists (writes in progress and orphans excluded)."""
        for path in sorted(self._listing()):
            parts = path[len(self._artifacts) + 1 :].split("/")
            if len(parts) == 3 and parts[2] == MANIFEST and _SIGNATURE.fullmatch(parts[1]):
                if parts[1][:2] == parts[0]:
                    yield parts[1]

    def _listing(self, detail: bool = False) -> Any:
        try:
            return self.fs.find(self._artifacts, detail=detail)
        except FileNotFoundError:
            return {} if detail else []

    # -- writes ----------------------------------------------------------------------------------

    def put(
        self, signature: str, value: object, *, name: str = "", scheduler: Any = None
    ) -> ArtifactInfo:
        """Store ``value`` under ``signature`` unless an artifact is already committed there.

        Writes the Zarr group into a folder of its own, then the manifest, last: the commit.
        Raises ``HelixStoreError`` if the write fails; the folder is removed then.
        """
        started = time.perf_counter()
        with contextlib.suppress(KeyError, HelixCorruptArtifact):
            _, meta, manifest = self._open(signature)
            return self._info(signature, manifest, meta["kind"], started)
        write = f"w-{uuid.uuid4().hex}"
        folder = f"{self._dir(signature)}/{write}"
        try:
            files = self._files(signature, None, write)
            group = zarr.open_group(files, mode="w", zarr_format=3)
            kind, extra = encode(group, value, scheduler)
            meta = {"kind": kind, "type": qualname(value), "name": name, "format": FORMAT}
            group.attrs.put({"helix": {**meta, **extra}})
            manifest = self._seal(signature, files)
            try:  # exclusive where the store supports it (S3: If-None-Match), else last wins
                self.fs.pipe_file(
                    f"{self._dir(signature)}/{MANIFEST}", manifest.to_json(), mode="create"
                )
            except FileExistsError:  # another writer committed first: keep theirs
                self._remove(folder)
                logger.debug("artifact %s was committed by another writer first", signature)
                _, meta, manifest = self._open(signature)
                return self._info(signature, manifest, meta["kind"], started)
        except BaseException as exc:
            self._remove(folder)
            if isinstance(exc, HelixStoreError) or not isinstance(exc, Exception):
                raise
            raise HelixStoreError(
                f"writing artifact {signature} ({qualname(value)}) to {self.url} failed: "
                f"{type(exc).__name__}: {exc}; nothing was committed, check that the bucket "
                "exists and is writable with helix.storage-options, and retry"
            ) from exc
        info = self._info(signature, manifest, kind, started)
        logger.debug(
            "wrote %s artifact %s to %s: %d bytes in %.3fs",
            kind,
            signature,
            self.url,
            info.nbytes,
            info.seconds,
        )
        return info

    def _seal(self, signature: str, files: ObjectFiles) -> Manifest:
        """Upload what is buffered and return the manifest of the write: digests taken while
        writing, or read back for files other processes wrote (the chunks of a Dask array)."""
        from zarr.core.sync import sync

        sync(files.flush())
        write = files.path.rsplit("/", 1)[-1]
        if not files.shared:
            return Manifest(signature, dict(files.written), write)
        listed = self.fs.find(files.path, detail=True)
        found: dict[str, tuple[int, str]] = {}
        for path, info in listed.items():
            rel = path[len(files.path) + 1 :]
            size = int(info.get("size") or 0)
            recorded = files.written.get(rel)
            if recorded is not None and recorded[0] == size:
                found[rel] = recorded
            else:
                found[rel] = digest_buffer(self.fs.cat_file(path))
        missing = sorted(set(files.written) - set(found))
        if missing:
            raise HelixStoreError(
                f"artifact {signature}: {len(missing)} written files are not listed in "
                f"{self.url} (first {missing[0]!r}); the store lost writes, retry"
            )
        return Manifest(signature, found, write)

    def _remove(self, path: str) -> None:
        """Remove everything under ``path``; log (never raise) what cannot be removed."""
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove %s from %s: %s", path, self.url, exc)

    def delete(self, signature: str) -> int:
        """Uncommit (delete the manifest), then remove the write; return the bytes freed."""
        try:
            manifest = self._manifest(signature)
        except (KeyError, HelixCorruptArtifact):
            return 0
        nbytes = sum(size for size, _ in manifest.files.values()) + len(manifest.to_json())
        try:
            self.fs.rm_file(f"{self._dir(signature)}/{MANIFEST}")
        except FileNotFoundError:
            return 0  # another process deleted it first
        self._remove(f"{self._dir(signature)}/{manifest.prefix}")
        return nbytes
