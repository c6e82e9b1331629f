"""The task functions of :mod:`helix_dask.sklearn`: what one node of a pipeline graph runs.

Module level, so workers import them by name. A :class:`Stage` flows between them: one split's
rows at one point of a pipeline, with the step fitted there. Every function reproduces the part
of scikit-learn's own fit it stands for, so a graph of them fits what scikit-learn fits:
``Pipeline.fit`` step by step, and a ``ColumnTransformer`` or ``FeatureUnion`` as one node per
branch (its columns, its transformer's fit) and one node doing what ``fit_transform`` and
``transform`` do after the branches' fits (the checks, the fitted attributes, the stacking,
the weights and the output container). Those steps call scikit-learn's private helpers of the
two classes (tested against scikit-learn's own fit); :func:`why_one_step` says when an
estimator cannot be split that way and is fitted whole instead.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.compose._column_transformer import (
    _ERR_MSG_1DCOLUMN,
    _check_X,
    _is_empty_column_selection,
)
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import _BaseScorer, _check_multimetric_scoring, _MultimetricScorer
from sklearn.model_selection._validation import _score
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._indexing import _get_column_indices
from sklearn.utils._set_output import _wrap_data_with_container
from sklearn.utils.validation import _get_feature_names, _num_samples, validate_data

# ---------------------------------------------------------------------------------------------
# What flows between nodes


@dataclass(frozen=True, slots=True)
class Stage:
    """The data at one point of a pipeline for one split: the rows to fit on and to score on."""

    train: Any
    """Training rows as the steps so far output them when fitted (``fit_transform``)."""
    test: Any = None
    """Test rows through the fitted steps so far; None when fitting on all the data."""
    train_t: Any = None
    """Training rows through the fitted steps' ``transform``, kept only for train scores."""
    y_train: Any = None
    y_test: Any = None
    fitted: Any = None
    """The step fitted by this node."""
    seconds: float = 0.0
    """Fit time of this step and every step before it."""
    error: str = ""
    """The traceback of a failed fit, here or upstream ('' when it succeeded)."""
    exception: BaseException | None = None
    empty: bool = False
    """A ColumnTransformer branch that selected no columns: it is not fitted, as
    scikit-learn leaves it, and the nodes after it pass this stage on."""


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


def failed(exc: BaseException) -> Stage:
    """The stage of a fit that raised ``exc`` (called inside its ``except`` block)."""
    return Stage(train=None, error=traceback.format_exc(), exception=exc)


def steps_of(estimator: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, step)`` for every step that runs, nested pipelines flattened into their steps
    (``outer__inner``), ``"passthrough"`` and ``None`` steps left out."""
    if not isinstance(estimator, Pipeline):
        return [(prefix.removesuffix("__") or type(estimator).__name__.lower(), estimator)]
    out: list[tuple[str, Any]] = []
    for name, step in estimator.steps:
        if step is None or is_named(step, "passthrough"):
            continue
        out += steps_of(step, f"{prefix}{name}__")
    return out


def is_named(value: Any, word: str) -> bool:
    """Whether ``value`` is the string ``word`` ('drop', 'passthrough'), not an estimator."""
    return isinstance(value, str) and value == word


# ---------------------------------------------------------------------------------------------
# ColumnTransformer and FeatureUnion, one node per branch

_COLUMNS_HELPERS = (
    "_validate_params",
    "_validate_transformers",
    "_validate_column_callables",
    "_validate_remainder",
    "_iter",
    "_update_fitted_transformers",
    "_validate_output",
    "_record_output_indices",
    "_hstack",
)
_UNION_HELPERS = (
    "_validate_transformers",
    "_validate_transformer_weights",
    "_iter",
    "_update_transformer_list",
    "_hstack",
)


def why_one_step(estimator: ColumnTransformer | FeatureUnion) -> str | None:
    """Why ``estimator`` must be fitted as one step rather than branch by branch; None when
    it can be split into branches whose assembly equals scikit-learn's own fit."""
    kind = ColumnTransformer if isinstance(estimator, ColumnTransformer) else FeatureUnion
    if type(estimator) is not kind:
        return f"{type(estimator).__name__} subclasses {kind.__name__} and may fit otherwise"
    helpers = _COLUMNS_HELPERS if kind is ColumnTransformer else _UNION_HELPERS
    missing = [name for name in helpers if not hasattr(kind, name)]
    if missing:
        return f"this scikit-learn's {kind.__name__} lacks {', '.join(missing)}"
    branches = estimator.transformers if kind is ColumnTransformer else estimator.transformer_list
    width = 3 if kind is ColumnTransformer else 2
    if not isinstance(branches, list | tuple) or not all(
        isinstance(b, tuple) and len(b) == width and isinstance(b[0], str) for b in branches
    ):
        what = "(name, transformer, columns)" if width == 3 else "(name, transformer)"
        return f"its branches are not a list of {what} tuples"
    named = [b[1] for b in branches]
    if kind is ColumnTransformer:
        named.append(estimator.remainder)
    for trans in named:
        if isinstance(trans, str) and trans not in ("drop", "passthrough"):
            return f"a branch is the string {trans!r}, not 'drop', 'passthrough' or a transformer"
    return None


