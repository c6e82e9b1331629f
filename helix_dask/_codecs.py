"""How each kind of value is laid out in an artifact's Zarr group, and read back.

:func:`encode` writes a value into a group by the first rule that fits and returns its kind and
the attributes that describe it; :func:`decode` inverts it from those attributes:

- ``none``: ``None``; nothing is written.
- ``dask_array``: a ``dask.array.Array``, computed chunk by chunk into the array ``data``.
- ``json``: a tree of JSON-safe builtins of at most 64 KiB, in the attributes.
- ``ndarray``: a numpy array of a numeric, bool or date dtype, as the array ``data``.
- ``dataframe`` / ``series``: column by column (``col0``, ``col1``...) with ``index``/``labels``.
- ``mapping``: a ``dict`` with ``str`` keys holding arrays, frames or dask arrays of at least
  512 KiB per key (results such as ``{"X": ..., "y": ..., "model": ...}``): one subgroup per
  entry, named by position (``0``, ``1``...) since a key may hold any character; the keys, in
  order, are in the attributes, and each value is encoded into its subgroup by these same rules
  and described by that subgroup's own ``helix`` attribute.
- ``pickle``: anything else, pickled into the ``uint8`` array ``data``, with its HMAC-SHA256 tag
  (:mod:`helix_dask._keys`) in the attributes; a blob whose tag does not verify is never
  unpickled.

A Fortran-ordered array is stored as its (C-ordered) transpose and comes back Fortran-ordered.
Every read goes through the artifact's :class:`~helix_dask._integrity.CheckedFiles`, which
checks the bytes against the manifest; the raw-chunk fast path below checks them itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import pickle
import reprlib
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from helix_dask._errors import HelixStoreError
from helix_dask._integrity import CheckedFiles, read_into
from helix_dask._keys import pickle_tag, tag_matches

__all__ = ["check_pickles", "decode", "encode", "qualname"]

# Chunks of ~32 MiB along the first axis: large enough that per-chunk overhead vanishes, small
# enough that Zarr's codec pipeline can work on several chunks in parallel.
_CHUNK_BYTES: Final = 32 * 2**20
_JSON_MAX_BYTES: Final = 64 * 2**10
_JSON_MAX_DEPTH: Final = 32
_NATIVE_KINDS: Final = "biufcmM"  # numpy dtype kinds Zarr v3 stores without a warning
# A dict is stored entry by entry only when that pays: each entry costs ~10 ms of Zarr metadata
# writes, about what pickling and compressing 0.5-1 MiB of an array costs more than writing it
# raw. Measured on 2 busy cores, an array and two scalars as a mapping / as one pickle: 1 MiB
# 34/26 ms, 4 MiB 36/96 ms, 16 MiB 83/210 ms; but 256 tiny arrays 2.8 s / 13 ms. Wider or deeper
# dicts than the limits below (vocabularies, lookup tables, recursive structures) are pickled.
_MAPPING_BYTES_PER_KEY: Final = 512 * 2**10
_MAPPING_MAX_KEYS: Final = 256
_MAPPING_MAX_DEPTH: Final = 8


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
    if data.ndim > 1 and data.flags.f_contiguous and not data.flags.c_contiguous:
        return {**_write_array(group, key, data.T), "order": "F"}
    array = group.create_array(
        key,
        shape=data.shape,
        dtype=data.dtype,
        chunks=_chunks(data.shape, data.dtype.itemsize),
        compressors=_compressors(data.dtype),
    )
    if data.size and not _write_raw(array, data):
        array[...] = data
    return {"dtype": data.dtype.str}


def _stored_array(group: zarr.Group, key: str) -> zarr.Array:
    """The Zarr array ``key``, refused unless it has a native dtype and only the codecs helix
    writes: metadata naming another codec (an object or pickle codec) could run code."""
    from zarr.codecs import BloscCodec, BytesCodec

    array = group[key]
    codecs = getattr(array.metadata, "codecs", None)
    if (
        isinstance(array, zarr.Array)
        and codecs
        and all(isinstance(c, BytesCodec | BloscCodec) for c in codecs)
        and array.dtype.kind in _NATIVE_KINDS
    ):
        return array
    where = f"{group.path}/{key}" if group.path else key
    reason = f"array {where} has codecs or a dtype helix never writes"
    store = group.store
    if isinstance(store, CheckedFiles) and store.manifest is not None:
        raise store.corrupt(reason)
    raise HelixStoreError(f"{reason}; it is not read: delete the artifact")


def _read_array(group: zarr.Group, key: str, meta: dict[str, Any]) -> np.ndarray:
    """Read the Zarr array ``key`` back with its original dtype (byte order included)."""
    array = _stored_array(group, key)
    raw = _read_raw(array)
    data = raw if raw is not None else np.asarray(array[...])
    data = data.astype(np.dtype(meta["dtype"]), copy=False)
    return data.T if meta.get("order") == "F" else data


# Zarr's own path for an uncompressed array copies every chunk through its async codec pipeline:
# measured on a warm 268 MB float64 array, 0.2-1.0 s to read against 0.05 s for np.load. An
# array whose only codec is little-endian bytes and whose chunks split the first axis alone is,
# on disk, each chunk's C-order bytes in its own file (the last one padded to a full chunk), so
# those files are read into, and written from, one buffer directly. Zarr still reads them.


def _raw_layout(array: zarr.Array) -> tuple[Path, int] | None:
    """The store's directory and rows per chunk, when the array's chunks are raw files."""
    from zarr.codecs import BytesCodec
    from zarr.storage import LocalStore

    md = array.metadata
    codecs = getattr(md, "codecs", ())
    store = array.store
    if (
        getattr(md, "zarr_format", None) != 3
        or len(codecs) != 1
        or not isinstance(codecs[0], BytesCodec)
        or not isinstance(store, LocalStore)
        or array.ndim == 0
        or tuple(array.chunks[1:]) != tuple(array.shape[1:])
        or (array.dtype.itemsize > 1 and sys.byteorder != "little")
        or array.dtype.byteorder == ">"
        or (array.dtype.itemsize > 1 and str(getattr(codecs[0].endian, "value", "")) != "little")
    ):
        return None
    return Path(store.root), int(array.chunks[0])


def _chunk_files(array: zarr.Array, rows: int) -> Iterator[tuple[int, int, str]]:
    """Rows and store key of each chunk file."""
    zeros, prefix = (0,) * (array.ndim - 1), f"{array.path}/" if array.path else ""
    for i in range(math.ceil(array.shape[0] / rows)):
        start, stop = i * rows, min((i + 1) * rows, array.shape[0])
        yield start, stop, prefix + array.metadata.encode_chunk_key((i, *zeros))


_PAGE = 4096


def _page_aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-ordered array whose data starts on a page boundary.

    Chunk files are read from offset 0; the kernel copies page-cache pages into a destination
    that starts mid-page (where ``np.empty`` puts large arrays, 16 bytes in) about three times
    slower than into one that starts on a page, as ``np.load``'s does (its data follows a
    128-byte header).
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + _PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % _PAGE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _read_raw(array: zarr.Array) -> np.ndarray | None:
    layout = _raw_layout(array)
    if layout is None:
        return None
    root, rows = layout
    store = array.store
    files = store if isinstance(store, CheckedFiles) and store.manifest is not None else None
    out = _page_aligned_empty(array.shape, array.dtype)
    row_bytes = out[:1].nbytes
    view = memoryview(out.reshape(-1).view(np.uint8))
    for start, stop, key in _chunk_files(array, rows):
        expected = files.expected(key) if files is not None else None
        path = root / key
        if not path.exists():
            if expected is not None:
                raise files.corrupt(f"file {key} is missing")  # type: ignore[union-attr]
            out[start:stop] = array.metadata.fill_value  # Zarr leaves out fill-value chunks
            continue
        if files is not None and expected is None:
            raise files.corrupt(f"file {key} is not in its manifest")
        target = view[start * row_bytes : stop * row_bytes]
        problem = read_into(path, target, expected)
        if problem is not None and files is not None:
            raise files.corrupt(problem)
        if problem is not None:
            raise HelixStoreError(
                f"chunk {str(path)!r}: {problem}; the artifact is damaged: delete it with "
                "store.delete(signature)"
            )
    return out


def _write_raw(array: zarr.Array, data: np.ndarray) -> bool:
    layout = _raw_layout(array)
    if layout is None:
        return False
    data = np.ascontiguousarray(data, dtype=array.dtype)  # the byte order the file holds
    row_bytes = data[:1].nbytes
    root = layout[0]
    for start, stop, key in _chunk_files(array, layout[1]):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.write(memoryview(data[start:stop].reshape(-1).view(np.uint8)))
            missing = (layout[1] - (stop - start)) * row_bytes
            if missing:  # the last chunk is stored full size, padded with the fill value
                pad = np.full((layout[1] - (stop - start), *data.shape[1:]), 0, dtype=data.dtype)
                pad[...] = array.metadata.fill_value
                f.write(memoryview(pad.reshape(-1).view(np.uint8)))
    return True


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
    component = f"{group.path}/{key}" if group.path else key  # to_zarr wants the store path
    write = da.to_zarr(
        value, group.store, component=component, compute=False, compressors=_compressors(dtype)
    )
    # If a chunk fails, chunks still in flight elsewhere may land in the temporary directory
    # after put removed it; sweep_temporaries collects them.
    _compute(write, scheduler)
    return {"dtype": dtype.str, "shape": list(value.shape), "chunks": list(group[key].chunks)}


def _read_dask_array(group: zarr.Group, key: str, meta: dict[str, Any]) -> Any:
    """A lazy dask array over the Zarr array ``key``, chunked as stored."""
    import dask.array as da

    data = da.from_zarr(_stored_array(group, key))
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
        f"cannot store {what} of type {qualname(value)}: it cannot be pickled ({error}); "
        "return a picklable value or mark the task materialize=False"
    ) from error


def _signer(group: zarr.Group) -> CheckedFiles:
    """The artifact's files, which know its signature and the store's pickle key."""
    store = group.store
    if not isinstance(store, CheckedFiles) or store.key is None:
        raise HelixStoreError(
            f"pickles are written and read only through an artifact store, not {store!r}; "
            "use ZarrArtifactStore.put and get"
        )
    return store


def _write_pickled(
    group: zarr.Group, key: str, value: object, what: str, pickled: tuple[bytes, str] | None = None
) -> dict[str, Any]:
    """Pickle ``value`` (unless ``pickled`` already holds its pickle) into the ``uint8`` Zarr
    array ``key``; return its pickler and tag."""
    files = _signer(group)
    payload, pickler = _pickle_dumps(value, what) if pickled is None else pickled
    _write_array(group, key, np.frombuffer(payload, dtype=np.uint8))
    where = f"{group.path}/{key}" if group.path else key
    return {"pickler": pickler, "hmac": pickle_tag(files.key, files.signature, where, payload)}  # type: ignore[arg-type]


def _signed_payload(group: zarr.Group, key: str, meta: dict[str, Any]) -> np.ndarray:
    """The bytes of the pickle ``key`` if its tag verifies; else raise."""
    files = _signer(group)
    payload = np.asarray(_stored_array(group, key)[...], dtype=np.uint8)
    where = f"{group.path}/{key}" if group.path else key
    if not tag_matches(files.key, files.signature, where, payload, meta.get("hmac")):  # type: ignore[arg-type]
        raise files.corrupt(f"the pickle {where} is not signed with this store's key")
    return payload


def _read_pickled(group: zarr.Group, key: str, meta: dict[str, Any]) -> Any:
    """Unpickle the ``uint8`` Zarr array ``key`` if its tag verifies; else raise."""
    return pickle.loads(_signed_payload(group, key, meta))


def check_pickles(group: zarr.Group, meta: dict[str, Any]) -> int:
    """Check the tag of every pickle in ``group`` without unpickling any; return how many."""
    kind, checked = meta["kind"], 0
    if kind == "pickle":
        _signed_payload(group, "data", meta)
        return 1
    if kind == "mapping":
        for i in range(len(meta["keys"])):
            entry = group[str(i)]
            checked += check_pickles(entry, entry.attrs["helix"])  # type: ignore[arg-type]
        return checked
    if kind not in ("dataframe", "series"):
        return 0
    labels = [("index", meta["index"])] + ([("labels", meta["labels"])] if "labels" in meta else [])
    columns = [(f"col{i}", column) for i, column in enumerate(meta["columns"])]
    for key, part in labels + columns:
        if part["enc"] == "pickle":
            _signed_payload(group, key, part)
            checked += 1
    return checked


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
    # Only builtin containers are sized: len() of a 0-d array, say, raises TypeError.
    if kind not in (str, list, tuple, dict) or depth >= _JSON_MAX_DEPTH:
        raise _NotJSONSafe
    if len(value) > _JSON_MAX_BYTES:  # type: ignore[arg-type]
        raise _NotJSONSafe
    if kind is str:
        return value
    if kind is list:
        return [_to_json(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if kind is tuple:
        return {"t": [_to_json(v, depth + 1) for v in value]}  # type: ignore[attr-defined]
    if all(type(k) is str for k in value):  # type: ignore[attr-defined]
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


def encode(
    group: zarr.Group,
    value: object,
    scheduler: Any = None,
    *,
    depth: int = 0,
    where: str = "",
    pickled: tuple[bytes, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write ``value`` into ``group``; return its kind and the attributes that describe it.

    ``scheduler`` runs the chunk writes of dask arrays. ``depth`` and ``where`` place a mapping
    entry: how deep it is nested and its keys (``['cv']['fold0']``), for error messages.
    ``pickled``: the value's pickle and pickler, when the caller already made them.
    """
    if value is None:
        return "none", {}
    if _is_dask_array(value):
        return "dask_array", _write_dask_array(group, "data", value, scheduler)
    if type(value) in _JSON_TYPES:
        with contextlib.suppress(_NotJSONSafe, RecursionError):
            return "json", {"json": _json_or_raise(value)}
    if type(value) is np.ndarray and _is_native(value):
        return "ndarray", _write_array(group, "data", value)
    if _is_plain_pandas(value):
        with contextlib.suppress(_NotJSONSafe):
            return _encode_pandas(group, value)
    if _mapping_nbytes(value, depth) is not None:
        return "mapping", _write_mapping(group, value, scheduler, depth, where)  # type: ignore[arg-type]
    what = f"the value at {where}" if where else "a value"
    return "pickle", _write_pickled(group, "data", value, what, pickled)


