"""Guards: what a code walk read that can change, re-checked before its fingerprint is reused.

A code fingerprint (:mod:`helix_dask._code`) is a function of the state the walk reads: code
objects, globals, module attributes, closure cells, defaults, function and class dictionaries,
dispatch tables, the class source lines in :mod:`linecache`, and ``sys.modules``. The walker
records each read here, with what it found. A later fingerprint of the same function reuses the
result only when every guard still holds, so any change between two calls (a global reassigned,
a helper redefined or reloaded, a module attribute or a default changed, a closure cell
rebound) makes it walk again.

Reads are compared by identity, which is exact for what the walk keeps alive here. A value
whose content can change in place is compared with a copy of its content when it is plain data
(lists, dicts and sets of numbers and strings, up to a thousand items: a module's table of
settings); a walk that fingerprinted any other such value (an array, an object) is *volatile*
and never reused, which costs what a walk costs.

Cost model: checking is a few dictionary and attribute look-ups per global, helper and class
reached, one ``stat`` per class source file and one comparison per plain mutable value; a
walk hashes normalized code and values.
"""

from __future__ import annotations

import enum
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MISSING", "Guards", "frozen"]

MISSING: Any = object()
"""What a guarded look-up found when the name was not there."""

_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), range, type(Ellipsis)})


def frozen(value: object, depth: int = 0) -> bool:
    """Whether ``value``'s fingerprint cannot change while the object stays the same: atoms,
    and tuples, frozensets and enum members of frozen values. Functions, classes and modules
    count as frozen because the walker fingerprints them under guards of their own."""
    cls = type(value)
    if cls in _ATOMS:
        return True
    if depth > 8:
        return False
    if cls is tuple or cls is frozenset:
        return all(frozen(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    if isinstance(value, type | types.FunctionType | types.ModuleType):
        return True
    if isinstance(value, enum.Enum):
        return frozen(value._value_, depth + 1)
    return False


_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def _snapshot(value: object, budget: list[int]) -> object:
    """An exact copy of plain data (numbers and strings in built-in containers, within
    ``budget`` items) that compares equal only to the same content with the same types (floats
    bit for bit); ``None`` for anything else."""
    budget[0] -= 1
    if budget[0] < 0:
        return None
    cls = type(value)
    if cls is float:
        return (float, value.hex())  # type: ignore[attr-defined]
    if cls is complex:
        return (complex, value.real.hex(), value.imag.hex())  # type: ignore[attr-defined]
    if cls is range:
        return (range, value.start, value.stop, value.step)  # type: ignore[attr-defined]
    if cls in _ATOMS:
        return (cls, value)
    if cls is dict:
        items = []
        for key, item in value.items():  # type: ignore[attr-defined]
            pair = (_snapshot(key, budget), _snapshot(item, budget))
            if pair[0] is None or pair[1] is None:
                return None
            items.append(pair)
        return (dict, tuple(items))
    if cls not in _CONTAINERS:
        return None
    parts = []
    for item in value:  # type: ignore[attr-defined]
        part = _snapshot(item, budget)
        if part is None:
            return None
        parts.append(part)
    return (cls, frozenset(parts) if cls is set or cls is frozenset else tuple(parts))


def _same_content(value: object, snapshot: object) -> bool:
    return _snapshot(value, [_PLAIN_ITEMS]) == snapshot


_PLAIN_ITEMS = 1000


def _same_item(mapping: Mapping[Any, Any], key: object, value: object) -> bool:
    return mapping.get(key, MISSING) is value


def _same_attr(obj: object, name: str, value: object) -> bool:
    return getattr(obj, name, MISSING) is value


def _same_items(
    get: Callable[[Any], Mapping[Any, Any]], obj: object, items: tuple[tuple[Any, Any], ...]
) -> bool:
    mapping = get(obj)
    if len(mapping) != len(items):
        return False
    for key, value in items:
        if mapping.get(key, MISSING) is not value:
            return False
    return True


def _same_function(
    func: types.FunctionType, state: tuple[object, object, object, str, str]
) -> bool:
    code, defaults, kwdefaults, module, qualname = state
    return (
        func.__code__ is code
        and func.__defaults__ is defaults
        and func.__kwdefaults__ is kwdefaults
        and func.__module__ == module
        and func.__qualname__ == qualname
    )


def _same_cell(cell: types.CellType, value: object) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # empty
        return value is MISSING


def _same_result(compute: Callable[[], object], found: object) -> bool:
    return compute() is found


def _identity(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return mapping


class Guards:
    """The reads of one code walk, each re-checkable in O(1) (namespaces in their size)."""

    __slots__ = ("checks", "volatile", "watched")

    def __init__(self) -> None:
        self.checks: list[Callable[[], bool]] = []
        self.volatile = False
        self.watched: set[int] = set()

    def hold(self) -> bool:
        """Whether everything the walk read is still what it found."""
        return not self.volatile and all(check() for check in self.checks)

    def item(self, mapping: Mapping[Any, Any], key: object) -> Any:
        """``mapping[key]`` (``MISSING`` if absent), guarded."""
        value = mapping.get(key, MISSING)
        self.checks.append(functools.partial(_same_item, mapping, key, value))
        return value

    def attr(self, obj: object, name: str) -> Any:
        """``getattr(obj, name)`` (``MISSING`` if absent), guarded."""
        value = getattr(obj, name, MISSING)
        self.checks.append(functools.partial(_same_attr, obj, name, value))
        return value

    def namespace(self, obj: object, get: Callable[[Any], Mapping[Any, Any]] = vars) -> None:
        """Every key of ``get(obj)`` and the identity of its value (a function's, class's or
        module's ``__dict__``, a dispatch registry): an attribute added, removed or rebound."""
        items = tuple(get(obj).items())
        self.checks.append(functools.partial(_same_items, get, obj, items))

    def mapping(self, mapping: Mapping[Any, Any]) -> None:
        """Like :meth:`namespace`, for a mapping held directly."""
        self.namespace(mapping, _identity)

    def function(self, func: types.FunctionType) -> None:
        """A function's code, defaults, names, dictionary and closure cells."""
        state = (func.__code__, func.__defaults__, func.__kwdefaults__)
        names = (func.__module__, func.__qualname__)
        self.checks.append(functools.partial(_same_function, func, (*state, *names)))
        self.namespace(func)
        if func.__kwdefaults__ is not None:
            self.mapping(func.__kwdefaults__)
        for cell in func.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                value = MISSING
            self.checks.append(functools.partial(_same_cell, cell, value))

    def result(self, compute: Callable[[], object], found: object) -> None:
        """A cached computation (a class's normalized source) still returns ``found``."""
        self.checks.append(functools.partial(_same_result, compute, found))

    def value(self, value: object) -> None:
        """A value whose fingerprint was taken: frozen, or plain data re-fingerprinted on
        each check; anything else makes the walk volatile."""
        if self.volatile or frozen(value) or id(value) in self.watched:
            return
        snapshot = _snapshot(value, [_PLAIN_ITEMS])
        if snapshot is None:
            self.volatile = True
            return
        self.watched.add(id(value))  # the check holds the value: its id stays its own
        self.checks.append(functools.partial(_same_content, value, snapshot))

    def unknown(self) -> None:
        """A read that cannot be re-checked cheaply (the file system): never reuse."""
        self.volatile = True
