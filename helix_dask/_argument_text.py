"""Arguments as the catalog shows them: a short readable form of each bound argument
(``<task>`` for an upstream node, an estimator's parameters), values of arguments whose names
look like secrets redacted (``helix.redact``)."""

from __future__ import annotations

import functools
import re
import reprlib
import sys
from collections.abc import Mapping
from typing import Any

import dask

from ._node import HelixNode

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 6


_SECRET = re.compile(
    r"pass(word|wd|phrase)|secret|token|api_?key|access_?key|private_?key|credential|cookie"
    r"|authorization|(^|_)(auth|pwd|key)$",
    re.IGNORECASE,
)
"""Argument names whose values are never written to the catalog (``helix.redact``)."""

REDACTED = "<redacted>"


def redacted(name: str) -> bool:
    """Whether the value of argument ``name`` is left out of the catalog and the API:
    ``helix.redact`` is ``secrets`` (default: names like ``api_key``, ``password``,
    ``token``), ``all`` or ``none``."""
    return _redacted(str(dask.config.get("helix.redact", "secrets")), name)


@functools.lru_cache(maxsize=4096)
def _redacted(mode: str, name: str) -> bool:
    if mode == "all":
        return True
    return mode != "none" and _SECRET.search(name) is not None


def _argument_values(
    arguments: Mapping[str, object], fingerprints: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A short readable form of each bound argument: ``<task>`` for upstream nodes; values of
    arguments whose names look like secrets are redacted. ``fingerprints`` (the arguments'
    signing fingerprints) let an estimator's text be reused for an equal estimator."""
    mode = str(dask.config.get("helix.redact", "secrets"))
    out = {}
    for name, value in arguments.items():
        if _redacted(mode, name) and not isinstance(value, HelixNode):
            out[name] = REDACTED
        elif fingerprints and name in fingerprints and _is_estimator(value):
            out[name] = _estimator_text(value, fingerprints[name])
        else:
            out[name] = _shown(value)
    return out


_ESTIMATOR_TEXTS: dict[tuple[str, bool], str] = {}
_ESTIMATOR_TEXTS_MAX = 4096


def _estimator_text(value: Any, fingerprint: str) -> str:
    """``_shown(value)`` for an estimator, pretty-printed once per fingerprint: its class
    (code or version) and parameters, which are all its text shows."""
    import sklearn

    key = (fingerprint, bool(sklearn.get_config()["print_changed_only"]))
    text = _ESTIMATOR_TEXTS.get(key)
    if text is None:
        if len(_ESTIMATOR_TEXTS) >= _ESTIMATOR_TEXTS_MAX:
            _ESTIMATOR_TEXTS.clear()
        text = _ESTIMATOR_TEXTS[key] = _shown(value)
    return text


_ESTIMATOR_REPR_CHARS = 20_000
"""Longer scikit-learn estimator reprs are shortened like other values (80 characters)."""


def _shown(value: Any) -> str:
    """``<task>`` for an upstream node, also inside a list or tuple of them; an estimator's
    full repr (so ``helix diff`` can name its changed parameters); a short repr otherwise."""
    if isinstance(value, HelixNode):
        return f"<{value.meta.name}>"
    if type(value) in (list, tuple) and _holds_node(value):
        inner = ", ".join(_shown(v) for v in value)
        return f"[{inner}]" if type(value) is list else f"({inner}{',' if len(value) == 1 else ''})"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    if _is_estimator(value):
        try:
            text = value.__repr__(N_CHAR_MAX=_ESTIMATOR_REPR_CHARS)
        except TypeError:  # a project estimator's own __repr__ takes no limit
            text = ""
        if 0 < len(text) <= _ESTIMATOR_REPR_CHARS:
            return text
    return _REPR.repr(value)


def _holds_node(value: Any) -> bool:
    if isinstance(value, HelixNode):
        return True
    return type(value) in (list, tuple) and any(_holds_node(v) for v in value)


def _is_estimator(value: Any) -> bool:
    sklearn = sys.modules.get("sklearn.base")
    return sklearn is not None and isinstance(value, sklearn.BaseEstimator)