@dataclass(frozen=True, slots=True)
class Remainder:
    """The columns of a ColumnTransformer's remainder, as the selection of its remainder's
    branch. ``columns`` is the ColumnTransformer with every transformer replaced by 'drop':
    only the selections count, so editing a transformer keeps the remainder's signature."""

    columns: ColumnTransformer

    @classmethod
    def of(cls, estimator: ColumnTransformer) -> Remainder:
        """The remainder of ``estimator``'s column selections."""
        selections = [(name, "drop", columns) for name, _, columns in estimator.transformers]
        return cls(ColumnTransformer(selections, remainder="passthrough"))


def _resolve(select: Any, X: Any, checked: Any) -> tuple[Any, Any]:
    """The columns ``select`` picks as ``ColumnTransformer.fit_transform`` resolves them
    (callables called on the input) and their positions."""
    if isinstance(select, Remainder):
        ct = clone(select.columns)
        validate_data(ct, X=X, skip_check_array=True)
        ct._validate_column_callables(checked)
        ct._validate_remainder(checked)
        return ct._remainder[2], ct._transformer_to_input_indices["remainder"]
    columns = select(checked) if callable(select) else select
    return columns, _get_column_indices(checked, columns)


def select_columns(select: Any, upstream: Stage, train_scores: bool) -> Stage:
    """One ColumnTransformer branch's columns of the training rows (as ``fit_transform``
    selects them) and of the test rows (as ``transform`` does: by name when both are data
    frames with named columns); ``empty`` when nothing is selected."""
    if upstream.error or upstream.empty:
        return upstream
    try:
        X = _check_X(upstream.train)
        columns, indices = _resolve(select, upstream.train, X)
        if _is_empty_column_selection(columns):
            return Stage(train=None, empty=True)
        names = _get_feature_names(X)
        if names is not None:
            labels = names[indices]
            by_name = labels[0] if np.isscalar(columns) else labels

        def rows(Z: Any) -> Any:
            if Z is None:
                return None
            Z = _check_X(Z)
            framed = names is not None and _is_frame(Z)
            return _safe_indexing(Z, by_name if framed else columns, axis=1)

        return Stage(
            train=_safe_indexing(X, columns, axis=1),
            test=rows(upstream.test),
            train_t=rows(upstream.train_t) if train_scores else None,
        )
    except Exception as exc:  # as a failing fit: error_score decides
        return failed(exc)


def _is_frame(X: Any) -> bool:
    import narwhals.stable.v2 as nw

    return bool(nw.dependencies.is_into_dataframe(X))


@dataclass(frozen=True, slots=True)
class _Branch:
    """One fitted branch's outputs, weighted, and its fitted transformer."""

    train: Any
    test: Any
    train_t: Any
    fitted: Any
    seconds: float


def _branch(source: Stage, stages: list[Stage], template: Any, weight: Any) -> _Branch:
    """What ``_fit_transform_one`` and ``_transform_one`` return for one branch."""
    last = stages[-1] if stages else source
    if isinstance(template, Pipeline):
        paths = [path for path, _ in steps_of(template)]
        fitted = clone(template)
        fitted.set_params(**{p: s.fitted for p, s in zip(paths, stages, strict=True)})
    else:  # a transformer, or 'passthrough' fitted as scikit-learn's FunctionTransformer
        fitted = last.fitted

    def weighted(X: Any) -> Any:
        return X if X is None or weight is None else X * weight

    return _Branch(
        weighted(last.train),
        weighted(last.test),
        weighted(last.train_t),
        fitted,
        last.seconds - source.seconds,
    )


def _one_dim(exc: BaseException | None) -> bool:
    return isinstance(exc, ValueError) and "Expected 2D array, got 1D array instead" in str(exc)


def _first_error(branches: list[tuple[Stage, list[Stage]]]) -> Stage | None:
    """The first failure, column selections before fits (scikit-learn resolves every
    selection before it fits a branch)."""
    for source, _ in branches:
        if source.error:
            return source
    for _, stages in branches:
        for stage in stages:
            if stage.error:
                return stage
    return None


