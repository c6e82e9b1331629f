"""Checking and cleaning an object store: uncommitting a corrupt artifact (with a note of why
in ``<url>/quarantine/``), verifying an artifact byte for byte against its manifest, and
sweeping the write folders no manifest names; the layout names the sweep parses."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from helix_dask._codec_pickle import check_pickles
from helix_dask._errors import HelixConfigError, HelixCorruptArtifact
from helix_dask._integrity import MANIFEST, Manifest, digest_buffer
from helix_dask._location import catalog_dir
from helix_dask._store_repair import _forget_in_catalog

if TYPE_CHECKING:
    import zarr
    from fsspec import AbstractFileSystem

logger = logging.getLogger("helix_dask.store")

_SIGNATURE = re.compile(r"[0-9a-f]{32}")
_WRITE = re.compile(r"w-[0-9a-f]{32}")
_QUARANTINE: Final = "quarantine"


def _mtime(info: dict[str, Any]) -> float:
    """Seconds since the epoch at which an object was last written, from an fsspec listing."""
    for field in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0  # unknown: treated as old, which only matters for folders no manifest names


class ObjectStoreUpkeep:
    """Quarantine, verification and sweeping, for
    :class:`~helix_dask._fsspec_store.ObjectArtifactStore`."""

    url: str
    root: str
    fs: AbstractFileSystem
    _artifacts: str
    _dir: Callable[[str], str]
    _where: Callable[[str], str]
    _manifest: Callable[[str], Manifest]
    _open: Callable[..., tuple[zarr.Group, dict[str, Any], Manifest]]
    _remove: Callable[[str], None]
    _listing: Callable[..., Any]

    def quarantine(
        self, signature: str, error: HelixCorruptArtifact, *, write: str | None = None
    ) -> None:
        """Uncommit a corrupt artifact and note why in ``<url>/quarantine/``; its files stay
        until :meth:`sweep_temporaries` removes them. Drops the catalog row when the catalog is
        on this machine (else the scheduler drops it when its next plan finds no manifest).

        With ``write``, only a manifest that commits that write is deleted: a fresh commit by
        another writer stays.
        """
        path = f"{self._dir(signature)}/{MANIFEST}"
        try:
            if write is not None:
                named = json.loads(self.fs.cat_file(path)).get("prefix")
                if named != write:
                    return
            self.fs.rm_file(path)
        except FileNotFoundError:
            return  # already uncommitted
        except (OSError, ValueError, AttributeError) as exc:
            if not isinstance(exc, OSError):  # an unreadable manifest: remove it all the same
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)
            else:
                logger.warning(
                    "helix artifact %s in %s is unusable (%s) and could not be uncommitted: "
                    "%s; remove it with `helix verify --repair`",
                    signature,
                    self.url,
                    error.reason,
                    exc,
                )
                return
        note = f"{self.root}/{_QUARANTINE}/{signature}-{uuid.uuid4().hex}.txt"
        with contextlib.suppress(OSError):
            self.fs.pipe_file(note, f"{error.reason}\nwrite folder: {write or '?'}\n".encode())
        logger.warning(
            "helix artifact %s in %s is unusable (%s); uncommitted it",
            signature,
            self.url,
            error.reason,
        )
        _forget_in_catalog(catalog_dir(self.url), signature)

    def verify(self, signature: str, *, repair: bool = False) -> HelixCorruptArtifact | None:
        """Download and hash every file of the artifact, check that the write holds exactly the
        files its manifest lists and its pickles' tags, unpickling nothing; return the problem
        found, or None. ``repair`` uncommits a bad artifact. ``KeyError`` if absent."""
        try:
            manifest = self._manifest(signature)
        except HelixCorruptArtifact as exc:
            return exc  # already uncommitted
        folder = f"{self._dir(signature)}/{manifest.prefix}"
        where = self._where(signature)
        try:
            listed = {p[len(folder) + 1 :]: p for p in self.fs.find(folder)}
            for rel, expected in manifest.files.items():
                if rel not in listed:
                    raise HelixCorruptArtifact(signature, where, f"file {rel} is missing")
                if digest_buffer(self.fs.cat_file(listed[rel])) != expected:
                    raise HelixCorruptArtifact(signature, where, f"file {rel} fails its checksum")
            extra = sorted(set(listed) - set(manifest.files))
            if extra:
                raise HelixCorruptArtifact(
                    signature, where, f"file {extra[0]} is not in its manifest"
                )
            group, meta, _ = self._open(signature, quarantine_on_error=repair)
            check_pickles(group, meta)
        except HelixCorruptArtifact as exc:
            if repair:
                self.quarantine(signature, exc, write=manifest.prefix)
            return exc
        except (KeyError, ValueError, TypeError) as exc:
            error = HelixCorruptArtifact(signature, where, f"its metadata is wrong ({exc!r})")
            if repair:
                self.quarantine(signature, error, write=manifest.prefix)
            return error
        return None

    def sweep_temporaries(self, older_than: float = 3600) -> int:
        """Remove write folders no manifest names and quarantine notes, once nothing was
        written to them for ``older_than`` seconds; return how many were removed.

        On object storage nothing tells whether a writer is alive, so age alone decides: keep
        ``older_than`` above the longest write. One listing of the store, plus one manifest
        read per artifact that has more than one write folder.
        """
        if older_than < 0:
            raise HelixConfigError(
                f"older_than={older_than!r} is negative; pass seconds >= 0 so that writes "
                "in progress are not removed"
            )
        cutoff = time.time() - older_than
        newest: dict[tuple[str, str], float] = {}  # (signature, write folder) -> newest object
        committed: set[str] = set()
        for path, info in self._listing(detail=True).items():
            parts = path[len(self._artifacts) + 1 :].split("/")
            if len(parts) < 3 or not _SIGNATURE.fullmatch(parts[1]):
                continue
            if len(parts) == 3 and parts[2] == MANIFEST:
                committed.add(parts[1])
            elif _WRITE.fullmatch(parts[2]):
                key = (parts[1], parts[2])
                newest[key] = max(newest.get(key, 0.0), _mtime(info))
        folders: dict[str, list[str]] = {}
        for signature, write in newest:
            folders.setdefault(signature, []).append(write)
        removed = 0
        for signature, writes in folders.items():
            old = [w for w in writes if newest[signature, w] < cutoff]
            if not old:
                continue
            keep = None
            if signature in committed:
                if len(writes) == 1:
                    continue  # the committed write
                with contextlib.suppress(KeyError, HelixCorruptArtifact):
                    keep = self._manifest(signature).prefix  # None: deleted or bad meanwhile
            for write in old:
                if write != keep:
                    self._remove(f"{self._dir(signature)}/{write}")
                    removed += 1
        with contextlib.suppress(FileNotFoundError):
            notes = self.fs.find(f"{self.root}/{_QUARANTINE}", detail=True)
            for path, info in notes.items():
                if _mtime(info) < cutoff:
                    self._remove(path)
                    removed += 1
        return removed
