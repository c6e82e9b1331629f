"""The artifact store: task results, content-addressed by signature, as Zarr v3 groups.

Each result lives at ``<root>/artifacts/<sig[:2]>/<sig>/``. It is written whole into a temporary
sibling directory and committed with one ``os.rename``, so a reader sees a complete artifact or
none. Arrays and frame columns are stored natively (chunked, with a per-dtype codec), small
JSON-safe values in the group attributes, and everything else as a pickle in a ``uint8`` array.
Dask arrays are written chunk by chunk by tasks on the cluster and read back lazily.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import errno
import importlib.util
import json
import logging
import math
import os
import pickle
import re
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

from helix_dask._errors import HelixConfigError, HelixStoreError

__all__ = ["MISSING", "ArtifactInfo", "ArtifactStore", "ZarrArtifactStore"]
__all__ += ["load_artifact", "write_artifact"]

logger = logging.getLogger(__name__)

FORMAT: Final = 1
_SIGNATURE = re.compile(r"[0-9a-f]{32}")
_TMP_PREFIX: Final = ".tmp-"
# Chunks of ~32 MiB along the first axis: large enough that per-chunk overhead vanishes, small
# enough that Zarr's codec pipeline can work on several chunks in parallel.
_CHUNK_BYTES: Final = 32 * 2**20
_JSON_MAX_BYTES: Final = 64 * 2**10
_JSON_MAX_DEPTH: Final = 32
_NATIVE_KINDS: Final = "biufcmM"  # numpy dtype kinds Zarr v3 stores without a warning


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
        ``"ndarray"``, ``"dask_array"``, ``"dataframe"``, ``"series"``, ``"json"``,
        ``"pickle"`` or ``"none"``.
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


# -- Zarr arrays --------------------------------------------------------------------------------
# Codecs, measured on 200 MB arrays, one 32 MiB chunk per ~4M float64 (best of 3, warm cache):
#   float64 random   none 0.14 s write / 0.11 s read / 201 MB;  zstd-1 0.40/0.28/188 MB;
#                    blosc-lz4+shuffle 0.20/0.11/175 MB
#   float32 normal   none 0.17/0.13/201 MB;  zstd-1 0.37/0.22/185 MB;  lz4+shuffle 0.31/0.17/187 MB
#   int64 arange     none 0.10/0.10/201 MB;  zstd-1 0.42/0.26/25 MB;  lz4+shuffle 0.11/0.11/1.3 MB
#   int32 0..999     none 0.12/0.23/201 MB;  zstd-1 0.62/0.25/87 MB;  lz4+shuffle 0.37/0.17/79 MB
#   bool random      none 0.19/0.13/201 MB;  zstd-1 0.55/0.32/38 MB;  lz4+shuffle 0.36/0.20/100 MB;
#                    lz4+bitshuffle 0.19/0.24/26 MB
# So: floats and complex raw (compression saves <13% and costs write time); integers, dates and
# pickled bytes blosc-lz4 with byte shuffle; bools blosc-lz4 with bit shuffle.


def _compressors(dtype: np.dtype[Any]) -> BloscCodec | None:
    """The compressor measured fastest to read back without bloating, for ``dtype``."""
    if dtype.kind in "fc":
        return None
    shuffle = "bitshuffle" if dtype.kind == "b" else "shuffle"
    return BloscCodec(cname="lz4", clevel=5, shuffle=shuffle)


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of ~``_CHUNK_BYTES`` along the first axis, whole along the others."""
    if not shape:
        return ()
    inner = tuple(max(1, n) for n in shape[1:])
    row_bytes = max(1, itemsize * math.prod(inner))
    return (max(1, min(shape[0], _CHUNK_BYTES // row_bytes)), *inner)


def _is_native(array: np.ndarray) -> bool:
    """Whether Zarr v3 stores ``array`` natively (plain numeric, bool or dated dtypes)."""
    dtype = array.dtype
    if type(array) is not np.ndarray or dtype.kind not in _NATIVE_KINDS:
        return False
    return dtype.kind not in "mM" or np.datetime_data(dtype)[0] != "generic"


def _write_array(group: zarr.Group, key: str, data: np.ndarray) -> dict[str, Any]:
    """Write ``data`` (a native array) as the Zarr array ``key``; return its metadata."""
    array = group.create_array(
        key,
        shape=data.shape,
        dtype=data.dtype,
        chunks=_chunks(data.shape, data.dtype.itemsize),
        compressors=_compressors(data.dtype),
    )
    if data.size:
        array[...] = data
    return {"dtype": data.dtype.str}


def _read_array(group: zarr.Group, key: str, meta: dict[str, Any]) -> np.ndarray:
    """Read the Zarr array ``key`` back with its original dtype (byte order included)."""
    data = np.asarray(group[key][...])
    return data.astype(np.dtype(meta["dtype"]), copy=False)


# -- Dask arrays --------------------------------------------------------------------------------
# Never gathered: each chunk is computed and written by a task wherever the scheduler runs it, one
# Zarr chunk per Dask chunk, and read back by from_zarr, one task per chunk.


def _is_dask_array(value: object) -> bool:
    """Whether ``value`` is a ``dask.array.Array`` (one can only exist once it is imported)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(value, da.Array)


def _is_regular(chunks: tuple[tuple[int, ...], ...]) -> bool:
    """Whether every axis has equal chunks but for a last one no larger, as Zarr requires."""
    return all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in chunks if len(c) > 1)


def _in_worker_task() -> bool:
    """Whether this thread runs a Dask worker's task."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _compute(write: Any, scheduler: Any) -> None:
    """Run ``write`` with ``scheduler``; by default on the cluster of the worker task we are in
    (seceded while it waits), else with dask's default scheduler (a default Client, if any)."""
    import dask

    if scheduler is None and _in_worker_task():
        from distributed import worker_client

        with worker_client() as client:
            dask.compute(write, scheduler=client)
    else:
        dask.compute(write, scheduler=scheduler)


def _write_dask_array(group: zarr.Group, key: str, value: Any, scheduler: Any) -> dict[str, Any]:
    """Compute ``value`` chunk by chunk into the Zarr array ``key``; return its metadata."""
    import dask.array as da

    dtype = value.dtype
    if any(math.isnan(n) for n in value.shape):
        raise HelixStoreError(
            f"cannot store a dask array of unknown shape {value.shape}: Zarr needs chunk sizes; "
            "call x.compute_chunk_sizes() in the task or mark it materialize=False"
        )
    if not _is_native(np.empty(0, dtype)):
        raise HelixStoreError(
            f"cannot store a dask array of dtype {dtype} chunk-wise: Zarr stores numeric, bool "
            "and datetime dtypes natively; convert it with x.astype(...) in the task or mark "
            "the task materialize=False"
        )
    if not _is_regular(value.chunks):
        value = value.rechunk(tuple(max(c) for c in value.chunks))
    write = da.to_zarr(
        value, group.store, component=key, compute=False, compressors=_compressors(dtype)
    )
    # If a chunk fails, chunks still in flight elsewhere may land in the temporary directory
    # after put removed it; sweep_temporaries collects them.
    _compute(write, scheduler)
    return {"dtype": dtype.str, "shape": list(value.shape), "chunks": list(group[key].chunks)}


def _read_dask_array(group: zarr.Group, key: str, meta: dict[str, Any]) -> Any:
    """A lazy dask array over the Zarr array ``key``, chunked as stored."""
    import dask.array as da

    data = da.from_zarr(group[key])
    dtype = np.dtype(meta["dtype"])
    return data if data.dtype == dtype else data.astype(dtype)


def _pickle_dumps(value: object, what: str) -> tuple[bytes, str]:
    """Pickle ``value`` (cloudpickle if pickle cannot); return the bytes and the pickler."""
    try:
        return pickle.dumps(value, protocol=5), "pickle"
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        error = exc
    if importlib.util.find_spec("cloudpickle") is not None:  # optional: closures, lambdas
        import cloudpickle

        try:
            return cloudpickle.dumps(value, protocol=5), "cloudpickle"
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            error = exc
    raise HelixStoreError(
        f"cannot store {what} of type {_qualname(value)}: it cannot be pickled ({error}); "
        "return a picklable value or mark the task materialize=False"
    ) from error


def _write_pickled(group: zarr.Group, key: str, value: object, what: str) -> dict[str, Any]:
    """Pickle ``value`` into the ``uint8`` Zarr array ``key``."""
    payload, pickler = _pickle_dumps(value, what)
    _write_array(group, key, np.frombuffer(payload, dtype=np.uint8))
    return {"pickler": pickler}


def _read_pickled(group: zarr.Group, key: str) -> Any:
    """Unpickle the ``uint8`` Zarr array ``key``."""
    return pickle.loads(np.asarray(group[key][...], dtype=np.uint8))


# -- JSON in attributes -------------------------------------------------------------------------
# Every JSON object in the encoding is a one-key tag, so user dicts cannot be confused with tags:
# {"d": {...}} a dict, {"t": [...]} a tuple, {"f": "<hex>"} a non-finite float (bit-exact).


class _NotJSONSafe(Exception):
    """Raised inside the JSON encoder when a value must be pickled instead."""


def _to_json(value: object, depth: int = 0) -> Any:
    """Tagged JSON for a tree of exact JSON-safe scalars; ``_NotJSONSafe`` otherwise."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value
        return {"f": struct.pack(">d", value).hex()}
    if depth >= _JSON_MAX_DEPTH or (hasattr(value, "__len__") and len(value) > _JSON_MAX_BYTES):
        raise _NotJSONSafe
    if kind is str:
        return value
    if kind is list:
        return [_to_json(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if kind is tuple:
        return {"t": [_to_json(v, depth + 1) for v in value]}  # type: ignore[attr-defined]
    if kind is dict and all(type(k) is str for k in value):  # type: ignore[attr-defined]
        return {"d": {k: _to_json(v, depth + 1) for k, v in value.items()}}  # type: ignore[attr-defined]
    raise _NotJSONSafe


def _json_or_raise(value: object) -> Any:
    """Tagged JSON for ``value`` if it fits in ``_JSON_MAX_BYTES`` of UTF-8; else raise."""
    encoded = _to_json(value)
    try:
        text = json.dumps(encoded, ensure_ascii=False, allow_nan=False).encode()
    except (UnicodeEncodeError, ValueError) as exc:  # lone surrogates, ints of >4300 digits
        raise _NotJSONSafe from exc
    if len(text) > _JSON_MAX_BYTES:
        raise _NotJSONSafe
    return encoded


def _from_json(encoded: Any) -> Any:
    """Invert :func:`_to_json`."""
    if isinstance(encoded, list):
        return [_from_json(v) for v in encoded]
    if isinstance(encoded, dict):
        ((tag, body),) = encoded.items()
        if tag == "t":
            return tuple(_from_json(v) for v in body)
        if tag == "d":
            return {k: _from_json(v) for k, v in body.items()}
        if tag == "f":
            return struct.unpack(">d", bytes.fromhex(body))[0]
        raise ValueError(f"unknown JSON tag {tag!r}")
    return encoded


# -- encoding by type ---------------------------------------------------------------------------
_JSON_TYPES: Final = (bool, int, float, str, list, tuple, dict)


def _encode(group: zarr.Group, value: object, scheduler: Any) -> tuple[str, dict[str, Any]]:
    """Write ``value`` into ``group``; return its kind and the attributes that describe it."""
    if value is None:
        return "none", {}
    if _is_dask_array(value):
        return "dask_array", _write_dask_array(group, "data", value, scheduler)
    if type(value) in _JSON_TYPES:
        with contextlib.suppress(_NotJSONSafe, RecursionError):
            return "json", {"json": _json_or_raise(value)}
    if type(value) is np.ndarray and _is_native(value):
        return "ndarray", _write_array(group, "data", value)
    # Lazy: a pandas object can only exist once pandas is imported, so never import it here.
    pd = sys.modules.get("pandas")
    if pd is not None and type(value) in (pd.DataFrame, pd.Series):
        if not value.attrs and value.flags.allows_duplicate_labels:  # else keep them: pickle
            with contextlib.suppress(_NotJSONSafe):
                return _encode_pandas(group, value)
    return "pickle", _write_pickled(group, "data", value, "a value")


def _encode_pandas(group: zarr.Group, value: Any) -> tuple[str, dict[str, Any]]:
    """Write a DataFrame or Series column by column, with its index and labels."""
    is_frame = value.ndim == 2
    frame = value if is_frame else value.to_frame()
    meta = {} if is_frame else {"series_name": _json_or_raise(value.name)}
    meta["columns"] = [
        _write_values(group, f"col{i}", frame.iloc[:, i], f"column {label!r}")
        for i, label in enumerate(frame.columns)
    ]
    meta["index"] = _write_labels(group, "index", frame.index)
    if is_frame:
        meta["labels"] = _write_labels(group, "labels", frame.columns)
    return ("dataframe" if is_frame else "series"), meta


def _write_values(group: zarr.Group, key: str, series: Any, what: str) -> dict[str, Any]:
    """Write a column natively if its dtype is a plain numpy one, else as a pickle."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and _is_native(values := series.to_numpy(copy=False)):
        return {"enc": "native", **_write_array(group, key, values)}
    meta = _write_pickled(group, key, series.array, f"{what} ({dtype})")
    return {"enc": "pickle", "dtype": str(dtype), **meta}


def _write_labels(group: zarr.Group, key: str, index: Any) -> dict[str, Any]:
    """Write an index: a range or a short label list in attributes, else an array or a pickle."""
    import pandas as pd

    try:
        name = _json_or_raise(index.name)
    except _NotJSONSafe:
        return {"enc": "pickle", **_write_pickled(group, key, index, "an index")}
    if type(index) is pd.RangeIndex:
        return {"enc": "range", "range": [index.start, index.stop, index.step], "name": name}
    if type(index) is pd.Index and _is_native(values := index.to_numpy()):
        return {"enc": "native", "name": name, **_write_array(group, key, values)}
    if type(index) is pd.Index and len(index) <= 4096:  # column names, mostly
        with contextlib.suppress(_NotJSONSafe):
            labels, dtype = _json_or_raise(index.tolist()), str(index.dtype)
            rebuilt = pd.Index(_from_json(labels), dtype=dtype)  # keep only exact round trips
            if rebuilt.dtype == index.dtype and rebuilt.equals(index):
                return {"enc": "labels", "labels": labels, "dtype": dtype, "name": name}
    return {"enc": "pickle", **_write_pickled(group, key, index, "an index")}


def _read_labels(group: zarr.Group, key: str, meta: dict[str, Any]) -> Any:
    import pandas as pd

    enc = meta["enc"]
    if enc == "pickle":
        return _read_pickled(group, key)
    name = _from_json(meta["name"])
    if enc == "range":
        return pd.RangeIndex(*meta["range"], name=name)
    if enc == "labels":
        return pd.Index(_from_json(meta["labels"]), dtype=meta["dtype"], name=name)
    return pd.Index(_read_array(group, key, meta), name=name, copy=False)


def _decode(group: zarr.Group, meta: dict[str, Any]) -> object:
    """Rebuild the value of an artifact group from its ``helix`` attributes."""
    kind = meta["kind"]
    if kind == "none":
        return None
    if kind == "json":
        return _from_json(meta["json"])
    if kind == "ndarray":
        return _read_array(group, "data", meta)
    if kind == "dask_array":
        return _read_dask_array(group, "data", meta)
    if kind == "pickle":
        return _read_pickled(group, "data")
    if kind not in ("dataframe", "series"):
        raise ValueError(f"unknown artifact kind {kind!r}")
    import pandas as pd

    index = _read_labels(group, "index", meta["index"])
    columns = {}
    for i, column in enumerate(meta["columns"]):
        key, native = f"col{i}", column["enc"] == "native"
        values = _read_array(group, key, column) if native else _read_pickled(group, key)
        # An explicit dtype stops pandas from inferring "str" for object columns.
        columns[i] = pd.Series(values, dtype=values.dtype, copy=False).set_axis(index)
    if kind == "series":
        return columns[0].rename(_from_json(meta["series_name"]))
    frame = pd.DataFrame(columns, copy=False) if columns else pd.DataFrame(index=index)
    frame.columns = _read_labels(group, "labels", meta["labels"])
    return frame


def _qualname(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


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
            kind, extra = _encode(group, value, scheduler)
            meta = {"kind": kind, "type": _qualname(value), "name": name, "format": FORMAT}
            group.attrs.put({"helix": {**meta, **extra}})
        except BaseException as exc:
            _remove_tree(tmp)
            if isinstance(exc, HelixStoreError) or not isinstance(exc, Exception):
                raise
            raise HelixStoreError(
                f"writing artifact {signature} ({_qualname(value)}) to {tmp} failed: "
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
            return _decode(group, meta)
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
