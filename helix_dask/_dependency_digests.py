"""Digests of run-time dependencies, taken where they are asked for: a project function or
class by the code fingerprint of everything it reaches (resolved in the globals it ran with), a
distribution by its version, a data file, a directory listing, an environment variable or the
working directory by its content."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

from helix_dask._distributions import DIST, _distribution_version
from helix_dask._env_reads import ENV, env_digest
from helix_dask._file_reads import CWD, FILE, LISTING, STAT
from helix_dask._fingerprint import digest_of_strings
from helix_dask._path_digests import cwd_digest, file_digest, listing_digest, stat_digest


class CodeReplaced(RuntimeError):
    """A dependency's definition was replaced (its module reloaded) while the node ran."""


def dependency_digest(
    dep: str,
    scope: Mapping[str, Any] | None = None,
    ran: Iterable[types.CodeType] | None = None,
) -> str:
    """The current digest of one dependency: a distribution's version, or the code
    fingerprint of a project function/class (everything it reaches), resolved in ``scope``
    (the globals it ran with) or else by importing its module. ``ran``: code objects of it
    that ran; :class:`CodeReplaced` if the definition found now holds other code objects
    of the same names (its module was reloaded since)."""
    if dep.startswith(DIST):
        return _distribution_version(dep[len(DIST) :])
    if dep.startswith(FILE):
        return file_digest(dep[len(FILE) :])
    if dep.startswith(LISTING):
        return listing_digest(dep[len(LISTING) :])
    if dep.startswith(STAT):
        return stat_digest(dep[len(STAT) :])
    if dep.startswith(ENV):
        return env_digest(dep[len(ENV) :])
    if dep == CWD:
        return cwd_digest()
    obj = _resolve(dep, scope)
    if obj is None:
        return _hexdigest("missing", dep)
    if isinstance(obj, _WholeModule):
        return _module_digest(obj.namespace)
    if ran and _replaced(obj, ran):
        raise CodeReplaced(dep)
    from helix_dask._code import code_fingerprint

    return code_fingerprint(obj).digest


def _replaced(obj: Any, ran: Iterable[types.CodeType]) -> bool:
    """Whether a code object that ran is not among ``obj``'s, though one of the same name is
    (a definition whose name reaches no code of that name, an opaque wrapper, is unknown)."""
    reachable: dict[str, list[types.CodeType]] = {}

    def walk(code: types.CodeType) -> None:
        reachable.setdefault(code.co_qualname, []).append(code)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const)

    roots = [obj] if not isinstance(obj, type) else list(vars(obj).values())
    for root in roots:
        if isinstance(root, property):
            parts = [root.fget, root.fset, root.fdel]
        else:
            parts = [root]
        for part in parts:
            for _ in range(8):  # a wrapper's wrapped function (functools.wraps), a few deep
                if isinstance(part, staticmethod | classmethod | types.MethodType):
                    part = part.__func__
                if isinstance(part, types.FunctionType):
                    walk(part.__code__)
                own = getattr(part, "__dict__", None)  # no __getattr__ of arbitrary objects
                part = own.get("__wrapped__") if isinstance(own, dict) else None
                if part is None:
                    break
    for code in ran:
        same = reachable.get(code.co_qualname)
        if same and not any(c is code for c in same):
            return True
    return False


def _resolve(dep: str, scope: Mapping[str, Any] | None) -> Any:
    """The definition to fingerprint for ``module.qualname``: nested code counts as its
    outermost named definition, a module-level lambda or comprehension as the whole module."""
    candidates: list[tuple[str, str]] = []
    outer = dep.partition(".<locals>")[0]
    parts = outer.split(".")
    if parts[-1].startswith("<"):  # "<lambda>", "<genexpr>": no name to look up
        parts[-1] = "*"
    for i in range(len(parts) - 1, 0, -1):
        candidates.append((".".join(parts[:i]), ".".join(parts[i:])))
    for module_name, qualname in candidates:
        namespace: Any
        if scope is not None and scope.get("__name__") == module_name:
            namespace = _Namespace(scope)
        else:
            namespace = sys.modules.get(module_name)
            if namespace is None:
                try:
                    namespace = importlib.import_module(module_name)
                except ImportError:
                    continue
        if qualname == "*":
            return _WholeModule(namespace)
        obj = namespace
        for attr in qualname.split("."):
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING and (callable(obj) or isinstance(obj, _WholeModule)):
            return obj
    return None


_MISSING = object()


class _WholeModule:
    """``module.*``: code of the module that has no name of its own (a module-level lambda)."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace


class _Namespace:
    """Attribute access over a globals dict (a function pickled by value has no module)."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self._scope = scope

    def __getattr__(self, name: str) -> Any:
        try:
            return self._scope[name]
        except KeyError:
            raise AttributeError(name) from None


def _module_digest(namespace: Any) -> str:
    """Every project function and class a module defines, fingerprinted together."""
    from helix_dask._code import code_fingerprint

    scope = namespace._scope if isinstance(namespace, _Namespace) else vars(namespace)
    name = str(scope.get("__name__"))
    members = sorted(
        (k, v)
        for k, v in scope.items()
        if isinstance(v, type | types.FunctionType) and getattr(v, "__module__", "") == name
    )
    return _hexdigest("module", name, *(f"{k}={code_fingerprint(v).digest}" for k, v in members))


def _hexdigest(kind: str, *parts: str) -> str:
    return digest_of_strings(kind, *parts)


def requirement_digests(
    deps: Iterable[str], scopes: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, str]:
    """``dep -> digest`` for each dependency, in the order given."""
    scopes = scopes or {}
    return {d: dependency_digest(d, scopes.get(d)) for d in deps}
