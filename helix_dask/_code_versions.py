"""Code versions: digests of the project code a client signed a task with (bytecode, and the
state that is no bytecode) and of the module-level values it reads, compared where the task
runs: a worker that imported a module before it was edited says so."""

from __future__ import annotations

import functools
import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from helix_dask._dependency_digests import _MISSING, _hexdigest, _resolve
from helix_dask._fingerprint import Hasher

CONSTANT = "="
"""Prefix of a module-level value in :func:`code_versions` (``=module.NAME``)."""


def code_versions(
    func: Callable[..., Any], names: Iterable[str], constants: Iterable[str] = ()
) -> dict[str, str]:
    """Digests of the task function and of the project functions and classes ``names`` (as
    the signature's sources name them): their bytecode and the state that is no bytecode
    (defaults, closure cells, function attributes, class attributes), and of the module-level
    values ``constants`` (``module.NAME``) they read, for :class:`~helix_dask._trace.NodeCall`
    to compare: a
    worker that imported a module before it was edited holds its old values too."""
    out = {}
    inner = getattr(func, "__code__", None)
    if isinstance(inner, types.CodeType):
        out[""] = _object_bytecode(func) or bytecode_digest(inner)
    for name in names:
        obj = _resolve(name, None) if "<" not in name else None
        digest = _object_bytecode(obj)
        if digest is not None:
            out[name] = digest
    scope = getattr(func, "__globals__", None)
    for name in constants:
        found = _constant(name, scope)
        if found is not _MISSING:
            out[CONSTANT + name] = _state_digest(found)
    return out


def _outdated(func: Callable[..., Any], expected: Mapping[str, str]) -> str | None:
    """The first signed code or value that differs here from the client's, or None."""
    for name, digest in expected.items():
        if name == "":
            mine = _object_bytecode(func)
            if mine is None and isinstance(getattr(func, "__code__", None), types.CodeType):
                mine = bytecode_digest(func.__code__)
            name = getattr(func, "__qualname__", "task")
        elif name.startswith(CONSTANT):
            name = name[len(CONSTANT) :]
            scope = getattr(func, "__globals__", None)
            for found in _constants_here(name, scope):
                if _state_digest(found) != digest:
                    return name
            continue
        else:
            module = name.rpartition(".")[0]
            if module.partition(".")[0] not in sys.modules and module not in sys.modules:
                continue  # not loaded here: it will be imported fresh from its source
            mine = _object_bytecode(_resolve(name, None))
        if mine is not None and mine != digest:
            return name
    return None


def _constants_here(name: str, scope: Mapping[str, Any] | None) -> list[Any]:
    """The values ``module.NAME`` has here: in the task's globals (a function pickled by
    value brings the names it reads along) and in the loaded module, which the module's other
    functions read."""
    module, _, attr = name.rpartition(".")
    found = []
    if scope is not None and scope.get("__name__") == module and attr in scope:
        found.append(scope[attr])
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, attr) and vars(loaded) is not scope:
        found.append(getattr(loaded, attr))
    return found


def _constant(name: str, scope: Mapping[str, Any] | None) -> Any:
    """The value ``module.NAME`` names on the client: in ``scope`` (the task's globals) when
    that is its module, else in its module (imported if need be)."""
    module, _, attr = name.rpartition(".")
    if scope is not None and scope.get("__name__") == module:
        return scope.get(attr, _MISSING)
    found = sys.modules.get(module)
    if found is None:
        try:
            found = importlib.import_module(module)
        except ImportError:
            return _MISSING
    return getattr(found, attr, _MISSING)


def _state_digest(value: Any) -> str:
    """A value's fingerprint, or what stands for one that has none (compared by type).
    Functions and classes in it count by bytecode and name: cheap enough for every call,
    and those the signature reached are compared on their own."""
    from helix_dask._fingerprint import fingerprint_value

    try:
        return fingerprint_value(value, substitute=_code_by_name)
    except Exception:  # no rule (the signature untracked it): its type at least
        return _hexdigest("opaque", type(value).__module__, type(value).__qualname__)


def _code_by_name(value: Any) -> str | None:
    if isinstance(value, types.FunctionType):
        return _hexdigest("function", value.__qualname__, bytecode_digest(value.__code__))
    if isinstance(value, types.ModuleType):
        return _hexdigest("module", value.__name__)
    if isinstance(value, type):
        return _hexdigest("class", value.__module__, value.__qualname__)
    return None


def _object_bytecode(obj: Any, depth: int = 0) -> str | None:
    if not isinstance(obj, types.FunctionType | type) and depth < 8:
        # A wrapper that is no function (lru_cache, a decorator class): the code it wraps.
        wrapped = getattr(obj, "__wrapped__", None) if callable(obj) else None
        if wrapped is not None and wrapped is not obj:
            inner = _object_bytecode(wrapped, depth + 1)
            return None if inner is None else _hexdigest("wrapped", inner)
        return None
    if isinstance(obj, types.FunctionType):
        cells = tuple(_cell(c) for c in obj.__closure__ or ())
        attrs = {k: v for k, v in vars(obj).items() if not k.startswith("__")}
        state = (obj.__defaults__, obj.__kwdefaults__, cells, attrs)
        return _hexdigest("function", bytecode_digest(obj.__code__), _state_digest(state))
    if isinstance(obj, type):
        parts = []
        for attr, value in sorted(vars(obj).items()):
            value = getattr(value, "__func__", value)
            if isinstance(value, types.FunctionType):
                parts.append(f"{attr}={bytecode_digest(value.__code__)}")
            elif not (attr.startswith("__") and attr.endswith("__")):
                parts.append(f"{attr}:{_state_digest(value)}")
        return _hexdigest("class", *parts)
    return None


def _cell(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _MISSING


@functools.lru_cache(maxsize=16384)
def bytecode_digest(code: types.CodeType) -> str:
    """A digest of what a code object does, not where it is: instructions, names and
    constants (nested code recursively), without line numbers, file names or docstrings."""
    h = Hasher()
    h.tag("bytecode")
    h.field(code.co_code)
    h.field(" ".join((*code.co_names, "|", *code.co_varnames, "|", *code.co_freevars)).encode())
    consts = code.co_consts
    if consts and not code.co_name.startswith("<"):
        consts = consts[1:]  # a function's first constant: its docstring (or None)
    for const in consts:
        if isinstance(const, types.CodeType):
            h.field(bytecode_digest(const).encode())
        elif isinstance(const, frozenset):  # its repr's order follows the process's hash seed
            h.field(repr(sorted(map(repr, const))).encode())
        else:
            h.field(repr(const).encode())
    return h.hexdigest()
