"""Fingerprint rules for pandas values, registered when a pandas value is first seen.

Everything code can observe counts: values and dtypes (a categorical's categories, their order
and ``ordered``), index and column labels with their names and ``freq``, ``attrs`` and
``flags``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helix_dask._fingerprint import Hasher, _simple, register
from helix_dask._fingerprint_registry import subclass_state


def _values(arr: Any, h: Hasher, step: str) -> None:
    """Hash a column/index array: its dtype, then its values (categoricals as codes)."""
    dtype = arr.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        h.field(f"category|ordered={dtype.ordered}".encode())
        h.nested(np.asarray(arr.codes), f"{step}.codes")
        h.nested(arr.categories, f"{step}.categories")  # in their order
        return
    # repr tells apart dtypes that print alike ('string[python]' and 'string[pyarrow]').
    h.field(f"{dtype!s}|{dtype!r}".encode())
    if isinstance(getattr(arr, "asi8", None), np.ndarray):
        h.nested(arr.asi8, f"{step}.asi8")  # datetimes/periods as int64; tz is in the dtype
    else:
        # numpy-backed data comes as a view; extension arrays with missing values or
        # strings become object arrays, hashed element-wise (NA and NaN have rules).
        h.nested(np.asarray(arr), step)


def _metadata(obj: pd.Series | pd.DataFrame, h: Hasher) -> None:
    h.nested(obj.attrs, ".attrs")
    h.nested(obj.flags.allows_duplicate_labels, ".flags.allows_duplicate_labels")


@subclass_state(pd.core.generic.NDFrame)
def _subclass_metadata(obj: pd.Series | pd.DataFrame) -> list[str]:
    # pandas' convention: a subclass lists the attributes it adds in ``_metadata``.
    return [n for n in getattr(obj, "_metadata", ()) if n != "_name"]


@register(pd.Index)
def _index(obj: pd.Index, h: Hasher) -> None:
    h.tag("pandas.Index")
    h.nested(list(obj.names), ".names")
    h.nested(getattr(obj, "freq", None), ".freq")
    if isinstance(obj, pd.RangeIndex):
        h.nested(range(obj.start, obj.stop, obj.step), ".range")
    elif isinstance(obj, pd.MultiIndex):
        for i in range(obj.nlevels):
            _values(obj.get_level_values(i).array, h, f".levels[{i}]")
    else:
        _values(obj.array, h, ".values")


@register(pd.Series)
def _series(obj: pd.Series, h: Hasher) -> None:
    h.tag("pandas.Series")
    h.nested(obj.name, ".name")
    h.nested(obj.index, ".index")
    _values(obj.array, h, ".values")
    _metadata(obj, h)


@register(pd.DataFrame)
def _frame(obj: pd.DataFrame, h: Hasher) -> None:
    h.tag("pandas.DataFrame")
    h.nested(obj.columns, ".columns")
    h.nested(obj.index, ".index")
    for i in range(obj.shape[1]):
        _values(obj.iloc[:, i].array, h, f".iloc[:, {i}]")
    _metadata(obj, h)


@register(pd.api.extensions.ExtensionArray)
def _extension_array(obj: Any, h: Hasher) -> None:
    h.tag("pandas.ExtensionArray")
    _values(obj, h, ".values")


@register(pd.offsets.BaseOffset)
def _offset(obj: Any, h: Hasher) -> None:
    h.tag("pandas.offset")
    h.field(f"{type(obj).__qualname__}|{obj.n}|{obj.normalize}".encode())
    h.nested(obj.kwds, ".kwds")


for cls in (pd.Timestamp, pd.Timedelta, pd.Period, pd.Interval):
    _simple(f"pandas.{cls.__name__}", repr, cls)  # exact: full precision, unit and tz
_simple("pandas.NaT", lambda o: b"", type(pd.NaT))
_simple("pandas.NA", lambda o: b"", type(pd.NA))
