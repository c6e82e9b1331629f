"""Stores by location: :func:`open_store` opens the backend a location names, and the functions
Dask tasks run to load and write artifacts keep one open store per root in each process."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from helix_dask._errors import HelixCorruptArtifact
from helix_dask._location import is_remote, store_location
from helix_dask._store_base import ArtifactInfo, ArtifactStore
from helix_dask.store import ZarrArtifactStore

if TYPE_CHECKING:
    from helix_dask.rewrite import Recompute

__all__ = ["load_artifact", "open_store", "write_artifact"]

logger = logging.getLogger("helix_dask.store")

_STORES: dict[str, ArtifactStore] = {}


def open_store(location: str | os.PathLike[str]) -> ArtifactStore:
    """The artifact store at ``location``: a local directory (or ``file://`` URL) opens a
    :class:`ZarrArtifactStore`, with its local-disk fast paths; any other fsspec URL
    (``s3://bucket/prefix``, ``gs://...``) an :class:`~helix_dask._fsspec_store.ObjectArtifactStore`
    with the options of ``helix.storage-options``."""
    if is_remote(location):
        from helix_dask._fsspec_store import ObjectArtifactStore  # fsspec: only when used

        return ObjectArtifactStore(store_location(location))
    return ZarrArtifactStore(store_location(location))


def _store_for(root: str | os.PathLike[str]) -> ArtifactStore:
    key = os.fspath(root)
    if (store := _STORES.get(key)) is None:
        if len(_STORES) >= 16:  # a worker sees one or two roots; never grow without bound
            _STORES.clear()
        store = _STORES[key] = open_store(key)
    return store


def load_artifact(root: str, signature: str, fallback: Recompute | None = None) -> object:
    """Return the artifact ``signature`` of the store at ``root``.

    If it is absent or unusable, compute the result with ``fallback`` (the tasks the load
    replaced) after a WARNING; without one, raise ``KeyError`` or ``HelixCorruptArtifact``.
    """
    try:
        return _store_for(root).get(signature)
    except (KeyError, HelixCorruptArtifact) as exc:
        if fallback is None:
            raise
        reason = exc.reason if isinstance(exc, HelixCorruptArtifact) else "it is not in the store"
        logger.warning(
            "helix could not load artifact %s of %s (%s); computing it on this worker instead",
            signature,
            fallback.key,
            reason,
        )
        return fallback.compute()


def write_artifact(root: str, signature: str, value: object, name: str = "") -> ArtifactInfo:
    """Store ``value`` as artifact ``signature`` in the store at ``root``."""
    return _store_for(root).put(signature, value, name=name)
