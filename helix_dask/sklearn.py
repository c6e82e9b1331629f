"""scikit-learn pipelines and searches as helix graphs: one node per step, split and candidate.

A ``Pipeline`` becomes a chain of helix nodes, one per step. A step's node fits the step on the
training rows the way ``Pipeline.fit`` does (``fit_transform``), transforms the test rows, and
returns both with the fitted step; it is signed by the step's class (its code when the project
defines it, scikit-learn's version otherwise), its parameters and the signature of the step
before it. Nested pipelines are flattened into their steps. A ``ColumnTransformer`` or
``FeatureUnion`` is split into its branches: per branch a node selecting its columns
(``columns_ct.num``) and the nodes of its transformer (``fit_ct.num``, or ``fit_ct.num.scale``
... when the branch is a pipeline, itself flattened and split), then one node (``fit_ct``)
assembling the fitted ``ColumnTransformer`` and its output from the branches as its own fit
does: column callables and ``make_column_selector``, ``remainder``, 'drop' and 'passthrough'
branches, ``transformer_weights``, ``sparse_threshold`` and ``set_output``. Editing one
branch's parameters then refits that branch and what follows it, not its siblings. A subclass
of either, or a scikit-learn without the private helpers that assembly calls, is fitted whole
as one step (logged at INFO with the reason); so is a last step, which is fitted and scored as
one. Node names show paths with dots (``fit_outer.inner`` for a nested pipeline's step).

:class:`GridSearchCV` and :class:`RandomizedSearchCV` take the constructor arguments of
scikit-learn's and expand candidates x splits into such chains: the splits are a node computed
from ``cv`` as scikit-learn computes them (``check_cv``, stratification, groups), each
candidate's last step is fitted and scored in one node per split, one node per candidate
gathers its splits' results (what a later search loads for a candidate it has seen; the split
nodes' results are stored only in it), and
candidates that agree on a prefix of steps share its nodes, because their signatures are
equal. The same signatures across runs let helix load what an earlier search stored: widening
a grid computes only the new candidates, and changing only the last step's parameters reuses
every fitted preprocessing step.

Cost model: a node costs what its step's fit and transform cost; whether it is stored or
recomputed later is helix's usual decision (measured compute time against load time), so a
cheap step such as a scaler may be recomputed rather than loaded.

Examples
--------
>>> from sklearn.decomposition import PCA
>>> from sklearn.pipeline import Pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from sklearn.svm import SVC
>>> from helix_dask.sklearn import GridSearchCV
>>> pipe = Pipeline([("scaler", StandardScaler()), ("pca", PCA()), ("svc", SVC())])
>>> search = GridSearchCV(pipe, {"pca__n_components": [10, 20], "svc__C": [1, 10]}, cv=5)
>>> search.fit(X, y)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics._scorer import _BaseScorer, _MultimetricScorer
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection._search import BaseSearchCV
from sklearn.model_selection._split import BaseCrossValidator, BaseShuffleSplit, _RepeatedSplits
from sklearn.model_selection._validation import _warn_or_raise_about_fit_failures
from sklearn.utils import indexable

from . import _sklearn_nodes as _nodes
from ._errors import HelixConfigError
from ._sklearn_builder import _Builder, _check_global_output, _final_steps, _readable, _refit_node
from ._submit import one_submission
from .signature import Hasher, register
from .task import HelixNode

__all__ = ["GridSearchCV", "RandomizedSearchCV", "fit_pipeline"]


# ---------------------------------------------------------------------------------------------
# Fingerprints for the scikit-learn objects a search passes to its nodes


@register(BaseCrossValidator, BaseShuffleSplit, _RepeatedSplits, _BaseScorer)
def _by_state(obj: Any, h: Hasher) -> None:
    """Splitters and scorers count by class and instance state (their init parameters)."""
    h.tag("sklearn.state")
    h.field(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
    h.nested(dict(vars(obj)), ".__dict__")


# ---------------------------------------------------------------------------------------------
# Fitting one pipeline


def fit_pipeline(estimator: Any, X: Any, y: Any = None) -> HelixNode:
    """A lazy fitted copy of ``estimator``: one helix node per pipeline step.

    Each step's node is signed by the step's class, its parameters and the node before it, so
    after an edit to a late step's parameters the fitted steps before it are reused, in the
    same graph and, when stored, in later runs.

    Parameters
    ----------
    estimator
        A ``Pipeline`` (nested pipelines are flattened into their steps, a
        ``ColumnTransformer`` or ``FeatureUnion`` split into its branches) or any estimator.
    X, y
        Training data, as for ``estimator.fit``.

    Returns
    -------
    HelixNode
        Computes to the fitted estimator (a new object; ``estimator`` is not modified).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> pipe = make_pipeline(StandardScaler(), LogisticRegression())
    >>> model = fit_pipeline(pipe, X, y).compute()  # doctest: +SKIP
    """
    _check_global_output()
    return _refit_node(_Builder(), estimator, X, y)


# ---------------------------------------------------------------------------------------------
# Searches


class _HelixSearch(BaseSearchCV):
    """``fit`` for the searches below; everything after the scores is scikit-learn's own."""

    client: Any

    def _candidates(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, *, groups: Any = None, **params: Any) -> Any:
        """Run fit with all sets of parameters, as helix nodes on the cluster.

        Parameters
        ----------
        X, y
            Training data and target, as for scikit-learn's search.
        groups
            Group labels for the splitter (``GroupKFold`` and the like).
        **params
            Fit parameters are not supported yet; passing any raises ``HelixConfigError``.

        Returns
        -------
        self
        """
        if params:
            raise HelixConfigError(
                f"{type(self).__name__}.fit got fit parameters {sorted(params)}; helix searches "
                "take X, y and groups only: fit with scikit-learn's search to pass them"
            )
        self._validate_params()
        if callable(self.scoring) and not isinstance(self.scoring, _BaseScorer):
            raise HelixConfigError(
                f"scoring={self.scoring!r} is a plain callable; helix scores the last step on "
                "transformed rows, so pass a metric name or sklearn.metrics.make_scorer(...)"
            )
        _check_global_output()
        client = self.client or _default_client()
        scorers, refit_metric = self._get_scorers()
        X, y, groups = indexable(X, y, groups)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        n_splits = self.n_splits_ = cv.get_n_splits(X, y, groups)
        candidates = self._candidates()
        if not candidates or not n_splits:
            raise ValueError(
                "No fits were performed. Was the CV iterator empty? Were there no candidates?"
            )
        base = clone(self.estimator)
        train_scores = bool(self.return_train_score)

        builder = _Builder()
        data = builder.node("sklearn_data", _nodes.data, X, y, materialize=False)
        splits = builder.node("cv_split", _nodes.split, cv, data, groups, n_splits)
        folds = [
            builder.node("cv_fold", _nodes.fold, data, splits, i, train_scores, materialize=False)
            for i in range(n_splits)
        ]
        nodes = []
        for candidate in candidates:  # candidate-major, as scikit-learn orders its fits
            steps = _final_steps(clone(base).set_params(**clone(candidate, safe=False)))
            path, last = steps[-1]
            scores = []
            for rows in folds:
                stages = builder.chain(steps, rows, train_scores)
                upstream = stages[-1] if stages else rows
                scores.append(
                    builder.node(
                        f"score_{_readable(path)}",
                        _nodes.fit_and_score,
                        last,
                        upstream,
                        rows,
                        self.scoring,
                        self.error_score,
                        train_scores,
                        materialize=False,  # stored in its candidate's result
                    )
                )
            nodes.append(builder.node(f"candidate_{_readable(path)}", _nodes.candidate, scores))
        out = [split for splits in _gather(client, nodes) for split in splits]

        _warn_or_raise_about_fit_failures(out, self.error_score)
        results = self._format_results(candidates, n_splits, out)
        self.multimetric_ = isinstance(out[0]["test_scores"], dict)
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            best = clone(base).set_params(**clone(self.best_params_, safe=False))
            start = time.time()
            self.best_estimator_ = _gather(client, [_refit_node(builder, best, X, y)])[0]
            self.refit_time_ = time.time() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        self.cv_results_ = results
        return self


