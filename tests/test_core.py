"""The HELIX loop end to end on real LocalClusters: what runs, what loads, what is pruned."""

from __future__ import annotations

import logging
import threading
import time

import dask
import numpy as np
import pytest
from conftest import log_call

import helix_dask as hx
from helix_dask import Decision, HelixSignatureError, Materialization

WORK = 0.1
"""Seconds each pipeline task takes: well above a load, so the plan prefers stored results."""


@hx.task
def source(n: int) -> np.ndarray:
    log_call("source")
    time.sleep(WORK)
    return np.arange(n, dtype="float64")


@hx.task
def scale(x: np.ndarray, factor: float = 2.0) -> np.ndarray:
    log_call("scale")
    time.sleep(WORK)
    return x * factor


@hx.task
def total(x: np.ndarray) -> float:
    log_call("total")
    time.sleep(WORK)
    return float(x.sum())


@hx.task
def combine(a: float, b: float) -> dict:
    log_call("combine")
    time.sleep(WORK)
    return {"a": a, "b": b, "sum": a + b}


def pipeline(n=1000, factor=2.0):
    s = source(n)
    return combine(total(scale(s, factor=factor)), total(s))


def plain(n=1000, factor=2.0) -> dict:
    x = np.arange(n, dtype="float64")
    a, b = float((x * factor).sum()), float(x.sum())
    return {"a": a, "b": b, "sum": a + b}


def test_first_run_computes_everything_and_records_a_version(client, calls):
    assert pipeline().compute() == plain()
    run = hx.last_run(client)
    assert run.status == "done"
    assert run.computed == ["combine", "scale", "source", "total(scale)", "total(source)"]
    assert calls.take() == {"source": 1, "scale": 1, "total": 2, "combine": 1}
    assert [v.id for v in hx.Catalog(client.run_on_scheduler(_store)).versions()] == [run.version]


def test_identical_second_run_executes_no_user_function(client, calls):
    first = pipeline().compute()
    hx.last_run(client)
    calls.take()
    assert pipeline().compute() == first
    run = hx.last_run(client)
    assert calls.take() == {}
    assert run.loaded == ["combine"]
    assert run.pruned == ["scale", "source", "total(scale)", "total(source)"]


def test_parameter_edit_recomputes_exactly_that_node_and_its_descendants(client, calls):
    pipeline(factor=2.0).compute()
    hx.last_run(client)
    calls.take()
    assert pipeline(factor=3.0).compute() == plain(factor=3.0)
    run = hx.last_run(client)
    assert calls.take() == {"scale": 1, "total": 1, "combine": 1}
    assert {n.name for n in run.nodes if n.decision is Decision.COMPUTE} == {
        "scale",
        "total",
        "combine",
    }


def test_requesting_an_intermediate_runs_nothing_downstream(client, calls):
    s = source(50)
    np.testing.assert_array_equal(scale(s).compute(), np.arange(50) * 2.0)
    assert calls.take() == {"source": 1, "scale": 1}
    assert hx.last_run(client).computed == ["scale", "source"]


def test_dask_compute_of_several_outputs_shares_their_ancestors(client, calls):
    s = source(10)
    a, b = dask.compute(total(scale(s)), total(s))
    assert (a, b) == (90.0, 45.0)
    assert calls.take() == {"source": 1, "scale": 1, "total": 2}


def test_client_compute_and_persist_work_on_helix_nodes(client, calls):
    fut = client.compute(total(source(10)))
    assert fut.result() == 45.0
    persisted = scale(source(10)).persist()
    np.testing.assert_array_equal(persisted.compute(), np.arange(10) * 2.0)
    del fut, persisted


def test_expensive_stored_intermediate_is_loaded_for_a_new_downstream_task(client, calls):
    @hx.task(name="slow")
    def slow(n):
        log_call("slow")
        time.sleep(0.3)
        return np.arange(n) * 3

    @hx.task(name="square", materialize=False)
    def square(x):
        log_call("square")
        return x**2

    total(slow(100)).compute()
    assert hx.last_run(client).node("slow").materialization is Materialization.STORED
    calls.take()
    np.testing.assert_array_equal(square(slow(100)).compute(), (np.arange(100) * 3) ** 2)
    run = hx.last_run(client)
    assert run.node("slow").decision is Decision.LOAD
    assert calls.take() == {"square": 1}


def test_graph_without_helix_tasks_is_untouched(client, calls):
    x = dask.delayed(sum)([1, 2, 3])
    assert x.compute() == 6
    assert hx.last_run(client) is None
    assert client.run_on_scheduler(_versions) == 0


def test_results_equal_plain_run_for_dataframes_and_fitted_models(client, calls):
    pd = pytest.importorskip("pandas")
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    @hx.task(name="frame")
    def frame() -> pd.DataFrame:
        data = load_breast_cancer(as_frame=True)
        return data.frame

    @hx.task(name="fit", materialize=True)
    def fit(df: pd.DataFrame) -> RandomForestClassifier:
        model = RandomForestClassifier(n_estimators=10, random_state=0)
        return model.fit(df.drop(columns="target"), df["target"])

    expected_df = load_breast_cancer(as_frame=True).frame
    features = expected_df.drop(columns="target")
    expected_model = RandomForestClassifier(n_estimators=10, random_state=0)
    expected_model.fit(features, expected_df["target"])
    for _ in range(2):
        df, model = dask.compute(frame(), fit(frame()))
        hx.last_run(client)
        pd.testing.assert_frame_equal(df, expected_df)
        np.testing.assert_array_equal(
            model.predict_proba(features), expected_model.predict_proba(features)
        )
    assert hx.last_run(client).loaded == ["fit", "frame"]


def test_unfingerprintable_argument_is_a_clear_error(client):
    with pytest.raises(HelixSignatureError, match="argument 'x' of task 'scale'"):
        scale(threading.Lock())


def test_nondeterministic_task_always_computes(client, calls):
    @hx.task(name="draw", deterministic=False)
    def draw(n):
        log_call("draw")
        return np.random.default_rng().random(n)

    draw(3).compute()
    draw(3).compute()
    assert calls.take() == {"draw": 2}
    assert hx.last_run(client).node("draw").materialization is Materialization.SKIPPED


def test_failing_task_raises_its_error_stores_nothing_and_next_run_is_correct(client, calls):
    @hx.task(name="fragile")
    def fragile(x, fail):
        log_call("fragile")
        if fail:
            raise ValueError("boom")
        return x + 1

    with pytest.raises(ValueError, match="boom"):
        fragile(total(source(4)), True).compute()
    run = hx.last_run(client)
    assert run.status == "failed" and run.summary().startswith(f"v{run.version} (failed): ")
    assert run.node("fragile").materialization is None
    calls.take()
    assert fragile(total(source(4)), False).compute() == 7.0
    assert hx.last_run(client).status == "done"
    assert calls.take()["fragile"] == 1


def test_unpicklable_result_is_not_stored_and_says_why(threaded_client, calls, caplog):
    @hx.task(name="locky", materialize=True)
    def locky():
        return threading.Lock()

    caplog.set_level(logging.WARNING, logger="helix_dask")
    fut = threaded_client.compute(locky())
    fut.result()
    run = hx.last_run(threaded_client)
    node = run.node("locky")
    assert node.materialization is Materialization.FAILED
    assert "picklable" in node.reason
    assert any("could not store" in r.getMessage() for r in caplog.records)
    del fut


def _store(dask_scheduler) -> str:
    return dask_scheduler.plugins["helix"].store


def _versions(dask_scheduler) -> int:
    return len(dask_scheduler.plugins["helix"].catalog.versions())
