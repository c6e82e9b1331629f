"""Building the helix graph of a scikit-learn fit or search: one helix task per node name and
task function, each distinct node built once (arguments with equal fingerprints give the same
node), pipelines chained step by step, a ColumnTransformer or FeatureUnion split into one node
per branch step and one assembling them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._set_output import _get_output_config

from . import _sklearn_nodes as _nodes
from ._errors import HelixConfigError
from ._fingerprint_sklearn import snapshot as _snapshot
from ._node import _node_signature
from ._sklearn_branches import Remainder
from ._sklearn_steps import is_named, steps_of, why_one_step
from .signature import fingerprint_value
from .task import HelixNode, HelixTask, known_fingerprints, task

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.sklearn")


_TASKS: dict[tuple[str, Callable[..., Any], bool | None], HelixTask] = {}


def _task(name: str, func: Callable[..., Any], materialize: bool | None = None) -> HelixTask:
    """The helix task running ``func`` under the readable node name ``name``."""
    name = re.sub(r"[^\w.]", "_", name)
    key = (name, func, materialize)
    found = _TASKS.get(key)
    if found is None:
        found = _TASKS.setdefault(key, task(name=name, materialize=materialize)(func))
    return found


def _final_steps(estimator: Any) -> list[tuple[str, Any]]:
    last = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if last is None or is_named(last, "passthrough"):
        raise HelixConfigError(
            f"the last step of {estimator!r} is {last!r}; a pipeline fitted through helix "
            "must end in an estimator"
        )
    return steps_of(estimator)


def _readable(path: str) -> str:
    """A step's path as node names show it: ``ct__num__scale`` -> ``ct.num.scale``."""
    return path.replace("__", ".")


