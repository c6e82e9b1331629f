"""Code fingerprints: the code a task runs, followed to everything it reaches.

Project-local code (see :mod:`helix_dask._origin`) is tracked by its normalized source,
recursively through the helpers, classes, module constants, closures, defaults and function
attributes it uses; libraries are tracked by the version of the distribution that provides them.
A class counts by its source and by its live members, so attributes assigned after the class
statement (``Thresholds.LEVEL = 9``) and methods replaced in place count. A project module used
as a value (``getattr(models, name)``) counts with everything defined in it. A helper
redefined in a notebook changes its callers: a function's last fingerprint is reused only while
everything its walk read is unchanged (:mod:`helix_dask._guards`).

This module is the entry point and keeps each function's last fingerprint; the walk is put
together from the digest of each kind of object (:mod:`helix_dask._code_walker`), the names
source reads (:mod:`helix_dask._code_references`), project functions
(:mod:`helix_dask._function_code`) and project classes (:mod:`helix_dask._class_code`). It also
lends value fingerprints the code of the classes and functions met inside values
(:func:`helix_dask._fingerprint.install_code_hooks`).
"""

from __future__ import annotations

import collections
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from helix_dask._class_code import _ClassCode
from helix_dask._code_walker import (
    _CACHE_SIZE,
    _callable_name,
    _digest,
    _is_singledispatch,
)
from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import CodeIdentity, Hasher, install_code_hooks
from helix_dask._function_code import _FunctionCode
from helix_dask._guards import Guards
from helix_dask._origin import class_origin, is_project_local
from helix_dask._origin import is_local_object as _is_local_object

__all__ = ["CodeFingerprint", "code_fingerprint", "is_project_local"]

# These names are public in helix_dask.signature. A code digest names the library objects a task
# calls by module ("helix_dask.signature.code_fingerprint"), and so do pickles: keep that module.
_PUBLIC_MODULE = "helix_dask.signature"


@dataclass(frozen=True)
class CodeFingerprint:
    """The code a task runs, as one digest plus the parts that explain a change.

    Attributes
    ----------
    digest
        Hex digest over the normalized code, everything it reaches and package versions.
    sources
        ``module.qualname`` -> normalized source of each project-local function/class included.
    constants
        ``module.NAME`` -> value fingerprint of each module-level constant read.
    packages
        Distribution (or top-level package) name -> version; ``python`` for the stdlib.
    """

    digest: str
    sources: Mapping[str, str]
    constants: Mapping[str, str]
    packages: Mapping[str, str]

    def __hash__(self) -> int:
        return hash(self.digest)


class _CodeWalker(_FunctionCode, _ClassCode):
    """One traversal of the functions, classes and values a piece of code reaches."""


def code_fingerprint(func: Callable[..., Any], *, untracked: Iterable[str] = ()) -> CodeFingerprint:
    """Fingerprint the code ``func`` runs, including the project-local code it reaches.

    Parameters
    ----------
    func
        A function, lambda, nested function, ``functools.partial``, bound method or callable
        instance.
    untracked
        Global (``NAME`` or ``module.NAME``) or closure variable names to leave out, e.g. a
        lock or a cache the result does not depend on.

    Raises
    ------
    HelixSignatureError
        If a global, closure variable or default value cannot be fingerprinted.

    Examples
    --------
    >>> def double(x):
    ...     "Docstrings and comments do not count."
    ...     return 2 * x
    >>> len(code_fingerprint(double).digest)
    32
    """
    if isinstance(untracked, str):
        raise HelixSignatureError(
            f"untracked must be a collection of names, got the string {untracked!r}; "
            f"write untracked=({untracked!r},)"
        )
    untracked = frozenset(untracked)
    cacheable = type(func) is types.FunctionType
    if cacheable:
        with _CACHE_LOCK:
            cached = _CACHE.get((id(func), untracked))
        if cached is not None and cached[0] is func and cached[2].hold():
            with _CACHE_LOCK:
                if (id(func), untracked) in _CACHE:
                    _CACHE.move_to_end((id(func), untracked))
            return cached[1]
    walker = _CodeWalker(untracked)
    fingerprint = _walk(walker, func)
    if cacheable and not walker.guards.volatile:
        with _CACHE_LOCK:
            _CACHE[(id(func), untracked)] = (func, fingerprint, walker.guards)
            _CACHE.move_to_end((id(func), untracked))
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return fingerprint


_CACHE: collections.OrderedDict[
    tuple[int, frozenset[str]], tuple[types.FunctionType, CodeFingerprint, Guards]
] = collections.OrderedDict()
"""(id of a function, untracked) -> the function (held, so the id stays its own), its last
fingerprint and what that walk read: reused while the guards hold."""
_CACHE_LOCK = threading.Lock()


def _walk(walker: _CodeWalker, func: Callable[..., Any]) -> CodeFingerprint:
    name = _callable_name(func)
    if (
        isinstance(func, types.FunctionType)
        and _is_local_object(func)
        and not _is_singledispatch(func)
    ):
        root = walker.function_digest(func, root=True)
    else:
        if isinstance(func, types.FunctionType):
            walker.guards.function(func)  # whether it is local, and its names
        found = walker.object_digest(func, name, name)
        if found is None and not callable(func):
            raise HelixSignatureError(
                f"code_fingerprint() expects a callable, got {type(func).__name__!r}; "
                "pass the function itself"
            )
        if found is None:  # a callable instance: its class's code plus its state
            code = walker.object_digest(type(func), name, name) or ""
            found = _digest("instance", code, walker.value_digest(func, name, name, name))
        root = found
    return CodeFingerprint(
        digest=_with_packages(root, walker.packages),
        sources=dict(sorted(walker.sources.items())),
        constants=dict(sorted(walker.constants.items())),
        packages=dict(sorted(walker.packages.items())),
    )


def _with_packages(root: str, packages: Mapping[str, str]) -> str:
    h = Hasher()
    h.tag("code")
    h.field(root.encode())
    for dist, version in sorted(packages.items()):
        h.field(dist.encode())
        h.field(version.encode())
    return h.hexdigest()


def _standalone_identity() -> CodeIdentity:
    """Code digests for one value fingerprint: each class or function with the versions of
    the packages it reaches, computed once per value."""
    memo: dict[int, str] = {}
    alive: list[object] = []  # keeps memo keys valid for the lifetime of this closure

    def identity(obj: object) -> str:
        key = id(obj)
        if key not in memo:
            walker = _CodeWalker(frozenset())
            root = walker.identity(obj)
            memo[key] = _with_packages(root, walker.packages) if root else ""
            alive.append(obj)
        return memo[key]

    return identity


install_code_hooks(standalone=_standalone_identity, origin=class_origin)

CodeFingerprint.__module__ = code_fingerprint.__module__ = is_project_local.__module__ = (
    _PUBLIC_MODULE
)
