"""Dask arrays as results: written chunk by chunk by cluster tasks, loaded back lazily."""

from __future__ import annotations

import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from conftest import log_call
from dask.utils import key_split
from distributed import get_task_stream, worker_client

import helix_dask as hx
from helix_dask import Decision, HelixStoreError, Materialization
from helix_dask._store_access import write_artifact
from helix_dask.store import ZarrArtifactStore

SHAPE, CHUNKS = (4000, 500), (500, 500)
CHUNK_BYTES = 500 * 500 * 8
SIG = "0123456789abcdef0123456789abcdef"
WORK = 0.2
"""Seconds ``noise`` takes to build its graph: its measured cost, well above a load's."""


@hx.task(name="noise", materialize=True)
def noise(rows: int) -> da.Array:
    log_call("noise")
    time.sleep(WORK)
    return da.random.default_rng(0).random((rows, SHAPE[1]), chunks=CHUNKS)


@hx.task(name="total")
def total(x: da.Array) -> float:
    log_call("total")
    with worker_client():  # a task holding a dask array computes it on the cluster
        return float(x.sum().compute())


def stored_as(root: Path, name: str) -> str:
    """The identity the store keeps ``name``'s artifact under (its effective signature)."""
    (row,) = [a for a in hx.Catalog(root).artifacts() if a.name == name]
    return row.signature


def chunk_files(root: Path, signature: str) -> list[Path]:
    artifact = root / "artifacts" / signature[:2] / signature
    return sorted(p for p in (artifact / "data" / "c").rglob("*") if p.is_file())


def test_dask_array_result_is_stored_chunk_wise_and_loaded_lazily(client, calls, tmp_path):
    first = noise(SHAPE[0]).compute()
    run = hx.last_run(client)
    assert run.node("noise").materialization is Materialization.STORED
    store = tmp_path / "store"
    assert len(chunk_files(store, stored_as(store, "noise"))) == first.npartitions
    expected = first.compute()
    calls.take()

    second = noise(SHAPE[0]).compute()
    assert hx.last_run(client).loaded == ["noise"]
    assert calls.take() == {}
    assert isinstance(second, da.Array)
    assert second.chunks == first.chunks
    np.testing.assert_array_equal(second.compute(), expected)


def test_downstream_task_computes_a_loaded_dask_array_on_the_cluster(client, calls):
    expected = float(noise(SHAPE[0]).compute().sum().compute())
    hx.last_run(client)
    calls.take()
    assert total(noise(SHAPE[0])).compute() == expected
    run = hx.last_run(client, timeout=2)
    assert calls.take() == {"total": 1}
    assert run.node("noise").decision is Decision.LOAD
    assert run.status == "done"


def test_dask_array_chunks_are_written_by_tasks_across_workers(client, calls):
    with get_task_stream(client) as stream:
        noise(SHAPE[0]).compute()
        hx.last_run(client)
    writes = [t for t in stream.data if key_split(t["key"]) == "store-map"]
    assert len(writes) == (SHAPE[0] // CHUNKS[0]) * (SHAPE[1] // CHUNKS[1])
    assert {t["worker"] for t in writes} == set(client.scheduler_info()["workers"])
    # No task's result held more than one chunk: the array was never gathered.
    assert max(t["nbytes"] for t in stream.data) <= CHUNK_BYTES


def test_put_inside_a_worker_task_writes_chunks_on_its_cluster(client, tmp_path):
    x = da.arange(1000, chunks=100)
    with get_task_stream(client) as stream:
        info = client.submit(write_artifact, str(tmp_path / "direct"), SIG, x).result()
    assert info.kind == "dask_array"
    assert len([t for t in stream.data if key_split(t["key"]) == "store-map"]) == 10
    loaded = ZarrArtifactStore(tmp_path / "direct").get(SIG)
    np.testing.assert_array_equal(loaded.compute(), np.arange(1000))


def test_round_trip_without_a_cluster_rechunks_irregular_chunks(tmp_path):
    store = ZarrArtifactStore(tmp_path)
    values = np.arange(100 * 6, dtype=">i8").reshape(100, 6)
    x = da.from_array(values, chunks=((10, 30, 30, 30), (4, 2)))
    info = store.put(SIG, x, name="irregular")
    assert info.kind == "dask_array"
    assert info.nbytes == store.nbytes(SIG) > 0
    y = store.get(SIG)
    assert isinstance(y, da.Array)
    assert y.chunks == ((30, 30, 30, 10), (4, 2))
    assert y.dtype == values.dtype
    assert len(chunk_files(tmp_path, SIG)) == y.npartitions
    np.testing.assert_array_equal(y.compute(), values)


def test_float_chunks_are_stored_raw_like_numpy_arrays(tmp_path):
    store = ZarrArtifactStore(tmp_path)
    store.put(SIG, da.ones((64, 64), chunks=32))
    # Raw float64 chunks: 32 x 32 x 8 bytes each, no compressor.
    assert [p.stat().st_size for p in chunk_files(tmp_path, SIG)] == [32 * 32 * 8] * 4


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (da.from_array(np.array(["a", None], dtype=object), chunks=1), "dtype object"),
        (da.ones(10, chunks=5)[da.ones(10, chunks=5) > 0], "unknown shape"),
    ],
)
def test_unstorable_dask_array_says_why_and_leaves_nothing(tmp_path, value, match):
    store = ZarrArtifactStore(tmp_path)
    with pytest.raises(HelixStoreError, match=match):
        store.put(SIG, value)
    assert not store.contains(SIG)
    assert not list((tmp_path / "artifacts").glob("*/.tmp-*"))
