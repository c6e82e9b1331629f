"""scikit-learn pipelines and searches as helix graphs: one node per step, split and candidate.

A ``Pipeline`` becomes a chain of helix nodes, one per step. A step's node fits the step on the
training rows the way ``Pipeline.fit`` does (``fit_transform``), transforms the test rows, and
returns both with the fitted step; it is signed by the step's class (its code when the project
defines it, scikit-learn's version otherwise), its parameters and the signature of the step
before it. Nested pipelines are flattened into their steps; a ``ColumnTransformer`` or
``FeatureUnion`` is one step, fitted by scikit-learn itself.

:class:`GridSearchCV` and :class:`RandomizedSearchCV` take the constructor arguments of
scikit-learn's and expand candidates x splits into such chains: the splits are a node computed
from ``cv`` as scikit-learn computes them (``check_cv``, stratification, groups), each
candidate's last step is fitted and scored in one node per split, and candidates that agree on
a prefix of steps share its nodes, because their signatures are equal. The same signatures
across runs let helix load what an earlier search stored: widening a grid computes only the new
candidates, and changing only the last step's parameters reuses every fitted preprocessing step.

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

import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import _BaseScorer, _check_multimetric_scoring, _MultimetricScorer
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection._search import BaseSearchCV
from sklearn.model_selection._split import BaseCrossValidator, BaseShuffleSplit, _RepeatedSplits
from sklearn.model_selection._validation import _score, _warn_or_raise_about_fit_failures
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, indexable

from ._errors import HelixConfigError
from .signature import Hasher, fingerprint_value, register
from .task import HelixNode, HelixTask, task

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


# ---------------------------------------------------------------------------------------------
# Task functions (module level, so workers import them by name)


def _data(X: Any, y: Any) -> tuple[Any, Any]:
    """The search's data as one node, so every split refers to it by signature."""
    return X, y


def _split(cv: Any, data: tuple[Any, Any], groups: Any, n_splits: int) -> list:
    """The (train, test) indices of every split, as ``BaseSearchCV.fit`` computes them."""
    X, y = data
    splits = list(cv.split(X, y, groups))
    if len(splits) != n_splits:
        raise ValueError(
            f"cv.split and cv.get_n_splits return inconsistent results. "
            f"Expected {n_splits} splits, got {len(splits)}"
        )
    return splits


def _fold(data: tuple[Any, Any], splits: list, i: int) -> Stage:
    """The rows of split ``i``."""
    X, y = data
    train, test = splits[i]
    return Stage(
        train=_safe_indexing(X, train),
        test=_safe_indexing(X, test),
        train_t=_safe_indexing(X, train),
        y_train=None if y is None else _safe_indexing(y, train),
        y_test=None if y is None else _safe_indexing(y, test),
    )


def _full(data: tuple[Any, Any]) -> Stage:
    """All the rows, for fitting a pipeline on the whole data (refit)."""
    X, y = data
    return Stage(train=X, y_train=y)


def _fit_step(estimator: Any, upstream: Stage, rows: Stage, train_scores: bool) -> Stage:
    """Fit one transforming step as ``Pipeline.fit`` does and transform the test rows."""
    if upstream.error:
        return upstream
    step = clone(estimator)  # never fit an argument in place: a threaded worker may share it
    start = time.perf_counter()
    try:
        if hasattr(step, "fit_transform"):
            train = step.fit_transform(upstream.train, rows.y_train)
        else:
            train = step.fit(upstream.train, rows.y_train).transform(upstream.train)
    except Exception as exc:  # recorded as scikit-learn's _fit_and_score does; error_score decides
        return Stage(train=None, error=traceback.format_exc(), exception=exc)
    seconds = upstream.seconds + time.perf_counter() - start
    return Stage(
        train=train,
        test=None if upstream.test is None else step.transform(upstream.test),
        train_t=step.transform(upstream.train_t) if train_scores else None,
        fitted=step,
        seconds=seconds,
    )


def _fit_final(estimator: Any, upstream: Stage, rows: Stage) -> Stage:
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


