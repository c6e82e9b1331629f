"""Fingerprint rules for scikit-learn estimators, registered when one is first seen.

An estimator counts by its parameters, fitted state and output container (``set_output``);
its class counts by code when the project defines it and by scikit-learn's version otherwise
(both written by dispatch).
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import make_column_selector
from sklearn.tree._tree import Tree

from helix_dask._fingerprint import _LOCAL, Hasher, _attributes, _origin, _qualified, register


@register(BaseEstimator)
def _estimator(obj: Any, h: Hasher) -> None:
    h.tag("sklearn.estimator")
    h.field(_qualified(type(obj)).encode())
    try:
        params = obj.get_params(deep=False)
    except AttributeError as exc:
        raise h.fail(obj, f"get_params() failed: {exc}") from exc
    h.nested(params, ".get_params()")
    fitted = sorted(k for k in vars(obj) if k.endswith("_") and not k.startswith("__"))
    for name in fitted:
        h.field(name.encode())
        h.nested(getattr(obj, name), f".{name}")
    output = vars(obj).get("_sklearn_output_config")
    if output:  # set_output(transform="pandas") changes what transform returns
        h.field(b"_sklearn_output_config")
        h.nested(output, "._sklearn_output_config")
    if _origin(type(obj)) is _LOCAL:
        # A project estimator may keep state beyond the sklearn conventions.
        _attributes(obj, [k for k in vars(obj) if k not in params and k not in fitted], h)


@register(make_column_selector)
def _column_selector(obj: make_column_selector, h: Hasher) -> None:
    """A ColumnTransformer's column selector counts by its pattern and dtypes."""
    h.tag("sklearn.make_column_selector")
    h.nested(dict(vars(obj)), ".__dict__")


@register(Tree)
def _tree(obj: Any, h: Hasher) -> None:
    _cls, args, state = obj.__reduce__()
    h.tag("sklearn.Tree")
    h.nested(args, ".__reduce__()[1]")
    h.nested(state, ".__reduce__()[2]")
