"""Specifications: a task call's arguments are named exactly as ``inspect`` names them, and the
signature a task binds with follows the function when its defaults change."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import pytest

import helix_dask as hx
from helix_dask._binding import Binder


def a(x, y=2): ...
def b(*xs): ...
def c(x, *rest, k=1, **extra): ...
def d(x, /, y, *, z=3): ...
def e(**options): ...
def f(x, *, k): ...
def g(self, x, y=None, *args, flag=False): ...


SIGNATURES = [a, b, c, d, e, f, g]
POSITIONAL = [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)]
KEYWORDS: list[dict[str, Any]] = [
    {}, {"x": 0}, {"y": 5}, {"k": 9}, {"z": 4}, {"xs": 1}, {"other": 7}, {"x": 0, "y": 5},
    {"flag": True}, {"k": 1, "other": 2},
]  # fmt: skip


def _inspect(func: Any, args: tuple, kwargs: dict) -> tuple[dict, frozenset] | str:
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    passed = frozenset(bound.arguments)
    bound.apply_defaults()
    return dict(bound.arguments), passed


def _binder(func: Any, args: tuple, kwargs: dict) -> tuple[dict, frozenset] | str:
    try:
        return Binder(inspect.signature(func)).bind(args, kwargs)
    except TypeError as exc:
        return str(exc)


@pytest.mark.parametrize("func", SIGNATURES, ids=lambda f: f.__name__)
def test_arguments_are_bound_as_inspect_binds_them(func: Any) -> None:
    for args, kwargs in itertools.product(POSITIONAL, KEYWORDS):
        expected, got = _inspect(func, args, kwargs), _binder(func, args, kwargs)
        assert got == expected, (args, kwargs)
        if isinstance(got, tuple):
            assert list(got[0]) == list(expected[0])  # parameter order, as stored


def test_a_call_that_does_not_match_says_so_with_inspects_words() -> None:
    task = hx.task(a)
    with pytest.raises(hx.HelixSignatureError, match="missing a required argument: 'x'"):
        task()
    with pytest.raises(hx.HelixSignatureError, match="multiple values for argument 'x'"):
        task(1, x=2)


def test_a_changed_default_is_bound_by_the_next_call() -> None:
    def fit(x, C=1.0, *, penalty="l2"):
        return x

    task = hx.task(fit)
    seen = {task(1).signature}
    fit.__defaults__ = (2.0,)
    seen.add(task(1).signature)
    fit.__kwdefaults__["penalty"] = "l1"  # in place
    seen.add(task(1).signature)
    assert len(seen) == 3
    assert task(1).meta.arg_values == {"x": "1", "C": "2.0", "penalty": "'l1'"}
