"""The code walk's state and the digest of each kind of object it meets: modules, wrapped
and memoizing functions, bound methods, partials, singledispatch functions, class members and
values, with the library versions they bring in. Functions and classes are digested by
:mod:`helix_dask._function_code` and :mod:`helix_dask._class_code`; the walk is put together
in :mod:`helix_dask._code`."""

from __future__ import annotations

import collections
import functools
import logging
import threading
import types
from collections.abc import Mapping
from typing import Any

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import (
    CannotFingerprint,
    Hasher,
    digest_of_strings,
    fingerprint_value,
    has_rule,
)
from helix_dask._guards import MISSING, Guards
from helix_dask._origin import class_origin, is_project_local, package_versions
from helix_dask._origin import is_local_object as _is_local_object

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.signature")

_CACHE_SIZE = 1024
"""How many functions' last fingerprints, and memoizing wrappers, are remembered."""


def _digest(kind: str, *parts: str) -> str:
    return digest_of_strings(kind, *parts)


class _WalkerBase:
    """A walk's state, and the digests of everything but project functions and classes."""

    def __init__(self, untracked: frozenset[str]) -> None:
        self.untracked = untracked
        self.sources: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.packages: dict[str, str] = {}
        # id() keys only detect cycles and reuse work within this call; never hashed.
        self._memo: dict[int, str] = {}
        self._active: set[int] = set()
        self._alive: list[object] = []
        self.guards = Guards()  # what this walk read, to tell whether its result still holds

    def record_package(self, module_name: str) -> None:
        top = module_name.partition(".")[0]
        if top != "helix_dask":  # the library itself: its objects count by name
            self.packages.update(package_versions(top))

    def _enter(self, obj: object, kind: str, name: str) -> str | None:
        key = id(obj)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            return _digest("cycle", kind, name)
        self._active.add(key)
        return None

    def _leave(self, obj: object, digest: str) -> str:
        self._active.discard(id(obj))
        self._memo[id(obj)] = digest
        self._alive.append(obj)
        return digest

    def identity(self, obj: object) -> str:
        """Code digest of a class, function or module met inside a value."""
        if isinstance(obj, type):
            if _is_local_object(obj):
                return self.class_digest(obj)
            if obj.__module__ == "builtins":
                return ""
            self.record_package(obj.__module__)
            return _digest("external", obj.__module__, obj.__qualname__)
        name = _callable_name(obj)
        return self.object_digest(obj, name, name) or ""

    def object_digest(self, obj: object, where: str, owner: str) -> str | None:
        """Digest of a module, class or callable; ``None`` for plain values."""
        if isinstance(obj, types.ModuleType):
            if is_project_local(obj):
                return self.module_digest(obj, owner)
            self.record_package(obj.__name__)
            return _digest("module", obj.__name__)
        if _is_singledispatch(obj):
            return self.singledispatch_digest(obj, where, owner)
        if isinstance(obj, type | types.FunctionType) and _is_local_object(obj):
            return self.class_digest(obj) if isinstance(obj, type) else self.function_digest(obj)
        if isinstance(obj, types.MethodType):
            func = self.object_digest(obj.__func__, f"{where}.__func__", owner) or ""
            what = f"the object bound to {where!r}"
            bound = self.value_digest(obj.__self__, f"{where}.__self__", owner, what)
            return _digest("method", func, bound)
        if isinstance(obj, functools.partial):
            func = self.object_digest(obj.func, f"{where}.func", owner) or ""
            what = f"an argument of partial {where!r}"
            bound = self.value_digest((obj.args, obj.keywords), f"{where}.args", owner, what)
            return _digest("partial", func, bound)
        if not callable(obj) or isinstance(obj, type | types.FunctionType):
            return self._external(obj)
        wrapped = self.guards.attr(obj, "__wrapped__")
        if wrapped is not MISSING and wrapped is not None:
            return self._wrapper_digest(obj, wrapped, where, owner)
        if not isinstance(obj, types.BuiltinFunctionType) and has_rule(type(obj)):
            # A callable object with state (np.vectorize, a project class with __call__).
            what = f"the callable {where!r}"
            return _digest("callable", self.value_digest(obj, where, owner, what))
        return self._external(obj)

    def _external(self, obj: object) -> str | None:
        """Library code: named by module and name, its distribution's version recorded."""
        if not callable(obj) or _is_local_object(obj):
            return None
        module = getattr(obj, "__module__", None) or type(obj).__module__
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(module, str) and isinstance(name, str):
            self.record_package(module)
            return _digest("external", module, name)
        return None

    def _wrapper_digest(self, obj: object, wrapped: object, where: str, owner: str) -> str:
        """A wrapper made with ``functools.update_wrapper``: the wrapped code plus the wrapper
        (a project decorator class by its code and state, a library one by version)."""
        inner = self.object_digest(wrapped, f"{where}.__wrapped__", owner)
        if inner is None:
            what = f"the function wrapped by {where!r}"
            inner = self.value_digest(wrapped, f"{where}.__wrapped__", owner, what)
        cls = self.guards.attr(obj, "__class__")
        if cls is _LRU_WRAPPER:
            _memo_follows(obj, inner)
        if cls.__module__.partition(".")[0] == "helix_dask":
            return _digest("wrapped", inner)  # a helix task: its own code is the function's
        if _is_local_object(cls):
            what = f"the decorator object {where!r}"
            return _digest("wrapped", inner, self.value_digest(obj, where, owner, what))
        self.record_package(cls.__module__)
        return _digest("wrapped", inner, f"{cls.__module__}.{cls.__qualname__}")

    def singledispatch_digest(self, func: Any, where: str, owner: str) -> str:
        """A ``functools.singledispatch`` function: the default and every registered one."""
        self.guards.namespace(func)
        self.guards.mapping(func.registry)
        parts = [self.object_digest(func.__wrapped__, f"{where}.__wrapped__", owner) or ""]
        registered = sorted(func.registry.items(), key=lambda kv: _callable_name(kv[0]))
        for cls, impl in registered:
            if impl is func.__wrapped__:
                continue
            parts += [_callable_name(cls), self.identity(cls)]
            parts.append(self.object_digest(impl, f"{where}.registry", owner) or "")
        return _digest("singledispatch", *parts)

    def module_digest(self, module: types.ModuleType, owner: str) -> str:
        """A project module used as a value: everything defined in it, by name."""
        name = module.__name__
        known = self._enter(module, "module", name)
        if known is not None:
            return known
        self.guards.namespace(module)
        h = Hasher()
        h.tag("module")
        h.field(name.encode())
        for attr, value in sorted(vars(module).items()):
            qualified = f"{name}.{attr}"
            if (attr.startswith("__") and attr.endswith("__")) or self._skip(attr, qualified):
                continue
            if isinstance(value, types.ModuleType) and not value.__name__.startswith(name + "."):
                continue  # an imported module: followed where the code uses it
            h.field(attr.encode())
            h.field(self.reference_digest(value, qualified, owner, attr).encode())
        return self._leave(module, h.hexdigest())

    def value_digest(
        self, obj: object, where: str, owner: str, what: str, untrack: str = "", *, watch=MISSING
    ) -> str:
        """Fingerprint of a value; ``watch`` is what may change in place (default: ``obj``)."""
        self.guards.value(obj if watch is MISSING else watch)

        def substitute(value: object) -> str | None:
            # Functions, classes and modules have value rules that ask self.identity; other
            # callables (library callables without a rule) are named here.
            if value is obj or not callable(value) or isinstance(value, type):
                return None
            if isinstance(value, types.FunctionType) and not _is_singledispatch(value):
                return None
            return self.object_digest(value, where, owner)

        try:
            return fingerprint_value(obj, path=where, substitute=substitute, code=self.identity)
        except CannotFingerprint as exc:
            fix = "pass it as an argument"
            if untrack:
                fix += f", or list it in untracked=({untrack!r},)"
            raise HelixSignatureError(f"{what} used by {owner!r} is {exc.what}; {fix}") from exc

    def reference_digest(self, obj: object, qualified: str, owner: str, untrack: str) -> str:
        """Digest of a global: code by source, libraries by version, constants by value."""
        found = self.object_digest(obj, qualified, owner)
        if found is not None:
            return found
        what = f"global {qualified!r}"
        value = self.value_digest(obj, qualified, owner, what, untrack)
        self.constants[qualified] = value
        return _digest("constant", value)

    def _skip(self, name: str, qualified: str) -> bool:
        return name in self.untracked or qualified in self.untracked

    def function_digest(self, func: types.FunctionType, *, root: bool = False) -> str:
        """Digest of a project function (:mod:`helix_dask._function_code`)."""
        raise NotImplementedError

    def class_digest(self, cls: type) -> str:
        """Digest of a project class (:mod:`helix_dask._class_code`)."""
        raise NotImplementedError

    def _member_digest(self, value: object, where: str, owner: str, untrack: str) -> str:
        if isinstance(value, staticmethod | classmethod):
            kind, value = type(value).__name__, value.__func__
        elif isinstance(value, property):
            parts = (value.fget, value.fset, value.fdel)
            return _digest(
                "property", *(self._member_digest(p, where, owner, untrack) for p in parts)
            )
        elif isinstance(value, functools.cached_property):
            kind, value = "cached_property", value.func
        elif isinstance(value, functools.singledispatchmethod):
            kind, value = "singledispatchmethod", value.dispatcher
        elif isinstance(value, types.MemberDescriptorType | types.GetSetDescriptorType):
            return _digest("descriptor", value.__name__)
        elif isinstance(value, _TUPLEGETTER):
            return _digest("tuplegetter", repr(value.__reduce__()[1]))
        else:
            kind = ""
        found = self.object_digest(value, where, owner)
        if found is None and hasattr(type(value), "__get__") and not has_rule(type(value)):
            # A library descriptor (sklearn's set_fit_request): made from the class's own
            # definitions, it counts by its type and package version.
            if class_origin(type(value)) is not None:
                self.record_package(type(value).__module__)
                return _digest("descriptor", kind, _callable_name(type(value)))
        if found is None:
            what = f"class attribute {where!r}" if untrack else where
            found = self.value_digest(value, where, owner, what, untrack)
        return _digest("member", kind, found)


