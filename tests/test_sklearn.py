"""scikit-learn pipelines and searches as helix graphs: scikit-learn's results, helix's reuse."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import dask
import numpy as np
import pytest
from distributed import get_task_stream
from scipy.stats import loguniform, randint
from sklearn import model_selection as skms
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

import helix_dask as hx
from helix_dask.sklearn import GridSearchCV, RandomizedSearchCV, fit_pipeline


def digits(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def scaler_pca_classifier() -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )


def assert_same_search(ours, theirs) -> None:
    """Equal scores, ranks, candidates and best candidate; the same result keys."""
    assert sorted(ours.cv_results_) == sorted(theirs.cv_results_)
    for key, value in theirs.cv_results_.items():
        if "time" in key:
            continue
        if key == "params" or key.startswith("param_"):
            assert list(ours.cv_results_[key]) == list(value), key
        else:
            np.testing.assert_array_equal(ours.cv_results_[key], value, err_msg=key)
    if hasattr(theirs, "best_params_"):
        assert ours.best_params_ == theirs.best_params_
        assert ours.best_index_ == theirs.best_index_
        assert ours.best_score_ == theirs.best_score_
    assert ours.n_splits_ == theirs.n_splits_


def test_constructors_take_scikit_learns_arguments_and_a_client():
    for ours, theirs in [
        (GridSearchCV, skms.GridSearchCV),
        (RandomizedSearchCV, skms.RandomizedSearchCV),
    ]:
        expected = [*inspect.signature(theirs.__init__).parameters, "client"]
        assert list(inspect.signature(ours.__init__).parameters) == expected


def test_grid_search_equals_scikit_learns(client):
    X, y = digits()
    grid = {"pca__n_components": [8, 16], "clf__C": [0.1, 1.0]}
    ours = GridSearchCV(scaler_pca_classifier(), grid, cv=3, n_jobs=4).fit(X, y)
    theirs = skms.GridSearchCV(scaler_pca_classifier(), grid, cv=3).fit(X, y)
    assert_same_search(ours, theirs)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, y) == theirs.score(X, y)
    assert [name for name, _ in ours.best_estimator_.steps] == ["scaler", "pca", "clf"]


def test_randomized_search_with_train_scores_equals_scikit_learns(threaded_client):
    X, y = load_iris(return_X_y=True)
    distributions = {"pca__n_components": randint(1, 4), "clf__C": loguniform(1e-2, 1e2)}
    kwargs = dict(n_iter=6, random_state=0, cv=StratifiedKFold(4, shuffle=True, random_state=1))
    ours = RandomizedSearchCV(
        scaler_pca_classifier(), distributions, return_train_score=True, **kwargs
    ).fit(X, y)
    theirs = skms.RandomizedSearchCV(
        scaler_pca_classifier(), distributions, return_train_score=True, **kwargs
    ).fit(X, y)
    assert "mean_train_score" in ours.cv_results_
    assert_same_search(ours, theirs)


def test_column_transformer_with_multimetric_scoring_equals_scikit_learns(threaded_client):
    frame = load_wine(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    columns = list(X.columns)
    pipe = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("standard", StandardScaler(), columns[:7]),
                        ("minmax", MinMaxScaler(), columns[7:]),
                    ]
                ),
            ),
            ("pca", PCA(random_state=0)),
            ("svc", SVC()),
        ]
    )
    grid = {
        "columns__minmax": [MinMaxScaler(), StandardScaler()],
        "pca__n_components": [3, 6],
        "svc__C": [0.5, 5.0],
    }
    kwargs = dict(cv=4, scoring=["accuracy", "balanced_accuracy"], refit="balanced_accuracy")
    ours = GridSearchCV(pipe, grid, **kwargs).fit(X, y)
    theirs = skms.GridSearchCV(pipe, grid, **kwargs).fit(X, y)
    assert_same_search(ours, theirs)
    assert list(ours.feature_names_in_) == list(theirs.feature_names_in_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_group_splits_equal_scikit_learns(threaded_client):
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[::3], y[::3]
    groups = np.arange(len(y)) % 7
    grid = {"clf__C": [0.1, 1.0, 10.0]}
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    ours = GridSearchCV(pipe, grid, cv=GroupKFold(3), refit=False).fit(X, y, groups=groups)
    theirs = skms.GridSearchCV(pipe, grid, cv=GroupKFold(3), refit=False).fit(X, y, groups=groups)
    assert_same_search(ours, theirs)


def test_failed_fits_score_error_score_and_warn_as_scikit_learn_does(threaded_client):
    X, y = digits(300)
    grid = {"pca__n_components": [5, 1000], "clf__C": [1.0]}
    non_finite = pytest.warns(UserWarning, match="test scores are non-finite")
    with non_finite, pytest.warns(FitFailedWarning, match="3 fits failed"):
        ours = GridSearchCV(scaler_pca_classifier(), grid, cv=3, refit=False).fit(X, y)
    non_finite = pytest.warns(UserWarning, match="test scores are non-finite")
    with non_finite, pytest.warns(FitFailedWarning, match="3 fits failed"):
        theirs = skms.GridSearchCV(scaler_pca_classifier(), grid, cv=3, refit=False).fit(X, y)
    assert np.isnan(ours.cv_results_["mean_test_score"][1])
    np.testing.assert_array_equal(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"]
    )
    with pytest.raises(ValueError, match="n_components=1000"):
        GridSearchCV(scaler_pca_classifier(), grid, cv=3, error_score="raise").fit(X, y)


def test_plain_callable_scoring_and_fit_params_are_refused(threaded_client):
    X, y = digits(100)
    search = GridSearchCV(scaler_pca_classifier(), {"clf__C": [1.0]}, scoring=lambda e, X, y: 1)
    with pytest.raises(hx.HelixConfigError, match="plain callable"):
        search.fit(X, y)
    search = GridSearchCV(scaler_pca_classifier(), {"clf__C": [1.0]})
    with pytest.raises(hx.HelixConfigError, match=r"fit parameters \['sample_weight'\]"):
        search.fit(X, y, sample_weight=np.ones(len(y)))


# ---------------------------------------------------------------------------------------------
# Reuse: project transformers that log every fit and transform, so the tests see what ran

STEPS = '''
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression


def log(name):
    with open(os.environ["HELIX_TEST_CALL_LOG"], "a") as f:
        f.write(name + "\\n")


class Center(TransformerMixin, BaseEstimator):
    """A slow preprocessing step: loading it is cheaper than fitting it, by more than a
    load's measured time varies (a worker's first load can take a quarter second)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def fit(self, X, y=None):
        log("Center.fit")
        time.sleep(0.5)
        self.mean_ = np.asarray(X).mean(axis=0)
        return self

    def transform(self, X):
        log("Center.transform")
        return (np.asarray(X) - self.mean_) * self.scale


