"""Traces taken with the C profiler: the code objects a call ran, and the globals each ran with.

A Python profile function is called for every Python call and return of the traced task; the C
profiler (``cProfile`` with builtins off) does the same bookkeeping in C, about twice as fast
on call-heavy code. It cannot be chained to a profile function already set, so
:class:`~helix_dask._trace.NodeCall` uses it only when the thread has none.

Two things the Python profile function sees directly are rebuilt here afterwards:

- **What an import ran**: code that only a module's first import executed (its body and what
  that calls) is not the task's (another process that imported the module before would not run
  it). The profile's call graph tells: code all of whose callers are the import machinery or
  such code is left out.
- **The globals each code ran with** (dependencies are resolved in them): the namespace of the
  module loaded from the code's file, or, for code defined by value (a script's functions
  pickled to a worker), the globals of the function object holding it.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Seen = dict[types.CodeType, Mapping[str, Any]]

left_installed: weakref.WeakSet[cProfile.Profile] = weakref.WeakSet()
"""Profilers whose removal kept being refused: the next trace in their thread removes them."""

_profile_lock = threading.Lock()
"""Installs and removals of profile functions in this process take turns (see :func:`switch`)."""


def switch(install: Callable[[], object]) -> bool:
    """Run ``install`` (``sys.setprofile(...)``, ``profiler.enable()`` or ``.disable()``);
    False if it kept being refused (then nothing changed).

    CPython 3.11 refuses to install or remove a profile function while another thread is doing
    so ("Cannot install a profile function while another profile function is being
    installed"), and with an audit hook in the process (see :mod:`helix_dask._file_reads`) an
    install runs Python code, so threads tracing at once would collide: this process's installs
    take turns, and one colliding with code outside helix is retried for a while."""
    for attempt in range(200):
        with _profile_lock:
            try:
                install()
                return True
            except RuntimeError as e:
                if "being installed" not in str(e):
                    raise
        time.sleep(0.0005 * min(attempt + 1, 20))
    return False


def call_profiled(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], import_code: Any
) -> tuple[Any, Seen | None]:
    """``func(*args, **kwargs)`` under the C profiler, and the code it ran with each code's
    globals (None when the profiler could not be installed or removed: nothing is known of
    what it ran). ``import_code``: the import machinery's code object."""
    profiler = cProfile.Profile(builtins=False)
    if not switch(profiler.enable):
        return func(*args, **kwargs), None
    try:
        result = func(*args, **kwargs)
    finally:
        removed = switch(profiler.disable) or switch(profiler.disable)
    if not removed:
        left_installed.add(profiler)  # removed by the thread's next trace
        return result, None
    return result, scopes(ran(profiler.getstats(), import_code), roots=(func,))


def ran(stats: Iterable[Any], import_code: Any) -> set[types.CodeType]:
    """The code objects a profile saw run outside imports. Code called only from an import's
    first execution of a module (or from code only that calls) is left out."""
    callers: dict[types.CodeType, set[types.CodeType]] = {}
    for entry in stats:
        if isinstance(entry.code, types.CodeType):
            callers.setdefault(entry.code, set())
            for sub in entry.calls or ():
                if isinstance(sub.code, types.CodeType):
                    callers.setdefault(sub.code, set()).add(entry.code)
    imported = {code for code, by in callers.items() if import_code in by}
    callees: dict[types.CodeType, list[types.CodeType]] = {}
    for code, by in callers.items():
        for caller in by:
            callees.setdefault(caller, []).append(code)
    todo = list(imported)
    while todo:  # everything an import reached, then keep what other code calls too
        for code in callees.get(todo.pop(), ()):
            if code not in imported:
                imported.add(code)
                todo.append(code)
    changed = True
    while changed:
        changed = False
        for code in list(imported):
            if any(c is not import_code and c not in imported for c in callers[code]):
                imported.discard(code)
                changed = True
    return {code for code in callers if code not in imported and code is not import_code}


def scopes(codes: Iterable[types.CodeType], roots: Iterable[object] = ()) -> Seen:
    """The globals each code object ran with: its module's namespace, found by file name, or
    else (code defined by value) the globals of the function object holding it or the one it
    is nested in. Code whose globals cannot be found gets an empty scope (no ``__name__``):
    the caller decides what code of no known module means.

    Code defined by value is looked for first in what ``roots`` (the called function) reach
    through the names their code reads, their closures and defaults, and the methods of the
    classes met on the way, which is where a script's or a notebook's code pickled to a worker
    lives; only what that misses is looked up among all objects (``gc.get_referrers``, which
    scans the whole heap: tens of milliseconds)."""
    out: Seen = {}
    unknown: set[types.CodeType] = set()
    for code in codes:
        namespace = _namespace_of(code.co_filename, code)
        if namespace is not None:
            out[code] = namespace
        else:
            unknown.add(code)
    if unknown:
        owners = _reachable_scopes(roots, unknown)
        missing = [code for code in unknown if code not in owners]
        if missing:
            for ref in gc.get_referrers(*missing):
                if isinstance(ref, types.FunctionType):
                    _nested_scopes(ref.__code__, ref.__globals__, owners)
        for code in unknown:
            out[code] = owners.get(code, _NO_SCOPE)
    return out


_NO_SCOPE: Mapping[str, Any] = types.MappingProxyType({})
"""The scope of code whose globals were not found: it ran, but its module is unknown."""


_REACH_LIMIT = 10_000
"""Objects visited looking for the functions that hold code defined by value."""
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


def _reachable_scopes(roots: Iterable[object], wanted: set[types.CodeType]) -> Seen:
    """The scopes of the code of the functions reachable from ``roots`` (see :func:`scopes`),
    until every code in ``wanted`` is found or the search runs out."""
    found: Seen = {}
    visited: set[int] = set()
    todo = list(roots)
    while todo and len(visited) < _REACH_LIMIT and not wanted.issubset(found):
        obj = todo.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, types.FunctionType):
            _nested_scopes(obj.__code__, obj.__globals__, found)
            todo.extend(_read_globals(obj.__code__, obj.__globals__))
            todo.extend(_cell_contents(obj.__closure__))
            todo.extend(obj.__defaults__ or ())
            todo.extend((obj.__kwdefaults__ or {}).values())
        elif isinstance(obj, types.MethodType):
            todo.append(obj.__func__)
        elif isinstance(obj, type):
            if obj.__flags__ & _HEAP_TYPE:  # a class defined in Python, not a builtin one
                for member in vars(obj).values():
                    todo.append(getattr(member, "__func__", member))  # static, class methods
                    if isinstance(member, property):
                        todo.extend((member.fget, member.fset, member.fdel))
        elif isinstance(obj, functools.partial):
            todo.append(obj.func)
        elif type(obj).__flags__ & _HEAP_TYPE and callable(obj):
            todo.append(type(obj))  # a callable object: its class's __call__
    return found