def _fit_and_score(
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


def _scorer(estimator: Any, scoring: Any, error_score: Any) -> Any:
    """The scorer ``BaseSearchCV._get_scorers`` builds, for the last step alone (it sees
    the transformed rows, which is what the pipeline's scorer would pass it)."""
    if isinstance(scoring, _BaseScorer):
        return scoring
    if scoring is None or isinstance(scoring, str):
        return check_scoring(estimator, scoring)
    scorers = _check_multimetric_scoring(estimator, scoring)
    return _MultimetricScorer(scorers=scorers, raise_exc=(error_score == "raise"))


def _assemble(template: Any, paths: list[str], stages: list[Stage]) -> Any:
    """The fitted pipeline: ``template`` with each step replaced by its fitted node's step."""
    for stage in stages:
        if stage.error:
            raise stage.exception  # type: ignore[misc]
    if not isinstance(template, Pipeline):
        return stages[-1].fitted
    fitted = clone(template)
    fitted.set_params(**{path: stage.fitted for path, stage in zip(paths, stages, strict=True)})
    return fitted


# ---------------------------------------------------------------------------------------------
# Building the graph


_TASKS: dict[tuple[str, Callable[..., Any], bool | None], HelixTask] = {}


def _task(name: str, func: Callable[..., Any], materialize: bool | None = None) -> HelixTask:
    """The helix task running ``func`` under the readable node name ``name``."""
    name = re.sub(r"\W", "_", name)
    key = (name, func, materialize)
    found = _TASKS.get(key)
    if found is None:
        found = _TASKS.setdefault(key, task(name=name, materialize=materialize)(func))
    return found


def _steps(estimator: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, step)`` for every step that runs, nested pipelines flattened into their steps
    (``outer__inner``), ``"passthrough"`` and ``None`` steps left out."""
    if not isinstance(estimator, Pipeline):
        return [(prefix.removesuffix("__") or type(estimator).__name__.lower(), estimator)]
    out: list[tuple[str, Any]] = []
    for name, step in estimator.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        out += _steps(step, f"{prefix}{name}__")
    return out


def _final_steps(estimator: Any) -> list[tuple[str, Any]]:
    last = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if last is None or (isinstance(last, str) and last == "passthrough"):
        raise HelixConfigError(
            f"the last step of {estimator!r} is {last!r}; a pipeline fitted through helix "
            "must end in an estimator"
        )
    return _steps(estimator)


class _Builder:
    """Builds the nodes of one search or fit, each distinct node once."""

    def __init__(self) -> None:
        self._nodes: dict[tuple, HelixNode] = {}
        self._fingerprints: dict[int, tuple[Any, str]] = {}

    def node(self, name: str, func: Callable[..., Any], *args: Any, **options: Any) -> HelixNode:
        """The node ``func(*args)`` named ``name``; the same node for arguments with equal
        fingerprints (the many candidates x splits that share a step)."""
        key = (name, func, *(self._key(a) for a in args))
        found = self._nodes.get(key)
        if found is None:
            found = self._nodes[key] = _task(name, func, **options)(*args)
        return found

    def _key(self, value: Any) -> Any:
        if isinstance(value, HelixNode):
            return value.key
        if isinstance(value, str | int | float | bool | type(None)):
            return (type(value), value)
        held = self._fingerprints.get(id(value))
        if held is None:  # keep the value alive, so its id is not reused while building
            held = self._fingerprints[id(value)] = (value, fingerprint_value(value))
        return held[1]

    def chain(self, steps: list[tuple[str, Any]], rows: HelixNode, train_scores: bool) -> list:
        """The nodes fitting every step but the last, in order."""
        stages: list[HelixNode] = []
        for path, step in steps[:-1]:
            upstream = stages[-1] if stages else rows
            stages.append(self.node(f"fit_{path}", _fit_step, step, upstream, rows, train_scores))
        return stages


def fit_pipeline(estimator: Any, X: Any, y: Any = None) -> HelixNode:
    """A lazy fitted copy of ``estimator``: one helix node per pipeline step.

    Each step's node is signed by the step's class, its parameters and the node before it, so
    after an edit to a late step's parameters the fitted steps before it are reused, in the
    same graph and, when stored, in later runs.

    Parameters
    ----------
    estimator
        A ``Pipeline`` (nested pipelines are flattened into their steps) or any estimator.
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
    return _refit_node(_Builder(), estimator, X, y)


def _refit_node(builder: _Builder, estimator: Any, X: Any, y: Any) -> HelixNode:
    steps = _final_steps(estimator)
    data = builder.node("sklearn_data", _data, X, y, materialize=False)
    rows = builder.node("full_data", _full, data, materialize=False)
    stages = builder.chain(steps, rows, False)
    path, last = steps[-1]
    final = builder.node(f"refit_{path}", _fit_final, last, stages[-1] if stages else rows, rows)
    paths = [p for p, _ in steps]
    return builder.node("fitted_pipeline", _assemble, estimator, paths, [*stages, final])


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
        data = builder.node("sklearn_data", _data, X, y, materialize=False)
        splits = builder.node("cv_split", _split, cv, data, groups, n_splits)
        folds = [
            builder.node("cv_fold", _fold, data, splits, i, materialize=False)
            for i in range(n_splits)
        ]
        nodes = []
        for candidate in candidates:  # candidate-major, as scikit-learn orders its fits
            steps = _final_steps(clone(base).set_params(**clone(candidate, safe=False)))
            path, last = steps[-1]
            for rows in folds:
                stages = builder.chain(steps, rows, train_scores)
                upstream = stages[-1] if stages else rows
                nodes.append(
                    builder.node(
                        f"score_{path}",
                        _fit_and_score,
                        last,
                        upstream,
                        rows,
                        self.scoring,
                        self.error_score,
                        train_scores,
                    )
                )
        out = _gather(client, nodes)

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