_LRU_WRAPPER = type(functools.lru_cache(lambda: None))

_memos: collections.OrderedDict[int, tuple[object, str]] = collections.OrderedDict()
"""id of a ``functools.lru_cache``/``cache`` wrapper -> (it, the digest of the code it wraps
when last fingerprinted)."""
_memos_lock = threading.Lock()


def _memo_follows(wrapper: Any, inner: str) -> None:
    """Empty a memoizing wrapper whose code or state changed since it was last fingerprinted
    (a constant it reads set anew): what it holds is what the old code returned, which a
    fresh process would not; it fills again with what the current code returns."""
    with _memos_lock:
        known = _memos.get(id(wrapper))
        _memos[id(wrapper)] = (wrapper, inner)
        _memos.move_to_end(id(wrapper))
        while len(_memos) > _CACHE_SIZE:
            _memos.popitem(last=False)
    if known is not None and known[0] is wrapper and known[1] != inner:
        logger.info("helix emptied the cache of %s: the code it wraps changed", wrapper)
        wrapper.cache_clear()


_TUPLEGETTER = type(collections.namedtuple("_Probe", "field").field)


def _is_singledispatch(obj: object) -> bool:
    return (
        isinstance(obj, types.FunctionType)
        and isinstance(getattr(obj, "registry", None), Mapping)
        and callable(getattr(obj, "dispatch", None))
        and getattr(obj, "__wrapped__", None) is not None
    )


def _callable_name(func: object) -> str:
    module = getattr(func, "__module__", None) or type(func).__module__
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}"
