"""The task functions fitting a ColumnTransformer or FeatureUnion one node per branch: a node
selecting a branch's columns (``remainder`` included), and a node assembling the fitted
estimator and its output from the branches as its own ``fit_transform`` and ``transform`` do
(checks, fitted attributes, stacking, weights, sparse output, output container)."""

from __future__ import annotations

import time
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
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._indexing import _get_column_indices
from sklearn.utils._set_output import _wrap_data_with_container
from sklearn.utils.validation import _get_feature_names, _num_samples, validate_data

from ._sklearn_stage import Stage, failed
from ._sklearn_steps import is_named, steps_of


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


# Node signatures name task functions and argument classes by module: these keep the module
# workers import them from, and that their signatures had before they lived here.
Remainder.__module__ = select_columns.__module__ = "helix_dask._sklearn_nodes"
assemble_columns.__module__ = assemble_union.__module__ = "helix_dask._sklearn_nodes"