class Shift(TransformerMixin, BaseEstimator):
    def __init__(self, by=0.0):
        self.by = by

    def fit(self, X, y=None):
        log("Shift.fit")
        time.sleep(0.5)
        return self

    def transform(self, X):
        log("Shift.transform")
        return np.asarray(X) + {shift}


class Classifier(ClassifierMixin, BaseEstimator):
    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        log("Classifier.fit")
        self.model_ = LogisticRegression(C=self.C, max_iter=500).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)
'''


@contextmanager
def without_pauses(steps_module) -> Iterator[None]:
    """The project steps' pauses off while scikit-learn computes a reference: they give the
    fits a cost for helix's plans, not their results."""
    real = steps_module.time
    steps_module.time = SimpleNamespace(sleep=lambda seconds: None)
    try:
        yield
    finally:
        steps_module.time = real


def project_pipeline(steps_module) -> Pipeline:
    return Pipeline(
        [
            ("center", steps_module.Center()),
            ("shift", steps_module.Shift()),
            ("clf", steps_module.Classifier()),
        ]
    )


def test_widening_the_last_steps_grid_computes_only_the_new_candidates(
    threaded_client, module_factory, calls
):
    steps = module_factory("skl_steps", STEPS.replace("{shift}", "self.by"))
    X, y = digits(300)
    pipe = project_pipeline(steps)
    grid = {"center__scale": [1.0, 2.0], "clf__C": [0.1, 1.0]}

    GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    run = hx.last_run(threaded_client)
    # Candidates share each split's preprocessing: 2 Center x 3 splits, once each.
    assert tasks(run, "computed").count("fit_center") == 6
    assert tasks(run, "computed").count("fit_shift") == 6
    assert tasks(run, "computed").count("score_clf") == 12
    # A candidate's split results are stored once, in the candidate's node.
    stored = sorted(n.name for n in run.nodes if n.materialization is hx.Materialization.STORED)
    assert stored.count("candidate_clf") == 4 and "score_clf" not in stored
    ran = calls.take()
    assert ran["Center.fit"] == 6 and ran["Shift.fit"] == 6 and ran["Classifier.fit"] == 12

    wider = {**grid, "clf__C": [0.1, 1.0, 10.0]}
    with get_task_stream(threaded_client) as stream:
        GridSearchCV(pipe, wider, cv=3, refit=False).fit(X, y)
    run = hx.last_run(threaded_client)
    # What it loads is small (scores, fitted steps of 300 rows): read by one task, not one each.
    (loads,) = {k for t in stream.data if (k := str(t["key"])).startswith("load-")}
    assert loads.startswith("load-batch-")
    assert tasks(run, "computed").count("score_clf") == 6  # the new C for 2 scales x 3 splits
    # An old candidate is loaded as one result; its splits' nodes are not even loaded.
    assert tasks(run, "loaded").count("candidate_clf") == 4
    assert tasks(run, "pruned").count("score_clf") == 12
    assert "fit_center" not in tasks(run, "computed") and "fit_shift" not in tasks(run, "computed")
    ran = calls.take()
    assert ran == {"Classifier.fit": 6}

    # Changing only the last step's grid reuses every fitted preprocessing step.
    GridSearchCV(pipe, {**grid, "clf__C": [3.0]}, cv=3, refit=False).fit(X, y)
    run = hx.last_run(threaded_client)
    assert tasks(run, "computed").count("score_clf") == 6
    assert "fit_center" not in tasks(run, "computed") and "fit_shift" not in tasks(run, "computed")
    assert calls.take() == {"Classifier.fit": 6}


def test_a_step_parameter_mutated_between_searches_refits_that_step_and_below(
    threaded_client, module_factory, calls
):
    steps = module_factory("skl_mutated_steps", STEPS.replace("{shift}", "self.by"))
    X, y = digits(300)
    pipe = project_pipeline(steps)
    grid = {"clf__C": [0.1, 1.0]}
    GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    calls.take()

    pipe.named_steps["shift"].by = 1.0  # the same objects, another parameter
    GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    run = hx.last_run(threaded_client)
    computed = tasks(run, "computed")
    assert computed.count("fit_shift") == 3 and computed.count("score_clf") == 6
    assert "fit_center" not in computed
    ran = calls.take()
    assert ran["Shift.fit"] == 3 and ran["Classifier.fit"] == 6 and "Center.fit" not in ran


def _count_digest_messages(dask_scheduler) -> None:
    handle = dask_scheduler.handlers["helix_digests"]
    dask_scheduler.helix_digest_messages = 0

    def counted(**kwargs):
        dask_scheduler.helix_digest_messages += 1
        return handle(**kwargs)

    counted.original = handle
    dask_scheduler.handlers["helix_digests"] = counted


def _stop_counting(dask_scheduler) -> int:
    counted = dask_scheduler.handlers["helix_digests"]
    dask_scheduler.handlers["helix_digests"] = counted.original
    return dask_scheduler.helix_digest_messages


def test_a_search_sends_the_clients_digests_once_for_all_its_nodes(
    threaded_client, module_factory, calls
):
    # The stored fits ran project code: their reuse needs the client's digests of it, which
    # the search sends once for all its nodes, not once for each of them.
    steps = module_factory("skl_digest_steps", STEPS.replace("{shift}", "self.by"))
    X, y = digits(300)
    pipe = project_pipeline(steps)
    GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=3, refit=False).fit(X, y)
    first = hx.last_run(threaded_client)
    kept = sum(n.name == "candidate_clf" for n in first.nodes if n.materialization == "stored")
    assert kept >= 1  # (the policy may find one candidate's result not worth a write)
    calls.take()
    threaded_client.run_on_scheduler(_count_digest_messages)
    try:
        GridSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=3, refit=False).fit(X, y)
    finally:
        sent = threaded_client.run_on_scheduler(_stop_counting)
    assert sent == 1
    run = hx.last_run(threaded_client)
    assert tasks(run, "loaded").count("candidate_clf") == kept
    assert calls.take() == {"Classifier.fit": 3 * (3 - kept)}  # three splits per candidate


def test_late_step_edit_reuses_fitted_upstream_steps_in_the_same_graph(
    threaded_client, module_factory, calls
):
    steps = module_factory("skl_steps", STEPS.replace("{shift}", "self.by"))
    X, y = digits(200)
    pipes = [project_pipeline(steps).set_params(shift__by=by) for by in (0.0, 1.0)]
    fitted = dask.compute(*(fit_pipeline(p, X, y) for p in pipes))
    ran = calls.take()
    assert ran["Center.fit"] == 1 and ran["Shift.fit"] == 2 and ran["Classifier.fit"] == 2
    for model, pipe in zip(fitted, pipes, strict=True):
        assert model.get_params()["shift__by"] == pipe.get_params()["shift__by"]
        with without_pauses(steps):
            expected = pipe.fit(X, y)
        np.testing.assert_array_equal(model.predict(X), expected.predict(X))
    assert tasks(hx.last_run(threaded_client), "computed").count("fit_center") == 1


SCRIPT = """
import json
import sys

import numpy as np
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline

import helix_dask as hx
import skl_steps
from helix_dask.sklearn import GridSearchCV

if __name__ == "__main__":
    X, y = load_digits(return_X_y=True)
    X, y = X[:200], y[:200]
    steps = [skl_steps.Center(), skl_steps.Shift(), skl_steps.Classifier()]
    pipe = Pipeline(list(zip(["center", "shift", "clf"], steps)))
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        hx.setup(client, store=sys.argv[1], budget="1 GiB")
        search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=2, refit=False).fit(X, y)
        run = hx.last_run(client)
        print(json.dumps({
            "computed": sorted(n.name for n in run.nodes if n.decision == "compute"),
            "loaded": sorted(n.name for n in run.nodes if n.decision == "load"),
            "scores": search.cv_results_["mean_test_score"].tolist(),
        }))
"""


def test_editing_a_project_transformer_recomputes_its_step_and_below_in_a_fresh_process(
    tmp_path: Path, calls
):
    code = tmp_path / "project"
    code.mkdir()
    (code / "search.py").write_text(SCRIPT)
    store = tmp_path / "store"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(code), *sys.path]),
        "HELIX_TEST_CALL_LOG": str(calls.path),
    }

    def run(shift: str) -> dict:
        (code / "skl_steps.py").write_text(textwrap.dedent(STEPS.replace("{shift}", shift)))
        done = subprocess.run(
            [sys.executable, str(code / "search.py"), str(store)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run("self.by")
    assert first["computed"].count("fit_center") == 2
    assert calls.take()["Center.fit"] == 2

    again = run("self.by")  # nothing changed: every score loads, no user code runs
    assert again["computed"] == [] or set(again["computed"]) <= {"sklearn_data", "cv_fold"}
    assert again["scores"] == first["scores"]
    assert calls.take() == {}

    edited = run("self.by + 0.0 * X.std()")  # Shift.transform edited, same results
    assert "fit_center" not in edited["computed"]
    assert edited["computed"].count("fit_shift") == 2
    assert edited["computed"].count("score_clf") == 4
    ran = calls.take()
    assert "Center.fit" not in ran and ran["Shift.fit"] == 2 and ran["Classifier.fit"] == 4
    assert edited["scores"] == first["scores"]


def test_pickling_a_project_estimator_keeps_its_fingerprint(module_factory):
    """copyreg caches ``__slotnames__`` on a class when it is first pickled (as helix does
    when it stores or ships a step); that must not change the class's code digest."""
    import pickle

    from helix_dask.signature import fingerprint_value

    steps = module_factory("skl_steps", STEPS.replace("{shift}", "self.by"))
    before = fingerprint_value(steps.Center())
    pickle.dumps(steps.Center())
    assert "__slotnames__" in vars(steps.Center)
    assert fingerprint_value(steps.Center()) == before


def tasks(run: hx.RunReport, how: str) -> list[str]:
    """Task names of the nodes a run computed, loaded or pruned (its lists name repeated
    tasks by lineage)."""
    decision = {
        "computed": hx.Decision.COMPUTE,
        "loaded": hx.Decision.LOAD,
        "pruned": hx.Decision.PRUNE,
    }[how]
    return sorted(n.name for n in run.nodes if n.decision is decision)