def _is_plain_pandas(value: object) -> bool:
    """Whether ``value`` is a DataFrame or Series to store column-wise (no attrs or flags)."""
    # Lazy: a pandas object can only exist once pandas is imported, so never import it here.
    pd = sys.modules.get("pandas")
    if pd is None or type(value) not in (pd.DataFrame, pd.Series):
        return False
    return not value.attrs and value.flags.allows_duplicate_labels  # type: ignore[attr-defined]


def _mapping_nbytes(value: object, depth: int) -> float | None:
    """Bytes a ``dict`` would store natively entry by entry; ``None`` to pickle it whole."""
    if type(value) is not dict or depth >= _MAPPING_MAX_DEPTH or len(value) > _MAPPING_MAX_KEYS:
        return None
    if not all(type(key) is str for key in value):
        return None
    native = sum(_native_nbytes(item, depth + 1) for item in value.values())
    return native if native >= len(value) * _MAPPING_BYTES_PER_KEY else None


def _native_nbytes(value: object, depth: int) -> float:
    """Bytes of ``value`` that a mapping entry stores natively rather than in a pickle."""
    if _is_dask_array(value):
        return math.inf  # a pickle would hold its graph; storing its chunks is the point
    if type(value) is np.ndarray and _is_native(value):
        return value.nbytes
    if _is_plain_pandas(value):
        return float(np.sum(value.memory_usage(deep=False)))  # type: ignore[attr-defined]
    return _mapping_nbytes(value, depth) or 0


