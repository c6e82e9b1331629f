"""Which parts of an estimator helix fits as nodes: a pipeline's steps that run (nested
pipelines flattened, 'passthrough' left out), and whether a ColumnTransformer or FeatureUnion can
be split into branches whose assembly equals scikit-learn's own fit."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline


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
