"""Building a search's nodes: the fingerprints and texts taken once per build or per value
still follow every change to an estimator, and never stand for another object."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from helix_dask import _sklearn_nodes as nodes
from helix_dask._argument_text import _argument_values, _shown
from helix_dask._fingerprint_sklearn import _params
from helix_dask._sklearn_builder import _Builder, _snapshot, _task
from helix_dask.signature import fingerprint_value


def test_an_estimators_fingerprint_follows_its_parameters_set_in_place():
    svc = SVC()
    before = fingerprint_value(svc)
    svc.C = 2.0
    assert fingerprint_value(svc) != before
    svc.set_params(C=1.0)
    assert fingerprint_value(svc) == before
    assert fingerprint_value(SVC(C=2.0)) != fingerprint_value(SVC(gamma=2.0))


class _Step(BaseEstimator):
    def __init__(self, a: int = 1) -> None:
        self.a = a


def test_a_class_whose_init_is_replaced_is_fingerprinted_by_its_new_parameters():
    step = _Step()
    assert _params(step) == {"a": 1}
    original = _Step.__init__

    def init(self: Any, a: int = 1, b: int = 2) -> None:
        self.a, self.b = a, b

    _Step.__init__ = init  # type: ignore[method-assign]
    try:
        step = _Step()
        assert _params(step) == step.get_params(deep=False) == {"a": 1, "b": 2}
        step.b = 3
        assert fingerprint_value(step) != fingerprint_value(_Step())
    finally:
        _Step.__init__ = original  # type: ignore[method-assign]
    assert _params(_Step()) == {"a": 1}


class _OwnParams(BaseEstimator):
    def __init__(self, a: int = 1) -> None:
        self.a = a

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"a": self.a, "hidden": getattr(self, "hidden", 0)}


def test_an_estimator_with_its_own_get_params_is_asked_for_them():
    step = _OwnParams()
    assert _params(step) == {"a": 1, "hidden": 0}
    before = fingerprint_value(step)
    step.hidden = 5
    assert fingerprint_value(step) != before


def test_an_estimators_text_is_its_own_after_a_parameter_change():
    svc = SVC(C=3.0)
    shown = _argument_values({"estimator": svc}, {"estimator": fingerprint_value(svc)})
    assert shown == {"estimator": _shown(svc)} and "C=3.0" in shown["estimator"]
    svc.C = 5.0
    shown = _argument_values({"estimator": svc}, {"estimator": fingerprint_value(svc)})
    assert shown == {"estimator": _shown(svc)} and "C=5.0" in shown["estimator"]


def test_a_builder_never_returns_another_objects_fingerprint():
    builder = _Builder()
    scaler, other = StandardScaler(), StandardScaler(with_mean=False)
    builder._key(scaler)
    assert builder._known(scaler) == fingerprint_value(scaler)
    assert builder._known(StandardScaler()) is None  # equal, but another object
    # An entry found under another object's id (a reused id) is not that object's.
    builder._fingerprints[id(other)] = (scaler, fingerprint_value(scaler))
    assert builder._known(other) is None


def test_nodes_built_by_a_search_are_signed_as_a_plain_task_call_signs_them():
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    builder = _Builder()
    data = builder.node("sklearn_data", nodes.data, X, y, materialize=False)
    rows = builder.node("full_data", nodes.full, data, materialize=False)
    pca = PCA(n_components=1)
    built = builder.node("fit_pca", nodes.fit_step, pca, rows, rows, False)
    plain = _task("fit_pca", nodes.fit_step)(pca, rows, rows, False)
    assert built.key == plain.key and built.meta.args == plain.meta.args
    assert built.meta.arg_values == plain.meta.arg_values
    # Another parameter, in place on the same object: another node.
    pca.n_components = 2
    again = _Builder()
    rows = again.node(
        "full_data",
        nodes.full,
        again.node("sklearn_data", nodes.data, X, y, materialize=False),
        materialize=False,
    )
    assert again.node("fit_pca", nodes.fit_step, pca, rows, rows, False).key != built.key


def test_equal_parameters_share_a_fingerprint_and_lookalike_values_do_not():
    builder = _Builder()
    values = [1, 1.0, True, 0.0, -0.0, "1", None]
    for value in values:
        for svc in (SVC(C=value), SVC(C=value)):  # two objects with an equal snapshot
            assert builder._key(svc) == fingerprint_value(svc)
    assert len({builder._key(SVC(C=v)) for v in values}) == len(values)
    assert len(builder._by_snapshot) == len(values)


def test_a_fitted_or_nested_estimator_is_fingerprinted_in_full():
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    builder = _Builder()
    fitted = StandardScaler().fit(X, y)
    assert builder._key(fitted) == fingerprint_value(fitted) != builder._key(StandardScaler())
    output = StandardScaler().set_output(transform="default")
    assert builder._key(output) == fingerprint_value(output)
    assert builder._key(_OwnParams()) == fingerprint_value(_OwnParams())
    assert not builder._by_snapshot.keys() - {_snapshot(StandardScaler())}
