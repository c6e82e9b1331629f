"""ColumnTransformer and FeatureUnion as one helix node per branch: scikit-learn's results,
reuse of the branches an edit does not touch."""

from __future__ import annotations

import logging
import re

import dask
import numpy as np
import pandas as pd
import pytest
import sklearn
from conftest import helix_client
from sklearn import model_selection as skms
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import KBinsDiscretizer, MinMaxScaler, OneHotEncoder, StandardScaler
from test_sklearn import STEPS, assert_same_search, tasks, without_pauses

import helix_dask as hx
from helix_dask.history import ChangeKind, diff
from helix_dask.signature import fingerprint_value
from helix_dask.sklearn import GridSearchCV, fit_pipeline


def wine() -> tuple[pd.DataFrame, pd.Series]:
    """scikit-learn's wine as a data frame, with a derived categorical column."""
    frame = load_wine(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    X["strength"] = pd.cut(X["alcohol"], 3, labels=["light", "medium", "strong"]).astype(str)
    return X, y


def assert_same_fitted(ours, theirs, X) -> None:
    """Equal transforms and output names, and equal fitted composite state."""
    out, expected = ours.transform(X), theirs.transform(X)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(out, expected)
    else:
        assert type(out) is type(expected)
        np.testing.assert_array_equal(
            getattr(out, "toarray", lambda: out)(),
            expected.toarray() if hasattr(expected, "toarray") else expected,
        )
    assert list(ours.get_feature_names_out()) == list(theirs.get_feature_names_out())
    assert _shown(ours) == _shown(theirs)
    for name in ("output_indices_", "sparse_output_", "n_features_in_"):
        assert getattr(ours, name, None) == getattr(theirs, name, None), name


def _shown(estimator) -> str:
    """The fitted estimator's repr without addresses (its column callables are copies)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(estimator))


def test_column_transformer_branches_equal_scikit_learns_search(threaded_client):
    X, y = wine()
    numeric = [c for c in X.columns if c != "strength"]
    columns = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("scale", StandardScaler()), ("pca", PCA(random_state=0))]),
                numeric[:8],
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["strength"]),
            ("bins", KBinsDiscretizer(n_bins=3, quantile_method="averaged_inverted_cdf"), [8, 9]),
            ("gone", "drop", ["magnesium"]),
        ],
        remainder=MinMaxScaler(),
        transformer_weights={"cat": 2.0},
    )
    pipe = Pipeline([("ct", columns), ("clf", LogisticRegression(max_iter=2000))])
    grid = {
        "ct__num__pca__n_components": [3, 5],
        "ct__bins__encode": ["onehot", "ordinal"],  # sparse or dense, against sparse_threshold
        "clf__C": [0.1, 1.0],
    }
    ours = GridSearchCV(pipe, grid, cv=3, return_train_score=True).fit(X, y)
    theirs = skms.GridSearchCV(pipe, grid, cv=3, return_train_score=True).fit(X, y)
    assert_same_search(ours, theirs)
    assert_same_fitted(ours.best_estimator_["ct"], theirs.best_estimator_["ct"], X)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_selectors_passthrough_unions_and_pandas_output_fit_as_scikit_learn_does(
    threaded_client,
):
    X, y = wine()
    numeric = X.select_dtypes("number")
    mask = np.array([c.startswith("color") or c == "hue" for c in X.columns])
    inner = ColumnTransformer(
        [
            ("scale", StandardScaler(), make_column_selector(pattern="^ash$|^proline$")),
            ("keep", "passthrough", slice(0, 2)),
        ],
        verbose_feature_names_out=False,
    )
    union = FeatureUnion(
        [
            ("pca", PCA(n_components=2, random_state=0)),
            ("cols", Pipeline([("inner", inner), ("mm", MinMaxScaler())])),
            ("same", "passthrough"),
            ("none", "drop"),
        ],
        transformer_weights={"pca": 0.5},
    )
    columns = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("scale", StandardScaler()), ("union", union)]),
                make_column_selector(dtype_include=np.number),
            ),
            ("cat", OneHotEncoder(sparse_output=False), lambda frame: ["strength"]),
            ("masked", MinMaxScaler(), mask),
            ("nothing", StandardScaler(), []),
        ],
        remainder="passthrough",
    ).set_output(transform="pandas")
    pipe = Pipeline([("ct", columns), ("clf", LogisticRegression(max_iter=2000))])
    model = fit_pipeline(pipe, X, y).compute()
    expected = sklearn.base.clone(pipe).fit(X, y)
    assert_same_fitted(model["ct"], expected["ct"], X)
    np.testing.assert_array_equal(model.predict(X), expected.predict(X))
    names = set(tasks(hx.last_run(threaded_client), "computed"))
    assert {
        "fit_ct.num.union.pca",
        "fit_ct.num.union.cols.inner.scale",
        "fit_ct.cat",
        "fit_ct.nothing",
        "fit_ct.num.union",
        "fit_ct",
    } <= names
    assert "fit_ct.num.union.none" not in names and len(numeric.columns) == 13


def test_a_subclass_is_fitted_whole_and_says_why(threaded_client, caplog):
    class Columns(ColumnTransformer):
        pass

    X, y = wine()
    pipe = Pipeline(
        [
            ("ct", Columns([("cat", OneHotEncoder(), ["strength"])])),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    with caplog.at_level(logging.INFO, logger="helix_dask.sklearn"):
        model = fit_pipeline(pipe, X, y).compute()
    assert (
        "helix fits step ct whole, not branch by branch: Columns subclasses "
        "ColumnTransformer" in caplog.text
    )
    assert "fit_ct.cat" not in tasks(hx.last_run(threaded_client), "computed")
    np.testing.assert_array_equal(model.predict(X), sklearn.base.clone(pipe).fit(X, y).predict(X))


def test_global_transform_output_is_refused(threaded_client):
    X, y = wine()
    with sklearn.config_context(transform_output="pandas"):
        with pytest.raises(hx.HelixConfigError, match="call set_output"):
            fit_pipeline(Pipeline([("clf", LogisticRegression())]), X, y)


def cancer() -> tuple[pd.DataFrame, pd.Series]:
    """scikit-learn's breast cancer data frame with a derived categorical column."""
    frame = load_breast_cancer(as_frame=True).frame.iloc[::2]
    X, y = frame.drop(columns="target"), frame["target"]
    X["size"] = pd.qcut(X["mean radius"], 3, labels=["small", "medium", "large"]).astype(str)
    return X, y


@pytest.mark.xfail(
    strict=False,
    reason="in some full-suite runs the second search recomputes the unchanged branch's "
    "fit_ct.center (it passes alone); under investigation, see the issue notes",
)
def test_editing_one_branch_refits_only_that_branch_and_below(
    threads_cluster, module_factory, calls, tmp_path
):
    # Every result stored (policy "all"): what is reused then depends on the edit alone, not
    # on the value policy's choices, which follow measured costs on a busy machine.
    with helix_client(threads_cluster, tmp_path / "store", policy="all") as threaded_client:
        _edit_one_branch(threaded_client, module_factory, calls)


def _edit_one_branch(threaded_client, module_factory, calls) -> None:
    steps = module_factory("skl_steps", STEPS.replace("{shift}", "self.by"))
    X, y = cancer()
    numeric = [c for c in X.columns if c != "size"]
    columns = ColumnTransformer(
        [
            ("center", steps.Center(), numeric[:10]),
            (
                "shifted",
                Pipeline([("shift", steps.Shift()), ("scale", StandardScaler())]),
                numeric[10:20],
            ),
            ("cat", OneHotEncoder(), ["size"]),
        ]
    )
    pipe = Pipeline([("ct", columns), ("clf", steps.Classifier())])
    grid = {"clf__C": [0.1, 1.0]}

    first = GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    ran = calls.take()  # each branch once per split, shared by the candidates
    assert ran["Center.fit"] == 3 and ran["Shift.fit"] == 3 and ran["Classifier.fit"] == 6
    computed = tasks(hx.last_run(threaded_client), "computed")
    assert computed.count("fit_ct.center") == 3 and computed.count("fit_ct") == 3
    with without_pauses(steps):
        expected = skms.GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    assert_same_search(first, expected)
    calls.take()

    edited = {**grid, "ct__shifted__shift__by": [1.0]}
    second = GridSearchCV(pipe, edited, cv=3, refit=False).fit(X, y)
    run = hx.last_run(threaded_client)
    computed = tasks(run, "computed")
    assert computed.count("fit_ct.shifted.shift") == 3
    assert computed.count("fit_ct.shifted.scale") == 3
    assert computed.count("fit_ct") == 3 and computed.count("score_clf") == 6
    assert "fit_ct.center" not in computed and "fit_ct.cat" not in computed
    assert tasks(run, "loaded").count("fit_ct.center") == 3
    assert calls.take() == {"Shift.fit": 3, "Shift.transform": 3 * 2, "Classifier.fit": 6}
    with without_pauses(steps):
        expected = skms.GridSearchCV(pipe, edited, cv=3, refit=False).fit(X, y)
    assert_same_search(second, expected)
    calls.take()


def test_diff_names_a_changed_branch_parameter_by_its_path(threaded_client, tmp_path):
    X, y = wine()
    numeric = [c for c in X.columns if c != "strength"]

    def pipe(k: int) -> Pipeline:
        branch = Pipeline([("scale", StandardScaler()), ("pca", PCA(k, random_state=0))])
        columns = ColumnTransformer(
            [("num", branch, numeric), ("cat", OneHotEncoder(), ["strength"])]
        )
        return Pipeline([("ct", columns), ("clf", LogisticRegression(max_iter=2000))])

    for k in (3, 5):
        dask.compute(fit_pipeline(pipe(k), X, y))
    # Run-time dependency causes are left out: a node that is never stored (the column
    # selections) is re-identified by run-time dependencies in each version.
    changes = {
        c.name: [x.describe() for x in c.causes if x.kind is not ChangeKind.RUNTIME]
        for c in diff(hx.Catalog(tmp_path / "store"), 1, 2).changes
    }
    changed = {name for name, causes in changes.items() if causes}
    assert changed == {"fit_ct.num.pca", "fit_ct", "refit_clf", "fitted_pipeline"}
    assert changes["fit_ct.num.pca"] == ["argument estimator: n_components: 3 -> 5"]
    assert "argument template: num__pca__n_components: 3 -> 5" in changes["fit_ct"]
    assert "argument template: ct__num__pca__n_components: 3 -> 5" in changes["fitted_pipeline"]


def test_a_failing_branch_scores_error_score_as_scikit_learn_does(threaded_client):
    X, y = wine()
    numeric = [c for c in X.columns if c != "strength"]
    columns = ColumnTransformer(
        [("pca", PCA(random_state=0), numeric), ("cat", OneHotEncoder(), ["strength"])]
    )
    pipe = Pipeline([("ct", columns), ("clf", LogisticRegression(max_iter=2000))])
    grid = {"ct__pca__n_components": [4, 500]}
    results = []
    for search in (GridSearchCV, skms.GridSearchCV):
        non_finite = pytest.warns(UserWarning, match="test scores are non-finite")
        with non_finite, pytest.warns(FitFailedWarning, match="3 fits failed"):
            results.append(search(pipe, grid, cv=3, refit=False).fit(X, y))
    assert_same_search(*results)
    with pytest.raises(ValueError, match="n_components=500"):
        GridSearchCV(pipe, grid, cv=3, error_score="raise").fit(X, y)


def test_output_containers_and_column_selectors_count_in_signatures():
    scaler = StandardScaler()
    before = fingerprint_value(scaler)
    assert fingerprint_value(StandardScaler().set_output(transform="pandas")) != before
    numbers = make_column_selector(dtype_include=np.number)
    assert fingerprint_value(numbers) == fingerprint_value(
        make_column_selector(dtype_include=np.number)
    )
    assert fingerprint_value(numbers) != fingerprint_value(make_column_selector(pattern="^a"))


def test_a_one_dimensional_selection_fails_with_scikit_learns_message(threaded_client):
    X, y = load_wine(return_X_y=True)
    pipe = Pipeline(
        [
            ("ct", ColumnTransformer([("one", StandardScaler(), 0)])),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    with pytest.raises(ValueError, match="1D data passed to a transformer") as theirs:
        sklearn.base.clone(pipe).fit(X, y)
    with pytest.raises(ValueError, match="1D data passed to a transformer") as ours:
        fit_pipeline(pipe, X, y).compute()
    assert str(ours.value) == str(theirs.value)
