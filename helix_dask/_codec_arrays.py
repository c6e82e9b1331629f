"""Numpy arrays as Zarr arrays: the codec and chunks per dtype, Fortran order kept, and arrays
refused on read unless they have a native dtype and only the codecs helix writes."""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from helix_dask._codec_raw import _read_raw, _write_raw
from helix_dask._errors import HelixStoreError
from helix_dask._integrity import CheckedFiles

# Chunks of ~32 MiB along the first axis: large enough that per-chunk overhead vanishes, small
# enough that Zarr's codec pipeline can work on several chunks in parallel.
_CHUNK_BYTES: Final = 32 * 2**20
_NATIVE_KINDS: Final = "biufcmM"  # numpy dtype kinds Zarr v3 stores without a warning


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