def _gather(client: Any, nodes: list[HelixNode]) -> list[Any]:
    """Compute ``nodes`` on the cluster; on a failure, cancel the rest (as a plain search
    stops at its first error with ``error_score="raise"``)."""
    with one_submission(client, nodes):
        futures = client.compute(nodes)
    try:
        return client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise


def _default_client() -> Any:
    from distributed import default_client

    return default_client()


class GridSearchCV(_HelixSearch, _SkGridSearchCV):
    """scikit-learn's ``GridSearchCV`` computed as helix nodes on a Dask cluster.

    Same constructor arguments, attributes and results as ``sklearn.model_selection.
    GridSearchCV`` (``cv_results_``, ``best_params_``, ``best_score_``, ``best_estimator_``);
    ``n_jobs`` and ``pre_dispatch`` are ignored in favour of the cluster. Candidates x splits
    become one node per pipeline step (see :mod:`helix_dask.sklearn`), shared between
    candidates and, through the helix store, between searches. ``fit_time`` in
    ``cv_results_`` is the time the step nodes took when they were computed, also when they
    were loaded or shared.

    Parameters
    ----------
    client
        The ``distributed.Client`` to compute on (helix set up on it with ``hx.setup``);
        default: the current client.

    Examples
    --------
    >>> search = GridSearchCV(pipe, {"svc__C": [1, 10]}, cv=5, client=client)  # doctest: +SKIP
    >>> search.fit(X, y).best_params_  # doctest: +SKIP
    {'svc__C': 10}
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        n_jobs: Any = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Any = None,
    ) -> None:
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.client = client

    def _candidates(self) -> list[dict[str, Any]]:
        return list(ParameterGrid(self.param_grid))


class RandomizedSearchCV(_HelixSearch, _SkRandomizedSearchCV):
    """scikit-learn's ``RandomizedSearchCV`` computed as helix nodes on a Dask cluster.

    See :class:`GridSearchCV`; candidates are drawn as scikit-learn draws them
    (``ParameterSampler`` with ``random_state``), so equal ``random_state`` gives equal
    candidates and equal results.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> search = RandomizedSearchCV(pipe, {"svc__C": loguniform(1e-2, 1e2)}, n_iter=20,
    ...                             random_state=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        n_jobs: Any = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: Any = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Any = None,
    ) -> None:
        super().__init__(
            estimator,
            param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.client = client

    def _candidates(self) -> list[dict[str, Any]]:
        return list(
            ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        )
