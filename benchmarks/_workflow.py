"""What a benchmark workflow is: sized variants of task code and a scripted edit sequence."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import helix_dask as hx

KINDS = ("first", "DPR", "L/I", "PPR")
"""Iteration kinds: the first run, a data pre-processing edit, a learning/inference (model or
hyperparameter) edit, a post-processing (evaluation) edit."""

PRELOAD = (
    "numpy",
    "pandas",
    "scipy.sparse",
    "sklearn.linear_model",
    "sklearn.cluster",
    "sklearn.decomposition",
    "sklearn.kernel_approximation",
    "sklearn.feature_extraction.text",
    "sklearn.metrics",
    "joblib",
    "dask",
    "distributed",
)
"""Third-party modules the iteration processes are forked with already imported. Neither
helix_dask nor a workflow module is among them: each iteration imports those afresh, as a user's
re-run script would, so a code edit is a new import and no helix cache survives."""

Op = Callable[[str], Callable[..., Any]]
"""``op(task_name)`` returns the builder for the variant of that task the iteration selects."""


@dataclass(frozen=True, slots=True)
class Iteration:
    """One scripted edit: its kind, what changed in words, and the parameters it sets."""

    kind: str
    what: str
    edit: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A benchmark workflow.

    ``variants[name][label]`` are ``@hx.task(name=name)`` functions whose bodies differ (the code
    edits); ``base`` selects one label per task and sets every parameter; each iteration's
    ``edit`` updates the parameters of the one before it. ``build(op, params, size)`` returns
    the single output node (a dict of evaluation metrics).
    """

    name: str
    title: str
    sizes: Mapping[str, Mapping[str, int]]
    variants: Mapping[str, Mapping[str, hx.HelixTask]]
    base: Mapping[str, Any]
    iterations: tuple[Iteration, ...]
    build: Callable[[Op, Mapping[str, Any], Mapping[str, int]], Any]

    def params(self, i: int) -> dict[str, Any]:
        """The parameters in force at iteration ``i`` (0-based): base plus edits 0..i."""
        p = dict(self.base)
        for it in self.iterations[: i + 1]:
            p.update(it.edit)
        return p

    def task(self, name: str, params: Mapping[str, Any]) -> hx.HelixTask:
        """The variant of task ``name`` that ``params`` selects."""
        return self.variants[name][params[name]]


def variants(*tasks: hx.HelixTask) -> dict[str, dict[str, hx.HelixTask]]:
    """Group tasks by task name; a variant's label is its function name after the last ``_``."""
    out: dict[str, dict[str, hx.HelixTask]] = {}
    for t in tasks:
        out.setdefault(t.name, {})[t.func.__name__.rpartition("_")[2]] = t
    return out
