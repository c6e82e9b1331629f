"""What flows between the nodes of a scikit-learn graph: a :class:`Stage` holds one split's
rows at one point of a pipeline, with the step fitted there, or the error of a fit that
failed."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any


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


def failed(exc: BaseException) -> Stage:
    """The stage of a fit that raised ``exc`` (called inside its ``except`` block)."""
    return Stage(train=None, error=traceback.format_exc(), exception=exc)


# Stored results pickle stages by this name (and workers import it from there).
Stage.__module__ = "helix_dask._sklearn_nodes"