class _Builder:
    """Builds the nodes of one search or fit, each distinct node once."""

    def __init__(self) -> None:
        self._nodes: dict[tuple, HelixNode] = {}
        self._fingerprints: dict[int, tuple[Any, str]] = {}
        self._by_snapshot: dict[tuple, str] = {}
        self._told: set[str] = set()

    def node(self, name: str, func: Callable[..., Any], *args: Any, **options: Any) -> HelixNode:
        """The node ``func(*args)`` named ``name``; the same node for arguments with equal
        fingerprints (the many candidates x splits that share a step)."""
        key = (name, func, *(self._key(a) for a in args))
        found = self._nodes.get(key)
        if found is None:
            with known_fingerprints(self._known):  # signed with the fingerprints just taken
                found = self._nodes[key] = _task(name, func, **options)(*args)
        return found

    def _key(self, value: Any) -> Any:
        if isinstance(value, HelixNode):
            return value.key
        if isinstance(value, str | int | float | bool | type(None)):
            return (type(value), value)
        held = self._fingerprints.get(id(value))
        if held is None:  # keep the value alive, so its id is not reused while building
            snapshot = _snapshot(value)
            fingerprint = self._by_snapshot.get(snapshot) if snapshot is not None else None
            if fingerprint is None:
                fingerprint = fingerprint_value(value, substitute=_node_signature)
                if snapshot is not None:
                    self._by_snapshot[snapshot] = fingerprint
            held = self._fingerprints[id(value)] = (value, fingerprint)
        return held[1]

    def _known(self, value: object) -> str | None:
        """The fingerprint this build took of ``value`` (the very object), if any."""
        held = self._fingerprints.get(id(value))
        return held[1] if held is not None and held[0] is value else None

    def chain(self, steps: list[tuple[str, Any]], rows: HelixNode, train_scores: bool) -> list:
        """The nodes fitting every step but the last, in order."""
        stages: list[HelixNode] = []
        for path, step in steps[:-1]:
            upstream = stages[-1] if stages else rows
            stages.append(self.step(path, step, upstream, rows, train_scores))
        return stages

    def step(
        self, path: str, step: Any, upstream: HelixNode, rows: HelixNode, train_scores: bool
    ) -> HelixNode:
        """The node whose stage holds ``step`` fitted on ``upstream``'s output: one node, or
        for a ColumnTransformer or FeatureUnion one per branch step and one assembling them."""
        name = _readable(path)
        if isinstance(step, ColumnTransformer | FeatureUnion):
            reason = why_one_step(step)
            if reason is None:
                return self._composite(path, step, upstream, rows, train_scores)
            if path not in self._told:
                self._told.add(path)
                logger.info("helix fits step %s whole, not branch by branch: %s", name, reason)
        return self.node(f"fit_{name}", _nodes.fit_step, step, upstream, rows, train_scores)

    def _composite(
        self,
        path: str,
        step: ColumnTransformer | FeatureUnion,
        upstream: HelixNode,
        rows: HelixNode,
        train_scores: bool,
    ) -> HelixNode:
        name = _readable(path)
        if isinstance(step, FeatureUnion):
            branches = [
                self._branch(f"{path}__{branch}", trans, upstream, rows, train_scores, None)
                for branch, trans in step.transformer_list
                if not is_named(trans, "drop")
            ]
            return self.node(
                f"fit_{name}", _nodes.assemble_union, step, upstream, branches, train_scores
            )
        # 'passthrough' branches are fitted as the FunctionTransformer scikit-learn makes
        dense = _get_output_config("transform", step)["dense"]
        selections = [(b, trans, columns) for b, trans, columns in step.transformers]
        if not is_named(step.remainder, "drop"):
            selections.append(("remainder", step.remainder, Remainder.of(step)))
        pairs = []
        for branch, trans, columns in selections:
            if is_named(trans, "drop"):
                continue
            bpath = f"{path}__{branch}"
            source = self.node(
                f"columns_{_readable(bpath)}",
                _nodes.select_columns,
                columns,
                upstream,
                train_scores,
                materialize=False,
            )
            pairs.append((source, self._branch(bpath, trans, source, rows, train_scores, dense)))
        assemble = _nodes.assemble_columns
        return self.node(f"fit_{name}", assemble, step, upstream, pairs, train_scores)

    def _branch(
        self,
        path: str,
        trans: Any,
        source: HelixNode,
        rows: HelixNode,
        train_scores: bool,
        dense: str | None,
    ) -> list[HelixNode]:
        """The nodes fitting one branch's steps on ``source``, in order."""
        if is_named(trans, "passthrough"):
            trans = (
                FunctionTransformer(feature_names_out="one-to-one")
                if dense is None  # as FeatureUnion._iter makes it
                else FunctionTransformer(
                    accept_sparse=True, check_inverse=False, feature_names_out="one-to-one"
                ).set_output(transform=dense)
            )
        nodes: list[HelixNode] = []
        for step_path, step in steps_of(trans, f"{path}__"):
            upstream = nodes[-1] if nodes else source
            nodes.append(self.step(step_path, step, upstream, rows, train_scores))
        return nodes


def _check_global_output() -> None:
    """Nodes run on workers, which do not see this process's scikit-learn configuration."""
    output = sklearn.get_config()["transform_output"]
    if output != "default":
        raise HelixConfigError(
            f"sklearn.set_config(transform_output={output!r}) is set in this process only; "
            "helix fits on the cluster's workers: call set_output(transform="
            f"{output!r}) on the estimator instead"
        )


def _refit_node(builder: _Builder, estimator: Any, X: Any, y: Any) -> HelixNode:
    steps = _final_steps(estimator)
    data = builder.node("sklearn_data", _nodes.data, X, y, materialize=False)
    rows = builder.node("full_data", _nodes.full, data, materialize=False)
    stages = builder.chain(steps, rows, False)
    path, last = steps[-1]
    upstream = stages[-1] if stages else rows
    final = builder.node(f"refit_{_readable(path)}", _nodes.fit_final, last, upstream, rows)
    paths = [p for p, _ in steps]
    return builder.node("fitted_pipeline", _nodes.assemble, estimator, paths, [*stages, final])
