"""The task functions of :mod:`helix_dask.sklearn`: what one node of a pipeline graph runs.

Module level, so workers import them by name. A :class:`Stage` flows between them: one split's
rows at one point of a pipeline, with the step fitted there. Every function reproduces the part
of scikit-learn's own fit it stands for, so a graph of them fits what scikit-learn fits:
``Pipeline.fit`` step by step, and a ``ColumnTransformer`` or ``FeatureUnion`` as one node per
branch (its columns, its transformer's fit) and one node doing what ``fit_transform`` and
``transform`` do after the branches' fits (the checks, the fitted attributes, the stacking,
the weights and the output container). The branch functions live in
:mod:`helix_dask._sklearn_branches` and are named here, where workers import them from;
:func:`~helix_dask._sklearn_steps.why_one_step` says when an estimator cannot be split that way
and is fitted whole instead.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import _BaseScorer, _check_multimetric_scoring, _MultimetricScorer
from sklearn.model_selection._validation import _score
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing

from ._sklearn_branches import Remainder as Remainder
from ._sklearn_branches import assemble_columns as assemble_columns
from ._sklearn_branches import assemble_union as assemble_union
from ._sklearn_branches import select_columns as select_columns
from ._sklearn_stage import Stage, failed

# ---------------------------------------------------------------------------------------------
# Task functions (module level, so workers import them by name)


def data(X: Any, y: Any) -> tuple[Any, Any]:
    """The search's data as one node, so every split refers to it by signature."""
    return X, y


def split(cv: Any, data: tuple[Any, Any], groups: Any, n_splits: int) -> list:
    """The (train, test) indices of every split, as ``BaseSearchCV.fit`` computes them."""
    X, y = data
    splits = list(cv.split(X, y, groups))
    if len(splits) != n_splits:
        raise ValueError(
            f"cv.split and cv.get_n_splits return inconsistent results. "
            f"Expected {n_splits} splits, got {len(splits)}"
        )
    return splits


def fold(data: tuple[Any, Any], splits: list, i: int, train_scores: bool) -> Stage:
    """The rows of split ``i``; the training rows twice only for train scores (a copy, as a
    step fitted with ``copy=False`` may change its input in place)."""
    X, y = data
    train, test = splits[i]
    return Stage(
        train=_safe_indexing(X, train),
        test=_safe_indexing(X, test),
        train_t=_safe_indexing(X, train) if train_scores else None,
        y_train=None if y is None else _safe_indexing(y, train),
        y_test=None if y is None else _safe_indexing(y, test),
    )


def full(data: tuple[Any, Any]) -> Stage:
    """All the rows, for fitting a pipeline on the whole data (refit)."""
    X, y = data
    return Stage(train=X, y_train=y)


def fit_step(estimator: Any, upstream: Stage, rows: Stage, train_scores: bool) -> Stage:
    """Fit one transforming step as ``Pipeline.fit`` does and transform the test rows."""
    if upstream.error or upstream.empty:
        return upstream
    step = clone(estimator)  # never fit an argument in place: a threaded worker may share it
    start = time.perf_counter()
    try:
        if hasattr(step, "fit_transform"):
            train = step.fit_transform(upstream.train, rows.y_train)
        else:
            train = step.fit(upstream.train, rows.y_train).transform(upstream.train)
    except Exception as exc:  # recorded as scikit-learn's _fit_and_score does; error_score decides
        return failed(exc)
    seconds = upstream.seconds + time.perf_counter() - start
    return Stage(
        train=train,
        test=None if upstream.test is None else step.transform(upstream.test),
        train_t=step.transform(upstream.train_t) if train_scores else None,
        fitted=step,
        seconds=seconds,
    )


def fit_final(estimator: Any, upstream: Stage, rows: Stage) -> Stage:
    """Fit the last step on all the rows the pipeline was given."""
    if upstream.error:
        return upstream
    final = clone(estimator)
    start = time.perf_counter()
    try:
        _fit(final, upstream.train, rows.y_train)
    except Exception as exc:  # raised by the assembling node, as a plain fit would
        return Stage(train=None, error=traceback.format_exc(), exception=exc)
    return Stage(train=None, fitted=final, seconds=upstream.seconds + time.perf_counter() - start)


def _fit(estimator: Any, X: Any, y: Any) -> None:
    if y is None:
        estimator.fit(X)
    else:
        estimator.fit(X, y)


def fit_and_score(
    estimator: Any,
    upstream: Stage,
    rows: Stage,
    scoring: Any,
    error_score: Any,
    train_scores: bool,
) -> dict[str, Any]:
    """Fit the last step on a split's training rows and score it on its test rows: the
    result ``sklearn.model_selection._validation._fit_and_score`` returns to a search."""
    final = clone(estimator)
    error, exception = upstream.error, upstream.exception
    fit_time = upstream.seconds
    if not error:
        start = time.perf_counter()
        try:
            _fit(final, upstream.train, rows.y_train)
        except Exception as exc:  # as _fit_and_score: error_score decides
            error, exception = traceback.format_exc(), exc
        fit_time += time.perf_counter() - start
    scorer = _scorer(final, scoring, error_score)
    result: dict[str, Any] = {"fit_error": None}
    if error:
        if error_score == "raise":
            raise exception  # type: ignore[misc]
        failed = (
            {name: error_score for name in scorer._scorers}
            if isinstance(scorer, _MultimetricScorer)
            else error_score
        )
        result.update(fit_error=error, test_scores=failed, score_time=0.0)
        if train_scores:
            result["train_scores"] = failed
    else:
        start = time.perf_counter()
        result["test_scores"] = _score(final, upstream.test, rows.y_test, scorer, {}, error_score)
        result["score_time"] = time.perf_counter() - start
        if train_scores:
            result["train_scores"] = _score(
                final, upstream.train_t, rows.y_train, scorer, {}, error_score
            )
    result["n_test_samples"] = len(rows.test)
    result["fit_time"] = fit_time
    return result


def candidate(splits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One candidate's results on every split, in split order: a later search that has the
    same candidate loads this one result and prunes the nodes of its splits."""
    return list(splits)


def _scorer(estimator: Any, scoring: Any, error_score: Any) -> Any:
    """The scorer ``BaseSearchCV._get_scorers`` builds, for the last step alone (it sees
    the transformed rows, which is what the pipeline's scorer would pass it)."""
    if isinstance(scoring, _BaseScorer):
        return scoring
    if scoring is None or isinstance(scoring, str):
        return check_scoring(estimator, scoring)
    scorers = _check_multimetric_scoring(estimator, scoring)
    return _MultimetricScorer(scorers=scorers, raise_exc=(error_score == "raise"))


def assemble(template: Any, paths: list[str], stages: list[Stage]) -> Any:
    """The fitted pipeline: ``template`` with each step replaced by its fitted node's step."""
    for stage in stages:
        if stage.error:
            raise stage.exception  # type: ignore[misc]
    if not isinstance(template, Pipeline):
        return stages[-1].fitted
    fitted = clone(template)
    fitted.set_params(**{path: stage.fitted for path, stage in zip(paths, stages, strict=True)})
    return fitted
