"""Dask arrays in artifacts: never gathered; each chunk is computed and written by a task
wherever the scheduler runs it, one Zarr chunk per Dask chunk, and read back by ``from_zarr``,
one task per chunk."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import zarr

from helix_dask._codec_arrays import _compressors, _is_native, _stored_array
from helix_dask._errors import HelixStoreError


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
