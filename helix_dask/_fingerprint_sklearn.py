"""Fingerprint rules for scikit-learn estimators, registered when one is first seen.

An estimator counts by its parameters, fitted state and output container (``set_output``);
its class counts by code when the project defines it and by scikit-learn's version otherwise
(both written by dispatch).
"""

from __future__ import annotations

import weakref
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import make_column_selector
from sklearn.tree._tree import Tree

from helix_dask._fingerprint import Hasher, register
from helix_dask._fingerprint_objects import _attributes, _qualified
from helix_dask._fingerprint_registry import _LOCAL, _origin


@register(BaseEstimator)
def _estimator(obj: Any, h: Hasher) -> None:
    h.tag("sklearn.estimator")
    h.field(_qualified(type(obj)).encode())
    try:
        params = _params(obj)
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


_NAMES: weakref.WeakKeyDictionary[type, tuple[Any, list[str]]] = weakref.WeakKeyDictionary()
"""Each class's parameter names, with the ``__init__`` they were read from."""


def _params(obj: Any) -> dict[str, Any]:
    """``obj.get_params(deep=False)``, with the parameter names read once per class: scikit-learn
    reads its ``__init__`` signature on every call. A class overriding either method is asked."""
    cls = type(obj)
    if (
        getattr(cls.get_params, "__func__", cls.get_params) is not BaseEstimator.get_params
        or getattr(cls._get_param_names, "__func__", None)
        is not BaseEstimator._get_param_names.__func__  # type: ignore[attr-defined]
    ):
        return obj.get_params(deep=False)
    init = cls.__init__
    held = _NAMES.get(cls)
    if held is None or held[0] is not init:  # a replaced __init__ has other parameters
        held = _NAMES[cls] = (init, cls._get_param_names())
    return {name: getattr(obj, name) for name in held[1]}


_PLAIN = (str, int, float, bool, type(None))


def snapshot(value: Any) -> tuple | None:
    """What :func:`_estimator` fingerprints an unfitted estimator of a scikit-learn (or other
    installed) class from, when its parameters are all plain values: its class (with its
    ``__init__``) and its parameters' types and reprs (``1``, ``1.0``, ``True`` and ``-0.0``
    differ). None for anything else. Equal snapshots have equal fingerprints while the
    installed packages stay the same, so one search's build fingerprints one of them."""
    if not isinstance(value, BaseEstimator) or _origin(type(value)) is _LOCAL:
        return None
    try:
        params = _params(value)
    except AttributeError:
        return None  # fingerprint_value says what is wrong
    if not all(type(v) in _PLAIN for v in params.values()):
        return None
    for name in vars(value):
        if name == "_sklearn_output_config" or (name.endswith("_") and not name.startswith("__")):
            return None  # fitted or set_output: fingerprinted in full
    cls = type(value)
    return (cls, cls.__init__, *((k, type(v), repr(v)) for k, v in params.items()))


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
