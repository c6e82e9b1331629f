"""Fingerprint rules for numpy values, registered when a numpy value is first seen.

An array counts by dtype (byte order, structured field names and offsets), shape, memory order
and logical content: a Fortran-ordered array is told apart from its C-ordered copy (code may
behave differently on it), any other strided view hashes like its C-ordered copy. Bulk data
goes through ``xxh3`` without a full copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from helix_dask._fingerprint import _CHUNK_BYTES, Hasher, register
from helix_dask._fingerprint_objects import _int_bytes


def _dtype_text(dtype: np.dtype[Any]) -> bytes:
    # dtype.str keeps byte order and units ('<M8[ns]'); descr adds structured field names,
    # offsets (as padding) and sub-array shapes, which dtype.str ('|V16') does not show.
    detail = dtype.descr if dtype.fields else repr(dtype.subdtype) if dtype.subdtype else ""
    return f"{dtype.str}|{detail}|{dtype.metadata or ''}".encode()


def _contiguous_bytes(arr: np.ndarray[Any, Any], h: Hasher) -> None:
    h.field(_int_bytes(arr.nbytes))
    if arr.flags.c_contiguous:
        h.update(arr.reshape(-1).view(np.uint8))
        return
    # Copy at most ~4 MiB at a time; concatenated C-order chunks equal the C-order bytes.
    row_bytes = max(1, arr[:1].nbytes)
    rows = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, arr.shape[0], rows):
        chunk = np.ascontiguousarray(arr[start : start + rows])
        h.update(chunk.reshape(-1).view(np.uint8))


def _object_elements(flat: np.ndarray[Any, Any], h: Hasher) -> None:
    items = flat.tolist()
    if all(type(x) is str for x in items):
        h.tag("str*")
        for x in items:
            h.field(x.encode("utf-8", "surrogatepass"))
        return
    for i, x in enumerate(items):
        h.nested(x, i)


@register(np.ndarray)
def _ndarray(obj: np.ndarray[Any, Any], h: Hasher) -> None:
    h.tag("ndarray")
    h.field(_dtype_text(obj.dtype))
    h.field(repr(obj.shape).encode())
    fortran = obj.ndim > 1 and obj.flags.f_contiguous and not obj.flags.c_contiguous
    h.field(b"F" if fortran else b"C")
    if fortran:
        obj = obj.T  # C-contiguous: the F-order content, hashed without a copy
    if obj.dtype == object:
        _object_elements(obj.ravel(), h)
    elif obj.dtype.hasobject:
        h.nested(obj.tolist(), ".tolist()")
    elif obj.dtype.names is not None:
        # Field by field: padding bytes between fields are uninitialized memory.
        for name in obj.dtype.names:
            h.field(name.encode())
            h.nested(obj[name], f"[{name!r}]")
    else:
        _contiguous_bytes(obj, h)


@register(np.ma.MaskedArray)
def _masked(obj: np.ma.MaskedArray[Any, Any], h: Hasher) -> None:
    h.tag("MaskedArray")
    h.nested(obj.data, ".data")
    h.nested(np.ma.getmaskarray(obj), ".mask")
    h.nested(obj.fill_value, ".fill_value")


@register(np.generic)
def _scalar(obj: np.generic, h: Hasher) -> None:
    h.tag("numpy.scalar")
    h.field(_dtype_text(obj.dtype))
    if obj.dtype.names is not None:
        h.nested(np.asarray(obj), ".item")
    else:
        h.field(obj.tobytes())


@register(np.dtype)
def _dtype(obj: np.dtype[Any], h: Hasher) -> None:
    h.tag("numpy.dtype")
    h.field(_dtype_text(obj))


@register(np.ufunc, type(np.mean))
def _numpy_function(obj: Any, h: Hasher) -> None:
    module = getattr(obj, "__module__", None)
    if module is None:
        # np.frompyfunc's ufuncs name no module and hide the Python function they call.
        raise h.fail(obj, f"a ufunc made by np.frompyfunc ({obj.__name__}); use np.vectorize")
    h.tag("numpy.function")
    h.field(f"{module}.{obj.__name__}".encode())


@register(np.vectorize)
def _vectorize(obj: np.vectorize, h: Hasher) -> None:
    # The wrapped function is the code that runs: it counts by its code digest.
    h.tag("numpy.vectorize")
    h.nested(obj.pyfunc, ".pyfunc")
    h.nested(obj.otypes, ".otypes")
    h.nested(obj.excluded, ".excluded")
    h.nested(obj.signature, ".signature")
    h.nested(obj.cache, ".cache")


@register(np.random.RandomState)
def _random_state(obj: np.random.RandomState, h: Hasher) -> None:
    h.tag("RandomState")
    h.nested(obj.get_state(legacy=False), ".get_state()")


@register(np.random.Generator)
def _generator(obj: np.random.Generator, h: Hasher) -> None:
    h.tag("Generator")
    h.nested(obj.bit_generator.state, ".bit_generator.state")


@register(np.busdaycalendar)
def _busdaycalendar(obj: np.busdaycalendar, h: Hasher) -> None:
    h.tag("busdaycalendar")
    h.nested(obj.weekmask, ".weekmask")
    h.nested(obj.holidays, ".holidays")