def _write_mapping(
    group: zarr.Group, value: dict[str, Any], scheduler: Any, depth: int, where: str
) -> dict[str, Any]:
    """Encode each entry into the subgroup named by its position; return the keys in order."""
    for i, (key, item) in enumerate(value.items()):
        entry = group.create_group(str(i))
        path = f"{where}[{reprlib.repr(key)}]"
        kind, meta = encode(entry, item, scheduler, depth=depth + 1, where=path)
        entry.attrs.put({"helix": {"kind": kind, "type": qualname(item), **meta}})
    return {"keys": list(value)}


def _read_mapping(group: zarr.Group, meta: dict[str, Any]) -> dict[str, Any]:
    """A plain ``dict`` of the decoded entries, in the recorded key order."""
    entries = {}
    for i, key in enumerate(meta["keys"]):
        entry = group[str(i)]
        if not isinstance(entry, zarr.Group):
            raise ValueError(f"entry {i} ({key!r}) of mapping {group.path!r} is not a group")
        entries[key] = decode(entry, entry.attrs["helix"])
    return entries


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
    """Invert :func:`_write_labels`."""
    import pandas as pd

    enc = meta["enc"]
    if enc == "pickle":
        return _read_pickled(group, key, meta)
    name = _from_json(meta["name"])
    if enc == "range":
        return pd.RangeIndex(*meta["range"], name=name)
    if enc == "labels":
        return pd.Index(_from_json(meta["labels"]), dtype=meta["dtype"], name=name)
    return pd.Index(_read_array(group, key, meta), name=name, copy=False)


def decode(group: zarr.Group, meta: dict[str, Any]) -> object:
    """Rebuild the value written into ``group`` from its ``helix`` attributes ``meta``."""
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
        return _read_pickled(group, "data", meta)
    if kind == "mapping":
        return _read_mapping(group, meta)
    if kind not in ("dataframe", "series"):
        raise ValueError(f"unknown artifact kind {kind!r}")
    import pandas as pd

    index = _read_labels(group, "index", meta["index"])
    columns = {}
    for i, column in enumerate(meta["columns"]):
        key, native = f"col{i}", column["enc"] == "native"
        values = _read_array(group, key, column) if native else _read_pickled(group, key, column)
        # An explicit dtype stops pandas from inferring "str" for object columns.
        columns[i] = pd.Series(values, dtype=values.dtype, copy=False).set_axis(index)
    if kind == "series":
        return columns[0].rename(_from_json(meta["series_name"]))
    frame = pd.DataFrame(columns, copy=False) if columns else pd.DataFrame(index=index)
    frame.columns = _read_labels(group, "labels", meta["labels"])
    return frame


def qualname(value: object) -> str:
    """``module.Qualified.Name`` of the type of ``value``."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
