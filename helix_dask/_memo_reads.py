"""Reads a memoized function made, remembered for the calls its cache answers.

A project function wrapped in ``functools.lru_cache`` or ``functools.cache`` runs once per
arguments per process; later calls are answered from the cache and read nothing. A node whose
call only hit the cache would record none of the files or environment variables the cached
value came from, and be stored without them: a later run with the variable or the file changed
would load it. So each read recorded while a node's call runs (``_file_reads``, ``_env_reads``)
is also remembered, for this process, under every memoized project function on the stack when
it was made; a node that settles requires the remembered reads of every memoized function its
code reaches (its signature's sources, and what its trace found).

Only memoized functions remember: a plain loader called with one path per node must not make
every node require every file it ever read. A cache filled outside any node's call (at import,
or by the client's own call in an in-process cluster) recorded nothing to remember.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Iterable, Mapping
from typing import Any

_remembered: dict[str, dict[str, None]] = {}
"""``module.qualname`` of a memoized function -> the requirements its uncached calls read."""
_lock = threading.Lock()
_memoized: dict[types.CodeType, str | None] = {}
"""Code object -> the name of the memoized function it is the code of, or None."""
_MEMO_CODES = 8192
"""At most this many code objects' answers are kept."""
_STACK_LIMIT = 200
"""Frames looked at above a read (a deeper stack's outer frames are not looked at)."""


def memo_frames(frame: types.FrameType | None) -> tuple[str, ...]:
    """Names of the memoized project functions running on the stack from ``frame`` up."""
    out: list[str] = []
    depth = 0
    while frame is not None and depth < _STACK_LIMIT:
        name = _memo_name(frame)
        if name is not None:
            out.append(name)
        frame = frame.f_back
        depth += 1
    return tuple(out)


def remember(under: Iterable[str], requirement: str) -> None:
    """``requirement`` was read inside each memoized function of ``under``."""
    with _lock:
        for name in under:
            _remembered.setdefault(name, {})[requirement] = None


def recalled(reaches: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    """What the memoized functions among ``reaches`` (dependency ids ``module.qualname``)
    read when they last ran uncached here."""
    out: dict[str, Mapping[str, Any]] = {}
    with _lock:
        if not _remembered:
            return out
        for name in reaches:
            for requirement in _remembered.get(name, ()):
                out.setdefault(requirement, {})
    return out


def _memo_name(frame: types.FrameType) -> str | None:
    code = frame.f_code
    try:
        return _memoized[code]
    except KeyError:
        pass
    name = _lookup(code, frame.f_globals)
    if len(_memoized) >= _MEMO_CODES:
        _memoized.clear()
    _memoized[code] = name
    return name


def _lookup(code: types.CodeType, scope: Mapping[str, Any]) -> str | None:
    """``module.qualname`` when ``code`` is the code of a cache-wrapped function defined at
    module level or in a class (found by its qualified name in ``scope``), else None."""
    module = scope.get("__name__")
    if not isinstance(module, str) or "<locals>" in code.co_qualname:
        return None
    obj: Any = scope
    for part in code.co_qualname.split("."):
        try:
            obj = obj.get(part) if isinstance(obj, dict) else vars(obj).get(part)
        except TypeError:  # no namespace of its own
            return None
        if obj is None:
            return None
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
    if not isinstance(obj, functools._lru_cache_wrapper):  # type: ignore[attr-defined]
        return None
    wrapped = getattr(obj, "__wrapped__", None)
    if getattr(wrapped, "__code__", None) is not code:
        return None
    from helix_dask._origin import _is_project_path

    if not _is_project_path(code.co_filename):
        return None
    return f"{module}.{code.co_qualname}"