def _read_globals(code: types.CodeType, scope: Mapping[str, Any]) -> Iterable[object]:
    """The values of the globals ``code`` and the code nested in it name."""
    for name in code.co_names:
        if name in scope:
            yield scope[name]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _read_globals(const, scope)


def _cell_contents(cells: tuple[types.CellType, ...] | None) -> Iterable[object]:
    for cell in cells or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue


def _nested_scopes(code: types.CodeType, scope: Mapping[str, Any], into: Seen) -> None:
    """``code`` and the code nested in it (comprehensions, local functions and classes) ran
    with ``scope``."""
    if code in into:
        return
    into[code] = scope
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _nested_scopes(const, scope, into)


_by_file: dict[str, Mapping[str, Any]] = {}
_twins: dict[str, list[Mapping[str, Any]]] = {}
"""File -> every module namespace loaded from it, for files loaded as more than one module
(a script run as ``python -m pkg.script`` that imports ``pkg.script``; a worker process's
``__mp_main__`` and the same file imported by name to unpickle a task)."""
_modules_seen: tuple[int, object, int] = (0, None, 0)


def _namespace_of(filename: str, code: types.CodeType | None = None) -> Mapping[str, Any] | None:
    """The namespace of the module loaded from ``filename`` now (checked against
    ``sys.modules`` on every use: a module imported again has a new namespace); of a file
    loaded as several modules, the one holding ``code``."""
    global _modules_seen
    if filename.startswith("<frozen "):
        module = sys.modules.get(filename[len("<frozen ") : -1])
        return getattr(module, "__dict__", None)
    namespace = _by_file.get(filename)
    if namespace is not None and _current(namespace):
        return _holder(filename, code) or namespace
    if namespace is not None or _modules_now() != _modules_seen:
        _modules_seen = _modules_now()
        _by_file.clear()
        _twins.clear()
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if not isinstance(path, str):
                continue
            first = _by_file.setdefault(path, vars(module))
            if first is not vars(module) and not any(
                vars(module) is n for n in _twins.get(path, ())
            ):
                _twins.setdefault(path, [first]).append(vars(module))
        namespace = _by_file.get(filename)
        if namespace is not None and _current(namespace):
            return _holder(filename, code) or namespace
    return None


def _holder(filename: str, code: types.CodeType | None) -> Mapping[str, Any] | None:
    """Of the modules loaded from ``filename`` (when more than one), the one whose
    definitions hold ``code``; None when the file is one module's or none holds it."""
    twins = _twins.get(filename)
    if not twins or code is None:
        return None
    for namespace in twins:
        if _current(namespace) and _holds(namespace, code):
            return namespace
    return None


def _holds(namespace: Mapping[str, Any], code: types.CodeType) -> bool:
    """Whether ``code`` is the code of the top-level definition its qualified name starts
    with in ``namespace``, or nested in it (functions, methods, wrapped functions)."""
    top = namespace.get(code.co_qualname.split(".", 1)[0])
    todo, seen = [top], set()
    while todo:
        obj = todo.pop()
        if obj is None or id(obj) in seen or len(seen) > 1000:
            continue
        seen.add(id(obj))
        if isinstance(obj, staticmethod | classmethod | types.MethodType):
            todo.append(obj.__func__)
        elif isinstance(obj, property):
            todo.extend((obj.fget, obj.fset, obj.fdel))
        elif isinstance(obj, types.FunctionType):
            if _nests(obj.__code__, code):
                return True
            todo.append(obj.__dict__.get("__wrapped__"))
        elif isinstance(obj, type):
            todo.extend(vars(obj).values())
        else:  # a wrapper object (a task): the function it holds
            own = getattr(obj, "__dict__", None)
            if isinstance(own, dict):
                todo.extend(v for v in own.values() if isinstance(v, types.FunctionType))
    return False


def _nests(outer: types.CodeType, code: types.CodeType) -> bool:
    if outer is code:
        return True
    return any(isinstance(c, types.CodeType) and _nests(c, code) for c in outer.co_consts)


def _modules_now() -> tuple[int, object, int]:
    """What tells ``sys.modules`` changed, cheaply: its size and its newest entry (a module
    removed and another imported leave the size as it was)."""
    try:
        last = next(reversed(sys.modules))
    except (StopIteration, RuntimeError):  # empty, or changed while read: look again
        return (-1, None, 0)
    return (len(sys.modules), last, id(sys.modules.get(last)))


def _current(namespace: Mapping[str, Any]) -> bool:
    module = sys.modules.get(namespace.get("__name__", ""))  # type: ignore[arg-type]
    return module is not None and getattr(module, "__dict__", None) is namespace