def assemble_columns(
    template: ColumnTransformer,
    upstream: Stage,
    branches: list[tuple[Stage, list[Stage]]],
    train_scores: bool,
) -> Stage:
    """The ColumnTransformer fitted from its branches' nodes, and its output: what
    ``fit_transform`` does around the branches' fits, and ``transform`` for the test rows.

    ``branches`` are (selection, fitted steps) for every branch that is not 'drop', in order,
    then the remainder's unless it is 'drop'."""
    if upstream.error or upstream.empty:
        return upstream
    start = time.perf_counter()
    try:
        ct = clone(template)
        ct._validate_params()
        validate_data(ct, X=upstream.train, skip_check_array=True)
        X = _check_X(upstream.train)
        ct._validate_transformers()
        n_samples = _num_samples(X)
        ct._validate_column_callables(X)
        ct._validate_remainder(X)
        names = [name for name, trans, _ in ct.transformers if not is_named(trans, "drop")]
        if not is_named(ct.remainder, "drop"):
            names.append("remainder")
        if (error := _first_error(branches)) is not None:
            exc = error.exception
            if any(error is s for _, stages in branches for s in stages) and _one_dim(exc):
                raise ValueError(_ERR_MSG_1DCOLUMN) from exc  # as _call_func_on_transformers
            return error
        by_name = dict(zip(names, branches, strict=True))
        outputs = [
            _branch(*by_name[name], trans, weight)
            for name, trans, _, weight in ct._iter(
                fitted=False, column_as_labels=False, skip_drop=True, skip_empty_columns=True
            )
        ]
        if not outputs:
            ct._update_fitted_transformers([])
            train: Any = np.zeros((n_samples, 0))
        else:
            Xs = [o.train for o in outputs]
            if any(sparse.issparse(X) for X in Xs):
                nnz = sum(X.nnz if sparse.issparse(X) else X.shape[0] * X.shape[1] for X in Xs)
                total = sum(X.shape[0] * X.shape[1] for X in Xs)
                ct.sparse_output_ = nnz / total < ct.sparse_threshold
            else:
                ct.sparse_output_ = False
            ct._update_fitted_transformers([o.fitted for o in outputs])
            ct._validate_output(Xs)
            ct._record_output_indices(Xs)
            train = ct._hstack(Xs, n_samples=n_samples)

        def transformed(Z: Any, parts: list[Any]) -> Any:
            if Z is None:
                return None
            n = _num_samples(_check_X(Z))
            ct._validate_output(parts)
            out = ct._hstack(parts, n_samples=n) if parts else np.zeros((n, 0))
            return _wrap_data_with_container("transform", out, Z, ct)

        return Stage(
            train=_wrap_data_with_container("transform", train, upstream.train, ct),
            test=transformed(upstream.test, [o.test for o in outputs]),
            train_t=transformed(upstream.train_t, [o.train_t for o in outputs])
            if train_scores
            else None,
            fitted=ct,
            seconds=upstream.seconds
            + sum(o.seconds for o in outputs)
            + time.perf_counter()
            - start,
        )
    except Exception as exc:  # as a failing fit: error_score decides
        return failed(exc)


def assemble_union(
    template: FeatureUnion, upstream: Stage, branches: list[list[Stage]], train_scores: bool
) -> Stage:
    """The FeatureUnion fitted from its branches' nodes, and its output: what
    ``fit_transform`` does around the branches' fits, and ``transform`` for the test rows.

    ``branches`` are the fitted steps of every branch that is not 'drop', in order."""
    if upstream.error or upstream.empty:
        return upstream
    start = time.perf_counter()
    try:
        fu = clone(template)
        fu.transformer_list = list(fu.transformer_list)
        fu._validate_transformers()
        fu._validate_transformer_weights()
        given = dict(fu.transformer_list)
        names = [name for name, trans in fu.transformer_list if not is_named(trans, "drop")]
        pairs = [(upstream, stages) for stages in branches]
        if (error := _first_error(pairs)) is not None:
            return error
        by_name = dict(zip(names, pairs, strict=True))
        outputs = [_branch(*by_name[name], given[name], weight) for name, _, weight in fu._iter()]
        if outputs:
            fu._update_transformer_list([o.fitted for o in outputs])

        def stacked(Z: Any, parts: list[Any]) -> Any:
            if Z is None:
                return None
            out = fu._hstack(parts) if parts else _no_columns(Z)
            return _wrap_data_with_container("transform", out, Z, fu)

        return Stage(
            train=stacked(upstream.train, [o.train for o in outputs]),
            test=stacked(upstream.test, [o.test for o in outputs]),
            train_t=stacked(upstream.train_t, [o.train_t for o in outputs])
            if train_scores
            else None,
            fitted=fu,
            seconds=upstream.seconds
            + sum(o.seconds for o in outputs)
            + time.perf_counter()
            - start,
        )
    except Exception as exc:  # as a failing fit: error_score decides
        return failed(exc)


def _no_columns(X: Any) -> Any:
    """What ``FeatureUnion`` returns when every branch is 'drop'."""
    from sklearn.utils._array_api import get_namespace_and_device

    xp, _, device = get_namespace_and_device(X)
    return xp.zeros((X.shape[0], 0), device=device)
