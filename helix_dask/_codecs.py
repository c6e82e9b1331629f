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
checks the bytes against the manifest; the raw-chunk fast path (:mod:`helix_dask._codec_raw`)
checks them itself. Arrays are laid out by :mod:`helix_dask._codec_arrays`, dask arrays by
:mod:`helix_dask._codec_dask`, pickles by :mod:`helix_dask._codec_pickle` and JSON by
:mod:`helix_dask._codec_json`; this module chooses among them, and lays out mappings entry by
entry and pandas objects column by column.
"""

from __future__ import annotations

import contextlib
import math
import reprlib
import sys
from typing import Any, Final

import numpy as np
import zarr

from helix_dask._codec_arrays import _is_native, _read_array, _write_array
from helix_dask._codec_dask import _is_dask_array, _read_dask_array, _write_dask_array
from helix_dask._codec_json import _JSON_TYPES, _from_json, _json_or_raise, _NotJSONSafe
from helix_dask._codec_pickle import _read_pickled, _write_pickled, qualname

__all__ = ["decode", "encode"]

# A dict is stored entry by entry only when that pays: each entry costs ~10 ms of Zarr metadata
# writes, about what pickling and compressing 0.5-1 MiB of an array costs more than writing it
# raw. Measured on 2 busy cores, an array and two scalars as a mapping / as one pickle: 1 MiB
# 34/26 ms, 4 MiB 36/96 ms, 16 MiB 83/210 ms; but 256 tiny arrays 2.8 s / 13 ms. Wider or deeper
# dicts than the limits below (vocabularies, lookup tables, recursive structures) are pickled.
_MAPPING_BYTES_PER_KEY: Final = 512 * 2**10
_MAPPING_MAX_KEYS: Final = 256
_MAPPING_MAX_DEPTH: Final = 8


# -- encoding by type ---------------------------------------------------------------------------


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
