"""Binding a task call's arguments to parameter names, as ``inspect`` binds them.

``inspect.signature(func).bind(*args, **kwargs)`` followed by ``apply_defaults()`` names
every argument of a call, defaults included, in parameter order; helix signs, watches and
shows arguments by those names. Making the signature object costs more than the rest of
signing a small node, and binding with it about as much again, so a :class:`Binder` is made
once per function state and binds common signatures (no positional-only parameters) with
plain dictionary work; every call it cannot bind that way, and every call that does not
match, goes through ``inspect``, which also words the error.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

__all__ = ["Binder", "binder_for"]

_EMPTY = inspect.Parameter.empty
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Binder:
    """``Signature.bind`` + ``apply_defaults`` for one signature."""

    __slots__ = (
        "fast",
        "keywords",
        "order",
        "positional",
        "signature",
        "var_keyword",
        "var_positional",
    )

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        kinds = {p.kind for p in params}
        self.fast = inspect.Parameter.POSITIONAL_ONLY not in kinds
        self.positional = tuple(
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        self.keywords = frozenset(p.name for p in params if p.kind in _KEYWORD)
        self.var_keyword = inspect.Parameter.VAR_KEYWORD in kinds
        self.var_positional = inspect.Parameter.VAR_POSITIONAL in kinds
        self.order = tuple((p.name, p.kind, p.default) for p in params)

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
        """The arguments by name in parameter order (defaults applied), and the names the
        call passed. Raises ``TypeError`` as ``inspect`` does when the call does not match."""
        positional = self.positional
        if not self.fast or (len(args) > len(positional) and not self.var_positional):
            return self._inspect(args, kwargs)
        given = dict(zip(positional, args, strict=False))
        extra: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in self.keywords and name not in given:
                given[name] = value
            elif self.var_keyword and name not in self.keywords:
                extra[name] = value
            else:
                return self._inspect(args, kwargs)  # raises: duplicate or unexpected
        out: dict[str, Any] = {}
        passed = set(given)
        for name, kind, default in self.order:
            if name in given:
                out[name] = given[name]
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                out[name] = tuple(args[len(positional) :])
                if len(args) > len(positional):
                    passed.add(name)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out[name] = extra
                if extra:
                    passed.add(name)
            elif default is not _EMPTY:
                out[name] = default
            else:
                return self._inspect(args, kwargs)  # raises: missing
        return out, frozenset(passed)

    def _inspect(
        self, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], frozenset[str]]:
        bound = self.signature.bind(*args, **kwargs)
        passed = frozenset(bound.arguments)
        bound.apply_defaults()
        return dict(bound.arguments), passed


def _state(func: types.FunctionType) -> tuple[object, ...]:
    """What a plain function's signature is made from: code, defaults (keyword-only ones can
    change in place) and an explicit ``__signature__``."""
    kwdefaults = func.__kwdefaults__
    return (
        func.__code__,
        func.__defaults__,
        kwdefaults,
        *(kwdefaults.values() if kwdefaults else ()),
        func.__dict__.get("__signature__"),
    )


def binder_for(
    func: Callable[..., Any], cached: tuple[tuple[object, ...], Binder] | None
) -> tuple[tuple[object, ...], Binder] | None:
    """``(state, binder)`` for ``func``: ``cached`` while the function's state is the same
    objects, else a new one; ``None`` (bind with ``inspect`` every time) for anything but a
    plain undecorated function."""
    if type(func) is not types.FunctionType or "__wrapped__" in func.__dict__:
        return None
    state = _state(func)
    if (
        cached is not None
        and len(cached[0]) == len(state)
        and all(a is b for a, b in zip(cached[0], state, strict=True))
    ):
        return cached
    return state, Binder(inspect.signature(func))
