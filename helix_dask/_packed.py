"""Small results as one checked file beside their manifest: no Zarr group.

Most results of a workflow are small: a score, a dict of metrics, a fitted scaler, a short list.
Written as a Zarr group, each costs a group, metadata files, an array and its chunk; read back,
as many opens. A result whose encoding fits in :data:`LIMIT` bytes is instead written as the
single file ``data`` of its artifact directory: tagged JSON when it is a tree of JSON-safe
scalars, else a pickle signed with the store's key. The manifest lists ``data`` with its size
and digest like any other file and carries, under ``attributes``, what the group's attributes
would hold (kind, type, task name, pickler and tag). A write is a ``mkdir``, two small files and
the commit's rename; a load reads the manifest and the data and checks both before decoding.
Arrays past the limit, frames, dicts of arrays and dask arrays stay Zarr groups.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from helix_dask._codec_arrays import _is_native
from helix_dask._codec_dask import _is_dask_array
from helix_dask._codec_json import _JSON_TYPES, _from_json, _json_or_raise, _NotJSONSafe
from helix_dask._codec_pickle import _pickle_dumps
from helix_dask._codecs import _is_plain_pandas, _mapping_nbytes
from helix_dask._errors import HelixCorruptArtifact
from helix_dask._integrity import MANIFEST, Manifest, digest_buffer
from helix_dask._keys import pickle_tag, tag_matches

__all__ = ["LIMIT", "VALUE", "PackedValue", "pack", "write"]

LIMIT: Final = 256 * 2**10
"""Largest encoding, in bytes, stored as one file rather than a Zarr group."""
VALUE: Final = "data"
LAYOUT: Final = "packed"


@dataclass(frozen=True, slots=True)
class _Encoded:
    kind: str  # what the artifact is reported as: "none", "json", "ndarray" or "pickle"
    payload: bytes
    pickler: str = ""  # empty unless the payload is a pickle

    @property
    def small(self) -> bool:
        """Whether it is stored packed."""
        return len(self.payload) <= LIMIT


def pack(value: object) -> _Encoded | None:
    """The encoding of ``value`` as one file, ``None`` when it has a native Zarr layout. Check
    :attr:`_Encoded.small`: a pickle too large to pack is still returned, so that the Zarr
    layout does not pickle it again."""
    if value is None:
        return _Encoded("none", b"")
    if _is_dask_array(value) or _is_plain_pandas(value):
        return None
    if type(value) in _JSON_TYPES:
        try:
            text = json.dumps(_json_or_raise(value), separators=(",", ":"), allow_nan=False)
        except (_NotJSONSafe, RecursionError, ValueError):
            pass
        else:
            return _Encoded("json", text.encode()) if len(text) <= LIMIT else None
    native = type(value) is np.ndarray and _is_native(value)
    if native and value.nbytes > LIMIT:  # type: ignore[attr-defined]
        return None  # chunked and compressed natively
    if _mapping_nbytes(value, 0) is not None:
        return None  # a dict of arrays or frames, stored entry by entry
    payload, pickler = _pickle_dumps(value, "a value")
    return _Encoded("ndarray" if native else "pickle", payload, pickler)


def write(
    folder: Path, signature: str, key: bytes, encoded: _Encoded, attributes: dict[str, Any]
) -> tuple[str, int]:
    """Write ``encoded`` and its manifest into the empty directory ``folder``; return the kind
    and the bytes written. ``attributes`` (type, name, format) go into the manifest."""
    meta: dict[str, Any] = {**attributes, "layout": LAYOUT, "kind": encoded.kind}
    if encoded.pickler:
        meta["pickler"] = encoded.pickler
        meta["hmac"] = pickle_tag(key, signature, VALUE, encoded.payload)
    (folder / VALUE).write_bytes(encoded.payload)
    manifest = Manifest(signature, {VALUE: digest_buffer(encoded.payload)}, attributes=meta)
    text = manifest.to_json()
    (folder / MANIFEST).write_bytes(text)
    return encoded.kind, len(encoded.payload) + len(text)


class PackedValue:
    """The ``data`` file of a packed artifact, read and checked when asked for."""

    __slots__ = ("_key", "_manifest", "_path", "meta")

    def __init__(self, path: Path, manifest: Manifest, key: bytes) -> None:
        self._path, self._manifest, self._key = path, manifest, key
        self.meta: dict[str, Any] = dict(manifest.attributes or {})

    def _corrupt(self, reason: str) -> HelixCorruptArtifact:
        return HelixCorruptArtifact(self._manifest.signature, str(self._path), reason)

    def payload(self) -> bytes:
        """The file's bytes, checked against the manifest and, for a pickle, the tag."""
        try:
            data = (self._path / VALUE).read_bytes()
        except FileNotFoundError:
            raise self._corrupt(f"file {VALUE} is missing") from None
        if digest_buffer(data) != self._manifest.files.get(VALUE):
            raise self._corrupt(f"file {VALUE} fails its checksum")
        if "pickler" in self.meta:
            signature = self._manifest.signature
            if not tag_matches(self._key, signature, VALUE, data, self.meta.get("hmac")):
                raise self._corrupt(f"the pickle {VALUE} is not signed with this store's key")
        elif self.meta.get("kind") not in ("none", "json"):
            raise self._corrupt(f"its packed {self.meta.get('kind')!r} value is not a pickle")
        return data

    def load(self) -> object:
        """The stored value."""
        data = self.payload()
        if "pickler" in self.meta:
            return pickle.loads(data)
        return None if self.meta["kind"] == "none" else _from_json(json.loads(data))

    def check(self) -> int:
        """Check the file, unpickling nothing (JSON is decoded: that runs no code); return how
        many pickles were checked."""
        if "pickler" in self.meta:
            self.payload()
            return 1
        try:
            self.load()
        except ValueError as exc:
            raise self._corrupt(f"its JSON does not decode ({exc})") from exc
        return 0
