"""The storage budget on a real cluster: never exceeded, eviction explained and harmless."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable

import conftest
import dask
import dask.sizeof
import numpy as np
import pytest
from conftest import helix_client, log_call

import helix_dask as hx
from helix_dask import Decision, Materialization


@hx.task(materialize=True)
def block(seed: int, n: int) -> np.ndarray:
    log_call("block")
    time.sleep(0.05)
    return np.random.default_rng(seed).random(n)


@hx.task
def reduce_(x: np.ndarray) -> float:
    log_call("reduce_")
    time.sleep(0.05)
    return float(x.sum())


def _stored(store) -> int:
    return hx.Catalog(store).stored_bytes()


def _disk(store) -> int:
    return sum(p.stat().st_size for p in (store / "artifacts").rglob("*") if p.is_file())


@pytest.mark.parametrize("policy", ["value", "helix2x", "all"])
def test_budget_holds_across_many_iterations(threads_cluster, tmp_path, calls, policy):
    store = tmp_path / "store"
    budget = 300_000  # about three 80 kB blocks
    with helix_client(threads_cluster, store, budget=budget, policy=policy) as client:
        for i in range(8):
            expected = float(np.random.default_rng(i).random(10_000).sum())
            assert reduce_(block(i, 10_000)).compute() == expected
            hx.last_run(client)
            assert _stored(store) <= budget
            assert _disk(store) <= budget


def test_eviction_is_explained_and_an_evicted_node_is_recomputed_not_an_error(
    threads_cluster, tmp_path, calls
):
    store = tmp_path / "store"
    with helix_client(threads_cluster, store, budget=200_000, policy="value") as client:
        a = float(np.random.default_rng(1).random(10_000).sum())
        b = float(np.random.default_rng(2).random(10_000).sum())
        assert reduce_(block(1, 10_000)).compute() == a
        hx.last_run(client)
        assert reduce_(block(2, 10_000)).compute() == b
        hx.last_run(client)
        assert reduce_(block(3, 10_000)).compute() == float(
            np.random.default_rng(3).random(10_000).sum()
        )
        run = hx.last_run(client)
        evicted = [e for e in run.events if e.kind == "evicted"]
        assert evicted and "made room for block" in evicted[0].reason
        assert _stored(store) <= 200_000
        calls.take()
        # Whatever was evicted recomputes when asked again; the answer is the same.
        assert dask.compute(reduce_(block(1, 10_000)), reduce_(block(2, 10_000))) == (a, b)
        run = hx.last_run(client)
        assert run.status == "done"
        assert all(
            n.decision in (Decision.COMPUTE, Decision.LOAD, Decision.PRUNE) for n in run.nodes
        )


def test_every_materialization_decision_is_an_event_with_its_numbers(threaded_client):
    reduce_(block(7, 1000)).compute()
    run = hx.last_run(threaded_client)
    kinds = {e.name: e.kind for e in run.events}
    assert kinds == {"block": "stored", "reduce_": "stored"}
    block_event = next(e for e in run.events if e.name == "block")
    assert "materialize=True" in block_event.reason and "p(reuse)=" in block_event.reason
    assert run.node("block").materialization is Materialization.STORED


def test_lowering_the_budget_evicts_down_to_it(threads_cluster, tmp_path, calls):
    store = tmp_path / "store"
    with helix_client(threads_cluster, store, budget="10 MB", policy="value") as client:
        for i in range(3):
            reduce_(block(i, 10_000)).compute()
            hx.last_run(client)
        assert _stored(store) > 150_000
        with pytest.warns(hx.HelixConfigWarning, match="budget '10 MB' -> 100000"):
            hx.setup(client, store=store, budget=100_000)
        assert _stored(store) <= 100_000
        assert any(e.kind == "evicted" for e in hx.Catalog(store).events())


def test_prediction_and_measurement_are_kept_per_version(threaded_client):
    reduce_(block(9, 100)).compute()
    first = hx.last_run(threaded_client)
    reduce_(block(9, 100)).compute()
    second = hx.last_run(threaded_client)
    assert first.measured_seconds is not None and first.measured_seconds >= 0.1
    assert second.predicted_seconds is not None
    assert second.predicted_seconds < first.measured_seconds  # the re-run only loads


@hx.task
def features(seed: int, scale: float) -> np.ndarray:
    log_call("features")
    time.sleep(0.1)
    return np.random.default_rng(seed).random(1000) * scale


@hx.task
def summary(x: np.ndarray) -> float:
    log_call("summary")
    time.sleep(0.1)
    return float(x.sum())


def test_a_result_whose_stored_child_changes_with_it_is_valued_by_how_often_it_is_read(
    threaded_client,
):
    # Iteration 1 stores the output `summary`. In iteration 2 `features` changes, and with it
    # `summary`: `features` is only read if it survives while `summary` does not. With one
    # version of history both are as likely as not: p(survive) 0.5 x p(child changes) 0.5.
    summary(features(0, 1.0)).compute()
    assert hx.last_run(threaded_client).node("summary").materialization is Materialization.STORED
    summary(features(0, 2.0)).compute()
    run = hx.last_run(threaded_client)
    assert run.computed == ["features", "summary"]
    (event,) = [e for e in run.events if e.name == "features"]
    assert "p(reuse)=0.25" in event.reason, event.reason


@hx.task
def slow_features(seed: int) -> np.ndarray:
    log_call("slow_features")
    time.sleep(0.5)
    return np.random.default_rng(seed).random(12_500)  # 100 kB


def test_a_result_is_decided_after_its_children_so_the_deeper_one_counts_the_work_above_it(
    threaded_client, tmp_path
):
    # At a (prior) read bandwidth of 1 MB/s, loading the 100 kB features costs ~0.1 s and
    # writing them ~0.2 s, against ~0.5 s to compute: worth a write if the features are read
    # whenever they survive, not if a stored child is loaded instead half of those times. So
    # their decision waits for the child's.
    with dask.config.set({"helix.read-bandwidth": "1MB"}):
        summary(slow_features(5)).compute()
        run = hx.last_run(threaded_client)
    # Decided first, `summary` would have to recompute the features too: its recorded
    # recreation cost covers both tasks' compute time.
    catalog = hx.Catalog(tmp_path / "store")
    (stored,) = [a for a in catalog.artifacts() if a.name == "summary"]
    recreate = stored.recompute_seconds
    compute = run.node("summary").compute_seconds + run.node("slow_features").compute_seconds
    assert recreate == pytest.approx(compute, rel=1e-6)
    # The features are judged knowing that `summary` is stored: read only if it changes.
    (event,) = [e for e in run.events if e.name == "slow_features"]
    assert event.kind == "skipped" and "p(reuse)=0.25" in event.reason, event.reason


class Blob:
    """An object result that a weak reference can follow (arrays' buffers outlive views)."""

    def __init__(self, n: int) -> None:
        self.data = bytes(n)


dask.sizeof.sizeof.register(Blob)(lambda b: len(b.data))


@hx.task(untracked=("weak_results",))
def blob(n: int) -> Blob:
    b = Blob(n)
    conftest.weak_results.append(weakref.ref(b))  # a module shared with the worker threads
    return b


@hx.task
def blob_size(b: Blob) -> int:
    return len(b.data)


def test_a_result_too_large_to_store_is_released_once_its_consumers_ran(threads_cluster, tmp_path):
    with helix_client(threads_cluster, tmp_path / "store", budget="1 MiB") as c:
        big = blob(4 << 20)
        assert blob_size(big).compute() == 4 << 20
        run = hx.last_run(c)
        assert run.node("blob").materialization is Materialization.NO_SPACE
        assert "exceed the whole budget" in run.node("blob").reason

        def held(dask_worker) -> bool:
            return big.key in dask_worker.data

        deadline = time.monotonic() + 10
        while any(c.run(held).values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(c.run(held).values())
        gc.collect()
        assert (
            conftest.weak_results[-1]() is None
        )  # neither the worker nor its helix plugin keeps it


def _tracked_blob(n: int) -> Blob:
    b = Blob(n)
    conftest.weak_results.append(weakref.ref(b))
    return b


@hx.task(untracked=("weak_results",))
def costly_blob(seed: int) -> Blob:
    time.sleep(0.6)
    return _tracked_blob(100_000 + seed)


@hx.task(untracked=("weak_results",))
def costly_step(b: Blob) -> Blob:
    time.sleep(0.35)
    return _tracked_blob(150_000)


@hx.task(untracked=("weak_results",))
def bulky_step(b: Blob) -> Blob:
    time.sleep(0.1)
    return _tracked_blob(2_000_000)  # never worth a write at 1 MB/s: loads cost more


@hx.task(untracked=("task_gate",))
def gated_size(b: Blob) -> int:
    assert conftest.task_gate.wait(60), "the test never let the task finish"
    return len(b.data)


def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_a_result_awaiting_its_verdict_is_let_go_when_dask_releases_it(threads_cluster, tmp_path):
    # At 1 MB/s `costly_blob` is worth a write unless its child is stored (as in the test
    # above), so its decision waits for its child's, which waits for `gated_size`: it still
    # awaits its verdict when `bulky_step` finishes and Dask releases it. With
    # helix.worker-hold 0 the worker keeps nothing Dask released. (`bulky_step` is never worth
    # a write, whenever its own verdict comes.)
    conftest.task_gate.clear()
    with (
        dask.config.set({"helix.read-bandwidth": "1MB", "helix.worker-hold": 0}),
        helix_client(threads_cluster, tmp_path / "store") as c,
    ):
        made = len(conftest.weak_results)
        future = c.compute(gated_size(bulky_step(costly_blob(1))))
        _poll(lambda: len(conftest.weak_results) >= made + 2, "both blobs made")
        first_ref = conftest.weak_results[made]

        def gone() -> bool:
            gc.collect()
            return first_ref() is None

        _poll(gone, "the first blob let go while its grandchild still runs")
        conftest.task_gate.set()
        assert future.result() == 2_000_000
        del future
        run = hx.last_run(c)
        assert run.node("bulky_step").materialization is Materialization.SKIPPED
        # Worth storing once `bulky_step` was not, but no longer held when that was decided.
        node = run.node("costly_blob")
        assert node.materialization is Materialization.SKIPPED, node.reason
        assert "helix.worker-hold" in node.reason, node.reason


def test_helix_tasks_wait_for_writes_of_released_results_beyond_the_worker_hold(
    threads_cluster, tmp_path, monkeypatch
):
    # Write back-pressure: the write of `first` is held up; once Dask released it, the worker
    # keeps more than helix.worker-hold (0), so the next helix task waits for the write.
    from helix_dask.store import ZarrArtifactStore

    writing, write_done = threading.Event(), threading.Event()
    put = ZarrArtifactStore.put

    def slow_put(self, signature, value, **kwargs):
        if isinstance(value, Blob) and len(value.data) == 100_001 and not writing.is_set():
            writing.set()
            assert write_done.wait(60), "the test never let the write finish"
        return put(self, signature, value, **kwargs)

    monkeypatch.setattr(ZarrArtifactStore, "put", slow_put)
    conftest.task_gate.set()
    with (
        dask.config.set({"helix.worker-hold": 0}),
        helix_client(threads_cluster, tmp_path / "store", policy="all") as c,
    ):
        worker = next(iter(c.scheduler_info()["workers"]))
        future = c.compute(gated_size(costly_step(costly_blob(1))), workers=[worker])

        def waiting(dask_worker) -> int:
            return dask_worker.plugins["helix"].waiting

        _poll(
            lambda: writing.is_set() and c.run(waiting, workers=[worker])[worker] > 0,
            "a helix task waiting for the write",
        )
        write_done.set()
        assert future.result() == 150_000
        del future
        run = hx.last_run(c)
        # (The output itself may be kept or not: what it waited for is what counts here.)
        assert {"costly_blob", "costly_step"} <= set(run.stored), run.stored


def test_the_worker_hold_is_a_size_or_a_share_of_the_worker_memory():
    from helix_dask.worker_plugin import hold_limit

    assert hold_limit("64 MiB", 8 << 30) == 64 << 20
    assert hold_limit(0, 8 << 30) == 0
    assert hold_limit("10%", 8 << 30) == int(0.1 * (8 << 30))
    assert hold_limit("10%", None) > 0  # no limit on the worker: a share of the machine's
